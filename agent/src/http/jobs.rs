//! `/v1/jobs`, `/v1/jobs/parse` and `/v1/job/:id/...` (dispatch, scale and periodic force included).

use axum::body::Bytes;
use axum::extract::{Path, Query};
use serde::Deserialize;
use serde_json::Value;

use super::stubs::{alloc_stub, job_stub};
use super::{decode_body, flag, json_with_index, ApiError, ApiResult, ApiState, QueryOptions, RawQuery};
use crate::server::summary::{job_scale_status, job_summary};
use crate::structs::Job;
use crate::wire::plan::DispatchRequest;

/// Body of a register request.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RegisterRequest {
    job: Option<Job>,
    enforce_index: bool,
    job_modify_index: u64,
}

/// Fills what Go's API client leaves nil and Nomad defaults server-side:
/// a task group without `Count` has one allocation.
fn default_counts(body: &mut Value) {
    let job = match body.get_mut("Job") {
        Some(j) => j,
        None => body,
    };
    if let Some(Value::Array(groups)) = job.get_mut("TaskGroups") {
        for g in groups.iter_mut().filter_map(Value::as_object_mut) {
            g.entry("Count").or_insert(Value::from(1));
        }
    }
}

fn decode_job_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value: Value = decode_body(body)?;
    default_counts(&mut value);
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("failed to decode request body: {e}")))
}

