//! Client-to-server endpoints (`/v1/internal/node/...`): register,
//! heartbeat, the node's allocation indexes (blocking), the allocations
//! that changed, status updates and workload identities to sign (whose
//! public keys `/.well-known/jwks.json` serves). Writes, allocation
//! fetches and signing must carry the node's secret.

use axum::body::Bytes;
use axum::extract::{Path, Query};

use super::{decode_body, json_with_index, ApiError, ApiResult, ApiState, Headers, QueryOptions};
use crate::structs::Node;
use crate::wire::identity::SignIdentitiesRequest;
use crate::wire::node::{AllocClientUpdate, AllocFetchRequest, HeartbeatAnswer, NODE_SECRET_HEADER};

/// The node secret a client request carries.
pub(super) fn secret(headers: &Headers) -> String {
    headers.get(NODE_SECRET_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

pub async fn register(api: ApiState, body: Bytes) -> ApiResult {
    let node: Node = decode_body(&body)?;
    if node.id.is_empty() || node.secret_id.is_empty() {
        return Err(ApiError::bad_request("node ID and secret ID are required"));
    }
    let server = api.server()?;
    let ttl = server.register_node(node)?;
    Ok(json_with_index(&HeartbeatAnswer::new(ttl), server.state.index(), false))
}

pub async fn heartbeat(api: ApiState, Path(id): Path<String>, headers: Headers) -> ApiResult {
    let server = api.server()?;
    let ttl = server.heartbeat(&id, &secret(&headers))?;
    Ok(json_with_index(&HeartbeatAnswer::new(ttl), server.state.index(), false))
}

/// The node's allocations as ID → `AllocModifyIndex`, once a server-side
/// change to them passes `?index=` (or `?wait=` elapses).
pub async fn allocations(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let server = api.server()?;
    let wait = api.wait(&q)?;
    let answer = server.node_alloc_indexes(&id, q.index.unwrap_or(0), wait).await;
    let index = answer.index;
    Ok(json_with_index(&answer, index, false))
}

/// The allocations the client asks for (those whose index moved).
pub async fn fetch_allocs(api: ApiState, Path(id): Path<String>, headers: Headers, body: Bytes) -> ApiResult {
    let req: AllocFetchRequest = decode_body(&body)?;
    let server = api.server()?;
    let allocs = server.fetch_node_allocs(&id, &secret(&headers), &req.alloc_ids)?;
    Ok(json_with_index(&allocs, server.state.index(), false))
}

pub async fn update_allocs(api: ApiState, Path(id): Path<String>, headers: Headers, body: Bytes) -> ApiResult {
    let updates: Vec<AllocClientUpdate> = decode_body(&body)?;
    let server = api.server()?;
    let node = server.state.snapshot().node(&id).ok_or_else(|| ApiError::not_found("node not found"))?;
    if node.secret_id != secret(&headers) {
        return Err(ApiError(axum::http::StatusCode::FORBIDDEN, "Permission denied".into()));
    }
    server.update_allocs(&id, updates)?;
    Ok(json_with_index(&serde_json::json!({}), server.state.index(), false))
}

/// `PUT /v1/internal/node/:id/csi-claim/:alloc`: may the allocation mount
/// its CSI volumes now? The answer carries the volumes' secrets, so only
/// the node holding the allocation may ask.
pub async fn claim_volumes(api: ApiState, Path((id, alloc)): Path<(String, String)>, headers: Headers) -> ApiResult {
    let server = api.server()?;
    let node = server.state.snapshot().node(&id).ok_or_else(|| ApiError::not_found("node not found"))?;
    if node.secret_id != secret(&headers) {
        return Err(ApiError(axum::http::StatusCode::FORBIDDEN, "Permission denied".into()));
    }
    let grant = server.claim_volumes(&id, &alloc).await?;
    Ok(json_with_index(&grant, server.state.index(), false))
}

/// `PUT /v1/internal/node/:id/identities`: signs workload identities of
/// one of the node's allocations; only that node may ask.
pub async fn sign_identities(api: ApiState, Path(id): Path<String>, headers: Headers, body: Bytes) -> ApiResult {
    let req: SignIdentitiesRequest = decode_body(&body)?;
    let server = api.server()?;
    let signed = server.sign_identities(&id, &secret(&headers), &req)?;
    Ok(json_with_index(&signed, server.state.index(), false))
}

/// `PUT /v1/internal/node/:id/template-reads`: what a task's templates
/// read, waiting for the state to pass `MinIndex` first.
pub async fn template_reads(api: ApiState, Path(id): Path<String>, headers: Headers, body: Bytes) -> ApiResult {
    let req: crate::wire::template::TemplateReadRequest = decode_body(&body)?;
    let server = api.server()?;
    let answer = server.template_reads(&id, &secret(&headers), &req).await?;
    Ok(json_with_index(&answer, answer.index, false))
}

/// `GET /.well-known/jwks.json`: the keys that verify workload identities.
pub async fn jwks(api: ApiState) -> ApiResult {
    let server = api.server()?;
    Ok(json_with_index(&server.keyring.jwks(), server.state.index(), false))
}
