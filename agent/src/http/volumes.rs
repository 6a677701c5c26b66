//! CSI endpoints: `/v1/volumes`, `/v1/volume/csi/:id[/create|/delete|/detach]`,
//! `/v1/volumes/snapshot`, `/v1/plugins`, `/v1/plugin/csi/:id`, and the
//! internal endpoint through which a server has a client call its plugins.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query};
use serde::{Deserialize, Serialize};

use super::{
    by_prefix, decode_body, flag, json_with_index, ApiError, ApiResult, ApiState, Headers, QueryOptions, RawQuery,
};
use crate::server::csi::{self, VolumeView};
use crate::structs::{CsiPlugin, CsiTopology, CsiVolume};
use crate::wire::csi::PluginCall;
use crate::wire::node::NODE_SECRET_HEADER;
use crate::wire::SECRETS_HEADER;

fn namespace(raw: &HashMap<String, String>) -> String {
    raw.get("namespace").filter(|n| !n.is_empty() && *n != "*").cloned().unwrap_or_else(|| "default".into())
}

/// `CSIVolumeListStub`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeStub {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "ExternalID")]
    external_id: String,
    namespace: String,
    name: String,
    topologies: Vec<CsiTopology>,
    access_mode: String,
    attachment_mode: String,
    current_readers: usize,
    current_writers: usize,
    schedulable: bool,
    #[serde(rename = "PluginID")]
    plugin_id: String,
    provider: String,
    controller_required: bool,
    controllers_healthy: u64,
    controllers_expected: u64,
    nodes_healthy: u64,
    nodes_expected: u64,
    resource_exhausted: Option<String>,
    create_index: u64,
    modify_index: u64,
}

fn stub(v: VolumeView) -> VolumeStub {
    let cap = v.volume.requested_capabilities.first().cloned().unwrap_or_default();
    VolumeStub {
        id: v.volume.id,
        external_id: v.volume.external_id,
        namespace: v.volume.namespace,
        name: v.volume.name,
        topologies: v.volume.topologies,
        access_mode: cap.access_mode,
        attachment_mode: cap.attachment_mode,
        current_readers: v.current_readers,
        current_writers: v.current_writers,
        schedulable: v.volume.schedulable,
        plugin_id: v.volume.plugin_id,
        provider: v.volume.provider,
        controller_required: v.controller_required,
        controllers_healthy: v.controllers_healthy,
        controllers_expected: v.controllers_expected,
        nodes_healthy: v.nodes_healthy,
        nodes_expected: v.nodes_expected,
        resource_exhausted: None,
        create_index: v.volume.create_index,
        modify_index: v.volume.modify_index,
    }
}

/// `GET /v1/volumes?type=csi[&plugin_id=][&node_id=]`.
pub async fn list(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    if raw.get("type").map(String::as_str) != Some("csi") {
        return Ok(json_with_index(&Vec::<VolumeStub>::new(), index, q.pretty()));
    }
    let plugin = raw.get("plugin_id").cloned().unwrap_or_default();
    let node = raw.get("node_id").cloned().unwrap_or_default();
    let prefix = q.prefix.clone().unwrap_or_default();
    let plugins = csi::plugins(&snap);
    let list: Vec<VolumeStub> = snap
        .volumes()
        .filter(|v| v.id.starts_with(&prefix) && v.plugin_id.starts_with(&plugin))
        .filter(|v| {
            node.is_empty() || snap.volume_claimers(&v.namespace, &v.id).iter().any(|a| a.node_id.starts_with(&node))
        })
        .map(|v| stub(csi::volume_view(&snap, &plugins, v)))
        .collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

/// `GET /v1/volume/csi/:id`.
pub async fn read(
    api: ApiState,
    Path(id): Path<String>,
    Query(q): Query<QueryOptions>,
    Query(raw): RawQuery,
) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let ns = namespace(&raw);
    let v = match snap.volume(&ns, &id) {
        Some(v) => v,
        None => {
            by_prefix(snap.volumes().filter(|v| v.namespace == ns).map(|v| (v.id.as_str(), v.clone())), &id, "volume")?
        }
    };
    Ok(json_with_index(&csi::volume_view(&snap, &csi::plugins(&snap), &v), index, q.pretty()))
}

