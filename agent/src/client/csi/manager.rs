//! The node's CSI plugin registry: one entry per plugin ID, filled by the
//! supervisor of the plugin task that serves it (wait for the socket,
//! fingerprint, probe periodically), read by the volume hook and by plugin
//! calls, and reported to the servers in the node's registration.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi::v1::{GetPluginInfoRequest, NodeGetInfoRequest};
use csi::{Capabilities, ClientConfig, CsiClient};
use tokio_util::sync::CancellationToken;

use crate::client::hook::HookError;
use crate::structs::{CsiControllerInfo, CsiInfo, CsiNodeInfo, CsiPluginConfig, CsiTopology, Node};
use crate::util::now_rfc3339;

/// One plugin instance on this node.
#[derive(Clone)]
pub struct PluginEntry {
    /// `controller`, `node` or `monolith`.
    pub plugin_type: String,
    /// The gRPC client on its socket.
    pub client: CsiClient,
    /// `<data_dir>/client/csi/<type>/<plugin-id>` on the host.
    pub host_root: PathBuf,
    /// The same directory as the plugin sees it (its
    /// `stage_publish_base_dir` in a container, the host path otherwise).
    pub plugin_root: PathBuf,
    /// What it offers.
    pub caps: Capabilities,
    /// What the servers are told.
    pub info: CsiInfo,
}

impl PluginEntry {
    /// The path the plugin sees for a host path under `host_root`.
    pub fn plugin_path(&self, host: &Path) -> PathBuf {
        match host.strip_prefix(&self.host_root) {
            Ok(rel) => self.plugin_root.join(rel),
            Err(_) => host.to_path_buf(),
        }
    }

    fn serves_controller(&self) -> bool {
        matches!(self.plugin_type.as_str(), "controller" | "monolith") && self.caps.controller_service
    }

    fn serves_node(&self) -> bool {
        matches!(self.plugin_type.as_str(), "node" | "monolith") && self.caps.node_service
    }
}

/// Where a plugin task's directories are.
pub struct PluginDirs {
    /// `<data_dir>/client/csi/plugins/<alloc-id>`: holds `csi.sock`.
    pub socket_dir: PathBuf,
    /// `<data_dir>/client/csi/<type>/<plugin-id>`: staging and publish targets.
    pub host_root: PathBuf,
}

