//! `/v1/client/allocation/:id/signal`, `.../restart` and `.../stats`:
//! requests to a running allocation's tasks, carried out by the client
//! that runs it (this agent's, or another one's through the servers).

use axum::extract::{Path, State};

use super::{decode_body, json_with_index, Api, ApiError, ApiResult};
use crate::client::control::TaskAction;
use crate::wire::alloc::{named_task, AllocRestartRequest, AllocSignalRequest};

/// Sends a signal to one task or to all of them.
pub async fn signal(State(api): State<Api>, Path(alloc_id): Path<String>, body: bytes::Bytes) -> ApiResult {
    let req: AllocSignalRequest = decode_body(&body)?;
    if req.signal.is_empty() {
        return Err(ApiError::bad_request("missing signal"));
    }
    let task = named_task(&req.task);
    run(api, alloc_id, "signal", body, task, TaskAction::Signal(req.signal)).await
}

/// Restarts one task, or all of them, in place.
pub async fn restart(State(api): State<Api>, Path(alloc_id): Path<String>, body: bytes::Bytes) -> ApiResult {
    let req: AllocRestartRequest = decode_body(&body)?;
    let task = if req.all_tasks { None } else { named_task(&req.task_name) };
    run(api, alloc_id, "restart", body, task, TaskAction::Restart).await
}

/// What the allocation's running tasks use.
pub async fn stats(
    State(api): State<Api>,
    Path(alloc_id): Path<String>,
    axum::extract::Query(query): super::RawQuery,
) -> ApiResult {
    match api.client.as_ref().filter(|c| c.runs(&alloc_id)) {
        Some(client) => Ok(json_with_index(&client.alloc_stats(&alloc_id).await?, 0, super::flag(&query, "pretty"))),
        None => {
            let path = format!("/v1/client/allocation/{alloc_id}/stats");
            super::forward::to_alloc_node(&api, &alloc_id, reqwest::Method::GET, &path, &query, None).await
        }
    }
}

async fn run(
    api: Api,
    alloc_id: String,
    verb: &str,
    body: bytes::Bytes,
    task: Option<String>,
    action: TaskAction,
) -> ApiResult {
    match api.client.as_ref().filter(|c| c.runs(&alloc_id)) {
        Some(client) => {
            client.control(&alloc_id, task, action).await?;
            Ok(json_with_index(&serde_json::json!({}), 0, false))
        }
        None => {
            let path = format!("/v1/client/allocation/{alloc_id}/{verb}");
            let query = Default::default();
            super::forward::to_alloc_node(&api, &alloc_id, reqwest::Method::PUT, &path, &query, Some(body)).await
        }
    }
}
