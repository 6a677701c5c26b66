//! Plugin calls the servers ask for (`wire::csi::PluginCall`), made
//! here on this node's plugins, and [`ClusterPluginCalls`], which routes a
//! call to the node the server chose: this agent's own client in process,
//! another client over its HTTP API (authenticated with that node's secret).
//! A failure keeps the plugin's gRPC code on its way ([`PluginError`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use csi::v1::{
    list_snapshots_response, volume_content_source, CapacityRange, ControllerExpandVolumeRequest,
    ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest,
    DeleteSnapshotRequest, DeleteVolumeRequest, ListSnapshotsRequest, NodeExpandVolumeRequest, Topology,
    TopologyRequirement, ValidateVolumeCapabilitiesRequest, VolumeContentSource,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::manager::{CsiManager, PluginEntry};
use super::volume_hook::all_records;
use crate::client::Client;
use crate::structs::{CsiTopology, Node};
use crate::wire::csi::{CsiSnapshot, PluginCall, PluginCalls, PluginCode, PluginError, PluginReply};
use crate::wire::node::NODE_SECRET_HEADER;

fn capacity(min: i64, max: i64) -> Option<CapacityRange> {
    (min > 0 || max > 0).then_some(CapacityRange { required_bytes: min.max(0), limit_bytes: max.max(0) })
}

fn topology(t: &CsiTopology) -> Topology {
    Topology { segments: t.segments.clone().into_iter().collect() }
}

fn snapshot(s: csi::v1::Snapshot) -> CsiSnapshot {
    CsiSnapshot {
        id: s.snapshot_id,
        external_source_volume_id: s.source_volume_id,
        size_bytes: s.size_bytes,
        create_time: s.creation_time.map(|t| t.seconds).unwrap_or(0),
        is_ready: s.ready_to_use,
        ..Default::default()
    }
}

/// The wire's name for a gRPC code.
fn plugin_code(code: csi::Code) -> PluginCode {
    use csi::Code;
    match code {
        Code::Cancelled => PluginCode::Cancelled,
        Code::InvalidArgument => PluginCode::InvalidArgument,
        Code::DeadlineExceeded => PluginCode::DeadlineExceeded,
        Code::NotFound => PluginCode::NotFound,
        Code::AlreadyExists => PluginCode::AlreadyExists,
        Code::PermissionDenied => PluginCode::PermissionDenied,
        Code::ResourceExhausted => PluginCode::ResourceExhausted,
        Code::FailedPrecondition => PluginCode::FailedPrecondition,
        Code::Aborted => PluginCode::Aborted,
        Code::OutOfRange => PluginCode::OutOfRange,
        Code::Unimplemented => PluginCode::Unimplemented,
        Code::Internal => PluginCode::Internal,
        Code::Unavailable => PluginCode::Unavailable,
        Code::DataLoss => PluginCode::DataLoss,
        Code::Unauthenticated => PluginCode::Unauthenticated,
        Code::Ok | Code::Unknown => PluginCode::Unknown,
    }
}

/// A failed call with its gRPC code; a plugin that could not be reached
/// at all is UNAVAILABLE.
fn call_error(e: csi::ClientError) -> PluginError {
    let code = e.code().map(plugin_code).unwrap_or(PluginCode::Unavailable);
    PluginError::new(code, e.to_string())
}

/// A reply without what the call must return: the plugin broke the spec.
fn empty_reply(what: &str) -> PluginError {
    PluginError::new(PluginCode::Internal, format!("{what} returned nothing"))
}

