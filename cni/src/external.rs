//! External CNI networks (`mode = "cni/<name>"`), for operators who keep
//! their own CNI set-up: finds the network configuration list named `name`
//! in a config directory and runs its plugin binaries per the CNI spec:
//! ADD in order, each given the previous result as `prevResult`; DEL in
//! reverse order, each given the cached final ADD result; `runtimeConfig`
//! carries `portMappings` to plugins that declare that capability. The ADD
//! result is cached (as libcni does) so DEL works after an agent restart.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::firewall::PortMapping;
use crate::{io_err, NetError, Result};

/// A network configuration list.
#[derive(Debug, Clone)]
pub struct ConfList {
    /// Network name.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// Plugin objects, in order.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from.
    pub source: PathBuf,
}

/// One attachment of a container to a network.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub cni_path: Vec<PathBuf>,
    /// Port mappings, for plugins with the `portMappings` capability.
    pub ports: Vec<PortMapping>,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
}

fn config_err(path: &Path, why: impl std::fmt::Display) -> NetError {
    NetError::Config(format!("CNI config {}: {why}", path.display()))
}

fn parse(path: &Path) -> Result<ConfList> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| config_err(path, e))?;
    let obj = v.as_object().ok_or_else(|| config_err(path, "not a JSON object"))?;
    let name = obj.get("name").and_then(Value::as_str).ok_or_else(|| config_err(path, "\"name\" is missing"))?;
    let cni_version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("1.0.0").to_string();
    let plugins = match obj.get("plugins") {
        Some(Value::Array(ps)) => ps
            .iter()
            .map(|p| p.as_object().cloned().ok_or_else(|| config_err(path, "a plugin is not an object")))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(config_err(path, "\"plugins\" must be a list")),
        // A single-plugin .conf file.
        None => vec![obj.clone()],
    };
    if plugins.is_empty() {
        return Err(config_err(path, "\"plugins\" is empty"));
    }
    for p in &plugins {
        if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(config_err(path, "a plugin has no \"type\""));
        }
    }
    Ok(ConfList { name: name.to_string(), cni_version, plugins, source: path.to_path_buf() })
}

