//! Client-local requests (logs, signals, restarts) for an allocation that
//! runs on another client: the server looks up the allocation's node and
//! passes the request on to that node's HTTP API, streaming the answer back.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{Api, ApiError, ApiResult};

/// Sends `method path?query` (with `body`) to the client that runs
/// `alloc_id`.
pub async fn to_alloc_node(
    api: &Api,
    alloc_id: &str,
    method: reqwest::Method,
    path: &str,
    query: &HashMap<String, String>,
    body: Option<bytes::Bytes>,
) -> ApiResult {
    let Some(server) = api.server.as_ref() else {
        return Err(ApiError::not_found(format!("Unknown allocation {alloc_id:?} on this client")));
    };
    let snap = server.state.snapshot();
    let alloc = snap.alloc(alloc_id).ok_or_else(|| ApiError::not_found(format!("alloc {alloc_id} not found")))?;
    let node = snap.node(&alloc.node_id).ok_or_else(|| ApiError::not_found("node not found"))?;
    if node.http_addr.is_empty() || node.http_addr == api.info.http_addr {
        return Err(ApiError::not_found(format!("allocation {alloc_id} does not run on its node's client")));
    }
    let mut req = api.http.request(method, format!("http://{}{path}", node.http_addr)).query(query);
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("node {}: {e}", node.name)))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut out = Body::from_stream(resp.bytes_stream()).into_response();
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}