/// `{Volumes: [...]}` of register and create.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRequest {
    /// The volumes.
    pub volumes: Vec<CsiVolume>,
}

fn one_volume(body: &[u8], raw: &HashMap<String, String>, id: &str) -> Result<CsiVolume, ApiError> {
    let req: VolumeRequest = decode_body(body)?;
    let [mut v]: [CsiVolume; 1] =
        req.volumes.try_into().map_err(|_| ApiError::bad_request("exactly one volume is required"))?;
    if v.id.is_empty() {
        v.id = id.to_string();
    }
    if v.id != id {
        return Err(ApiError::bad_request(format!("volume ID {:?} does not match the URL's {id:?}", v.id)));
    }
    if v.namespace.is_empty() {
        v.namespace = namespace(raw);
    }
    Ok(v)
}

fn volumes_reply(v: CsiVolume, index: u64) -> axum::response::Response {
    json_with_index(&serde_json::json!({ "Volumes": [v.redacted()], "Warnings": "", "Index": index }), index, false)
}

/// `PUT /v1/volume/csi/:id`: register.
pub async fn register(api: ApiState, Path(id): Path<String>, Query(raw): RawQuery, body: Bytes) -> ApiResult {
    let v = one_volume(&body, &raw, &id)?;
    let server = api.server()?;
    let v = server.register_volume(v).await?;
    Ok(volumes_reply(v, server.state.index()))
}

/// `PUT /v1/volume/csi/:id/create`.
pub async fn create(api: ApiState, Path(id): Path<String>, Query(raw): RawQuery, body: Bytes) -> ApiResult {
    let v = one_volume(&body, &raw, &id)?;
    let server = api.server()?;
    let v = server.create_volume(v).await?;
    Ok(volumes_reply(v, server.state.index()))
}

/// `DELETE /v1/volume/csi/:id?force=`: deregister.
pub async fn deregister(api: ApiState, Path(id): Path<String>, Query(raw): RawQuery) -> ApiResult {
    let server = api.server()?;
    server.deregister_volume(&namespace(&raw), &id, flag(&raw, "force"))?;
    Ok(json_with_index(&serde_json::json!({}), server.state.index(), false))
}

fn header_secrets(headers: &Headers) -> BTreeMap<String, String> {
    headers
        .get(SECRETS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `DELETE /v1/volume/csi/:id/delete`.
pub async fn delete(api: ApiState, Path(id): Path<String>, Query(raw): RawQuery, headers: Headers) -> ApiResult {
    let server = api.server()?;
    server.delete_volume(&namespace(&raw), &id, header_secrets(&headers)).await?;
    Ok(json_with_index(&serde_json::json!({}), server.state.index(), false))
}

/// `DELETE /v1/volume/csi/:id/detach?node=`.
pub async fn detach(api: ApiState, Path(id): Path<String>, Query(raw): RawQuery) -> ApiResult {
    let node =
        raw.get("node").cloned().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request("node is required"))?;
    let server = api.server()?;
    let released = server.detach_volume(&namespace(&raw), &id, &node)?;
    Ok(json_with_index(&serde_json::json!({ "Released": released }), server.state.index(), false))
}

/// One snapshot request of `PUT /v1/volumes/snapshot`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SnapshotRequest {
    #[serde(rename = "SourceVolumeID")]
    source_volume_id: String,
    name: String,
    secrets: BTreeMap<String, String>,
    parameters: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SnapshotCreate {
    snapshots: Vec<SnapshotRequest>,
}

/// `PUT /v1/volumes/snapshot`.
pub async fn snapshot_create(api: ApiState, Query(raw): RawQuery, body: Bytes) -> ApiResult {
    let req: SnapshotCreate = decode_body(&body)?;
    let server = api.server()?;
    let mut out = Vec::new();
    for s in req.snapshots {
        out.push(
            server.create_snapshot(&namespace(&raw), &s.source_volume_id, &s.name, s.parameters, s.secrets).await?,
        );
    }
    Ok(json_with_index(&serde_json::json!({ "Snapshots": out }), server.state.index(), false))
}

/// `GET /v1/volumes/snapshot?plugin_id=[&volume_id=]`.
pub async fn snapshot_list(api: ApiState, Query(raw): RawQuery, headers: Headers) -> ApiResult {
    let server = api.server()?;
    let plugin = raw.get("plugin_id").cloned().unwrap_or_default();
    let external = match raw.get("volume_id").filter(|v| !v.is_empty()) {
        Some(id) => server
            .state
            .snapshot()
            .volume(&namespace(&raw), id)
            .map(|v| v.external_id.clone())
            .ok_or_else(|| ApiError::not_found(format!("volume {id:?} not found")))?,
        None => String::new(),
    };
    let list = server.list_snapshots(&plugin, &external, header_secrets(&headers)).await?;
    Ok(json_with_index(&serde_json::json!({ "Snapshots": list }), server.state.index(), false))
}

/// `DELETE /v1/volumes/snapshot?plugin_id=&snapshot_id=`.
pub async fn snapshot_delete(api: ApiState, Query(raw): RawQuery, headers: Headers) -> ApiResult {
    let server = api.server()?;
    let plugin = raw.get("plugin_id").cloned().unwrap_or_default();
    let id = raw
        .get("snapshot_id")
        .cloned()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("snapshot_id is required"))?;
    server.delete_snapshot(&plugin, &id, header_secrets(&headers)).await?;
    Ok(json_with_index(&serde_json::json!({}), server.state.index(), false))
}