/// Finds the network called `name` among the `*.conflist`, `*.conf` and
/// `*.json` files of `dir` (in file name order, as libcni does).
pub fn load(dir: &Path, name: &str) -> Result<ConfList> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(format!("reading cni_config_dir {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .collect();
    files.sort();
    for f in files {
        if let Ok(c) = parse(&f) {
            if c.name == name {
                return Ok(c);
            }
        }
    }
    Err(NetError::Config(format!("no CNI network named {name:?} in {}", dir.display())))
}

fn find_plugin(kind: &str, path: &[PathBuf]) -> Result<PathBuf> {
    path.iter().map(|d| d.join(kind)).find(|p| p.is_file()).ok_or_else(|| NetError::Plugin {
        plugin: kind.into(),
        msg: format!(
            "not found in cni_path [{}]",
            path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// The stdin object of one plugin invocation.
fn plugin_input(conf: &ConfList, plugin: &Map<String, Value>, att: &Attachment, prev: Option<&Value>) -> Value {
    let mut o = plugin.clone();
    o.insert("name".into(), json!(conf.name));
    o.insert("cniVersion".into(), json!(conf.cni_version));
    if let Some(p) = prev {
        o.insert("prevResult".into(), p.clone());
    }
    let wants_ports = plugin.get("capabilities").and_then(|c| c.get("portMappings")).and_then(Value::as_bool);
    if wants_ports == Some(true) && !att.ports.is_empty() {
        let maps: Vec<Value> = att
            .ports
            .iter()
            .flat_map(|p| {
                ["tcp", "udp"]
                    .map(|proto| json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto}))
            })
            .collect();
        o.insert("runtimeConfig".into(), json!({ "portMappings": maps }));
    }
    Value::Object(o)
}

async fn invoke(
    command: &str,
    conf: &ConfList,
    plugin: &Map<String, Value>,
    att: &Attachment,
    prev: Option<&Value>,
) -> Result<Value> {
    let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let bin = find_plugin(&kind, &att.cni_path)?;
    let input = serde_json::to_vec(&plugin_input(conf, plugin, att, prev)).expect("JSON values serialize");
    let cni_path = std::env::join_paths(&att.cni_path).map_err(|e| NetError::Config(e.to_string()))?;
    let args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut child = tokio::process::Command::new(&bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &att.container_id)
        .env("CNI_NETNS", &att.netns)
        .env("CNI_IFNAME", &att.ifname)
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", args.join(";"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io_err(format!("running CNI plugin {}", bin.display())))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(&input).await.map_err(io_err(format!("writing to CNI plugin {kind}")))?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(io_err(format!("waiting for CNI plugin {kind}")))?;
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if out.status.success() {
        return Ok(stdout);
    }
    let msg = match stdout.get("msg").and_then(Value::as_str) {
        Some(m) => {
            let details = stdout.get("details").and_then(Value::as_str).filter(|d| !d.is_empty());
            let code = stdout.get("code").and_then(Value::as_i64).unwrap_or(0);
            format!("{command} failed (code {code}): {m}{}", details.map(|d| format!(": {d}")).unwrap_or_default())
        }
        None => format!("{command} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
    };
    Err(NetError::Plugin { plugin: kind, msg })
}

fn cache_file(cache_dir: &Path, conf: &ConfList, att: &Attachment) -> PathBuf {
    cache_dir.join(format!("{}-{}-{}", conf.name, att.container_id, att.ifname))
}

/// Runs ADD through the list; returns the final result (also cached in
/// `cache_dir`). A failure runs DEL for what was added.
pub async fn add(conf: &ConfList, att: &Attachment, cache_dir: &Path) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for (i, plugin) in conf.plugins.iter().enumerate() {
        match invoke("ADD", conf, plugin, att, prev.as_ref()).await {
            Ok(r) => prev = Some(r),
            Err(e) => {
                for p in conf.plugins[..i].iter().rev() {
                    let _ = invoke("DEL", conf, p, att, prev.as_ref()).await;
                }
                return Err(e);
            }
        }
    }
    let result = prev.unwrap_or(Value::Null);
    std::fs::create_dir_all(cache_dir).map_err(io_err(format!("creating {}", cache_dir.display())))?;
    let path = cache_file(cache_dir, conf, att);
    std::fs::write(&path, serde_json::to_vec(&result).expect("JSON values serialize"))
        .map_err(io_err(format!("writing {}", path.display())))?;
    Ok(result)
}

/// Runs DEL through the list in reverse, with the cached ADD result; every
/// plugin is tried, and the first failure is returned.
pub async fn del(conf: &ConfList, att: &Attachment, cache_dir: &Path) -> Result<()> {
    let path = cache_file(cache_dir, conf, att);
    let cached: Option<Value> = std::fs::read(&path).ok().and_then(|d| serde_json::from_slice(&d).ok());
    let mut first_err = None;
    for plugin in conf.plugins.iter().rev() {
        if let Err(e) = invoke("DEL", conf, plugin, att, cached.as_ref()).await {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
    }
}

/// The first IPv4 address of a CNI result.
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result.get("ips")?.as_array()?.iter().find_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_lists_and_single_plugin_files_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("10-a.conflist"), r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#).unwrap();
        std::fs::write(d.path().join("20-b.conf"), r#"{"cniVersion":"0.4.0","name":"b","type":"ptp"}"#).unwrap();
        std::fs::write(d.path().join("30-bad.conflist"), "{").unwrap();
        let a = load(d.path(), "a").unwrap();
        assert_eq!(a.plugins.len(), 2);
        let b = load(d.path(), "b").unwrap();
        assert_eq!((b.cni_version.as_str(), b.plugins[0]["type"].as_str()), ("0.4.0", Some("ptp")));
        let e = load(d.path(), "c").unwrap_err().to_string();
        assert!(e.contains("no CNI network named \"c\""), "{e}");
    }

    #[test]
    fn runtime_config_goes_only_to_plugins_with_the_capability() {
        let conf = ConfList { name: "n".into(), cni_version: "1.0.0".into(), plugins: vec![], source: PathBuf::new() };
        let att = Attachment {
            container_id: "c".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            cni_path: vec![],
            ports: vec![PortMapping { host_port: 8080, container_port: 80 }],
            args: vec![],
        };
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let input = plugin_input(&conf, portmap.as_object().unwrap(), &att, Some(&json!({"ips": []})));
        assert_eq!(
            input["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        assert_eq!(input["name"], "n");
        assert!(input.get("prevResult").is_some());
        let bridge = json!({"type": "bridge"});
        assert!(plugin_input(&conf, bridge.as_object().unwrap(), &att, None).get("runtimeConfig").is_none());
    }

    #[test]
    fn reads_the_address_of_a_result() {
        let r = json!({"ips": [{"address": "10.88.0.2/16", "gateway": "10.88.0.1", "interface": 2}]});
        assert_eq!(result_ipv4(&r), Some(Ipv4Addr::new(10, 88, 0, 2)));
    }
}
