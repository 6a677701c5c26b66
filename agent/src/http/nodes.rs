//! `/v1/nodes` and `/v1/node/:id`, with its drain and eligibility.

use axum::body::Bytes;
use axum::extract::{Path, Query};

use super::stubs::{alloc_stub, node_stub};
use super::{by_prefix, decode_body, flag, json_with_index, ApiError, ApiResult, ApiState, QueryOptions, RawQuery};
use crate::wire::node::{NodeDrainRequest, NodeEligibilityRequest};

pub async fn list(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let prefix = q.prefix.clone().unwrap_or_default();
    let os = flag(&raw, "os");
    let list: Vec<_> = snap.nodes().filter(|n| n.id.starts_with(&prefix)).map(|n| node_stub(n, os)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

pub async fn read(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let node = by_prefix(snap.nodes().map(|n| (n.id.as_str(), n.clone())), &id, "node")?;
    Ok(json_with_index(&node.redacted(), index, q.pretty()))
}

pub async fn allocations(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let list: Vec<_> = snap.allocs_by_node(&id).iter().map(|a| alloc_stub(a, true)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

pub async fn drain(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: NodeDrainRequest = decode_body(&body)?;
    let result = api.server()?.drain_node(&id, req.drain_spec, req.mark_eligible, req.meta)?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn eligibility(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: NodeEligibilityRequest = decode_body(&body)?;
    let eligible = match req.eligibility.as_str() {
        "eligible" => true,
        "ineligible" => false,
        other => return Err(ApiError::bad_request(format!("invalid scheduling eligibility {other:?}"))),
    };
    let result = api.server()?.set_eligibility(&id, eligible)?;
    Ok(json_with_index(&result, result.index, false))
}
