//! `berth agent`: turns flags and config files into a running server
//! and/or client with their HTTP listeners, and shuts them down on SIGINT or
//! SIGTERM. On shutdown tasks keep running (a restarted agent re-attaches),
//! except for a dev agent on a throw-away data dir, which stops them.

pub mod config;
mod local_rpc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::client::rpc::{HttpRpc, ServerRpc};
use crate::client::{Client, ClientConfig};
use crate::http::{self, AgentInfo, Api};
use crate::server::{Server, ServerConfig};
use config::AgentConfig;
use local_rpc::LocalRpc;

/// Command-line options of `berth agent`.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `-dev`.
    pub dev: bool,
    /// `-config` (repeatable).
    pub configs: Vec<PathBuf>,
    /// `-data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `-bind`.
    pub bind: Option<String>,
    /// `-log-level`.
    pub log_level: Option<String>,
    /// `-node`.
    pub node: Option<String>,
    /// `-dc`.
    pub datacenter: Option<String>,
    /// `-servers` (client).
    pub servers: Vec<String>,
    /// `-server`.
    pub server: bool,
    /// `-client`.
    pub client: bool,
}

/// The first non-loopback IPv4 address of this host.
fn default_ip() -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let addr = ifa.address?;
        let v4 = addr.as_sockaddr_in()?.ip();
        (!v4.is_loopback() && !v4.is_link_local()).then(|| v4.to_string())
    })
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "berth".into())
}

/// The effective settings after dev defaults, files and flags.
struct Settings {
    cfg: AgentConfig,
    data_dir: PathBuf,
    ephemeral: Option<tempfile::TempDir>,
    bind: String,
    advertise_ip: String,
    server: bool,
    client: bool,
    name: String,
}

fn settings(opts: &AgentOptions) -> anyhow::Result<Settings> {
    let mut cfg = AgentConfig::load(&opts.configs)?;
    for w in &cfg.warnings {
        eprintln!("==> WARNING: {w}");
    }
    if let Some(d) = &opts.datacenter {
        cfg.datacenter = Some(d.clone());
    }
    if let Some(n) = &opts.node {
        cfg.name = Some(n.clone());
    }
    if let Some(l) = &opts.log_level {
        cfg.log_level = Some(l.clone());
    }
    if !opts.servers.is_empty() {
        cfg.servers = opts.servers.clone();
    }
    let server = opts.dev || opts.server || cfg.server_enabled.unwrap_or(false);
    let client = opts.dev || opts.client || cfg.client_enabled.unwrap_or(false);
    if !server && !client {
        bail!("must specify either server, client or dev mode for the agent");
    }
    if client && !server && cfg.servers.is_empty() {
        bail!("client agents need servers: set client {{ servers = [\"host:4647\"] }} or -servers");
    }
    let (data_dir, ephemeral) = match opts.data_dir.clone().or(cfg.data_dir.clone()) {
        Some(d) => (d, None),
        None if opts.dev => {
            let t = tempfile::Builder::new().prefix("berth-dev-").tempdir().context("creating the dev data dir")?;
            (t.path().to_path_buf(), Some(t))
        }
        None => bail!("must specify data directory (data_dir in a config file or -data-dir)"),
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("resolving data dir {}", data_dir.display()))?;
    let bind = opts.bind.clone().or(cfg.bind_addr.clone()).unwrap_or_else(|| {
        if opts.dev {
            "127.0.0.1".into()
        } else {
            "0.0.0.0".into()
        }
    });
    let advertise_ip =
        if bind == "0.0.0.0" { default_ip().unwrap_or_else(|| "127.0.0.1".into()) } else { bind.clone() };
    let name = cfg.name.clone().unwrap_or_else(hostname);
    Ok(Settings { cfg, data_dir, ephemeral, bind, advertise_ip, server, client, name })
}

async fn listen(addr: &str, router: axum::Router, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    });
    Ok(local)
}

/// The agent's crates (itself and its libraries) at `level`, as a filter.
fn agent_crates(level: &str) -> String {
    ["berth", "csi", "cni", "synology"].map(|c| format!("{c}={level}")).join(",")
}

/// Installs the log subscriber: Nomad's level names, `RUST_LOG` overrides.
/// The libraries' logs (CSI, iSCSI, bridge, DSM) show at the agent's level.
fn init_logging(level: &str) {
    let level = match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "WARN" => "warn",
        "ERR" | "ERROR" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},warn", agent_crates(level))));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs the agent until a termination signal.
pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let s = settings(&opts)?;
    init_logging(s.cfg.log_level.as_deref().unwrap_or(if opts.dev { "DEBUG" } else { "INFO" }));
    crate::telemetry::install();
    let cfg = &s.cfg;
    let http_port = cfg.http_port.unwrap_or(4646);
    let rpc_port = cfg.rpc_port.unwrap_or(4647);
    let region = cfg.region.clone().unwrap_or_else(|| "global".into());
    let datacenter = cfg.datacenter.clone().unwrap_or_else(|| "dc1".into());
    let http_addr = cfg.advertise_http.clone().unwrap_or_else(|| format!("{}:{http_port}", s.advertise_ip));
    let rpc_addr = cfg.advertise_rpc.clone().unwrap_or_else(|| format!("{}:{rpc_port}", s.advertise_ip));
    let shutdown = CancellationToken::new();

    println!(
        "==> {}",
        if opts.configs.is_empty() {
            "No configuration files loaded".to_string()
        } else {
            format!(
                "Loaded configuration from {}",
                opts.configs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        }
    );
    println!("==> Starting Berth agent...");
    let server = if s.server {
        let mut sc = ServerConfig {
            region: region.clone(),
            datacenter: datacenter.clone(),
            name: s.name.clone(),
            ..Default::default()
        };
        if let Some(ttl) = cfg.min_heartbeat_ttl {
            sc.heartbeat_ttl = Duration::from_nanos(ttl.max(1) as u64);
        }
        if let Some(grace) = cfg.heartbeat_grace {
            sc.heartbeat_grace = Duration::from_nanos(grace.max(0) as u64);
        }
        if let Some(timeout) = cfg.csi_claim_release_timeout {
            sc.csi_claim_release_timeout = Duration::from_nanos(timeout.max(0) as u64);
        }
        Some(Server::start(&s.data_dir, sc).context("starting the server")?)
    } else {
        None
    };
    let info = Arc::new(AgentInfo {
        name: s.name.clone(),
        region: region.clone(),
        datacenter: datacenter.clone(),
        http_addr: http_addr.clone(),
        rpc_addr: rpc_addr.clone(),
        serf_port: cfg.serf_port.unwrap_or(4648),
        servers: if s.server { vec![] } else { cfg.servers.clone() },
        bootstrap_expect: cfg.bootstrap_expect.unwrap_or(1),
    });
    let client = if s.client {
        let rpc: Arc<dyn ServerRpc> = match &server {
            Some(srv) => Arc::new(LocalRpc(srv.clone())),
            None => Arc::new(HttpRpc::new(cfg.servers.clone())),
        };
        let cc = ClientConfig {
            node_name: s.name.clone(),
            datacenter: datacenter.clone(),
            node_class: cfg.node_class.clone().unwrap_or_default(),
            meta: cfg.meta.clone(),
            host_volumes: cfg.host_volumes.clone(),
            data_dir: s.data_dir.clone(),
            advertise_ip: s.advertise_ip.clone(),
            http_addr: http_addr.clone(),
            raw_exec_enabled: cfg.raw_exec_enabled().unwrap_or(opts.dev),
            docker: crate::client::driver::docker::DockerPluginConfig::from_json(cfg.plugins.get("docker"), opts.dev),
            bridge_network_name: cfg.bridge_network_name.clone().unwrap_or_else(|| "berth".into()),
            bridge_network_subnet: bridge_subnet(cfg.bridge_network_subnet.as_deref())?,
            netns_dir: PathBuf::from(cni::netns::DEFAULT_RUN_DIR),
            cni_path: std::env::split_paths(cfg.cni_path.as_deref().unwrap_or("/opt/cni/bin")).collect(),
            cni_config_dir: PathBuf::from(cfg.cni_config_dir.as_deref().unwrap_or("/opt/cni/config")),
            csi_probe_interval: Duration::from_nanos(
                cfg.csi_plugin_probe_interval.unwrap_or(30_000_000_000).max(1) as u64
            ),
            synology: match cfg.plugins.get("synology") {
                Some(config) => {
                    Some(crate::client::csi::builtin::SynologyPlugin::from_config(config).map_err(anyhow::Error::msg)?)
                }
                None => None,
            },
            publish_allocation_metrics: cfg.publish_allocation_metrics.unwrap_or(false),
        };
        Some(Client::start(cc, rpc, shutdown.clone()).await.context("starting the client")?)
    } else {
        None
    };
    if let Some(srv) = &server {
        srv.set_plugin_calls(Arc::new(crate::client::csi::ClusterPluginCalls {
            local: client.as_ref().map(Arc::downgrade),
            http: crate::util::http_client(),
        }));
    }
    let api = Api { server: server.clone(), client: client.clone(), info, http: crate::util::http_client() };
    let router = http::router(api);
    let bound_http = listen(&format!("{}:{http_port}", s.bind), router.clone(), shutdown.clone()).await?;
    if s.server {
        listen(&format!("{}:{rpc_port}", s.bind), router, shutdown.clone()).await?;
    }
    println!("==> Berth agent configuration:\n");
    let kv = [
        ("Advertise Addrs", format!("HTTP: {http_addr}; RPC: {rpc_addr}")),
        ("Bind Addrs", format!("HTTP: {bound_http}; RPC: {}:{rpc_port}", s.bind)),
        ("Client", s.client.to_string()),
        ("Data Dir", s.data_dir.display().to_string()),
        ("Log Level", cfg.log_level.clone().unwrap_or_else(|| "INFO".into())),
        ("Node Id", client.as_ref().map(|c| c.node.read().id.clone()).unwrap_or_default()),
        ("Region", format!("{region} (DC: {datacenter})")),
        ("Server", s.server.to_string()),
        ("Version", crate::VERSION.to_string()),
    ];
    for (k, v) in kv {
        println!("{k:>20}: {v}");
    }
    println!("\n==> Berth agent started! Log data will stream in below:\n");

    wait_for_signal().await;
    println!("==> Caught signal: shutting down");
    if s.ephemeral.is_some() {
        if let Some(c) = &client {
            c.stop_all(Duration::from_secs(10)).await;
        }
    }
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(c) = &client {
        c.flush_state().await;
    }
    drop(s.ephemeral);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
}

/// Parses `client { bridge_network_subnet }` (Nomad's default when unset).
fn bridge_subnet(text: Option<&str>) -> anyhow::Result<ipnet::Ipv4Net> {
    let text = text.unwrap_or(crate::client::DEFAULT_BRIDGE_SUBNET);
    text.parse().map_err(|_| {
        anyhow::anyhow!("client.bridge_network_subnet: {text:?} is not an IPv4 subnet like 172.26.64.0/20")
    })
}
