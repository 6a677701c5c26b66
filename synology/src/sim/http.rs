//! The simulator's HTTP surface: `/webapi/{auth,entry,query}.cgi` over GET
//! and POST forms alike, DSM's JSON envelope (HTTP 200 even for API
//! errors), the session carriers (`_sid` in query or form, raw or quoted;
//! the `id` cookie; `SynoToken` param or `X-SYNO-TOKEN` header), and the
//! admin endpoints `POST|GET /sim/faults` and `GET /sim/stats`.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tracing::{debug, error};

use super::auth::{AutoBlock, Blocks, Sessions};
use super::faults::{Faults, FaultsUpdate};
use super::params::ApiParams;
use super::san::{ApiError, Dialect, San, APIS};
use super::{tls, Stats};
use crate::dsm::Password;

/// Everything the handlers share.
pub(crate) struct Shared {
    pub san: Arc<Mutex<San>>,
    pub sessions: Mutex<Sessions>,
    pub blocks: Mutex<Blocks>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<Stats>,
    pub account: String,
    pub password: Password,
    pub auto_block: AutoBlock,
    pub two_factor: bool,
    pub non_admin: bool,
    pub dialect: Dialect,
    /// With "redirect HTTP to HTTPS", where plain HTTP requests are sent.
    pub redirect_to: Option<SocketAddr>,
}

/// Applies a fault update (`POST /sim/faults`, [`super::Simulator::inject`]).
pub(crate) fn apply(shared: &Shared, update: &FaultsUpdate) {
    if update.expire_sessions_now {
        shared.sessions.lock().expire_all();
    }
    if update.clear_auto_block {
        shared.blocks.lock().clear();
    }
    let mut faults = shared.faults.lock();
    faults.apply(update);
    debug!(?faults, expire_sessions_now = update.expire_sessions_now, "faults updated");
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/webapi/{cgi}", any(webapi))
        .route("/sim/faults", get(faults_get).post(faults_post))
        .route("/sim/stats", get(stats_get))
        .with_state(shared)
}

async fn faults_get(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults.lock().clone())
}

async fn faults_post(State(shared): State<Arc<Shared>>, Json(update): Json<FaultsUpdate>) -> Json<Faults> {
    apply(&shared, &update);
    Json(shared.faults.lock().clone())
}

async fn stats_get(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(*shared.stats.lock())
}

async fn webapi(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(cgi): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(https) = shared.redirect_to.filter(|_| !headers.contains_key(tls::VIA_TLS)) {
        // DSM's "redirect HTTP to HTTPS": the same path on the HTTPS port.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| h.split(':').next());
        let location = format!(
            "https://{}:{}/webapi/{cgi}{}",
            host.unwrap_or("localhost"),
            https.port(),
            query.as_deref().map(|q| format!("?{q}")).unwrap_or_default()
        );
        return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response();
    }
    let (latency, fail_500) = {
        let mut faults = shared.faults.lock();
        let fail = faults.http_500_next > 0;
        if fail {
            faults.http_500_next -= 1;
        }
        (faults.latency_ms, fail)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if fail_500 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected fault: HTTP 500").into_response();
    }
    if !matches!(cgi.as_str(), "auth.cgi" | "entry.cgi" | "query.cgi") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let form = is_form(&headers).then_some(&body[..]);
    let params = ApiParams::parse(query.as_deref(), form);
    let (Some(api), Some(method), Some(version)) =
        (params.string("api"), params.string("method"), params.value("version"))
    else {
        return envelope(Err(101));
    };
    let version = match version {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match api.as_str() {
        "SYNO.API.Info" if method == "query" => envelope(Ok(info(&params, shared.dialect))),
        "SYNO.API.Info" => envelope(Err(103)),
        "SYNO.API.Auth" => auth(&shared, &method, version, &params, &headers, peer),
        _ => san_call(shared, api, method, version, params, &headers).await,
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The SID: `_sid` (query or form, raw or JSON-quoted), else the `id` cookie.
fn sid(params: &ApiParams, headers: &HeaderMap) -> Option<String> {
    params.string("_sid").or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|cookies| cookies.split(';').find_map(|c| c.trim().strip_prefix("id=").map(str::to_owned)))
    })
}

fn token(params: &ApiParams, headers: &HeaderMap) -> Option<String> {
    params.string("SynoToken").or_else(|| headers.get("x-syno-token").and_then(|v| v.to_str().ok()).map(str::to_owned))
}

