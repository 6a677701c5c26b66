//! CSI plugins built into the agent. `plugin "synology" { config { ... } }`
//! in the agent configuration runs the Synology provisioner (Identity,
//! Controller and the iSCSI Node service) inside the agent process, on a
//! socket under `<data_dir>/client/csi/builtin/<id>/`, supervised and
//! reported like a plugin task's, so volume specs name its `id` (default
//! `synology`) and no plugin job is needed.
//!
//! Config keys: `driver_config_file` (democratic-csi's `synology-iscsi`
//! YAML, required), `id`, `initiator` (`auto`, `open-iscsi`,
//! `userspace`), `initiator_name` (the userspace initiator's IQN, e.g. for
//! the NAS's access list), `login_backoff` (the pause after DSM refuses a
//! login, doubling per refusal; default 150s). The file is read and checked when the agent starts, so a
//! bad file stops the agent with an error naming it; an unreachable NAS
//! only makes the plugin unhealthy (its probe says why).

use std::path::PathBuf;
use std::sync::Arc;

use csi::iscsi::{Initiator, IscsiNode};
use synology::config::DriverConfig;
use synology::provisioner::Provisioner;
use tokio_util::sync::CancellationToken;

use super::manager::{CsiManager, PluginDirs};
use crate::structs::CsiPluginConfig;

/// The plugin ID a built-in Synology plugin has unless configured.
pub const DEFAULT_SYNOLOGY_ID: &str = "synology";

/// `plugin "synology" { config { ... } }`, checked.
#[derive(Debug, Clone)]
pub struct SynologyPlugin {
    /// The plugin ID volumes name.
    pub id: String,
    /// The democratic-csi YAML file.
    pub driver_config_file: PathBuf,
    /// The parsed file.
    pub driver: DriverConfig,
    /// Which iSCSI initiator attaches volumes on this node.
    pub initiator: Initiator,
    /// The userspace initiator's name, when set.
    pub initiator_name: Option<String>,
    /// The pause after a refused login, when set.
    pub login_backoff: Option<std::time::Duration>,
}

