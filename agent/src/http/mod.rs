//! The HTTP API under `/v1/`, with Nomad's paths, verbs (PUT or POST for
//! writes), PascalCase JSON, blocking queries (`?index=&wait=`,
//! `X-Nomad-Index`) and plain-text errors with Nomad's status codes.
//! Handlers are thin: they parse the request, call the server or client,
//! and shape the answer (`stubs.rs` holds the list shapes).

mod agent;
mod allocs;
mod control;
mod deployments;
mod forward;
mod internal;
mod jobs;
mod logs;
mod nodes;
mod services;
mod variables;
mod volumes;

pub mod stubs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::Serialize;

use crate::client::Client;
use crate::server::{Server, ServerError};

/// Facts about this agent for `agent/self` and `agent/members`.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    /// Agent (node) name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Advertised HTTP address (`ip:port`).
    pub http_addr: String,
    /// Advertised RPC address.
    pub rpc_addr: String,
    /// Serf port (reported only).
    pub serf_port: u16,
    /// Servers a client-only agent forwards to.
    pub servers: Vec<String>,
    /// `bootstrap_expect`.
    pub bootstrap_expect: u32,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Api {
    /// The server, on server agents.
    pub server: Option<Arc<Server>>,
    /// The client, on client agents.
    pub client: Option<Arc<Client>>,
    /// This agent.
    pub info: Arc<AgentInfo>,
    /// For forwarding requests from a client-only agent.
    pub http: reqwest::Client,
}

/// An API error: plain text with a status code.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, self.1).into_response();
        resp.headers_mut().insert("Content-Type", HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        let code = match &e {
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::PermissionDenied => StatusCode::FORBIDDEN,
            ServerError::Plugin(p) => plugin_status(p),
            ServerError::State(_) | ServerError::Keyring(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// The HTTP status of a failed plugin call, from its gRPC code: what the
/// request got wrong is a 4xx (NOT_FOUND a 404), a plugin or node that is
/// away a 503 (worth a retry), the rest a 500.
pub fn plugin_status(e: &crate::wire::csi::PluginError) -> StatusCode {
    use crate::wire::csi::PluginCode;
    match e.code {
        PluginCode::NotFound => StatusCode::NOT_FOUND,
        PluginCode::InvalidArgument
        | PluginCode::FailedPrecondition
        | PluginCode::OutOfRange
        | PluginCode::AlreadyExists
        | PluginCode::ResourceExhausted => StatusCode::BAD_REQUEST,
        PluginCode::PermissionDenied | PluginCode::Unauthenticated => StatusCode::FORBIDDEN,
        PluginCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        PluginCode::Unavailable | PluginCode::DeadlineExceeded | PluginCode::Aborted => StatusCode::SERVICE_UNAVAILABLE,
        PluginCode::Cancelled | PluginCode::Unknown | PluginCode::Internal | PluginCode::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<crate::client::control::ControlError> for ApiError {
    fn from(e: crate::client::control::ControlError) -> Self {
        let code = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else if e.is_bad_request() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(code, e.to_string())
    }
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    /// 404 with a message.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

/// Result type of handlers.
pub type ApiResult = Result<Response, ApiError>;

/// JSON with Nomad's query-meta headers.
pub fn json_with_index<T: Serialize>(value: &T, index: u64, pretty: bool) -> Response {
    let body = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) }.unwrap_or_default();
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    h.insert("X-Nomad-Index", HeaderValue::from(index.max(1)));
    resp
}

/// Adds Nomad's `X-Nomad-KnownLeader` and `X-Nomad-LastContact` to query
/// answers that do not carry them (a forwarded answer keeps its
/// server's): a server agent is the leader (one server: contact 0 ms); a
/// client-only agent knows a leader while its servers answer its
/// heartbeats, and reports how long ago the last answer came.
async fn leader_headers(State(api): State<Api>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key("X-Nomad-Index") || h.contains_key("X-Nomad-KnownLeader") {
        return resp;
    }
    let (known, contact_ms) = match (&api.server, &api.client) {
        (Some(_), _) => (true, 0),
        (None, Some(c)) => match c.server_contact() {
            crate::client::ServerContact::Current(d) => (true, d.as_millis() as u64),
            crate::client::ServerContact::Lost(_) => (false, 0),
        },
        (None, None) => (false, 0),
    };
    h.insert("X-Nomad-KnownLeader", HeaderValue::from_static(if known { "true" } else { "false" }));
    h.insert("X-Nomad-LastContact", HeaderValue::from(contact_ms));
    resp
}

/// Runs each request in a `http` span (method and path) and records it:
/// `berth.http.request` (milliseconds) by method, route (Nomad's spelling,
/// `/v1/job/:id`) and status. Blocking queries count their whole wait.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().replace('{', ":").replace('}', ""));
    let span = tracing::debug_span!("http", method = %method, path = %req.uri().path());
    let started = std::time::Instant::now();
    let resp = next.run(req).instrument(span).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("berth.http.request", "method" => method, "route" => route, "status" => status)
        .record(crate::telemetry::millis_since(started));
    resp
}

/// Query parameters common to reads.
#[derive(Debug, Default, serde::Deserialize)]
pub struct QueryOptions {
    /// Blocking query: wait for an index above this.
    pub index: Option<u64>,
    /// Blocking query: maximum wait ("5m", "30s").
    pub wait: Option<String>,
    /// ID prefix filter.
    pub prefix: Option<String>,
    /// Indented JSON.
    pub pretty: Option<String>,
}

impl QueryOptions {
    pub fn pretty(&self) -> bool {
        self.pretty.is_some()
    }
}

impl Api {
    /// The server, or 501 on a client-only agent (which forwards instead).
    pub fn server(&self) -> Result<&Arc<Server>, ApiError> {
        self.server.as_ref().ok_or_else(|| ApiError(StatusCode::NOT_IMPLEMENTED, "this agent is not a server".into()))
    }

    /// Waits for a blocking query, then returns the index to report.
    pub async fn block(&self, q: &QueryOptions) -> Result<u64, ApiError> {
        let server = self.server()?;
        let Some(min) = q.index.filter(|i| *i > 0) else { return Ok(server.state.index()) };
        let wait = self.wait(q)?;
        Ok(server.state.wait_index(min, wait).await)
    }

    /// How long a blocking query may wait: `?wait=` (default and maximum
    /// 5 minutes, as Nomad) plus up to 1/16 of it at random, so that many
    /// waiters do not return in step.
    pub fn wait(&self, q: &QueryOptions) -> Result<Duration, ApiError> {
        let wait = q
            .wait
            .as_deref()
            .map(crate::util::parse_duration)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .map(|ns| Duration::from_nanos(ns.max(0) as u64))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(300));
        Ok(wait + Duration::from_millis(rand::random::<u64>() % (wait.as_millis() as u64 / 16 + 1)))
    }
}

/// Decodes a JSON body the way Go clients send it: `null` means "unset".
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("failed to decode request body: {e}")))?;
    strip_nulls(&mut value);
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("failed to decode request body: {e}")))
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Finds the single object whose ID starts with `prefix`.
pub fn by_prefix<'a, T>(items: impl Iterator<Item = (&'a str, T)>, prefix: &str, kind: &str) -> Result<T, ApiError> {
    let mut found: Vec<T> = Vec::new();
    for (id, item) in items {
        if id == prefix {
            return Ok(item);
        }
        if id.starts_with(prefix) {
            found.push(item);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ApiError::not_found(format!("{kind} not found"))),
        _ => Err(ApiError::bad_request(format!("prefix {prefix:?} matches multiple {kind}s"))),
    }
}

