//! `/v1/agent/*`, `/v1/status/*`, `/v1/regions`, `/v1/system/gc`, `/v1/metrics`, and the
//! fallback that forwards server endpoints from a client-only agent.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{json_with_index, Api, ApiError, ApiResult, ApiState};

fn index(api: &Api) -> u64 {
    api.server.as_ref().map(|s| s.state.index()).unwrap_or(1)
}

fn member(api: &Api) -> serde_json::Value {
    let info = &api.info;
    let (ip, rpc_port) = info.rpc_addr.rsplit_once(':').unwrap_or((info.rpc_addr.as_str(), "4647"));
    json!({
        "Name": format!("{}.{}", info.name, info.region),
        "Addr": ip,
        "Port": info.serf_port,
        "Tags": {
            "role": "nomad", "region": info.region, "dc": info.datacenter, "port": rpc_port,
            "build": crate::VERSION, "vsn": "1", "raft_vsn": "3", "expect": info.bootstrap_expect.to_string(),
            "bootstrap": (info.bootstrap_expect <= 1).to_string(), "rpc_addr": ip, "id": info.name,
        },
        "Status": "alive",
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

pub async fn agent_self(State(api): ApiState) -> ApiResult {
    let info = &api.info;
    let body = json!({
        "config": {
            "Region": info.region, "Datacenter": info.datacenter, "NodeName": info.name,
            "Version": { "Version": crate::VERSION, "VersionMetadata": "berth" },
            "Server": { "Enabled": api.server.is_some(), "BootstrapExpect": info.bootstrap_expect },
            "Client": { "Enabled": api.client.is_some(), "Servers": info.servers },
            "Addresses": { "HTTP": info.http_addr, "RPC": info.rpc_addr },
        },
        "member": member(&api),
        "stats": {},
    });
    Ok(json_with_index(&body, index(&api), false))
}

pub async fn members(State(api): ApiState) -> ApiResult {
    if api.server.is_none() {
        return Err(ApiError::bad_request("agent is not a server; members are only known to servers"));
    }
    let info = &api.info;
    let body = json!({
        "ServerName": info.name, "ServerRegion": info.region, "ServerDC": info.datacenter,
        "Members": [member(&api)],
    });
    Ok(json_with_index(&body, index(&api), false))
}

/// `GET /v1/agent/health`: the client is healthy while its servers answer
/// its heartbeats, the server while its state store commits; 500 when
/// either is not (Nomad's shape).
pub async fn health(State(api): ApiState) -> ApiResult {
    let part = |problem: Option<String>| match problem {
        None => json!({"ok": true, "message": "ok"}),
        Some(why) => json!({"ok": false, "message": why}),
    };
    let client = api.client.as_ref().map(|c| match c.server_contact() {
        crate::client::ServerContact::Current(_) => None,
        crate::client::ServerContact::Lost(why) => Some(why),
    });
    let server = api.server.as_ref().map(|s| s.state.commit_error().map(|e| format!("state store: {e}")));
    let healthy = client.iter().chain(server.iter()).all(Option::is_none);
    let mut body = serde_json::Map::new();
    if let Some(c) = client {
        body.insert("client".into(), part(c));
    }
    if let Some(s) = server {
        body.insert("server".into(), part(s));
    }
    let mut resp = json_with_index(&body, index(&api), false);
    if !healthy {
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(resp)
}

pub async fn leader(State(api): ApiState) -> ApiResult {
    api.server()?;
    Ok(json_with_index(&api.info.rpc_addr, index(&api), false))
}

pub async fn peers(State(api): ApiState) -> ApiResult {
    api.server()?;
    Ok(json_with_index(&vec![api.info.rpc_addr.clone()], index(&api), false))
}

pub async fn regions(State(api): ApiState) -> ApiResult {
    Ok(json_with_index(&vec![api.info.region.clone()], index(&api), false))
}

pub async fn gc(State(api): ApiState) -> ApiResult {
    api.server()?.force_gc()?;
    Ok(StatusCode::OK.into_response())
}

/// Unknown paths: a client-only agent forwards `/v1/` requests to its
/// servers; everything else is 404.
pub async fn fallback(State(api): ApiState, req: Request) -> Response {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if api.server.is_some() || !path_and_query.starts_with("/v1/") || api.info.servers.is_empty() {
        return ApiError::not_found(format!("Invalid URL path: {}", req.uri().path())).into_response();
    }
    let method = req.method().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let mut last = String::from("no servers");
    for server in &api.info.servers {
        let url = format!("http://{server}{path_and_query}");
        match api.http.request(method.clone(), &url).body(body.clone()).send().await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                return out;
            }
            Err(e) => last = e.to_string(),
        }
    }
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("no servers reachable: {last}")).into_response()
}

/// `GET /v1/metrics`: this agent's metrics as Nomad's JSON, or as
/// Prometheus text with `?format=prometheus`.
pub async fn metrics(State(api): ApiState, axum::extract::Query(q): super::RawQuery) -> ApiResult {
    let mut derived = Vec::new();
    if let Some(server) = &api.server {
        derived.extend(crate::server::telemetry::gauges(&server.state.snapshot()));
    }
    if let Some(client) = &api.client {
        derived.extend(client.gauges());
        derived.extend(client.allocation_gauges().await);
    }
    if q.get("format").is_some_and(|f| f == "prometheus") {
        let mut resp = crate::telemetry::render_prometheus(&derived).into_response();
        resp.headers_mut()
            .insert("Content-Type", axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        return Ok(resp);
    }
    Ok(json_with_index(&crate::telemetry::render_json(&derived), 0, super::flag(&q, "pretty")))
}
