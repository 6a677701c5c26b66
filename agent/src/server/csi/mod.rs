//! CSI on the server: volume create/register/expand/delete/deregister/
//! detach and snapshots (each plugin call made on a node that runs the
//! plugin, through [`PluginCalls`]), the claim grant a client asks for
//! before it mounts a volume, the release of claims stranded on nodes that
//! went down, and the cluster-wide plugin view.
//!
//! Claims are derived from allocations (see `state::Tables::volume_claimers`):
//! an allocation holds its volumes from placement until its client reports
//! them unpublished, so a claim never outlives what holds it, and
//! `volume status` can always say which allocation holds each one.

pub mod claims;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::state::{Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{
    access_mode, attachment_mode, node_status, Allocation, CsiInfo, CsiPlugin, CsiVolume, Node, VolumeClaim,
};
use crate::util::now_nanos;
use crate::wire::csi::{
    ClaimGrant, CsiSnapshot, GrantedVolume, PluginCall, PluginCalls, PluginCode, PluginError, PluginReply, Secrets,
};

/// A volume to detach from a node in its controller, once no allocation
/// there uses it any more.
#[derive(Debug, Clone)]
pub struct ControllerDetach {
    namespace: String,
    volume_id: String,
    node_id: String,
}

/// True when the plugin's controller attaches volumes to nodes
/// (`PUBLISH_UNPUBLISH_VOLUME`).
fn attaches(snap: &Tables, plugin_id: &str) -> bool {
    snap.nodes().any(|n| {
        n.csi_controller_plugins
            .get(plugin_id)
            .and_then(|i| i.controller_info.as_ref())
            .is_some_and(|c| c.supports_attach_detach)
    })
}

/// The node's ID as the plugin knows it (`NodeGetInfo`).
fn csi_node_id(snap: &Tables, node_id: &str, plugin_id: &str) -> Option<String> {
    snap.node(node_id)?.csi_node_plugins.get(plugin_id)?.node_info.as_ref().map(|n| n.id.clone())
}

/// A volume with its claims and plugin health, for `volume status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeView {
    /// The volume, secrets redacted.
    #[serde(flatten)]
    pub volume: CsiVolume,
    /// Who holds claims, and why each is still held.
    pub claims: Vec<VolumeClaim>,
    /// Allocation IDs reading.
    pub read_allocs: BTreeMap<String, Option<()>>,
    /// Allocation IDs writing.
    pub write_allocs: BTreeMap<String, Option<()>>,
    pub current_readers: usize,
    pub current_writers: usize,
    pub controller_required: bool,
    pub controllers_healthy: u64,
    pub controllers_expected: u64,
    pub nodes_healthy: u64,
    pub nodes_expected: u64,
    /// Why the volume cannot be scheduled now, when it cannot.
    pub schedulable_reason: String,
    /// The snapshot's index.
    #[serde(skip)]
    pub index: u64,
}

/// A plugin's reply that does not fit the call: a plugin error of its own.
fn unexpected_reply(call: &str) -> ServerError {
    ServerError::Plugin(PluginError::new(PluginCode::Internal, format!("{call}: unexpected reply")))
}

/// Checks what a submitted volume must satisfy, naming the field.
pub fn validate_volume(v: &CsiVolume) -> Result<(), ServerError> {
    let bad = |m: String| Err(ServerError::BadRequest(m));
    if v.id.is_empty() {
        return bad("volume: id is required".into());
    }
    if v.plugin_id.is_empty() {
        return bad(format!("volume {:?}: plugin_id is required", v.id));
    }
    if v.requested_capabilities.is_empty() {
        return bad(format!("volume {:?}: at least one capability block is required", v.id));
    }
    for c in &v.requested_capabilities {
        if !access_mode::ALL.contains(&c.access_mode.as_str()) {
            return bad(format!(
                "volume {:?}: capability access_mode {:?} is not one of {}",
                v.id,
                c.access_mode,
                access_mode::ALL.join(", ")
            ));
        }
        if !attachment_mode::ALL.contains(&c.attachment_mode.as_str()) {
            return bad(format!(
                "volume {:?}: capability attachment_mode {:?} is not one of {}",
                v.id,
                c.attachment_mode,
                attachment_mode::ALL.join(", ")
            ));
        }
    }
    if v.requested_capacity_max > 0 && v.requested_capacity_min > v.requested_capacity_max {
        return bad(format!(
            "volume {:?}: capacity_min ({}) is larger than capacity_max ({})",
            v.id, v.requested_capacity_min, v.requested_capacity_max
        ));
    }
    if !v.snapshot_id.is_empty() && !v.clone_id.is_empty() {
        return bad(format!("volume {:?}: snapshot_id and clone_id cannot both be set", v.id));
    }
    Ok(())
}