fn auth(
    shared: &Shared,
    method: &str,
    version: Option<u64>,
    params: &ApiParams,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Response {
    if !version.is_some_and(|v| (1..=shared.dialect.auth_max_version()).contains(&v)) {
        return envelope(Err(104));
    }
    match method {
        "login" => login(shared, params, peer),
        "logout" => {
            if let Some(sid) = sid(params, headers) {
                shared.sessions.lock().logout(&sid);
            }
            envelope(Ok(Value::Null))
        }
        _ => envelope(Err(103)),
    }
}

/// Credentials are compared raw, then JSON-decoded (clients that quote
/// every field). A blocked source IP answers 407 whatever it sends; a
/// refusal counts towards Auto Block; an account with 2-factor
/// authentication enforced answers 403 (berth sends no code).
fn login(shared: &Shared, params: &ApiParams, peer: SocketAddr) -> Response {
    if let Some(code) = shared.faults.lock().login_error_next.take() {
        shared.stats.lock().failed_logins += 1;
        return envelope(Err(code));
    }
    if shared.blocks.lock().blocked(peer.ip()) {
        shared.stats.lock().blocked_logins += 1;
        debug!(ip = %peer.ip(), "login refused: the IP is blocked (Auto Block)");
        return envelope(Err(407));
    }
    let matches = |key: &str, expected: &str| {
        params.raw(key) == Some(expected) || params.string(key).as_deref() == Some(expected)
    };
    if !(matches("account", &shared.account) && matches("passwd", shared.password.expose())) {
        shared.stats.lock().failed_logins += 1;
        shared.blocks.lock().refused(peer.ip(), shared.auto_block);
        debug!("login refused: wrong account or password");
        return envelope(Err(400));
    }
    if shared.two_factor && params.string("otp_code").is_none() {
        shared.stats.lock().failed_logins += 1;
        return envelope(Err(403));
    }
    let (sid, token) = shared.sessions.lock().login();
    shared.stats.lock().logins += 1;
    let mut data = json!({ "sid": sid, "account": shared.account, "is_portal_port": false });
    if params.boolean("enable_syno_token") == Some(true) {
        data["synotoken"] = json!(token);
    }
    let mut response = envelope(Ok(data));
    if params.string("format").as_deref() != Some("sid") {
        if let Ok(cookie) = HeaderValue::from_str(&format!("id={sid}; path=/")) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
    }
    response
}

async fn san_call(
    shared: Arc<Shared>,
    api: String,
    method: String,
    version: Option<u64>,
    params: ApiParams,
    headers: &HeaderMap,
) -> Response {
    let Some((_, methods)) = APIS.iter().find(|(name, _)| *name == api) else {
        return envelope(Err(102));
    };
    if version != Some(1) {
        return envelope(Err(104));
    }
    let Some(method) = methods.iter().copied().find(|m| *m == method) else {
        return envelope(Err(103));
    };
    if let Err(code) =
        shared.sessions.lock().check(sid(&params, headers).as_deref(), token(&params, headers).as_deref())
    {
        return envelope(Err(code));
    }
    if shared.non_admin {
        // SAN APIs are for administrators only (DSM's API manifest).
        return envelope(Err(105));
    }
    if let Some(code) = shared.faults.lock().error_code_next.take() {
        return envelope(Err(code));
    }
    shared.stats.lock().api_calls += 1;
    // A stalled call waits until the stall time is over or the fault is
    // cleared, whichever comes first.
    let full_name = format!("{api}.{method}");
    let stalled = |shared: &Shared| {
        let faults = shared.faults.lock();
        (faults.stall_method.as_deref() == Some(full_name.as_str())).then_some(faults.stall_ms)
    };
    if let Some(ms) = stalled(&shared) {
        debug!(%api, method, ms, "injected fault: stalling the call");
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        while tokio::time::Instant::now() < until && stalled(&shared).is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let expire_after = {
        let mut faults = shared.faults.lock();
        match faults.expire_sessions_after_calls {
            Some(n) if n <= 1 => {
                faults.expire_sessions_after_calls = None;
                true
            }
            Some(n) => {
                faults.expire_sessions_after_calls = Some(n - 1);
                false
            }
            None => false,
        }
    };
    if expire_after {
        debug!("injected fault: sessions expire after this call");
        shared.sessions.lock().expire_all();
    }
    let san = Arc::clone(&shared.san);
    let api_name = api.clone();
    let outcome = tokio::task::spawn_blocking(move || san.lock().dispatch(&api_name, method, &params)).await;
    match outcome {
        Ok(Ok(data)) => envelope(Ok(data)),
        Ok(Err(ApiError::Busy(code))) => {
            shared.stats.lock().busy_refusals += 1;
            envelope(Err(code))
        }
        Ok(Err(ApiError::Code(code))) => envelope(Err(code)),
        Ok(Err(ApiError::Sim(err))) => {
            error!(%api, method, %err, "simulator storage failed");
            envelope(Err(100))
        }
        Err(err) => {
            error!(%api, method, %err, "SAN call panicked");
            envelope(Err(100))
        }
    }
}

/// `SYNO.API.Info query`: `query=all` or a comma list of API names.
fn info(params: &ApiParams, dialect: Dialect) -> Value {
    let mut all = serde_json::Map::new();
    all.insert("SYNO.API.Info".into(), json!({"path": "query.cgi", "minVersion": 1, "maxVersion": 1}));
    all.insert(
        "SYNO.API.Auth".into(),
        json!({"path": dialect.auth_path(), "minVersion": 1, "maxVersion": dialect.auth_max_version()}),
    );
    for (api, _) in APIS {
        all.insert(
            (*api).into(),
            json!({"path": "entry.cgi", "minVersion": 1, "maxVersion": 1, "requestFormat": "JSON"}),
        );
    }
    let query = params.string("query").unwrap_or_else(|| "all".to_owned());
    if query == "all" {
        return Value::Object(all);
    }
    let wanted: Vec<&str> = query.split(',').map(str::trim).collect();
    Value::Object(all.into_iter().filter(|(api, _)| wanted.contains(&api.as_str())).collect())
}

/// DSM's envelope, always HTTP 200, with DSM's quoted charset.
fn envelope(result: Result<Value, i64>) -> Response {
    let body = match result {
        Ok(Value::Null) => json!({"success": true}),
        Ok(data) => json!({"success": true, "data": data}),
        Err(code) => json!({"success": false, "error": {"code": code}}),
    };
    ([(header::CONTENT_TYPE, "application/json; charset=\"UTF-8\"")], body.to_string()).into_response()
}
