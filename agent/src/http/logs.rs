//! `/v1/client/fs/logs/:alloc`: a task's stdout/stderr, read from this
//! client's log files or forwarded to the client that runs the allocation.
//! `plain=true` streams raw bytes; otherwise JSON frames
//! `{"File","Offset","Data"}` as Nomad sends them. `follow=true` keeps
//! streaming new output until the allocation's directory is removed.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::Response;
use base64::Engine;

use super::{flag, Api, ApiError, ApiResult, RawQuery};
use crate::client::logs::LogReader;

const CHUNK: usize = 64 * 1024;

fn frame(task: &str, stream: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let v = serde_json::json!({
        "File": format!("alloc/logs/{task}.{stream}.0"),
        "Offset": offset,
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

pub async fn logs(
    State(api): State<Api>,
    Path(alloc_id): Path<String>,
    axum::extract::Query(q): RawQuery,
) -> ApiResult {
    let local_root = api.client.as_ref().and_then(|c| c.alloc_root(&alloc_id));
    let Some(root) = local_root else {
        let path = format!("/v1/client/fs/logs/{alloc_id}");
        return super::forward::to_alloc_node(&api, &alloc_id, reqwest::Method::GET, &path, &q, None).await;
    };
    let task = match q.get("task").filter(|t| !t.is_empty()) {
        Some(t) => t.clone(),
        None => return Err(ApiError::bad_request("must include task name")),
    };
    let stream = q.get("type").cloned().unwrap_or_else(|| "stdout".into());
    if stream != "stdout" && stream != "stderr" {
        return Err(ApiError::bad_request(format!("invalid log type {stream:?}: must be stdout or stderr")));
    }
    if !root.join(&task).is_dir() {
        return Err(ApiError::not_found(format!("task {task:?} not found in allocation")));
    }
    if api.client.as_ref().is_some_and(|c| c.logs_disabled(&alloc_id, &task)) {
        return Err(ApiError::not_found(format!(
            "log entry for task {task:?} and log type {stream:?} not found: the task's logging is disabled"
        )));
    }
    let log_dir = root.join("alloc/logs");
    let reader = LogReader::new(&log_dir, &task, &stream);
    let offset: u64 = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let start =
        if q.get("origin").map(|o| o == "end").unwrap_or(false) { reader.len().saturating_sub(offset) } else { offset };
    let plain = flag(&q, "plain");
    let follow = flag(&q, "follow");
    let state = (reader, start, root, task.clone(), stream.clone(), false);
    let body = futures::stream::unfold(state, move |(reader, pos, root, task, stream, done)| async move {
        if done {
            return None;
        }
        loop {
            let data = reader.read_from(pos, CHUNK).unwrap_or_default();
            if !data.is_empty() {
                let next = pos + data.len() as u64;
                let out = if plain { data } else { frame(&task, &stream, pos, &data) };
                return Some((Ok::<_, std::io::Error>(out), (reader, next, root, task, stream, false)));
            }
            if !follow || !PathBuf::from(&root).is_dir() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    let ctype = if plain { "text/plain; charset=utf-8" } else { "application/json" };
    resp.headers_mut().insert("Content-Type", HeaderValue::from_static(ctype));
    Ok(resp)
}