/// True when the plugin task of an allocation is of `plugin_id` and serves
/// as a controller (`controller` or `monolith`) or node (`node` or `monolith`).
fn runs_plugin(a: &Allocation, plugin_id: &str, controller: bool) -> bool {
    a.group().is_some_and(|tg| {
        tg.tasks.iter().filter_map(|t| t.csi_plugin_config.as_ref()).any(|p| {
            p.id == plugin_id
                && (p.plugin_type == "monolith" || p.plugin_type == if controller { "controller" } else { "node" })
        })
    })
}

/// Every plugin known to the cluster, aggregated from the nodes' reports
/// and the plugin jobs' live allocations.
pub fn plugins(snap: &Tables) -> Vec<CsiPlugin> {
    let mut out: BTreeMap<String, CsiPlugin> = BTreeMap::new();
    for node in snap.nodes() {
        let up = node.status != node_status::DOWN;
        for (controller, infos) in [(true, &node.csi_controller_plugins), (false, &node.csi_node_plugins)] {
            for (id, info) in infos {
                let p = out.entry(id.clone()).or_insert_with(|| CsiPlugin { id: id.clone(), ..Default::default() });
                let mut info = info.clone();
                if !up {
                    info.healthy = false;
                    info.health_description = format!("node {} is down", node.name);
                }
                if p.provider.is_empty() {
                    p.provider = info.provider.clone();
                    p.version = info.provider_version.clone();
                }
                p.controller_required |= info.requires_controller_plugin;
                if controller {
                    p.controllers_healthy += u64::from(info.healthy);
                    p.controllers.insert(node.id.clone(), info);
                } else {
                    p.nodes_healthy += u64::from(info.healthy);
                    p.nodes.insert(node.id.clone(), info);
                }
                p.modify_index = p.modify_index.max(node.modify_index);
                if p.create_index == 0 || node.create_index < p.create_index {
                    p.create_index = node.create_index;
                }
            }
        }
    }
    for a in snap.allocs().filter(|a| !a.is_terminal()) {
        let Some(tg) = a.group() else { continue };
        for cfg in tg.tasks.iter().filter_map(|t| t.csi_plugin_config.as_ref()) {
            let p = out.entry(cfg.id.clone()).or_insert_with(|| CsiPlugin { id: cfg.id.clone(), ..Default::default() });
            if runs_plugin(a, &cfg.id, true) {
                p.controllers_expected += 1;
            }
            if runs_plugin(a, &cfg.id, false) {
                p.nodes_expected += 1;
            }
        }
    }
    out.into_values().collect()
}

/// Why a volume cannot be scheduled anywhere now (`None` when it can).
fn unschedulable_reason(volume: &CsiVolume, plugin: Option<&CsiPlugin>) -> Option<String> {
    let Some(p) = plugin else {
        return Some(format!("CSI plugin {:?} is not running on any node", volume.plugin_id));
    };
    if p.nodes_healthy == 0 {
        let why: Vec<String> =
            p.nodes.values().map(|i| i.health_description.clone()).filter(|d| !d.is_empty()).collect();
        return Some(format!(
            "CSI plugin {:?} has no healthy node plugin{}",
            volume.plugin_id,
            if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
        ));
    }
    None
}