pub async fn list(api: ApiState, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let prefix = q.prefix.clone().unwrap_or_default();
    let list: Vec<_> = snap.jobs().filter(|j| j.id.starts_with(&prefix)).map(|j| job_stub(&snap, j)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

async fn register_with(api: &ApiState, body: &[u8], path_id: Option<&str>) -> ApiResult {
    let req: RegisterRequest = decode_job_request(body)?;
    let job = req.job.ok_or_else(|| ApiError::bad_request("Job must be specified"))?;
    if let Some(id) = path_id {
        if job.id != id {
            return Err(ApiError::bad_request("Job ID does not match name"));
        }
    }
    let enforce = req.enforce_index.then_some(req.job_modify_index);
    let result = api.server()?.register_job(job, enforce)?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn register(api: ApiState, body: Bytes) -> ApiResult {
    register_with(&api, &body, None).await
}

pub async fn update(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    register_with(&api, &body, Some(&id)).await
}

/// Body of `/v1/jobs/parse`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ParseRequest {
    #[serde(rename = "JobHCL")]
    job_hcl: String,
    /// `-var-file` content (HCL).
    variables: String,
}

pub async fn parse(api: ApiState, body: Bytes) -> ApiResult {
    let req: ParseRequest = decode_body(&body)?;
    let mut vars = crate::jobspec::VarInputs::default();
    if !req.variables.trim().is_empty() {
        vars.files.push(("variables".into(), req.variables));
    }
    // Nomad's parse endpoint decodes without validating: registering validates.
    let parsed = crate::jobspec::decode_job("input.hcl", &req.job_hcl, &vars)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let index = api.server.as_ref().map(|s| s.state.index()).unwrap_or(1);
    Ok(json_with_index(&parsed.job, index, false))
}

fn job_or_404(
    api: &ApiState,
    id: &str,
) -> Result<(std::sync::Arc<Job>, std::sync::Arc<crate::server::state::Tables>), ApiError> {
    let snap = api.server()?.state.snapshot();
    let job = snap.job("default", id).ok_or_else(|| ApiError::not_found("job not found"))?;
    Ok((job, snap))
}

pub async fn read(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let (job, _) = job_or_404(&api, &id)?;
    Ok(json_with_index(&*job, index, q.pretty()))
}

pub async fn deregister(api: ApiState, Path(id): Path<String>, Query(q): RawQuery) -> ApiResult {
    let result = api.server()?.deregister_job("default", &id, flag(&q, "purge"))?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn dispatch(api: ApiState, Path(id): Path<String>, Query(q): RawQuery, body: Bytes) -> ApiResult {
    let req: DispatchRequest = if body.is_empty() { DispatchRequest::default() } else { decode_body(&body)? };
    let token = q.get("idempotency_token").map(String::as_str).unwrap_or_default();
    let result = api.server()?.dispatch_job("default", &id, req, token)?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn scale(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: crate::wire::plan::ScaleRequest = decode_body(&body)?;
    let group = req.target.get("Group").ok_or_else(|| ApiError::bad_request("missing task group name"))?;
    let count =
        req.count.ok_or_else(|| ApiError::bad_request("scaling needs a Count (events without one are not kept)"))?;
    let result = api.server()?.scale_job("default", &id, group, count)?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn scale_status(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let (job, snap) = job_or_404(&api, &id)?;
    Ok(json_with_index(&job_scale_status(&snap, &job), index, q.pretty()))
}

/// `job revert`: the specification of an earlier version as the next.
pub async fn revert(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: crate::wire::deployment::RevertRequest = decode_body(&body)?;
    let result = api.server()?.revert_job("default", &id, req.job_version, req.enforce_prior_version)?;
    Ok(json_with_index(&result, result.index, false))
}

pub async fn periodic_force(api: ApiState, Path(id): Path<String>) -> ApiResult {
    let result = api.server()?.force_periodic("default", &id)?;
    Ok(json_with_index(&result, result.index, false))
}

/// Body of a plan request.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PlanRequest {
    job: Option<Job>,
}

pub async fn plan(api: ApiState, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: PlanRequest = decode_job_request(&body)?;
    let job = req.job.ok_or_else(|| ApiError::bad_request("Job must be specified"))?;
    if job.id != id {
        return Err(ApiError::bad_request("Job ID does not match"));
    }
    let server = api.server()?;
    let result = server.plan_job(job)?;
    Ok(json_with_index(&result, server.state.index(), false))
}

pub async fn allocations(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let mut allocs = snap.allocs_by_job("default", &id);
    allocs.sort_by_key(|a| std::cmp::Reverse(a.create_index));
    let list: Vec<_> = allocs.iter().map(|a| alloc_stub(a, false)).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

pub async fn evaluations(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let mut evals: Vec<_> = snap.evals().filter(|e| e.job_id == id).map(|e| (**e).clone()).collect();
    evals.sort_by_key(|e| std::cmp::Reverse(e.create_index));
    Ok(json_with_index(&evals, index, q.pretty()))
}

pub async fn summary(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let (job, snap) = job_or_404(&api, &id)?;
    Ok(json_with_index(&job_summary(&snap, &job), index, q.pretty()))
}

/// A job's versions, newest first; with `?diffs=true`, each one's diff
/// against the version before it.
pub async fn versions(
    api: ApiState,
    Path(id): Path<String>,
    Query(q): Query<QueryOptions>,
    Query(raw): RawQuery,
) -> ApiResult {
    let index = api.block(&q).await?;
    let (_, snap) = job_or_404(&api, &id)?;
    let versions: Vec<Job> = snap.job_versions("default", &id).iter().map(|j| (**j).clone()).collect();
    let diffs = flag(&raw, "diffs").then(|| {
        let none = std::collections::BTreeMap::new();
        versions.windows(2).map(|w| crate::server::diff::job_diff(Some(&w[1]), &w[0], &none)).collect::<Vec<_>>()
    });
    Ok(json_with_index(&serde_json::json!({ "Versions": versions, "Diffs": diffs }), index, q.pretty()))
}

pub async fn deployment(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let dep = snap.latest_deployment("default", &id).map(|d| (*d).clone());
    Ok(json_with_index(&dep, index, q.pretty()))
}

pub async fn deployments(api: ApiState, Path(id): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let mut deps: Vec<_> = snap.deployments().filter(|d| d.job_id == id).map(|d| (**d).clone()).collect();
    deps.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    Ok(json_with_index(&deps, index, q.pretty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_default_to_one() {
        let mut v = serde_json::json!({"Job": {"TaskGroups": [{"Name": "a"}, {"Name": "b", "Count": 0}]}});
        default_counts(&mut v);
        assert_eq!(v["Job"]["TaskGroups"][0]["Count"], 1);
        assert_eq!(v["Job"]["TaskGroups"][1]["Count"], 0);
    }
}
