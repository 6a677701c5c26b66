//! Nomad's agent configuration files (HCL), loaded from files and
//! directories in order and merged (later values win). Unknown keys produce
//! warnings naming file and line; type errors are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hclspan::{Block, Decoder, HclError, Scope, Source};
use crate::structs::ClientHostVolume;

/// A loading failure (unreadable file or invalid HCL).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or directory could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HCL is malformed or has a wrongly typed value.
    #[error(transparent)]
    Hcl(#[from] HclError),
}

/// The merged agent configuration.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// Node name.
    pub name: Option<String>,
    /// Datacenter.
    pub datacenter: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// State and allocation directory.
    pub data_dir: Option<PathBuf>,
    /// Address the listeners bind to.
    pub bind_addr: Option<String>,
    /// Log level.
    pub log_level: Option<String>,
    /// HTTP port.
    pub http_port: Option<u16>,
    /// RPC port.
    pub rpc_port: Option<u16>,
    /// Serf port (reported only; berth needs no gossip).
    pub serf_port: Option<u16>,
    /// Advertised HTTP address.
    pub advertise_http: Option<String>,
    /// Advertised RPC address.
    pub advertise_rpc: Option<String>,
    /// `server { enabled }`.
    pub server_enabled: Option<bool>,
    /// `server { bootstrap_expect }`.
    pub bootstrap_expect: Option<u32>,
    /// `server { heartbeat_grace }` in nanoseconds.
    pub heartbeat_grace: Option<i64>,
    /// `server { min_heartbeat_ttl }` in nanoseconds.
    pub min_heartbeat_ttl: Option<i64>,
    /// `client { enabled }`.
    pub client_enabled: Option<bool>,
    /// `client { servers }`.
    pub servers: Vec<String>,
    /// `client { node_class }`.
    pub node_class: Option<String>,
    /// `client { meta }`.
    pub meta: BTreeMap<String, String>,
    /// `client { host_volume "x" { path read_only } }`.
    pub host_volumes: BTreeMap<String, ClientHostVolume>,
    /// `client { bridge_network_name }`.
    pub bridge_network_name: Option<String>,
    /// `client { bridge_network_subnet }`.
    pub bridge_network_subnet: Option<String>,
    /// `client { cni_path }` (`:`-separated directories).
    pub cni_path: Option<String>,
    /// `client { cni_config_dir }`.
    pub cni_config_dir: Option<String>,
    /// `client { csi_plugin_probe_interval }` in nanoseconds.
    pub csi_plugin_probe_interval: Option<i64>,
    /// `server { csi_claim_release_timeout }` in nanoseconds.
    pub csi_claim_release_timeout: Option<i64>,
    /// `telemetry { publish_allocation_metrics }`.
    pub publish_allocation_metrics: Option<bool>,
    /// `plugin "name" { config { ... } }`, as JSON.
    pub plugins: BTreeMap<String, serde_json::Value>,
    /// Warnings about unknown keys.
    pub warnings: Vec<String>,
}

fn port_block(b: &mut Block<'_>, warnings: &mut Vec<String>) -> Result<[Option<u16>; 3], HclError> {
    b.no_labels()?;
    let ports = [b.body.number("http")?, b.body.number("rpc")?, b.body.number("serf")?];
    warnings.extend(b.body.finish_lenient());
    Ok(ports)
}

fn advertise_block(b: &mut Block<'_>, warnings: &mut Vec<String>) -> Result<[Option<String>; 2], HclError> {
    b.no_labels()?;
    let a = [b.body.string("http")?, b.body.string("rpc")?];
    b.body.string("serf")?;
    warnings.extend(b.body.finish_lenient());
    Ok(a)
}