/// The status view of one volume; `plugins` is [`plugins`] of the same
/// snapshot (computed once by callers that show many volumes).
pub fn volume_view(snap: &Tables, plugins: &[CsiPlugin], volume: &CsiVolume) -> VolumeView {
    let claimers = snap.volume_claimers(&volume.namespace, &volume.id);
    let node_down = |id: &str| snap.node(id).map(|n| n.status == node_status::DOWN).unwrap_or(true);
    let claims = claims::claims_view(&volume.id, &claimers, node_down);
    let plugin = plugins.iter().find(|p| p.id == volume.plugin_id);
    let reason = unschedulable_reason(volume, plugin);
    let mut view = VolumeView {
        volume: volume.redacted(),
        read_allocs: BTreeMap::new(),
        write_allocs: BTreeMap::new(),
        current_readers: 0,
        current_writers: 0,
        controller_required: plugin.is_some_and(|p| p.controller_required),
        controllers_healthy: plugin.map(|p| p.controllers_healthy).unwrap_or(0),
        controllers_expected: plugin.map(|p| p.controllers_expected).unwrap_or(0),
        nodes_healthy: plugin.map(|p| p.nodes_healthy).unwrap_or(0),
        nodes_expected: plugin.map(|p| p.nodes_expected).unwrap_or(0),
        schedulable_reason: reason.clone().unwrap_or_default(),
        claims,
        index: snap.index,
    };
    view.volume.schedulable = reason.is_none();
    view.volume.provider = plugin.map(|p| p.provider.clone()).filter(|p| !p.is_empty()).unwrap_or(view.volume.provider);
    for c in &view.claims {
        match c.mode {
            crate::structs::ClaimMode::Read => {
                view.read_allocs.insert(c.alloc_id.clone(), None);
            }
            crate::structs::ClaimMode::Write => {
                view.write_allocs.insert(c.alloc_id.clone(), None);
            }
        }
    }
    view.current_readers = view.read_allocs.len();
    view.current_writers = view.write_allocs.len();
    view
}

impl Server {
    /// Hands the server the way to reach plugins on nodes (set once by the
    /// agent, after its client starts).
    pub fn set_plugin_calls(&self, calls: Arc<dyn PluginCalls>) {
        let _ = self.plugin_calls.set(calls);
    }

    /// A ready node whose controller for `plugin_id` is healthy and does
    /// what `supports` asks (sorted by node ID: the same controller is
    /// preferred, since many plugins handle one caller best).
    fn controller_node(
        snap: &Tables,
        plugin_id: &str,
        what: &str,
        supports: impl Fn(&CsiInfo) -> bool,
    ) -> Result<Arc<Node>, ServerError> {
        let mut seen = Vec::new();
        for node in snap.nodes() {
            let Some(info) = node.csi_controller_plugins.get(plugin_id) else { continue };
            if node.status == node_status::DOWN {
                seen.push(format!("node {} is down", node.name));
            } else if !info.healthy {
                seen.push(format!("unhealthy on node {}: {}", node.name, info.health_description));
            } else if !supports(info) {
                return Err(ServerError::BadRequest(format!("CSI plugin {plugin_id:?} does not support {what}")));
            } else {
                return Ok(Arc::clone(node));
            }
        }
        if seen.is_empty() {
            let known = snap.nodes().any(|n| n.csi_node_plugins.contains_key(plugin_id));
            return Err(ServerError::BadRequest(if known {
                format!("plugin_id: CSI plugin {plugin_id:?} has no controller, which {what} needs")
            } else {
                format!(
                    "plugin_id: no CSI plugin {plugin_id:?} is registered (run its plugin job first; \
                     `berth plugin status` lists plugins)"
                )
            }));
        }
        Err(ServerError::Plugin(PluginError::new(
            PluginCode::Unavailable,
            format!("CSI plugin {plugin_id:?} has no healthy controller: {}", seen.join("; ")),
        )))
    }

    async fn call_plugin(&self, node: &Node, plugin_id: &str, call: PluginCall) -> Result<PluginReply, ServerError> {
        let calls = self.plugin_calls.get().ok_or_else(|| {
            ServerError::Plugin(PluginError::new(
                PluginCode::Unavailable,
                "this server cannot reach CSI plugins (no client agent)",
            ))
        })?;
        calls
            .call(node, plugin_id, call)
            .await
            .map_err(|e| ServerError::Plugin(e.context(&format!("node {}", node.name))))
    }

