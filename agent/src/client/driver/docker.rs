//! The `docker` driver, on bollard: containers named `<task>-<alloc id>` and
//! labelled as berth's, the task directories at `/alloc`, `/local` and
//! `/secrets`, Nomad's config keys, ports published on the node address
//! (`ports` labels or HCL1 `port_map`), CPU shares and memory limits, and
//! stdout/stderr copied into the allocation's rotating log files (resumed
//! after an agent restart from the last timestamp written).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, Mount, MountBindOptions, MountTmpfsOptions, MountType, PortBinding,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_signal, Driver, DriverError, ExitResult, TaskConfig, TaskHandle, TaskNetwork};
use crate::client::logs::{RotatingWriter, Rotation};
use crate::structs::{DriverInfo, MEMORY_NO_LIMIT};
use crate::util::now_rfc3339;

const NAME: &str = "docker";
const MB: u64 = 1024 * 1024;
/// Label marking containers berth manages.
pub const LABEL_MANAGED: &str = "berth.managed";
/// Label with the allocation ID.
pub const LABEL_ALLOC: &str = "berth.alloc_id";
/// Label with the task name.
pub const LABEL_TASK: &str = "berth.task_name";
/// Label with the ID of the node that runs the container.
pub const LABEL_NODE: &str = "berth.node_id";

/// `plugin "docker" { config { ... } }`.
#[derive(Debug, Clone, Default)]
pub struct DockerPluginConfig {
    /// `allow_privileged`.
    pub allow_privileged: bool,
    /// `volumes { enabled }`: host paths in `volumes` and bind mounts.
    pub volumes_enabled: bool,
    /// `endpoint` (default: the local socket).
    pub endpoint: Option<String>,
}

impl DockerPluginConfig {
    /// Reads the plugin block's JSON (blocks arrive as arrays of objects).
    pub fn from_json(v: Option<&Value>, dev: bool) -> Self {
        let get = |k: &str| v.and_then(|v| v.get(k));
        let first = |x: Option<&Value>| match x {
            Some(Value::Array(a)) => a.first().cloned(),
            Some(o) => Some(o.clone()),
            None => None,
        };
        DockerPluginConfig {
            allow_privileged: get("allow_privileged").and_then(Value::as_bool).unwrap_or(false),
            volumes_enabled: first(get("volumes"))
                .and_then(|o| o.get("enabled").and_then(Value::as_bool))
                .unwrap_or(dev),
            endpoint: get("endpoint").and_then(Value::as_str).map(str::to_string),
        }
    }
}

/// The persisted handle of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    /// Container ID.
    pub id: String,
    /// Where the log pump records the last timestamp it wrote.
    pub log_cursor: PathBuf,
    /// Log directory and task name for the log pump.
    pub log_dir: PathBuf,
    /// Task name.
    pub task: String,
    /// Rotation limits.
    pub rotation: Rotation,
}

/// The task label of pause containers.
const PAUSE_TASK: &str = "berth_init";

/// The pause container holding an allocation's network namespace
/// (Nomad's `nomad_init_<alloc id>`).
pub fn pause_container_name(alloc_id: &str) -> String {
    format!("berth_init_{alloc_id}")
}

/// The docker driver.
pub struct DockerDriver {
    config: DockerPluginConfig,
    node_id: String,
    pause_ready: std::sync::atomic::AtomicBool,
}

fn config_error(reason: impl Into<String>) -> DriverError {
    DriverError::Config { driver: NAME, reason: reason.into() }
}

fn start_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::Start(e.to_string())
}

/// Merges a key that may be an object or a list of objects (HCL blocks).
fn merged_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |o: &serde_json::Map<String, Value>| {
        for (k, v) in o {
            out.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        }
    };
    match v {
        Some(Value::Object(o)) => add(o),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).for_each(&mut add),
        _ => {}
    }
    out
}

fn objects(v: Option<&Value>) -> Vec<&serde_json::Map<String, Value>> {
    match v {
        Some(Value::Object(o)) => vec![o],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        _ => vec![],
    }
}

fn strings(cfg: &BTreeMap<String, Value>, key: &str) -> Result<Vec<String>, DriverError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(config_error(format!("{key:?} must be a list of strings, found {other}"))),
            })
            .collect(),
        Some(Value::String(s)) if key == "entrypoint" => Ok(vec![s.clone()]),
        Some(other) => Err(config_error(format!("{key:?} must be a list of strings, found {other}"))),
    }
}

fn string(cfg: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    cfg.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

fn boolean(cfg: &BTreeMap<String, Value>, key: &str) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(false)
}