/// The registry.
pub struct CsiManager {
    root: PathBuf,
    plugins: parking_lot::Mutex<BTreeMap<String, PluginEntry>>,
    changed: tokio::sync::Notify,
    probe_interval: Duration,
    volume_locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CsiManager {
    /// A registry under `<data_dir>/client/csi`, probing plugins every
    /// `probe_interval`.
    pub fn new(root: PathBuf, probe_interval: Duration) -> Self {
        CsiManager {
            root,
            plugins: Default::default(),
            changed: tokio::sync::Notify::new(),
            probe_interval,
            volume_locks: Default::default(),
        }
    }

    /// `<data_dir>/client/csi`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `<data_dir>/client/csi` a shared mount point (binding it onto
    /// itself first), so that what a containerised plugin mounts under its
    /// `rshared` binds reaches the host and the other tasks, as kubelet
    /// does for its plugin directories. Done once, for the first plugin
    /// task of a driver with filesystem isolation.
    pub fn share_root(&self) -> Result<(), HookError> {
        use nix::mount::{mount, MsFlags};
        let root = self.root.as_path();
        std::fs::create_dir_all(root).map_err(HookError::io(format!("creating {}", root.display())))?;
        if csi::mount::mounted_source(root).is_none() {
            mount(Some(root), root, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| HookError::io(format!("bind-mounting {} onto itself", root.display()))(e.into()))?;
        }
        mount(None::<&str>, root, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| HookError::io(format!("making {} a shared mount", root.display()))(e.into()))
    }

    /// The directories of a plugin task.
    pub fn plugin_dirs(&self, alloc_id: &str, cfg: &CsiPluginConfig) -> PluginDirs {
        PluginDirs {
            socket_dir: self.root.join("plugins").join(alloc_id),
            host_root: self.root.join(&cfg.plugin_type).join(&cfg.id),
        }
    }

    /// Resolves when a plugin's registration changed (the node re-registers).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Puts this node's plugins into its registration.
    pub fn fill_node(&self, node: &mut Node) {
        node.csi_controller_plugins.clear();
        node.csi_node_plugins.clear();
        for (id, p) in self.plugins.lock().iter() {
            if p.serves_controller() {
                let mut info = p.info.clone();
                info.node_info = None;
                node.csi_controller_plugins.insert(id.clone(), info);
            }
            if p.serves_node() {
                let mut info = p.info.clone();
                info.controller_info = None;
                node.csi_node_plugins.insert(id.clone(), info);
            }
        }
    }

    /// The healthy instance of `plugin_id`, if any.
    pub fn healthy(&self, plugin_id: &str) -> Option<PluginEntry> {
        self.plugins.lock().get(plugin_id).filter(|p| p.info.healthy).cloned()
    }

    /// Waits up to `timeout` for `plugin_id` to be healthy here.
    pub async fn wait_healthy(&self, plugin_id: &str, timeout: Duration) -> Result<PluginEntry, HookError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.healthy(plugin_id) {
                return Ok(p);
            }
            if tokio::time::Instant::now() >= deadline {
                let why = match self.plugins.lock().get(plugin_id) {
                    Some(p) => {
                        format!("CSI plugin {plugin_id:?} is unhealthy on this node: {}", p.info.health_description)
                    }
                    None => format!("CSI plugin {plugin_id:?} is not running on this node"),
                };
                return Err(HookError::Unavailable(why));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A lock serialising mount work on one volume on this node.
    pub fn volume_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.volume_locks.lock().entry(key.to_string()).or_default().clone()
    }

    fn update(&self, plugin_id: &str, f: impl FnOnce(&mut PluginEntry)) {
        let mut plugins = self.plugins.lock();
        if let Some(p) = plugins.get_mut(plugin_id) {
            let before = (p.info.healthy, p.info.health_description.clone());
            f(p);
            if before != (p.info.healthy, p.info.health_description.clone()) {
                p.info.update_time = now_rfc3339();
                drop(plugins);
                self.changed.notify_one();
            }
        }
    }

    /// Marks the instance of `alloc_id` unhealthy: its task stopped. It
    /// stays listed (so `plugin status` and placement failures say why)
    /// until another allocation serves the plugin.
    pub fn stopped(&self, plugin_id: &str, alloc_id: &str) {
        self.update(plugin_id, |p| {
            if p.info.alloc_id == alloc_id {
                p.info.healthy = false;
                p.info.health_description = format!("plugin allocation {} stopped", crate::util::short_id(alloc_id));
            }
        });
    }

    /// Supervises a plugin task until `cancel`: waits for its socket and a
    /// healthy probe (reporting it unhealthy after `health_timeout`),
    /// fingerprints it, then probes it every probe interval.
    pub async fn supervise(
        self: Arc<Self>,
        alloc_id: String,
        cfg: CsiPluginConfig,
        dirs: PluginDirs,
        plugin_root: PathBuf,
        cancel: CancellationToken,
    ) {
        let socket = dirs.socket_dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let client = match CsiClient::lazy(&endpoint, ClientConfig::default()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(plugin = %cfg.id, error = %e, "CSI plugin socket");
                return;
            }
        };
        let health_timeout = match cfg.health_timeout {
            n if n > 0 => Duration::from_nanos(n as u64),
            _ => Duration::from_secs(30),
        };
        let started = tokio::time::Instant::now();
        let mut fingerprinted = false;
        let mut last_error = String::from("socket not created yet");
        let make_entry = |caps, info| PluginEntry {
            plugin_type: cfg.plugin_type.clone(),
            client: client.clone(),
            host_root: dirs.host_root.clone(),
            plugin_root: plugin_root.clone(),
            caps,
            info,
        };
        loop {
            // `answered`: the plugin itself replied (so it can be
            // fingerprinted and listed, healthy or not).
            let (healthy, answered) = if socket.exists() {
                match client.probe_ready().await {
                    Ok(true) => (Ok(()), true),
                    Ok(false) => (Err("probe: plugin not ready".to_string()), true),
                    Err(e) => (Err(e.to_string()), e.code().is_some()),
                }
            } else {
                (Err(format!("waiting for {}", socket.display())), false)
            };
            if let (Err(why), true, false) = (&healthy, answered, fingerprinted) {
                // Up but not ready (its backend refuses it, say): listed as
                // unhealthy with the reason, so status and placement say why.
                if let Ok((caps, mut info)) = fingerprint(&client, &cfg, &alloc_id).await {
                    fingerprinted = true;
                    info.healthy = false;
                    info.health_description = format!("probe failed: {why}");
                    tracing::warn!(plugin = %cfg.id, error = %why, "CSI plugin is up but not healthy");
                    let entry = make_entry(caps, info);
                    self.plugins.lock().insert(cfg.id.clone(), entry);
                    self.changed.notify_one();
                }
            }
            match healthy {
                Ok(()) if !fingerprinted => match fingerprint(&client, &cfg, &alloc_id).await {
                    Ok((caps, info)) => {
                        fingerprinted = true;
                        tracing::info!(plugin = %cfg.id, provider = %info.provider, "CSI plugin became healthy");
                        let entry = make_entry(caps, info);
                        self.plugins.lock().insert(cfg.id.clone(), entry);
                        self.changed.notify_one();
                    }
                    Err(e) => last_error = e,
                },
                Ok(()) => self.update(&cfg.id, |p| {
                    if p.info.alloc_id == alloc_id {
                        p.info.healthy = true;
                        p.info.health_description = "healthy".into();
                    }
                }),
                Err(e) => {
                    if fingerprinted {
                        tracing::warn!(plugin = %cfg.id, error = %e, "CSI plugin probe failed");
                        self.update(&cfg.id, |p| {
                            if p.info.alloc_id == alloc_id {
                                p.info.healthy = false;
                                p.info.health_description = format!("probe failed: {e}");
                            }
                        });
                    }
                    last_error = e;
                }
            }
            if !fingerprinted && started.elapsed() > health_timeout {
                tracing::warn!(plugin = %cfg.id, error = %last_error, "CSI plugin not healthy within its health_timeout");
            }
            let pause = if fingerprinted { self.probe_interval } else { Duration::from_millis(200) };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// What the servers need to know of a plugin: info, capabilities and,
/// for node plugins, `NodeGetInfo`.
async fn fingerprint(
    client: &CsiClient,
    cfg: &CsiPluginConfig,
    alloc_id: &str,
) -> Result<(Capabilities, CsiInfo), String> {
    let info = client.get_plugin_info(GetPluginInfoRequest {}).await.map_err(|e| e.to_string())?;
    let caps = client.capabilities().await.map_err(|e| e.to_string())?;
    let mut out = CsiInfo {
        plugin_id: cfg.id.clone(),
        provider: info.name,
        provider_version: info.vendor_version,
        alloc_id: alloc_id.to_string(),
        healthy: true,
        health_description: "healthy".into(),
        update_time: now_rfc3339(),
        requires_controller_plugin: caps.publish_unpublish,
        requires_topologies: caps.volume_accessibility_constraints,
        controller_info: caps.controller_service.then_some(CsiControllerInfo {
            supports_create_delete: caps.create_delete_volume,
            supports_attach_detach: caps.publish_unpublish,
            supports_list_volumes: caps.list_volumes,
            supports_get_capacity: caps.get_capacity,
            supports_create_delete_snapshot: caps.snapshots,
            supports_expand: caps.expand,
        }),
        node_info: None,
    };
    if caps.node_service && matches!(cfg.plugin_type.as_str(), "node" | "monolith") {
        let node = client.node_get_info(NodeGetInfoRequest {}).await.map_err(|e| e.to_string())?;
        out.node_info = Some(CsiNodeInfo {
            id: node.node_id,
            max_volumes: node.max_volumes_per_node,
            accessible_topology: node
                .accessible_topology
                .map(|t| CsiTopology { segments: t.segments.into_iter().collect() }),
            requires_node_stage_volume: caps.stage_unstage,
            supports_expand: caps.node_expand,
            supports_stats: caps.node_get_volume_stats,
        });
    }
    Ok((caps, out))
}