    /// `volume create`: CreateVolume in the plugin, then register. With an
    /// existing ID and a larger `capacity_min`, expands the volume instead.
    pub async fn create_volume(&self, mut v: CsiVolume) -> Result<CsiVolume, ServerError> {
        validate_volume(&v)?;
        if v.name.is_empty() {
            v.name = v.id.clone();
        }
        let snap = self.state.snapshot();
        if let Some(existing) = snap.volume(&v.namespace, &v.id) {
            return self.expand_volume(&snap, &existing, v).await;
        }
        let node = Self::controller_node(&snap, &v.plugin_id, "volume creation", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_create_delete)
        })?;
        let call = PluginCall::Create {
            name: v.name.clone(),
            capacity_min: v.requested_capacity_min,
            capacity_max: v.requested_capacity_max,
            capabilities: v.requested_capabilities.clone(),
            mount_options: v.mount_options.clone(),
            parameters: v.parameters.clone(),
            secrets: Secrets(v.secrets.clone()),
            topology: v.requested_topologies.clone(),
            snapshot_id: v.snapshot_id.clone(),
            clone_id: v.clone_id.clone(),
        };
        drop(snap);
        let PluginReply::Volume { external_id, capacity, context, topologies } =
            self.call_plugin(&node, &v.plugin_id, call).await?
        else {
            return Err(unexpected_reply("CreateVolume"));
        };
        v.external_id = external_id;
        v.capacity = capacity;
        v.context.extend(context);
        v.topologies = topologies;
        if let Some(info) = node.csi_controller_plugins.get(&v.plugin_id) {
            v.provider = info.provider.clone();
            v.provider_version = info.provider_version.clone();
        }
        self.store_volume(v).await
    }

    async fn store_volume(&self, v: CsiVolume) -> Result<CsiVolume, ServerError> {
        self.state.apply(WriteBatch { volumes: vec![v.clone()], ..Default::default() })?;
        self.unblock_evals()?;
        let snap = self.state.snapshot();
        Ok(snap.volume(&v.namespace, &v.id).map(|s| (*s).clone()).unwrap_or(v))
    }

    /// Grows an existing volume to a re-submitted, larger `capacity_min`:
    /// ControllerExpandVolume, then NodeExpandVolume on each node that
    /// has it mounted.
    async fn expand_volume(&self, snap: &Tables, existing: &CsiVolume, v: CsiVolume) -> Result<CsiVolume, ServerError> {
        if v.plugin_id != existing.plugin_id {
            return Err(ServerError::BadRequest(format!(
                "volume {:?} exists with plugin {:?}; plugin_id cannot change",
                v.id, existing.plugin_id
            )));
        }
        if v.requested_capacity_min <= existing.capacity {
            return Err(ServerError::BadRequest(format!(
                "volume {:?} already exists with capacity {}; to expand it, set capacity_min above that",
                v.id,
                crate::util::format_bytes(existing.capacity.max(0) as u64)
            )));
        }
        let node = Self::controller_node(snap, &v.plugin_id, "volume expansion", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_expand)
        })?;
        let capability = existing.requested_capabilities.first().cloned();
        let call = PluginCall::Expand {
            external_id: existing.external_id.clone(),
            capacity_min: v.requested_capacity_min,
            capacity_max: v.requested_capacity_max,
            capability: capability.clone(),
            mount_options: existing.mount_options.clone(),
            secrets: Secrets(existing.secrets.clone()),
        };
        let claim_nodes: Vec<Arc<Node>> = {
            let mut ids: Vec<String> =
                snap.volume_claimers(&v.namespace, &v.id).iter().map(|a| a.node_id.clone()).collect();
            ids.dedup();
            ids.iter().filter_map(|id| snap.node(id)).filter(|n| n.status != node_status::DOWN).collect()
        };
        let PluginReply::Expanded { capacity, node_expansion_required } =
            self.call_plugin(&node, &v.plugin_id, call).await?
        else {
            return Err(unexpected_reply("ControllerExpandVolume"));
        };
        let mut updated = existing.clone();
        updated.capacity = capacity;
        updated.requested_capacity_min = v.requested_capacity_min;
        updated.requested_capacity_max = v.requested_capacity_max;
        let updated = self.store_volume(updated).await?;
        if node_expansion_required {
            for n in claim_nodes {
                let call = PluginCall::NodeExpand {
                    volume_id: updated.id.clone(),
                    namespace: updated.namespace.clone(),
                    external_id: updated.external_id.clone(),
                    capacity_min: updated.requested_capacity_min,
                    capacity_max: updated.requested_capacity_max,
                    capability: capability.clone(),
                    mount_options: updated.mount_options.clone(),
                };
                self.call_plugin(&n, &updated.plugin_id, call).await?;
            }
        }
        Ok(updated)
    }

    /// `volume register`: records a volume that exists in the provider,
    /// after the controller (when there is one) confirms the capabilities.
    /// Re-registering with a larger `capacity_min` expands it.
    pub async fn register_volume(&self, mut v: CsiVolume) -> Result<CsiVolume, ServerError> {
        validate_volume(&v)?;
        if v.external_id.is_empty() {
            return Err(ServerError::BadRequest(format!("volume {:?}: external_id is required to register", v.id)));
        }
        if v.name.is_empty() {
            v.name = v.id.clone();
        }
        let snap = self.state.snapshot();
        if let Some(existing) = snap.volume(&v.namespace, &v.id) {
            if v.requested_capacity_min > existing.capacity && existing.capacity > 0 {
                return self.expand_volume(&snap, &existing, v).await;
            }
            if !snap.volume_claimers(&v.namespace, &v.id).is_empty() && existing.external_id != v.external_id {
                return Err(ServerError::BadRequest(format!(
                    "volume {:?} is claimed; its external_id cannot change",
                    v.id
                )));
            }
        }
        let known = snap.nodes().any(|n| {
            n.csi_node_plugins.contains_key(&v.plugin_id) || n.csi_controller_plugins.contains_key(&v.plugin_id)
        });
        if !known {
            return Err(ServerError::BadRequest(format!(
                "volume {:?}: plugin_id: no CSI plugin {:?} is registered (run its plugin job first)",
                v.id, v.plugin_id
            )));
        }
        if let Ok(node) = Self::controller_node(&snap, &v.plugin_id, "validation", |_| true) {
            let call = PluginCall::Validate {
                external_id: v.external_id.clone(),
                capabilities: v.requested_capabilities.clone(),
                mount_options: v.mount_options.clone(),
                context: v.context.clone(),
                parameters: v.parameters.clone(),
                secrets: Secrets(v.secrets.clone()),
            };
            drop(snap);
            if let PluginReply::Validated { refusal: Some(why) } = self.call_plugin(&node, &v.plugin_id, call).await? {
                return Err(ServerError::BadRequest(format!(
                    "volume {:?}: the plugin does not confirm its capabilities: {why}",
                    v.id
                )));
            }
        }
        self.store_volume(v).await
    }

    /// Claims on a volume that still block its removal, as an error.
    fn in_use(snap: &Tables, v: &CsiVolume, force: bool) -> Result<Vec<Allocation>, ServerError> {
        let claimers = snap.volume_claimers(&v.namespace, &v.id);
        let live: Vec<String> =
            claimers.iter().filter(|a| !a.is_terminal()).map(|a| crate::util::short_id(&a.id).to_string()).collect();
        if !live.is_empty() {
            return Err(ServerError::BadRequest(format!(
                "volume {:?} is in use by allocation(s) {}; stop them first",
                v.id,
                live.join(", ")
            )));
        }
        if !claimers.is_empty() && !force {
            let ids: Vec<&str> = claimers.iter().map(|a| crate::util::short_id(&a.id)).collect();
            return Err(ServerError::BadRequest(format!(
                "volume {:?} is still being unpublished for stopped allocation(s) {}; \
                 wait, or use -force to drop those claims",
                v.id,
                ids.join(", ")
            )));
        }
        Ok(claimers.iter().map(|a| (**a).clone()).collect())
    }

    fn released(mut a: Allocation, reason: &str) -> Allocation {
        a.csi_volumes_released = true;
        a.csi_release_reason = reason.to_string();
        a
    }

    /// `volume deregister [-force]`: forgets the volume (it stays in the
    /// provider). `force` drops claims of stopped allocations.
    pub fn deregister_volume(&self, ns: &str, id: &str, force: bool) -> Result<(), ServerError> {
        self.state.commit(|snap| {
            let v = snap.volume(ns, id).ok_or_else(|| ServerError::NotFound(format!("volume {id:?} not found")))?;
            let stale = Self::in_use(snap, &v, force)?;
            let mut batch = WriteBatch { delete_volumes: vec![(ns.into(), id.into())], ..Default::default() };
            batch.allocs = stale.into_iter().map(|a| Self::released(a, "volume deregistered with -force")).collect();
            Ok::<_, ServerError>((batch, ()))
        })?;
        self.unblock_evals()
    }

    /// `volume delete`: DeleteVolume in the provider, then deregister.
    pub async fn delete_volume(
        &self,
        ns: &str,
        id: &str,
        secrets: BTreeMap<String, String>,
    ) -> Result<(), ServerError> {
        let snap = self.state.snapshot();
        let v = snap.volume(ns, id).ok_or_else(|| ServerError::NotFound(format!("volume {id:?} not found")))?;
        Self::in_use(&snap, &v, false)?;
        let node = Self::controller_node(&snap, &v.plugin_id, "volume deletion", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_create_delete)
        })?;
        drop(snap);
        let mut all = v.secrets.clone();
        all.extend(secrets);
        self.call_plugin(
            &node,
            &v.plugin_id,
            PluginCall::Delete { external_id: v.external_id.clone(), secrets: Secrets(all) },
        )
        .await?;
        self.deregister_volume(ns, id, false)
    }

    /// `volume detach <vol> <node>`: drops the claims of stopped
    /// allocations on a node that will not unpublish them itself (down or
    /// gone). Claims of live allocations are refused with their IDs.
    pub fn detach_volume(&self, ns: &str, id: &str, node_id: &str) -> Result<usize, ServerError> {
        let (_, (count, released)) = self.state.commit(|snap| {
            let v = snap.volume(ns, id).ok_or_else(|| ServerError::NotFound(format!("volume {id:?} not found")))?;
            let on_node: Vec<Arc<Allocation>> = snap
                .volume_claimers(ns, id)
                .into_iter()
                .filter(|a| a.node_id == node_id || a.node_id.starts_with(node_id))
                .collect();
            if let Some(live) = on_node.iter().find(|a| !a.is_terminal()) {
                return Err(ServerError::BadRequest(format!(
                    "volume {:?} is in use on that node by allocation {}; stop it first",
                    v.id,
                    crate::util::short_id(&live.id)
                )));
            }
            let count = on_node.len();
            let batch = WriteBatch {
                allocs: on_node.into_iter().map(|a| Self::released((*a).clone(), "detached by the operator")).collect(),
                ..Default::default()
            };
            let released = batch.allocs.clone();
            Ok::<_, ServerError>((batch, (count, released)))
        })?;
        self.queue_detach(&released);
        self.unblock_evals()?;
        Ok(count)
    }

    /// `volume snapshot create`.
    pub async fn create_snapshot(
        &self,
        ns: &str,
        volume_id: &str,
        name: &str,
        parameters: BTreeMap<String, String>,
        secrets: BTreeMap<String, String>,
    ) -> Result<CsiSnapshot, ServerError> {
        let snap = self.state.snapshot();
        let v = snap
            .volume(ns, volume_id)
            .ok_or_else(|| ServerError::NotFound(format!("volume {volume_id:?} not found")))?;
        let node = Self::controller_node(&snap, &v.plugin_id, "snapshots", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_create_delete_snapshot)
        })?;
        drop(snap);
        let mut all = v.secrets.clone();
        all.extend(secrets);
        let call = PluginCall::CreateSnapshot {
            external_id: v.external_id.clone(),
            name: if name.is_empty() { format!("{}-{}", v.id, now_nanos() / 1_000_000_000) } else { name.into() },
            parameters,
            secrets: Secrets(all),
        };
        match self.call_plugin(&node, &v.plugin_id, call).await? {
            PluginReply::Snapshot(mut s) => {
                s.plugin_id = v.plugin_id.clone();
                Ok(s)
            }
            _ => Err(unexpected_reply("CreateSnapshot")),
        }
    }

    /// `volume snapshot delete`.
    pub async fn delete_snapshot(
        &self,
        plugin_id: &str,
        snapshot_id: &str,
        secrets: BTreeMap<String, String>,
    ) -> Result<(), ServerError> {
        let node = Self::controller_node(&self.state.snapshot(), plugin_id, "snapshots", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_create_delete_snapshot)
        })?;
        let call = PluginCall::DeleteSnapshot { snapshot_id: snapshot_id.into(), secrets: Secrets(secrets) };
        self.call_plugin(&node, plugin_id, call).await.map(|_| ())
    }

    /// `volume snapshot list`.
    pub async fn list_snapshots(
        &self,
        plugin_id: &str,
        external_id: &str,
        secrets: BTreeMap<String, String>,
    ) -> Result<Vec<CsiSnapshot>, ServerError> {
        let node = Self::controller_node(&self.state.snapshot(), plugin_id, "snapshots", |i| {
            i.controller_info.as_ref().is_some_and(|c| c.supports_create_delete_snapshot)
        })?;
        let call = PluginCall::ListSnapshots { external_id: external_id.into(), secrets: Secrets(secrets) };
        match self.call_plugin(&node, plugin_id, call).await? {
            PluginReply::Snapshots(mut list) => {
                for s in &mut list {
                    s.plugin_id = plugin_id.to_string();
                }
                Ok(list)
            }
            _ => Err(unexpected_reply("ListSnapshots")),
        }
    }

    /// The claim grant a client asks for before mounting an allocation's
    /// volumes: granted when no other allocation's claim conflicts, after
    /// the controller (when it attaches volumes) published each to the node.
    pub async fn claim_volumes(&self, node_id: &str, alloc_id: &str) -> Result<ClaimGrant, ServerError> {
        let (alloc, volumes) = match self.check_claims(node_id, alloc_id)? {
            Ok(found) => found,
            Err(why) => return Ok(ClaimGrant::Wait(why)),
        };
        let mut granted = Vec::new();
        for (volume, req) in volumes {
            let snap = self.state.snapshot();
            let mut publish_context = BTreeMap::new();
            if attaches(&snap, &volume.plugin_id) {
                let Some(csi_node) = csi_node_id(&snap, node_id, &volume.plugin_id) else {
                    return Ok(ClaimGrant::Wait(format!(
                        "CSI plugin {} has not reported this node's ID yet",
                        volume.plugin_id
                    )));
                };
                let controller = match Self::controller_node(&snap, &volume.plugin_id, "attaching volumes", |_| true) {
                    Ok(n) => n,
                    Err(e) => return Ok(ClaimGrant::Wait(e.to_string())),
                };
                drop(snap);
                let call = PluginCall::Publish {
                    external_id: volume.external_id.clone(),
                    node_id: csi_node,
                    capability: crate::structs::CsiVolumeCapability {
                        access_mode: req.access_mode.clone(),
                        attachment_mode: req.attachment_mode.clone(),
                    },
                    mount_options: req.mount_options.clone().or_else(|| volume.mount_options.clone()),
                    read_only: !req.writes(),
                    context: volume.context.clone(),
                    secrets: Secrets(volume.secrets.clone()),
                };
                match self.call_plugin(&controller, &volume.plugin_id, call).await {
                    Ok(PluginReply::Published { context }) => publish_context = context,
                    Ok(_) => publish_context = BTreeMap::new(),
                    Err(e) => {
                        return Ok(ClaimGrant::Wait(format!(
                            "ControllerPublishVolume of {} for allocation {}: {e}",
                            volume.id,
                            crate::util::short_id(&alloc.id)
                        )))
                    }
                }
            }
            granted.push(GrantedVolume { volume, publish_context });
        }
        Ok(ClaimGrant::Granted(granted))
    }

    /// The allocation's volumes when no other claim conflicts with its own,
    /// or why it must wait.
    #[allow(clippy::type_complexity)]
    fn check_claims(
        &self,
        node_id: &str,
        alloc_id: &str,
    ) -> Result<Result<(Arc<Allocation>, Vec<(CsiVolume, crate::structs::VolumeRequest)>), String>, ServerError> {
        let snap = self.state.snapshot();
        let alloc =
            snap.alloc(alloc_id).ok_or_else(|| ServerError::NotFound(format!("allocation {alloc_id} not found")))?;
        if alloc.node_id != node_id {
            return Err(ServerError::BadRequest(format!("allocation {alloc_id} is not placed on node {node_id}")));
        }
        if alloc.server_terminal() {
            return Err(ServerError::BadRequest(format!(
                "allocation {alloc_id} is stopping; it may not claim volumes"
            )));
        }
        let mut granted = Vec::new();
        for (volume_id, req) in alloc.csi_requests() {
            let Some(v) = snap.volume(&alloc.namespace, &volume_id) else {
                return Ok(Err(format!("missing CSI volume {volume_id}")));
            };
            let others: Vec<Arc<Allocation>> =
                snap.volume_claimers(&alloc.namespace, &volume_id).into_iter().filter(|a| a.id != alloc.id).collect();
            let holders: Vec<claims::Holder<'_>> = others
                .iter()
                .filter_map(|a| {
                    Some(claims::Holder {
                        alloc_id: &a.id,
                        job_id: &a.job_id,
                        node_id: &a.node_id,
                        mode: claims::mode_of(a, &volume_id)?,
                        state: claims::state_word(a),
                    })
                })
                .collect();
            let mode = if req.writes() { crate::structs::ClaimMode::Write } else { crate::structs::ClaimMode::Read };
            if let Some(why) = claims::conflict(&v, &req.access_mode, mode, node_id, &holders) {
                return Ok(Err(why));
            }
            granted.push(((*v).clone(), req.clone()));
        }
        Ok(Ok((alloc, granted)))
    }

    /// Queues the controller detach of the volumes of allocations whose
    /// claims just ended.
    pub(crate) fn queue_detach(&self, released: &[Allocation]) {
        for a in released {
            for (volume_id, _) in a.csi_requests() {
                let _ = self.detach_tx.send(ControllerDetach {
                    namespace: a.namespace.clone(),
                    volume_id,
                    node_id: a.node_id.clone(),
                });
            }
        }
    }

    /// ControllerUnpublishVolume of one volume from one node, unless the
    /// plugin does not attach, or another allocation there still uses it.
    async fn controller_detach(&self, d: &ControllerDetach) -> Result<(), ServerError> {
        let snap = self.state.snapshot();
        let Some(v) = snap.volume(&d.namespace, &d.volume_id) else { return Ok(()) };
        if !attaches(&snap, &v.plugin_id) {
            return Ok(());
        }
        let still_used = snap.volume_claimers(&d.namespace, &d.volume_id).iter().any(|a| a.node_id == d.node_id);
        if still_used {
            return Ok(());
        }
        let Some(csi_node) = csi_node_id(&snap, &d.node_id, &v.plugin_id) else { return Ok(()) };
        let controller = Self::controller_node(&snap, &v.plugin_id, "detaching volumes", |_| true)?;
        drop(snap);
        let call = PluginCall::Unpublish {
            external_id: v.external_id.clone(),
            node_id: csi_node,
            secrets: Secrets(v.secrets.clone()),
        };
        self.call_plugin(&controller, &v.plugin_id, call).await.map(|_| ())
    }

    pub(super) async fn controller_detacher(
        server: Arc<Server>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<ControllerDetach>,
    ) {
        while let Some(d) = rx.recv().await {
            let mut attempt = 0u32;
            loop {
                match server.controller_detach(&d).await {
                    Ok(()) => break,
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(volume = %d.volume_id, node = %d.node_id, error = %e, attempt, "ControllerUnpublishVolume");
                        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    }
                    Err(e) => {
                        tracing::error!(volume = %d.volume_id, node = %d.node_id, error = %e, "giving up ControllerUnpublishVolume");
                        break;
                    }
                }
            }
        }
    }

    /// Releases the claims of allocations whose node has been down for
    /// longer than `timeout` (or is gone): that node will not unpublish.
    pub fn release_stranded_claims(&self, timeout: Duration) -> Result<usize, ServerError> {
        let (_, (count, released)) = self.state.commit(|snap| {
            let now = now_nanos() / 1_000_000_000;
            let mut batch = WriteBatch::default();
            for v in snap.volumes() {
                for a in snap.volume_claimers(&v.namespace, &v.id) {
                    if batch.allocs.iter().any(|b: &Allocation| b.id == a.id) {
                        continue;
                    }
                    let reason = match snap.node(&a.node_id) {
                        None => "its node is gone".to_string(),
                        Some(n)
                            if n.status == node_status::DOWN
                                && now - n.status_updated_at >= timeout.as_secs() as i64 =>
                        {
                            format!(
                                "node {} down for more than {}",
                                n.name,
                                crate::util::format_duration(timeout.as_nanos() as i64)
                            )
                        }
                        _ => continue,
                    };
                    tracing::warn!(alloc_id = %a.id, volume = %v.id, %reason, "releasing stranded CSI claim");
                    batch.allocs.push(Self::released((*a).clone(), &format!("claim released: {reason}")));
                }
            }
            let count = batch.allocs.len();
            let released = batch.allocs.clone();
            Ok::<_, ServerError>((batch, (count, released)))
        })?;
        self.queue_detach(&released);
        if count > 0 {
            self.unblock_evals()?;
        }
        Ok(count)
    }

    pub(super) async fn claim_watcher(server: Arc<Server>) {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            if let Err(e) = server.release_stranded_claims(server.config.csi_claim_release_timeout) {
                tracing::error!(error = %e, "releasing stranded CSI claims");
            }
        }
    }
}

#[cfg(test)]
mod tests;