const KNOWN_KEYS: &[&str] = &[
    "image",
    "command",
    "args",
    "entrypoint",
    "ports",
    "port_map",
    "network_mode",
    "ipc_mode",
    "pid_mode",
    "privileged",
    "volumes",
    "mount",
    "labels",
    "hostname",
    "dns_servers",
    "dns_search_domains",
    "extra_hosts",
    "cap_add",
    "cap_drop",
    "devices",
    "sysctl",
    "ulimit",
    "work_dir",
    "force_pull",
    "auth",
    "auth_soft_fail",
    "readonly_rootfs",
    "init",
    "shm_size",
    "security_opt",
    "tty",
    "interactive",
];

/// Splits "repo:tag" (a digest or no tag means "latest" is not added).
fn image_ref(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

impl DockerDriver {
    /// A driver with the client's plugin settings, for the node `node_id`
    /// (several clients may share one engine; each owns its containers).
    pub fn new(config: DockerPluginConfig, node_id: &str) -> Self {
        DockerDriver { config, node_id: node_id.to_string(), pause_ready: Default::default() }
    }

    fn client(&self) -> Result<Docker, bollard::errors::Error> {
        match &self.config.endpoint {
            Some(ep) => Docker::connect_with_unix(ep.trim_start_matches("unix://"), 120, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_unix_defaults(),
        }
    }

    fn docker(&self) -> Result<Docker, DriverError> {
        self.client().map_err(|e| DriverError::Start(format!("failed to connect to docker daemon: {e}")))
    }

    /// Translates the task config into a container definition.
    fn container_body(&self, cfg: &TaskConfig) -> Result<ContainerCreateBody, DriverError> {
        let c = &cfg.config;
        for key in c.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                return Err(config_error(format!("unsupported option {key:?}")));
            }
        }
        let image = string(c, "image").ok_or_else(|| config_error("\"image\" is required"))?;
        let privileged = boolean(c, "privileged");
        if privileged && !self.config.allow_privileged {
            return Err(config_error(
                "privileged containers are disabled on this client; set plugin \"docker\" { config { allow_privileged = true } }",
            ));
        }
        // Ports: `ports` labels, or every granted port with HCL1 `port_map`.
        let port_map: BTreeMap<String, String> = merged_map(c.get("port_map"));
        let labels = strings(c, "ports")?;
        let network_mode = match cfg.network.as_ref().and_then(|n| n.holder.as_ref()) {
            Some(holder) => {
                for key in ["network_mode", "hostname", "dns_servers", "dns_search_domains", "extra_hosts"] {
                    if c.contains_key(key) {
                        return Err(config_error(format!(
                            "{key:?} cannot be set when the group network is in bridge mode (the task joins the allocation's namespace)"
                        )));
                    }
                }
                format!("container:{holder}")
            }
            None => string(c, "network_mode").unwrap_or_default(),
        };
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        if network_mode != "host" && !network_mode.starts_with("container:") && network_mode != "none" {
            let wanted: Vec<&crate::structs::AllocatedPort> = if !labels.is_empty() {
                labels
                    .iter()
                    .map(|l| {
                        cfg.ports.iter().find(|p| &p.label == l).ok_or_else(|| {
                            config_error(format!("port {l:?} in \"ports\" is not a port of the group network"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else if !port_map.is_empty() {
                cfg.ports.iter().collect()
            } else {
                vec![]
            };
            for p in wanted {
                let container_port = match port_map.get(&p.label) {
                    Some(v) => v
                        .parse::<u16>()
                        .map_err(|_| config_error(format!("port_map {}: {v:?} is not a port", p.label)))?,
                    None if p.to > 0 => p.to as u16,
                    None => p.value,
                };
                for proto in ["tcp", "udp"] {
                    let key = format!("{container_port}/{proto}");
                    if !exposed.contains(&key) {
                        exposed.push(key.clone());
                    }
                    bindings
                        .entry(key)
                        .or_insert_with(|| Some(vec![]))
                        .get_or_insert_with(Vec::new)
                        .push(PortBinding { host_ip: Some(p.host_ip.clone()), host_port: Some(p.value.to_string()) });
                }
            }
        }
        // Task directories, volume mounts, `volumes` and `mount` blocks.
        let alloc_dir = cfg.task_dir.parent().map(|p| p.join("alloc")).unwrap_or_default();
        let mut binds = vec![
            format!("{}:/alloc", alloc_dir.display()),
            format!("{}:/local", cfg.task_dir.join("local").display()),
            format!("{}:/secrets", cfg.task_dir.join("secrets").display()),
        ];
        for b in &cfg.binds {
            let mut options = vec![if b.read_only { "ro" } else { "rw" }];
            if !b.propagation.is_empty() {
                options.push(&b.propagation);
            }
            binds.push(format!("{}:{}:{}", b.host_path.display(), b.destination, options.join(",")));
        }
        for v in strings(c, "volumes")? {
            let (host, rest) =
                v.split_once(':').ok_or_else(|| config_error(format!("volume {v:?} must be host:container[:ro]")))?;
            let host_path = if Path::new(host).is_absolute() {
                if !self.config.volumes_enabled {
                    return Err(config_error(
                        "host volumes are disabled on this client; set plugin \"docker\" { config { volumes { enabled = true } } }",
                    ));
                }
                PathBuf::from(host)
            } else if host.starts_with('.') || host.contains('/') {
                cfg.task_dir.join(host)
            } else {
                PathBuf::from(host)
            };
            binds.push(format!("{}:{rest}", host_path.display()));
        }
        let mut mounts = Vec::new();
        for m in objects(c.get("mount")) {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
            let target =
                m.get("target").and_then(Value::as_str).ok_or_else(|| config_error("mount: \"target\" is required"))?;
            let source = m.get("source").and_then(Value::as_str).map(str::to_string);
            let read_only = m.get("readonly").and_then(Value::as_bool);
            let mut mount = Mount { target: Some(target.into()), read_only, ..Default::default() };
            match kind {
                "bind" => {
                    if !self.config.volumes_enabled {
                        return Err(config_error("bind mounts are disabled on this client; set plugin \"docker\" { config { volumes { enabled = true } } }"));
                    }
                    mount.typ = Some(MountType::BIND);
                    mount.source = source.map(|s| {
                        if Path::new(&s).is_absolute() {
                            s
                        } else {
                            cfg.task_dir.join(s).display().to_string()
                        }
                    });
                    let propagation = objects(m.get("bind_options"))
                        .first()
                        .and_then(|o| o.get("propagation"))
                        .and_then(|p| serde_json::from_value(p.clone()).ok());
                    mount.bind_options =
                        propagation.map(|p| MountBindOptions { propagation: Some(p), ..Default::default() });
                }
                "volume" => {
                    mount.typ = Some(MountType::VOLUME);
                    mount.source = source;
                }
                "tmpfs" => {
                    mount.typ = Some(MountType::TMPFS);
                    let opts = objects(m.get("tmpfs_options"));
                    let o = opts.first();
                    mount.tmpfs_options = Some(MountTmpfsOptions {
                        size_bytes: o.and_then(|o| o.get("size")).and_then(Value::as_i64),
                        mode: o.and_then(|o| o.get("mode")).and_then(Value::as_i64),
                        ..Default::default()
                    });
                }
                other => return Err(config_error(format!("mount type {other:?} is not bind, volume or tmpfs"))),
            }
            mounts.push(mount);
        }
        let devices = objects(c.get("devices"))
            .into_iter()
            .map(|d| {
                let host = d
                    .get("host_path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| config_error("devices: \"host_path\" is required"))?;
                Ok(DeviceMapping {
                    path_on_host: Some(host.into()),
                    path_in_container: Some(d.get("container_path").and_then(Value::as_str).unwrap_or(host).into()),
                    cgroup_permissions: Some(
                        d.get("cgroup_permissions").and_then(Value::as_str).unwrap_or("rwm").into(),
                    ),
                })
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        let ulimits = merged_map(c.get("ulimit"))
            .into_iter()
            .map(|(name, v)| {
                let (soft, hard) = v.split_once(':').unwrap_or((&v, &v));
                let parse = |x: &str| {
                    x.trim()
                        .parse::<i64>()
                        .map_err(|_| config_error(format!("ulimit {name}: {v:?} is not soft[:hard]")))
                };
                Ok(ResourcesUlimits { name: Some(name.clone()), soft: Some(parse(soft)?), hard: Some(parse(hard)?) })
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        let sysctls: HashMap<String, String> = merged_map(c.get("sysctl")).into_iter().collect();
        let mut container_labels: HashMap<String, String> = merged_map(c.get("labels")).into_iter().collect();
        container_labels.insert(LABEL_MANAGED.into(), "true".into());
        container_labels.insert(LABEL_ALLOC.into(), cfg.alloc_id.clone());
        container_labels.insert(LABEL_TASK.into(), cfg.task.clone());
        container_labels.insert(LABEL_NODE.into(), self.node_id.clone());
        let mut cmd = strings(c, "args")?;
        if let Some(command) = string(c, "command") {
            cmd.insert(0, command);
        }
        let entrypoint = strings(c, "entrypoint")?;
        let host_config = HostConfig {
            binds: Some(binds),
            mounts: (!mounts.is_empty()).then_some(mounts),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: (!network_mode.is_empty()).then_some(network_mode),
            ipc_mode: string(c, "ipc_mode"),
            pid_mode: string(c, "pid_mode"),
            privileged: Some(privileged),
            cap_add: Some(strings(c, "cap_add")?).filter(|v| !v.is_empty()),
            cap_drop: Some(strings(c, "cap_drop")?).filter(|v| !v.is_empty()),
            devices: (!devices.is_empty()).then_some(devices),
            sysctls: (!sysctls.is_empty()).then_some(sysctls),
            ulimits: (!ulimits.is_empty()).then_some(ulimits),
            dns: Some(strings(c, "dns_servers")?).filter(|v| !v.is_empty()),
            dns_search: Some(strings(c, "dns_search_domains")?).filter(|v| !v.is_empty()),
            extra_hosts: Some(strings(c, "extra_hosts")?).filter(|v| !v.is_empty()),
            security_opt: Some(strings(c, "security_opt")?).filter(|v| !v.is_empty()),
            readonly_rootfs: Some(boolean(c, "readonly_rootfs")),
            init: c.get("init").and_then(Value::as_bool),
            cpu_shares: Some(cfg.cpu.max(2) as i64),
            // With memory_max, Nomad's docker driver makes memory a soft
            // reservation and memory_max the hard limit (none for -1).
            memory: (cfg.memory_mb > 0 && cfg.memory_max_mb != MEMORY_NO_LIMIT)
                .then_some((cfg.memory_mb.max(cfg.memory_max_mb.unsigned_abs()) * MB) as i64),
            memory_reservation: (cfg.memory_max_mb == MEMORY_NO_LIMIT
                || cfg.memory_max_mb.unsigned_abs() > cfg.memory_mb)
                .then_some((cfg.memory_mb * MB) as i64),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(image),
            cmd: (!cmd.is_empty()).then_some(cmd),
            entrypoint: (!entrypoint.is_empty()).then_some(entrypoint),
            env: Some(cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(container_labels),
            hostname: string(c, "hostname"),
            working_dir: string(c, "work_dir"),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            tty: c.get("tty").and_then(Value::as_bool),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Makes sure the image is present, pulling it if missing or asked to;
    /// pull progress goes to the task's events every few seconds.
    async fn ensure_image(&self, docker: &Docker, cfg: &TaskConfig, image: &str) -> Result<(), DriverError> {
        if !boolean(&cfg.config, "force_pull") && docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let emit = |msg: String| {
            if let Some(tx) = &cfg.events {
                let _ = tx.send(crate::structs::TaskEvent::new("Driver", msg));
            }
        };
        emit(format!("Downloading image {image}"));
        let (repo, tag) = image_ref(image);
        let opts =
            CreateImageOptions { from_image: Some(repo), tag: (!tag.is_empty()).then_some(tag), ..Default::default() };
        let mut pull = docker.create_image(Some(opts), None, registry_auth(&cfg.config));
        let mut last_report = std::time::Instant::now();
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) if last_report.elapsed() > Duration::from_secs(3) => {
                    last_report = std::time::Instant::now();
                    let status = info.status.unwrap_or_default();
                    let progress = info
                        .progress_detail
                        .and_then(|p| Some(format!("{}/{}", p.current?, p.total?)))
                        .unwrap_or_default();
                    emit(format!("Image {image} pull progress: {status} {progress}").trim_end().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(DriverError::Start(format!("failed to pull image {image:?}: {}", docker_message(&e))))
                }
            }
        }
        emit(format!("Downloaded image {image}"));
        Ok(())
    }

    fn state_of(handle: &TaskHandle) -> Option<ContainerState> {
        serde_json::from_value(handle.state.clone()).ok()
    }
}

/// Credentials from the task's `auth { username password server_address }`.
fn registry_auth(cfg: &BTreeMap<String, Value>) -> Option<bollard::auth::DockerCredentials> {
    let auth = objects(cfg.get("auth")).into_iter().next()?;
    let field = |k: &str| auth.get(k).and_then(Value::as_str).map(str::to_string);
    Some(bollard::auth::DockerCredentials {
        username: field("username"),
        password: field("password"),
        email: field("email"),
        serveraddress: field("server_address"),
        ..Default::default()
    })
}

/// The daemon's own message when it sent one.
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The log pump's place in a container's output: the timestamp of the
/// last frame written, rewritten in place after every frame, so a pump
/// resumed after an agent restart neither repeats nor skips a line.
struct LogCursor {
    file: std::fs::File,
    nanos: i64,
}

impl LogCursor {
    fn open(path: &Path) -> std::io::Result<LogCursor> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let nanos = std::io::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Ok(LogCursor { file, nanos })
    }

    /// Records `nanos` (fixed width, so a shorter number leaves no tail).
    fn advance(&mut self, nanos: i64) {
        use std::os::unix::fs::FileExt;
        self.nanos = nanos;
        let _ = self.file.write_all_at(format!("{nanos:020}\n").as_bytes(), 0);
    }
}

/// Copies a container's output into the rotating log files, following
/// until the container stops; resumes after the recorded cursor.
async fn pump_logs(docker: Docker, state: ContainerState) {
    let (Ok(mut out), Ok(mut err), Ok(mut cursor)) = (
        RotatingWriter::open(&state.log_dir, &state.task, "stdout", state.rotation),
        RotatingWriter::open(&state.log_dir, &state.task, "stderr", state.rotation),
        LogCursor::open(&state.log_cursor),
    ) else {
        tracing::warn!(task = %state.task, "cannot open log files for container output");
        return;
    };
    let opts = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        since: (cursor.nanos / 1_000_000_000) as i32,
        ..Default::default()
    };
    let mut stream = docker.logs(&state.id, Some(opts));
    use std::io::Write;
    while let Some(item) = stream.next().await {
        let Ok(chunk) = item else { break };
        let (writer, message) = match chunk {
            bollard::container::LogOutput::StdErr { message } => (&mut err, message),
            bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message } => {
                (&mut out, message)
            }
            bollard::container::LogOutput::StdIn { .. } => continue,
        };
        // Each frame starts with its RFC 3339 timestamp and a space.
        let text = &message[..];
        let split = text.iter().position(|b| *b == b' ').unwrap_or(0);
        let ts = std::str::from_utf8(&text[..split])
            .ok()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt());
        let body = if ts.is_some() { &text[split + 1..] } else { text };
        if ts.is_some_and(|ts| ts <= cursor.nanos) {
            continue;
        }
        // The frame, then its cursor, with nothing between them that an
        // agent shutdown could interrupt.
        let _ = writer.write_all(body);
        if let Some(ts) = ts {
            cursor.advance(ts);
        }
    }
}

impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fs_isolation(&self) -> bool {
        true
    }

    fn fingerprint(&self) -> BoxFuture<'_, DriverInfo> {
        async move {
            let socket_present = self.config.endpoint.is_some() || Path::new("/var/run/docker.sock").exists();
            let version = match self.client() {
                Ok(d) => d.version().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut info = DriverInfo { update_time: now_rfc3339(), ..Default::default() };
            // The first time the engine answers, make sure it has the pause image.
            if version.is_ok() && !self.pause_ready.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(d) = self.client() {
                    match super::pause::ensure_pause_image(&d).await {
                        Ok(()) => self.pause_ready.store(true, std::sync::atomic::Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "pause image unavailable"),
                    }
                }
            }
            match version {
                Ok(v) => {
                    info.detected = true;
                    info.healthy = true;
                    info.health_description = "Healthy".into();
                    info.attributes.insert("driver.docker.version".into(), v.version.unwrap_or_default());
                    info.attributes
                        .insert("driver.docker.privileged.enabled".into(), self.config.allow_privileged.to_string());
                    info.attributes
                        .insert("driver.docker.volumes.enabled".into(), self.config.volumes_enabled.to_string());
                }
                Err(e) => {
                    info.detected = socket_present;
                    info.health_description = format!("Failed to connect to docker daemon: {e}");
                }
            }
            info
        }
        .boxed()
    }

    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>> {
        async move {
            let body = self.container_body(cfg)?;
            let docker = self.docker()?;
            let image = body.image.clone().unwrap_or_default();
            self.ensure_image(&docker, cfg, &image).await?;
            let name = format!("{}-{}", cfg.task, cfg.alloc_id);
            // A container left by an interrupted start of this same task.
            let _ = docker
                .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                .await;
            let created = docker
                .create_container(Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }), body)
                .await
                .map_err(|e| start_error(format!("failed to create container {name}: {}", docker_message(&e))))?;
            docker
                .start_container(&created.id, None)
                .await
                .map_err(|e| start_error(format!("failed to start container {name}: {}", docker_message(&e))))?;
            let private = cfg.task_dir.join("private");
            let _ = std::fs::create_dir_all(&private);
            let state = ContainerState {
                id: created.id.clone(),
                log_cursor: private.join(format!("docker-logs.{}.cursor", &created.id[..12.min(created.id.len())])),
                log_dir: cfg.log_dir.clone(),
                task: cfg.task.clone(),
                rotation: cfg.rotation,
            };
            tokio::spawn(pump_logs(docker, state.clone()));
            Ok(TaskHandle { driver: NAME.into(), state: serde_json::to_value(state).unwrap_or_default() })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult> {
        async move {
            let lost = |why: String| ExitResult { exit_code: -1, signal: 0, error: Some(why) };
            let Some(state) = Self::state_of(handle) else { return lost("unreadable docker task handle".into()) };
            let docker = match self.docker() {
                Ok(d) => d,
                Err(e) => return lost(e.to_string()),
            };
            let mut wait = docker.wait_container(&state.id, None);
            let result = wait.next().await;
            let code = match result {
                Some(Ok(r)) => r.status_code,
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => {
                    return lost(format!(
                        "lost track of container {}: {}",
                        &state.id[..12.min(state.id.len())],
                        docker_message(&e)
                    ))
                }
                None => return lost("docker closed the wait stream".into()),
            };
            let inspect = docker.inspect_container(&state.id, None::<InspectContainerOptions>).await.ok();
            let oom = inspect.as_ref().and_then(|i| i.state.as_ref()).and_then(|s| s.oom_killed).unwrap_or(false);
            // Exit codes above 128 are deaths by signal (128 + N).
            let signal = if code > 128 && code < 160 { code - 128 } else { 0 };
            ExitResult { exit_code: code, signal, error: oom.then(|| "OOM Killed".to_string()) }
        }
        .boxed()
    }

    fn signal<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let sig = parse_signal(signal).ok_or_else(|| config_error(format!("unknown signal {signal:?}")))?;
            let state = Self::state_of(handle).ok_or_else(|| config_error("unreadable task handle"))?;
            let docker = self.docker()?;
            let opts = KillContainerOptions { signal: sig.as_str().to_string() };
            docker.kill_container(&state.id, Some(opts)).await.map_err(|e| {
                DriverError::Unreachable(format!(
                    "sending {sig} to container {}: {}",
                    &state.id[..12.min(state.id.len())],
                    docker_message(&e)
                ))
            })
        }
        .boxed()
    }

    fn stop<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str, timeout: Duration) -> BoxFuture<'a, ()> {
        async move {
            let (Some(state), Ok(docker)) = (Self::state_of(handle), self.docker()) else { return };
            let opts =
                StopContainerOptions { signal: Some(signal.to_string()), t: Some(timeout.as_secs().max(1) as i32) };
            let _ = docker.stop_container(&state.id, Some(opts)).await;
        }
        .boxed()
    }

    fn stats<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<super::usage::TaskUsage, DriverError>> {
        async move {
            let state = Self::state_of(handle).ok_or_else(|| config_error("unreadable task handle"))?;
            let docker = self.docker()?;
            let opts = StatsOptions { stream: false, one_shot: true };
            match docker.stats(&state.id, Some(opts)).next().await {
                Some(Ok(stats)) => Ok(super::usage::of_container(&stats)),
                Some(Err(e)) => Err(DriverError::Unreachable(format!(
                    "reading stats of container {}: {}",
                    &state.id[..12.min(state.id.len())],
                    docker_message(&e)
                ))),
                None => Err(DriverError::Unreachable("docker sent no stats".into())),
            }
        }
        .boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, bool> {
        async move {
            let (Some(state), Ok(docker)) = (Self::state_of(handle), self.docker()) else { return false };
            let Ok(inspect) = docker.inspect_container(&state.id, None::<InspectContainerOptions>).await else {
                return false;
            };
            // A container that exited while the agent was away still has
            // output the pump has not copied: the pump ends at its end.
            tokio::spawn(pump_logs(docker, state));
            inspect.state.and_then(|s| s.running).unwrap_or(false)
        }
        .boxed()
    }

    fn paused<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, bool> {
        async move {
            let (Some(state), Ok(docker)) = (Self::state_of(handle), self.docker()) else { return false };
            let inspect = docker.inspect_container(&state.id, None::<InspectContainerOptions>).await;
            inspect.ok().and_then(|i| i.state).and_then(|s| s.paused).unwrap_or(false)
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ()> {
        async move {
            let (Some(state), Ok(docker)) = (Self::state_of(handle), self.docker()) else { return };
            let _ = docker
                .remove_container(&state.id, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                .await;
            let _ = std::fs::remove_file(&state.log_cursor);
        }
        .boxed()
    }

    fn create_network<'a>(&'a self, alloc_id: &'a str) -> BoxFuture<'a, Result<Option<TaskNetwork>, DriverError>> {
        async move {
            let docker = self.docker()?;
            let name = pause_container_name(alloc_id);
            let running = |i: &bollard::models::ContainerInspectResponse| {
                i.state.as_ref().and_then(|s| s.running).unwrap_or(false)
            };
            let existing = docker.inspect_container(&name, None::<InspectContainerOptions>).await.ok();
            if existing.as_ref().is_none_or(|i| !running(i)) {
                if existing.is_none() {
                    super::pause::ensure_pause_image(&docker).await.map_err(start_error)?;
                    let labels = HashMap::from([
                        (LABEL_MANAGED.to_string(), "true".to_string()),
                        (LABEL_ALLOC.to_string(), alloc_id.to_string()),
                        (LABEL_TASK.to_string(), PAUSE_TASK.to_string()),
                        (LABEL_NODE.to_string(), self.node_id.clone()),
                    ]);
                    let body = ContainerCreateBody {
                        image: Some(super::pause::pause_image()),
                        labels: Some(labels),
                        host_config: Some(HostConfig { network_mode: Some("none".into()), ..Default::default() }),
                        ..Default::default()
                    };
                    docker
                        .create_container(
                            Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
                            body,
                        )
                        .await
                        .map_err(|e| {
                            start_error(format!("failed to create pause container {name}: {}", docker_message(&e)))
                        })?;
                }
                docker.start_container(&name, None).await.map_err(|e| {
                    start_error(format!("failed to start pause container {name}: {}", docker_message(&e)))
                })?;
            }
            let pid = docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.pid)
                .filter(|p| *p > 0)
                .ok_or_else(|| start_error(format!("pause container {name} is not running")))?;
            Ok(Some(TaskNetwork { netns: PathBuf::from(format!("/proc/{pid}/ns/net")), holder: Some(name) }))
        }
        .boxed()
    }

    fn destroy_network<'a>(&'a self, alloc_id: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let Ok(docker) = self.docker() else { return };
            let _ = docker
                .remove_container(
                    &pause_container_name(alloc_id),
                    Some(RemoveContainerOptions { force: true, ..Default::default() }),
                )
                .await;
        }
        .boxed()
    }

    fn cleanup_orphans<'a>(&'a self, known: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        async move {
            let Ok(docker) = self.client() else { return };
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_NODE}={}", self.node_id)],
            )]);
            let Ok(list) = docker.list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() })).await
            else {
                return;
            };
            for c in list {
                let Some(id) = c.id else { continue };
                let alloc = c.labels.as_ref().and_then(|l| l.get(LABEL_ALLOC)).cloned().unwrap_or_default();
                let remove = if !known.contains(&alloc) {
                    tracing::info!(container = %id, alloc_id = %alloc, "removing container of an allocation this client no longer has");
                    true
                } else {
                    // An exited container of a live allocation that nobody
                    // removed (its runtime was away when the task ended).
                    let state = docker.inspect_container(&id, None::<InspectContainerOptions>).await.ok().and_then(|i| i.state);
                    let finished = state
                        .filter(|s| s.running != Some(true))
                        .and_then(|s| s.finished_at)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
                    finished.map(|t| chrono::Utc::now().signed_duration_since(t).num_seconds() > 30).unwrap_or(false)
                };
                if remove {
                    let _ = docker.remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::AllocatedPort;

    fn cfg(config: Value) -> TaskConfig {
        TaskConfig {
            alloc_id: "a1".into(),
            task: "db".into(),
            config: serde_json::from_value(config).unwrap(),
            env: BTreeMap::from([("K".to_string(), "v".to_string())]),
            task_dir: "/data/alloc/a1/db".into(),
            log_dir: "/data/alloc/a1/alloc/logs".into(),
            rotation: Default::default(),
            user: String::new(),
            cpu: 500,
            memory_mb: 256,
            memory_max_mb: 0,
            ports: vec![AllocatedPort { label: "db".into(), value: 3306, to: 0, host_ip: "127.0.0.1".into() }],
            binds: vec![],
            kill_timeout: Duration::from_secs(5),
            events: None,
            network: None,
        }
    }

    #[test]
    fn bridge_mode_tasks_join_the_pause_container_and_publish_nothing() {
        let d = DockerDriver::new(DockerPluginConfig::default(), "n1");
        let mut c = cfg(serde_json::json!({"image": "x", "ports": ["db"]}));
        c.network = Some(TaskNetwork { netns: "/run/netns/berth-a1".into(), holder: Some(pause_container_name("a1")) });
        let body = d.container_body(&c).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:berth_init_a1"));
        assert!(hc.port_bindings.is_none());
        c.config.insert("hostname".into(), serde_json::json!("db1"));
        let e = d.container_body(&c).unwrap_err().to_string();
        assert!(e.contains("\"hostname\" cannot be set when the group network is in bridge mode"), "{e}");
    }

    #[test]
    fn memory_max_is_the_hard_limit_and_memory_the_reservation() {
        let d = DockerDriver::new(DockerPluginConfig::default(), "n1");
        let mut c = cfg(serde_json::json!({"image": "x"}));
        c.memory_max_mb = 1024;
        let hc = d.container_body(&c).unwrap().host_config.unwrap();
        assert_eq!((hc.memory, hc.memory_reservation), (Some(1024 * 1024 * 1024), Some(256 * 1024 * 1024)));
        c.memory_max_mb = MEMORY_NO_LIMIT;
        let hc = d.container_body(&c).unwrap().host_config.unwrap();
        assert_eq!((hc.memory, hc.memory_reservation), (None, Some(256 * 1024 * 1024)), "-1: no hard limit");
    }

    #[test]
    fn hcl1_port_map_publishes_on_the_node_address() {
        let d = DockerDriver::new(DockerPluginConfig::default(), "n1");
        let body = d.container_body(&cfg(serde_json::json!({"image": "m:1", "port_map": [{"db": 3306}]}))).unwrap();
        let hc = body.host_config.unwrap();
        let b = hc.port_bindings.unwrap()["3306/tcp"].clone().unwrap();
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some("3306"));
        assert!(hc.binds.unwrap().contains(&"/data/alloc/a1/alloc:/alloc".to_string()));
        assert_eq!((hc.memory, hc.memory_reservation), (Some(256 * 1024 * 1024), None));
        assert_eq!(hc.cpu_shares, Some(500));
        assert_eq!(body.labels.unwrap()[LABEL_ALLOC], "a1");
        assert_eq!(body.env.unwrap(), vec!["K=v"]);
    }

    #[test]
    fn privileged_and_host_volumes_need_the_client_to_allow_them() {
        let d = DockerDriver::new(DockerPluginConfig::default(), "n1");
        let e = d.container_body(&cfg(serde_json::json!({"image": "m", "privileged": true}))).unwrap_err();
        assert!(e.to_string().contains("allow_privileged = true"), "{e}");
        let e = d.container_body(&cfg(serde_json::json!({"image": "m", "volumes": ["/etc:/x"]}))).unwrap_err();
        assert!(e.to_string().contains("volumes { enabled = true }"), "{e}");
        let e = d.container_body(&cfg(serde_json::json!({"image": "m", "ports": ["web"]}))).unwrap_err();
        assert!(e.to_string().contains("\"web\""), "{e}");
        let e = d.container_body(&cfg(serde_json::json!({"image": "m", "bogus": 1}))).unwrap_err();
        assert!(e.to_string().contains("unsupported option \"bogus\""), "{e}");
        let ok = DockerDriver::new(
            DockerPluginConfig { allow_privileged: true, volumes_enabled: true, endpoint: None },
            "n1",
        );
        assert!(ok
            .container_body(&cfg(serde_json::json!({"image": "m", "privileged": true, "volumes": ["/etc:/x:ro"]})))
            .is_ok());
    }

    #[test]
    fn auth_blocks_become_registry_credentials() {
        let cfg: BTreeMap<String, Value> = serde_json::from_value(serde_json::json!({
            "image": "nas:5000/app", "auth": [{"username": "u", "password": "p", "server_address": "nas:5000"}]
        }))
        .unwrap();
        let creds = registry_auth(&cfg).unwrap();
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.serveraddress.as_deref(), Some("nas:5000"));
        assert!(registry_auth(&BTreeMap::new()).is_none());
    }

    #[test]
    fn image_references() {
        assert_eq!(image_ref("redis:7"), ("redis".into(), "7".into()));
        assert_eq!(image_ref("localhost:5000/x"), ("localhost:5000/x".into(), "latest".into()));
        assert_eq!(image_ref("berth-test/mariadb:latest"), ("berth-test/mariadb".into(), "latest".into()));
    }
}