/// Makes one call on a plugin of this node.
pub async fn call_local(manager: &CsiManager, plugin_id: &str, call: PluginCall) -> Result<PluginReply, PluginError> {
    let plugin = manager.healthy(plugin_id).ok_or_else(|| {
        PluginError::new(
            PluginCode::Unavailable,
            format!("CSI plugin {plugin_id:?} is not running healthy on this node"),
        )
    })?;
    let err = call_error;
    let c = &plugin.client;
    Ok(match call {
        PluginCall::Create {
            name,
            capacity_min,
            capacity_max,
            capabilities,
            mount_options,
            parameters,
            secrets,
            topology: requested,
            snapshot_id,
            clone_id,
        } => {
            let source = if !snapshot_id.is_empty() {
                Some(volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource { snapshot_id }))
            } else if !clone_id.is_empty() {
                Some(volume_content_source::Type::Volume(volume_content_source::VolumeSource { volume_id: clone_id }))
            } else {
                None
            };
            let request = CreateVolumeRequest {
                name,
                capacity_range: capacity(capacity_min, capacity_max),
                volume_capabilities: capabilities
                    .iter()
                    .map(|cap| super::capability(cap, mount_options.as_ref()))
                    .collect(),
                parameters: parameters.into_iter().collect(),
                secrets: secrets.0.into_iter().collect(),
                volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
                accessibility_requirements: requested.map(|r| TopologyRequirement {
                    requisite: r.required.iter().map(topology).collect(),
                    preferred: r.preferred.iter().map(topology).collect(),
                }),
                ..Default::default()
            };
            let volume =
                c.create_volume(request).await.map_err(err)?.volume.ok_or_else(|| empty_reply("CreateVolume"))?;
            PluginReply::Volume {
                external_id: volume.volume_id,
                capacity: volume.capacity_bytes,
                context: volume.volume_context.into_iter().collect(),
                topologies: volume
                    .accessible_topology
                    .into_iter()
                    .map(|t| CsiTopology { segments: t.segments.into_iter().collect() })
                    .collect(),
            }
        }
        PluginCall::Delete { external_id, secrets } => {
            let request = DeleteVolumeRequest { volume_id: external_id, secrets: secrets.0.into_iter().collect() };
            c.delete_volume(request).await.map_err(err)?;
            PluginReply::Done
        }
        PluginCall::Validate { external_id, capabilities, mount_options, context, parameters, secrets } => {
            let request = ValidateVolumeCapabilitiesRequest {
                volume_id: external_id,
                volume_context: context.into_iter().collect(),
                volume_capabilities: capabilities
                    .iter()
                    .map(|cap| super::capability(cap, mount_options.as_ref()))
                    .collect(),
                parameters: parameters.into_iter().collect(),
                secrets: secrets.0.into_iter().collect(),
                ..Default::default()
            };
            let reply = c.validate_volume_capabilities(request).await.map_err(err)?;
            let refusal = reply.confirmed.is_none().then(|| {
                if reply.message.is_empty() {
                    "capabilities not confirmed".to_string()
                } else {
                    reply.message
                }
            });
            PluginReply::Validated { refusal }
        }
        PluginCall::Publish { external_id, node_id, capability, mount_options, read_only, context, secrets } => {
            let request = ControllerPublishVolumeRequest {
                volume_id: external_id,
                node_id,
                volume_capability: Some(super::capability(&capability, mount_options.as_ref())),
                readonly: read_only,
                secrets: secrets.0.into_iter().collect(),
                volume_context: context.into_iter().collect(),
            };
            let reply = c.controller_publish_volume(request).await.map_err(err)?;
            PluginReply::Published { context: reply.publish_context.into_iter().collect() }
        }
        PluginCall::Unpublish { external_id, node_id, secrets } => {
            let request = ControllerUnpublishVolumeRequest {
                volume_id: external_id,
                node_id,
                secrets: secrets.0.into_iter().collect(),
            };
            c.controller_unpublish_volume(request).await.map_err(err)?;
            PluginReply::Done
        }
        PluginCall::Expand { external_id, capacity_min, capacity_max, capability, mount_options, secrets } => {
            let request = ControllerExpandVolumeRequest {
                volume_id: external_id,
                capacity_range: capacity(capacity_min, capacity_max),
                secrets: secrets.0.into_iter().collect(),
                volume_capability: capability.map(|cap| super::capability(&cap, mount_options.as_ref())),
            };
            let reply = c.controller_expand_volume(request).await.map_err(err)?;
            PluginReply::Expanded {
                capacity: reply.capacity_bytes,
                node_expansion_required: reply.node_expansion_required,
            }
        }
        PluginCall::NodeExpand {
            volume_id,
            namespace,
            external_id,
            capacity_min,
            capacity_max,
            capability,
            mount_options,
        } => {
            node_expand(manager, &plugin, &namespace, &volume_id, &external_id, capacity(capacity_min, capacity_max), {
                capability.map(|cap| super::capability(&cap, mount_options.as_ref()))
            })
            .await?
        }
        PluginCall::CreateSnapshot { external_id, name, parameters, secrets } => {
            let request = CreateSnapshotRequest {
                source_volume_id: external_id,
                name,
                secrets: secrets.0.into_iter().collect(),
                parameters: parameters.into_iter().collect(),
            };
            let s =
                c.create_snapshot(request).await.map_err(err)?.snapshot.ok_or_else(|| empty_reply("CreateSnapshot"))?;
            PluginReply::Snapshot(snapshot(s))
        }
        PluginCall::DeleteSnapshot { snapshot_id, secrets } => {
            let request = DeleteSnapshotRequest { snapshot_id, secrets: secrets.0.into_iter().collect() };
            c.delete_snapshot(request).await.map_err(err)?;
            PluginReply::Done
        }
        PluginCall::ListSnapshots { external_id, secrets } => {
            let mut out = Vec::new();
            let mut token = String::new();
            loop {
                let request = ListSnapshotsRequest {
                    source_volume_id: external_id.clone(),
                    starting_token: token.clone(),
                    secrets: secrets.0.clone().into_iter().collect(),
                    ..Default::default()
                };
                let reply = c.list_snapshots(request).await.map_err(err)?;
                out.extend(
                    reply
                        .entries
                        .into_iter()
                        .filter_map(|list_snapshots_response::Entry { snapshot: s }| s.map(snapshot)),
                );
                if reply.next_token.is_empty() {
                    break;
                }
                token = reply.next_token;
            }
            PluginReply::Snapshots(out)
        }
    })
}