impl AgentConfig {
    /// Loads each path (a file, or a directory's `*.hcl` files in name order).
    pub fn load(paths: &[PathBuf]) -> Result<AgentConfig, ConfigError> {
        let mut cfg = AgentConfig::default();
        for path in paths {
            let read_err = |source| ConfigError::Read { path: path.display().to_string(), source };
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(read_err)?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().map(|e| e == "hcl").unwrap_or(false))
                    .collect();
                files.sort();
                for f in files {
                    cfg.merge_file(&f)?;
                }
            } else {
                cfg.merge_file(path)?;
            }
        }
        Ok(cfg)
    }

    /// Parses one file and merges it into `self`.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        self.merge_str(&path.display().to_string(), &text)
    }

    /// Parses configuration text and merges it into `self`.
    pub fn merge_str(&mut self, name: &str, text: &str) -> Result<(), ConfigError> {
        let source = Source::parse(name, text)?;
        let scope = Scope::new();
        let mut root = Decoder::root(&source, &scope);
        let w = &mut self.warnings;
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value {
                    $field = Some(v);
                }
            };
        }
        set!(self.name, root.string("name")?);
        set!(self.datacenter, root.string("datacenter")?);
        set!(self.region, root.string("region")?);
        set!(self.data_dir, root.string("data_dir")?.map(PathBuf::from));
        set!(self.bind_addr, root.string("bind_addr")?);
        set!(self.log_level, root.string("log_level")?);
        if let Some(mut b) = root.block("ports")? {
            let [http, rpc, serf] = port_block(&mut b, w)?;
            set!(self.http_port, http);
            set!(self.rpc_port, rpc);
            set!(self.serf_port, serf);
        }
        if let Some(mut b) = root.block("advertise")? {
            let [http, rpc] = advertise_block(&mut b, w)?;
            set!(self.advertise_http, http);
            set!(self.advertise_rpc, rpc);
        }
        if let Some(mut b) = root.block("server")? {
            b.no_labels()?;
            set!(self.server_enabled, b.body.bool("enabled")?);
            set!(self.bootstrap_expect, b.body.number("bootstrap_expect")?);
            set!(self.heartbeat_grace, b.body.duration("heartbeat_grace")?);
            set!(self.csi_claim_release_timeout, b.body.duration("csi_claim_release_timeout")?);
            set!(self.min_heartbeat_ttl, b.body.duration("min_heartbeat_ttl")?);
            w.extend(b.body.finish_lenient());
        }
        if let Some(mut b) = root.block("client")? {
            b.no_labels()?;
            set!(self.client_enabled, b.body.bool("enabled")?);
            if let Some(servers) = b.body.strings("servers")? {
                self.servers = servers;
            }
            set!(self.node_class, b.body.string("node_class")?);
            set!(self.bridge_network_name, b.body.string("bridge_network_name")?);
            set!(self.bridge_network_subnet, b.body.string("bridge_network_subnet")?);
            set!(self.cni_path, b.body.string("cni_path")?);
            set!(self.cni_config_dir, b.body.string("cni_config_dir")?);
            set!(self.csi_plugin_probe_interval, b.body.duration("csi_plugin_probe_interval")?);
            if let Some(meta) = b.body.string_map("meta")? {
                self.meta.extend(meta);
            }
            for mut hv in b.body.blocks("host_volume") {
                let name = hv.label()?;
                let path = hv
                    .body
                    .string("path")?
                    .ok_or_else(|| hv.error(format!("host_volume {name:?}: \"path\" is required")))?;
                let read_only = hv.body.bool("read_only")?.unwrap_or(false);
                w.extend(hv.body.finish_lenient());
                self.host_volumes.insert(name.clone(), ClientHostVolume { name, path, read_only });
            }
            w.extend(b.body.finish_lenient());
        }
        if let Some(mut b) = root.block("telemetry")? {
            b.no_labels()?;
            set!(self.publish_allocation_metrics, b.body.bool("publish_allocation_metrics")?);
            // Metrics are always kept and served at /v1/metrics; these
            // only choose sinks and formats, which berth has one of each.
            b.body.skip(&["collection_interval", "prometheus_metrics", "publish_node_metrics", "disable_hostname"]);
            w.extend(b.body.finish_lenient());
        }
        for mut p in root.blocks("plugin") {
            let name = p.label()?;
            let config = match p.body.block("config")? {
                Some(mut c) => serde_json::Value::Object(c.body.free_form()?.into_iter().collect()),
                None => serde_json::Value::Object(Default::default()),
            };
            w.extend(p.body.finish_lenient());
            self.plugins.insert(name, config);
        }
        w.extend(root.finish_lenient());
        Ok(())
    }

    /// `plugin "raw_exec" { config { enabled = true } }`.
    pub fn raw_exec_enabled(&self) -> Option<bool> {
        self.plugins.get("raw_exec").and_then(|c| c.get("enabled")).and_then(|v| v.as_bool())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = r#"
data_dir  = "/tmp/client1"
name      = "client1"
datacenter = "dc1"
log_level = "INFO"
ports { http = 5656 }
client {
  enabled = true
  servers = ["127.0.0.1:4647"]
  meta { rack = "r1" }
  host_volume "mysql-vol" {
    path      = "/opt/mysql/data"
    read_only = false
  }
}
plugin "raw_exec" {
  config { enabled = true }
}
plugin "docker" {
  config {
    allow_privileged = true
    volumes { enabled = true }
  }
}
telemetry {
  collection_interval = "1s"
  publish_allocation_metrics = true
  statsd_address = "127.0.0.1:8125"
}
"#;

    #[test]
    fn parses_a_workshop_client_config() {
        let mut c = AgentConfig::default();
        c.merge_str("client1.hcl", CLIENT).unwrap();
        assert_eq!(c.name.as_deref(), Some("client1"));
        assert_eq!(c.http_port, Some(5656));
        assert_eq!(c.client_enabled, Some(true));
        assert_eq!(c.servers, vec!["127.0.0.1:4647"]);
        assert_eq!(c.host_volumes["mysql-vol"].path, "/opt/mysql/data");
        assert_eq!(c.raw_exec_enabled(), Some(true));
        assert_eq!(c.publish_allocation_metrics, Some(true));
        assert_eq!(c.plugins["docker"]["allow_privileged"], serde_json::json!(true));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("client1.hcl:28") && c.warnings[0].contains("statsd_address"),
            "{}",
            c.warnings[0]
        );
    }

    #[test]
    fn type_errors_name_file_and_line() {
        let mut c = AgentConfig::default();
        let e = c.merge_str("bad.hcl", "ports {\n  http = \"x\"\n}\n").unwrap_err();
        assert!(e.to_string().starts_with("bad.hcl:2:"), "{e}");
        let e = c.merge_str("broken.hcl", "client {\n  enabled = \n").unwrap_err();
        assert!(e.to_string().starts_with("broken.hcl:"), "{e}");
    }
}
