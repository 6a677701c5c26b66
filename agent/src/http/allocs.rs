//! `/v1/allocations`, `/v1/allocation/:id`, `/v1/evaluations` and
//! `/v1/evaluation/:id`.

use axum::extract::{Path, Query};

use super::stubs::alloc_stub;
use super::{by_prefix, flag, json_with_index, ApiError, ApiResult, ApiState, QueryOptions, RawQuery};

pub async fn list(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let prefix = q.prefix.clone().unwrap_or_default();
    let with_resources = flag(&raw, "resources");
    let mut allocs: Vec<_> = snap.allocs().filter(|a| a.id.starts_with(&prefix)).collect();
    allocs.sort_by_key(|a| std::cmp::Reverse(a.create_index));
    let list: Vec<_> = allocs.iter().map(|a| alloc_stub(a, with_resources)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

pub async fn read(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let alloc = snap.alloc(&id).ok_or_else(|| ApiError::not_found("alloc not found"))?;
    Ok(json_with_index(&*alloc, index, q.pretty()))
}

/// Stops one allocation; the scheduler replaces it.
pub async fn stop(api: ApiState, Path(id): Path<String>) -> ApiResult {
    let (eval_id, index) = api.server()?.stop_alloc(&id)?;
    Ok(json_with_index(&serde_json::json!({"EvalID": eval_id, "Index": index}), index, false))
}

pub async fn evals(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let prefix = q.prefix.clone().unwrap_or_default();
    let job = raw.get("job").cloned();
    let status = raw.get("status").cloned();
    let mut evals: Vec<_> = snap
        .evals()
        .filter(|e| e.id.starts_with(&prefix))
        .filter(|e| job.as_ref().map(|j| &e.job_id == j).unwrap_or(true))
        .filter(|e| status.as_ref().map(|s| &e.status == s).unwrap_or(true))
        .map(|e| (**e).clone())
        .collect();
    evals.sort_by_key(|e| std::cmp::Reverse(e.create_index));
    Ok(json_with_index(&evals, index, q.pretty()))
}

pub async fn eval(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let eval = by_prefix(snap.evals().map(|e| (e.id.as_str(), e.clone())), &id, "eval")?;
    Ok(json_with_index(&*eval, index, q.pretty()))
}

pub async fn eval_allocs(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let list: Vec<_> = snap.allocs().filter(|a| a.eval_id == id).map(|a| alloc_stub(a, false)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}