/// NodeExpandVolume on each place this node has the volume mounted.
async fn node_expand(
    manager: &CsiManager,
    plugin: &PluginEntry,
    namespace: &str,
    volume_id: &str,
    external_id: &str,
    range: Option<CapacityRange>,
    capability: Option<csi::v1::VolumeCapability>,
) -> Result<PluginReply, PluginError> {
    if !plugin.caps.node_expand {
        return Ok(PluginReply::Done);
    }
    let records: Vec<_> = all_records(manager)
        .into_iter()
        .filter(|(_, r)| r.volume_id == volume_id && r.namespace == namespace)
        .map(|(_, r)| r)
        .collect();
    let mut capacity = 0;
    // One expansion per staged volume: every target shares its filesystem.
    let mut done: Vec<Option<std::path::PathBuf>> = Vec::new();
    for r in records {
        if r.staging.is_some() && done.contains(&r.staging) {
            continue;
        }
        done.push(r.staging.clone());
        let request = NodeExpandVolumeRequest {
            volume_id: external_id.to_string(),
            volume_path: plugin.plugin_path(&r.target).display().to_string(),
            capacity_range: range,
            staging_target_path: r
                .staging
                .as_ref()
                .map(|s| plugin.plugin_path(s).display().to_string())
                .unwrap_or_default(),
            volume_capability: capability.clone(),
            secrets: Default::default(),
        };
        capacity = plugin.client.node_expand_volume(request).await.map_err(call_error)?.capacity_bytes;
    }
    Ok(PluginReply::Expanded { capacity, node_expansion_required: false })
}

/// Routes plugin calls to the node the server chose.
pub struct ClusterPluginCalls {
    /// This agent's client, when it has one.
    pub local: Option<Weak<Client>>,
    /// For other nodes.
    pub http: reqwest::Client,
}

impl ClusterPluginCalls {
    async fn remote(&self, node: &Node, plugin_id: &str, call: PluginCall) -> Result<PluginReply, PluginError> {
        let unreachable = |why: String| PluginError::new(PluginCode::Unavailable, why);
        if node.http_addr.is_empty() {
            return Err(unreachable(format!("node {} has no HTTP address to reach its plugins", node.name)));
        }
        let base = if node.http_addr.starts_with("http") {
            node.http_addr.clone()
        } else {
            format!("http://{}", node.http_addr)
        };
        let resp = self
            .http
            .put(format!("{base}/v1/internal/client/csi/{plugin_id}"))
            .header(NODE_SECRET_HEADER, &node.secret_id)
            .timeout(Duration::from_secs(600))
            .json(&call)
            .send()
            .await
            .map_err(|e| unreachable(format!("reaching node {} at {base}: {e}", node.name)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            // The node's plugin failed (its error, with its code), or the
            // node refused the call itself.
            return Err(match serde_json::from_str::<PluginError>(&body) {
                Ok(e) => e,
                Err(_) => PluginError::new(PluginCode::Unknown, format!("node {}: {status}: {body}", node.name)),
            });
        }
        resp.json().await.map_err(|e| PluginError::new(PluginCode::Unknown, format!("node {}: {e}", node.name)))
    }
}

impl PluginCalls for ClusterPluginCalls {
    fn call<'a>(
        &'a self,
        node: &'a Node,
        plugin_id: &'a str,
        call: PluginCall,
    ) -> BoxFuture<'a, Result<PluginReply, PluginError>> {
        async move {
            let local: Option<Arc<Client>> = self.local.as_ref().and_then(Weak::upgrade);
            match local {
                Some(client) if client.node.read().id == node.id => call_local(client.csi(), plugin_id, call).await,
                _ => self.remote(node, plugin_id, call).await,
            }
        }
        .boxed()
    }
}