/// `CSIPluginListStub`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PluginStub {
    #[serde(rename = "ID")]
    id: String,
    provider: String,
    controller_required: bool,
    controllers_healthy: u64,
    controllers_expected: u64,
    nodes_healthy: u64,
    nodes_expected: u64,
    create_index: u64,
    modify_index: u64,
}

/// `GET /v1/plugins?type=csi`.
pub async fn plugins(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    if raw.get("type").map(String::as_str) != Some("csi") {
        return Ok(json_with_index(&Vec::<PluginStub>::new(), index, q.pretty()));
    }
    let list: Vec<PluginStub> = csi::plugins(&snap)
        .into_iter()
        .map(|p: CsiPlugin| PluginStub {
            id: p.id,
            provider: p.provider,
            controller_required: p.controller_required,
            controllers_healthy: p.controllers_healthy,
            controllers_expected: p.controllers_expected,
            nodes_healthy: p.nodes_healthy,
            nodes_expected: p.nodes_expected,
            create_index: p.create_index,
            modify_index: p.modify_index,
        })
        .collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

/// `GET /v1/plugin/csi/:id`.
pub async fn plugin(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let all = csi::plugins(&snap);
    let p = by_prefix(all.iter().map(|p| (p.id.as_str(), p.clone())), &id, "plugin")?;
    Ok(json_with_index(&p, index, q.pretty()))
}

/// `PUT /v1/internal/client/csi/:plugin`: a server has this client call
/// one of its plugins. Only a holder of this node's secret may ask.
pub async fn client_call(api: ApiState, Path(plugin): Path<String>, headers: Headers, body: Bytes) -> ApiResult {
    let client = api.client.clone().ok_or_else(|| ApiError::bad_request("this agent is not a client"))?;
    let secret = headers.get(NODE_SECRET_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if secret != client.node.read().secret_id {
        return Err(ApiError(axum::http::StatusCode::FORBIDDEN, "Permission denied".into()));
    }
    let call: PluginCall = decode_body(&body)?;
    match crate::client::csi::calls::call_local(client.csi(), &plugin, call).await {
        Ok(reply) => Ok(json_with_index(&reply, 1, false)),
        // The plugin's error as JSON, so the server keeps its code.
        Err(e) => {
            let mut resp = json_with_index(&e, 1, false);
            *resp.status_mut() = super::plugin_status(&e);
            Ok(resp)
        }
    }
}