impl SynologyPlugin {
    /// Reads the plugin block's `config` (JSON from the agent config); the
    /// error names the key or the driver file and what is wrong.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let prefix = "plugin \"synology\"";
        let object = config.as_object().ok_or_else(|| format!("{prefix}: config must be a block"))?;
        let text = |key: &str| -> Result<Option<String>, String> {
            match object.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("{prefix}: config.{key} must be a string, got {other}")),
            }
        };
        const KNOWN: [&str; 5] = ["id", "driver_config_file", "initiator", "initiator_name", "login_backoff"];
        if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("{prefix}: config.{unknown} is not a setting (known: {})", KNOWN.join(", ")));
        }
        let file = text("driver_config_file")?
            .map(PathBuf::from)
            .ok_or_else(|| format!("{prefix}: config.driver_config_file is required (democratic-csi's YAML)"))?;
        let yaml = std::fs::read_to_string(&file).map_err(|e| format!("{prefix}: {}: {e}", file.display()))?;
        let driver = DriverConfig::from_yaml(&yaml).map_err(|e| format!("{prefix}: {}: {e}", file.display()))?;
        let initiator = match text("initiator")? {
            None => Initiator::Auto,
            Some(value) => value.parse().map_err(|e| format!("{prefix}: config.initiator: {e}"))?,
        };
        let id = text("id")?.unwrap_or_else(|| DEFAULT_SYNOLOGY_ID.to_owned());
        if id.is_empty() {
            return Err(format!("{prefix}: config.id must not be empty"));
        }
        let login_backoff = match text("login_backoff")? {
            None => None,
            Some(value) => {
                let nanos =
                    crate::util::parse_duration(&value).map_err(|e| format!("{prefix}: config.login_backoff: {e}"))?;
                Some(std::time::Duration::from_nanos(
                    u64::try_from(nanos).map_err(|_| format!("{prefix}: config.login_backoff must not be negative"))?,
                ))
            }
        };
        let initiator_name = text("initiator_name")?;
        Ok(Self { id, driver_config_file: file, driver, initiator, initiator_name, login_backoff })
    }

    /// Starts serving and registers the plugin with `manager`. It runs for
    /// the life of the agent process, so volumes stay mountable while the
    /// agent stops the allocations that use them.
    pub fn start(&self, manager: Arc<CsiManager>, node_id: &str) -> Result<(), String> {
        let file = self.driver_config_file.display();
        let mut dsm_config =
            self.driver.dsm_config(|key| std::env::var(key).ok()).map_err(|e| format!("{file}: {e}"))?;
        if let Some(backoff) = self.login_backoff {
            dsm_config.login_backoff = backoff;
        }
        let dsm = synology::dsm::DsmClient::new(dsm_config).map_err(|e| format!("{file}: {e}"))?;
        let provisioner = Provisioner::new(&self.driver, dsm);
        let base = manager.root().join("builtin").join(&self.id);
        let attacher = self.initiator.attacher(&base.join("node"), self.initiator_name.clone());
        let node = IscsiNode::new(node_id, &base.join("node"), attacher)
            .map_err(|e| format!("built-in plugin {}: {e}", self.id))?;
        let cfg = CsiPluginConfig {
            id: self.id.clone(),
            plugin_type: "monolith".into(),
            health_timeout: 30_000_000_000,
            ..Default::default()
        };
        let dirs = PluginDirs { socket_dir: base.clone(), host_root: manager.root().join("monolith").join(&self.id) };
        let endpoint = format!("unix://{}", base.join("csi.sock").display());
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) =
                synology::provisioner::serve(provisioner, Some(node), &endpoint, std::future::pending()).await
            {
                tracing::error!(plugin = %id, error = %e, "built-in Synology plugin stopped");
            }
        });
        let plugin_root = dirs.host_root.clone();
        tracing::info!(plugin = %self.id, initiator = ?self.initiator.resolve(), "starting the built-in Synology plugin");
        tokio::spawn(manager.supervise(String::new(), cfg, dirs, plugin_root, CancellationToken::new()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_agent_config_starts_the_plugin_from_the_example_yaml() {
        let mut config = crate::agent::config::AgentConfig::default();
        config.merge_str("agent-synology.hcl", include_str!("../../../../examples/agent-synology.hcl")).unwrap();
        let mut block = config.plugins["synology"].clone();
        assert_eq!(block["driver_config_file"], "examples/synology-iscsi.yaml");
        let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/synology-iscsi.yaml");
        block["driver_config_file"] = serde_json::json!(yaml);
        let plugin = SynologyPlugin::from_config(&block).unwrap();
        assert_eq!((plugin.id.as_str(), plugin.initiator), (DEFAULT_SYNOLOGY_ID, Initiator::Auto));
        assert_eq!(plugin.driver.iscsi.target_portal, "127.0.0.1:3260");
    }

    #[test]
    fn config_errors_name_the_key_or_the_file() {
        let err = SynologyPlugin::from_config(&serde_json::json!({})).unwrap_err();
        assert!(err.contains("config.driver_config_file is required"), "{err}");
        let err = SynologyPlugin::from_config(&serde_json::json!({"driver_config": "x"})).unwrap_err();
        assert!(err.contains("config.driver_config is not a setting"), "{err}");
        let err =
            SynologyPlugin::from_config(&serde_json::json!({"driver_config_file": "/nonexistent/s.yaml"})).unwrap_err();
        assert!(err.contains("/nonexistent/s.yaml"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synology-iscsi.yaml");
        std::fs::write(&file, "driver: synology-iscsi\nhttpConnection:\n  host: nas\n  bogus: 1\n").unwrap();
        let err = SynologyPlugin::from_config(&serde_json::json!({"driver_config_file": file})).unwrap_err();
        assert!(err.contains("synology-iscsi.yaml") && err.contains("bogus") && err.contains("line"), "{err}");
        let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/synology-iscsi.yaml");
        let err = SynologyPlugin::from_config(&serde_json::json!({"driver_config_file": good, "initiator": "kernel"}))
            .unwrap_err();
        assert!(err.contains("config.initiator") && err.contains("\"kernel\""), "{err}");
    }
}
