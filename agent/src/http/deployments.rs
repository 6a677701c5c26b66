//! `/v1/deployments`, `/v1/deployment/:id`, its allocations, and the
//! operator's changes: promote, fail, pause or resume, set allocation
//! health.

use axum::body::Bytes;
use axum::extract::{Path, Query};

use super::stubs::alloc_stub;
use super::{by_prefix, decode_body, json_with_index, ApiResult, ApiState, QueryOptions};
use crate::server::DeploymentAction;
use crate::wire::deployment::{AllocHealthRequest, DeploymentUpdateResponse, PauseRequest, PromoteRequest};

pub async fn list(api: ApiState, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let prefix = q.prefix.clone().unwrap_or_default();
    let mut deps: Vec<_> = snap.deployments().filter(|d| d.id.starts_with(&prefix)).map(|d| (**d).clone()).collect();
    deps.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    Ok(json_with_index(&deps, index, q.pretty()))
}

pub async fn read(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let dep = by_prefix(snap.deployments().map(|d| (d.id.as_str(), d.clone())), &id, "deployment")?;
    Ok(json_with_index(&*dep, index, q.pretty()))
}

pub async fn allocations(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let dep = by_prefix(snap.deployments().map(|d| (d.id.as_str(), d.clone())), &id, "deployment")?;
    let list: Vec<_> = snap
        .allocs_by_job(&dep.namespace, &dep.job_id)
        .iter()
        .filter(|a| a.deployment_id == dep.id)
        .map(|a| alloc_stub(a, false))
        .collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

pub async fn promote(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: PromoteRequest = decode_optional(&body)?;
    let groups = if req.all { Vec::new() } else { req.groups };
    change(&api, &id, DeploymentAction::Promote(groups))
}

pub async fn fail(api: ApiState, Path(id): Path<String>) -> ApiResult {
    change(&api, &id, DeploymentAction::Fail)
}

pub async fn pause(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: PauseRequest = decode_optional(&body)?;
    change(&api, &id, DeploymentAction::Pause(req.pause))
}

pub async fn allocation_health(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: AllocHealthRequest = decode_body(&body)?;
    let action =
        DeploymentAction::SetHealth { healthy: req.healthy_allocation_ids, unhealthy: req.unhealthy_allocation_ids };
    change(&api, &id, action)
}

/// A body that may be empty (then every field has its default).
fn decode_optional<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, super::ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    decode_body(body)
}

fn change(api: &ApiState, id: &str, action: DeploymentAction) -> ApiResult {
    let server = api.server()?;
    let snap = server.state.snapshot();
    let dep = by_prefix(snap.deployments().map(|d| (d.id.as_str(), d.clone())), id, "deployment")?;
    let update = server.update_deployment(&dep.id, action)?;
    let index = update.index;
    let answer = DeploymentUpdateResponse {
        eval_create_index: if update.eval_id.is_empty() { 0 } else { index },
        eval_id: update.eval_id,
        deployment_modify_index: index,
        index,
    };
    Ok(json_with_index(&answer, index, false))
}