/// Builds the router. Server agents serve everything; a client-only agent
/// serves what is local to it (logs, its own agent info) and forwards the
/// rest of `/v1/` to its servers.
pub fn router(api: Api) -> Router {
    let local = Router::new()
        .route("/v1/client/fs/logs/{alloc}", get(logs::logs))
        .route("/v1/client/allocation/{alloc}/signal", put(control::signal).post(control::signal))
        .route("/v1/client/allocation/{alloc}/restart", put(control::restart).post(control::restart))
        .route("/v1/client/allocation/{alloc}/stats", get(control::stats))
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/health", get(agent::health))
        .route("/v1/metrics", get(agent::metrics))
        .route("/v1/internal/client/csi/{plugin}", put(volumes::client_call));
    let routes = if api.server.is_some() { local.merge(server_routes()) } else { local };
    routes
        .fallback(agent::fallback)
        .layer(axum::middleware::from_fn_with_state(api.clone(), leader_headers))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(api)
}

fn server_routes() -> Router<Api> {
    Router::new()
        .route("/v1/jobs", get(jobs::list).put(jobs::register).post(jobs::register))
        .route("/v1/jobs/parse", put(jobs::parse).post(jobs::parse))
        .route("/v1/job/{id}", get(jobs::read).put(jobs::update).post(jobs::update).delete(jobs::deregister))
        .route("/v1/job/{id}/plan", put(jobs::plan).post(jobs::plan))
        .route("/v1/job/{id}/dispatch", put(jobs::dispatch).post(jobs::dispatch))
        .route("/v1/job/{id}/scale", get(jobs::scale_status).put(jobs::scale).post(jobs::scale))
        .route("/v1/job/{id}/periodic/force", put(jobs::periodic_force).post(jobs::periodic_force))
        .route("/v1/job/{id}/allocations", get(jobs::allocations))
        .route("/v1/job/{id}/evaluations", get(jobs::evaluations))
        .route("/v1/job/{id}/summary", get(jobs::summary))
        .route("/v1/job/{id}/versions", get(jobs::versions))
        .route("/v1/job/{id}/revert", put(jobs::revert).post(jobs::revert))
        .route("/v1/job/{id}/deployment", get(jobs::deployment))
        .route("/v1/job/{id}/deployments", get(jobs::deployments))
        .route("/v1/job/{id}/services", get(services::of_job))
        .route("/v1/services", get(services::list))
        .route("/v1/service/{name}", get(services::read))
        .route("/v1/service/{name}/{id}", axum::routing::delete(services::delete))
        .route("/v1/allocation/{id}/services", get(services::of_alloc))
        .route("/v1/allocation/{id}/checks", get(services::checks))
        .route("/v1/vars", get(variables::list))
        .route(
            "/v1/var/{*path}",
            get(variables::read).put(variables::write).post(variables::write).delete(variables::delete),
        )
        .route("/v1/operator/keyring/keys", get(variables::keys))
        .route("/v1/operator/keyring/rotate", put(variables::rotate).post(variables::rotate))
        .route("/v1/allocations", get(allocs::list))
        .route("/v1/allocation/{id}", get(allocs::read))
        .route("/v1/allocation/{id}/stop", put(allocs::stop).post(allocs::stop))
        .route("/v1/evaluations", get(allocs::evals))
        .route("/v1/evaluation/{id}", get(allocs::eval))
        .route("/v1/evaluation/{id}/allocations", get(allocs::eval_allocs))
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/deployment/{id}", get(deployments::read))
        .route("/v1/deployment/allocations/{id}", get(deployments::allocations))
        .route("/v1/deployment/promote/{id}", put(deployments::promote).post(deployments::promote))
        .route("/v1/deployment/fail/{id}", put(deployments::fail).post(deployments::fail))
        .route("/v1/deployment/pause/{id}", put(deployments::pause).post(deployments::pause))
        .route(
            "/v1/deployment/allocation-health/{id}",
            put(deployments::allocation_health).post(deployments::allocation_health),
        )
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/node/{id}", get(nodes::read))
        .route("/v1/node/{id}/allocations", get(nodes::allocations))
        .route("/v1/node/{id}/drain", put(nodes::drain).post(nodes::drain))
        .route("/v1/node/{id}/eligibility", put(nodes::eligibility).post(nodes::eligibility))
        .route("/v1/volumes", get(volumes::list))
        .route(
            "/v1/volumes/snapshot",
            get(volumes::snapshot_list)
                .put(volumes::snapshot_create)
                .post(volumes::snapshot_create)
                .delete(volumes::snapshot_delete),
        )
        .route(
            "/v1/volume/csi/{id}",
            get(volumes::read).put(volumes::register).post(volumes::register).delete(volumes::deregister),
        )
        .route("/v1/volume/csi/{id}/create", put(volumes::create).post(volumes::create))
        .route("/v1/volume/csi/{id}/delete", axum::routing::delete(volumes::delete))
        .route("/v1/volume/csi/{id}/detach", axum::routing::delete(volumes::detach))
        .route("/v1/plugins", get(volumes::plugins))
        .route("/v1/plugin/csi/{id}", get(volumes::plugin))
        .route("/v1/agent/members", get(agent::members))
        .route("/v1/status/leader", get(agent::leader))
        .route("/v1/status/peers", get(agent::peers))
        .route("/v1/regions", get(agent::regions))
        .route("/v1/system/gc", put(agent::gc).post(agent::gc))
        .route("/v1/internal/node/register", put(internal::register))
        .route("/v1/internal/node/{id}/heartbeat", put(internal::heartbeat))
        .route("/v1/internal/node/{id}/allocations", get(internal::allocations).put(internal::update_allocs))
        .route("/v1/internal/node/{id}/allocations/fetch", put(internal::fetch_allocs))
        .route("/v1/internal/node/{id}/csi-claim/{alloc}", put(internal::claim_volumes))
        .route("/v1/internal/node/{id}/identities", put(internal::sign_identities))
        .route("/v1/internal/node/{id}/services/{alloc}", put(services::sync))
        .route("/v1/internal/node/{id}/template-reads", put(internal::template_reads))
        .route("/.well-known/jwks.json", get(internal::jwks))
}

/// Query parameters as a map (for endpoint-specific flags).
pub type RawQuery = Query<HashMap<String, String>>;

/// A boolean query parameter as Go's `strconv.ParseBool` reads it
/// (`1`, `t`, `T`, `true`, `TRUE`, `True`); a bare `?flag` is true.
pub fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).map(|v| matches!(v.as_str(), "" | "1" | "t" | "T" | "true" | "TRUE" | "True")).unwrap_or(false)
}

/// Shorthand for handler state.
pub type ApiState = State<Api>;

/// Header map alias for handlers.
pub type Headers = HeaderMap;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::csi::{PluginCode, PluginError};

    #[test]
    fn plugin_errors_keep_their_code_to_the_http_status() {
        let status = |code| ApiError::from(ServerError::Plugin(PluginError::new(code, "x").context("node n1"))).0;
        assert_eq!(status(PluginCode::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status(PluginCode::FailedPrecondition), StatusCode::BAD_REQUEST);
        assert_eq!(status(PluginCode::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(PluginCode::Internal), StatusCode::INTERNAL_SERVER_ERROR);
        // The code crosses the wire by its canonical gRPC name.
        let e = PluginError::new(PluginCode::FailedPrecondition, "volume in use");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"Code":"FAILED_PRECONDITION","Message":"volume in use"}"#);
        assert_eq!(serde_json::from_str::<PluginError>(&json).unwrap(), e);
        assert!(PluginError::new(PluginCode::Unavailable, "").is_transient() && !e.is_transient());
    }
}
