//! [`DsmClient`]: one DSM, one login session shared by every call, the
//! envelope decoding, and the re-login rule.
//!
//! * Login is `SYNO.API.Auth login` (version 6, `format=sid`) as a POST form
//!   to `auth.cgi`, so the password never appears in a URL. When the answer
//!   holds a `synotoken` it is echoed on every later call as `X-SYNO-TOKEN`.
//! * SAN calls are GETs to `entry.cgi`, version 1, carrying the SID both as
//!   `_sid` (democratic-csi's carrier) and as the `id` cookie
//!   (synology-csi's), so either DSM behaviour accepts them.
//! * A call refused with 105, 106 or 119 logs in again (once for all the
//!   calls that saw the same stale session) and is retried exactly once.
//! * A refused login (400–411: wrong password, not an administrator, 2FA,
//!   Auto Block) is latched: no new login until a back-off has passed
//!   ([`DsmConfig::login_backoff`], doubling), and every call meanwhile
//!   fails at once with the cached reason, however many probes and RPCs
//!   run, so a wrong password never trips DSM's Auto Block.
//! * Redirects are not followed (DSM's "redirect HTTP to HTTPS" would turn
//!   the POSTed login into a bodyless GET); they are an error saying what
//!   to configure.
//! * At most [`DsmConfig::max_concurrency`] calls are in flight; each has
//!   [`DsmConfig::call_timeout`].

use std::fmt;
use std::sync::Arc;

use reqwest::header::COOKIE;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};
use tracing::debug;

use super::codes;
use super::config::DsmConfig;
use super::error::{root_cause, DsmError};
use super::params::Params;

/// The login API and the version used (democratic-csi's choice; DSM 6 and 7).
const AUTH_API: &str = "SYNO.API.Auth";
const AUTH_VERSION: &str = "6";

/// A DSM Web API client. Cheap to clone; clones share the session and the
/// concurrency limit.
#[derive(Clone)]
pub struct DsmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: DsmConfig,
    base_url: String,
    permits: Semaphore,
    session: Mutex<Option<Session>>,
    /// The last refused login, while its back-off runs.
    latch: std::sync::Mutex<Option<Latch>>,
    /// Nanoseconds spent in calls (waiting for a permit excluded).
    busy_nanos: std::sync::atomic::AtomicU64,
}

/// A logged-in session. Deliberately not `Debug`: the SID and the token are
/// credentials.
#[derive(Clone)]
struct Session {
    sid: String,
    token: Option<String>,
    generation: u64,
}

/// A refused login and when the next may be tried.
#[derive(Clone, Copy)]
struct Latch {
    code: i64,
    refusals: u32,
    until: std::time::Instant,
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    data: Value,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
}

#[derive(Deserialize)]
struct LoginData {
    sid: String,
    synotoken: Option<String>,
}

impl fmt::Debug for DsmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsmClient")
            .field("base_url", &self.inner.base_url)
            .field("account", &self.inner.config.account)
            .finish_non_exhaustive()
    }
}

impl DsmClient {
    /// Builds a client; nothing is sent until the first call, which logs in.
    pub fn new(config: DsmConfig) -> Result<Self, DsmError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(DsmError::Config(format!("base URL {base_url:?} must start with http:// or https://")));
        }
        if config.max_concurrency == 0 {
            return Err(DsmError::Config("max_concurrency must be at least 1".to_owned()));
        }
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(config.call_timeout)
                .connect_timeout(config.call_timeout)
                .tls_danger_accept_invalid_certs(config.insecure)
                .user_agent(concat!("berth-synology/", env!("CARGO_PKG_VERSION")))
        };
        // The system's CA certificates are only needed to verify an https
        // DSM; a host without them (no ca-certificates) still talks http,
        // or https with allowInsecure.
        let needs_roots = base_url.starts_with("https://") && !config.insecure;
        let http = builder().build().or_else(|e| {
            if needs_roots {
                Err(DsmError::Config(format!(
                    "cannot load this host's CA certificates to verify {base_url} ({}): install ca-certificates, \
                     or set httpConnection.allowInsecure: true for a self-signed DSM certificate",
                    root_cause(&e)
                )))
            } else {
                builder()
                    .tls_certs_only(std::iter::empty())
                    .build()
                    .map_err(|e| DsmError::Config(format!("cannot build the HTTP client: {}", root_cause(&e))))
            }
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                permits: Semaphore::new(config.max_concurrency),
                base_url,
                config,
                session: Mutex::new(None),
                latch: std::sync::Mutex::new(None),
                busy_nanos: Default::default(),
            }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &DsmConfig {
        &self.inner.config
    }

    /// Calls `api`/`method` (version 1) on `entry.cgi` and returns `data`,
    /// logging in first when needed and once more on 105/106/119. Each call
    /// is recorded: `berth.dsm.call` (milliseconds) and, when it fails,
    /// `berth.dsm.call.errors` by kind. "No such LUN" is an answer, not a
    /// failure (a delete waits for it), and is not counted as one.
    pub(crate) async fn call(
        &self,
        api: &'static str,
        method: &'static str,
        params: Params,
    ) -> Result<Value, DsmError> {
        let _permit = self.inner.permits.acquire().await.expect("the call semaphore is never closed");
        let started = std::time::Instant::now();
        let result = async {
            let session = self.session(api, method).await?;
            match self.send(api, method, &params, &session).await {
                Err(DsmError::Api { code, .. }) if codes::needs_relogin(code) => {
                    debug!(api, method, code, "DSM rejected the session; logging in again");
                    let fresh = self.relogin(session.generation, api, method).await?;
                    self.send(api, method, &params, &fresh).await
                }
                other => other,
            }
        }
        .await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner.busy_nanos.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("berth.dsm.call", "api" => api, "method" => method).record(nanos as f64 / 1e6);
        let failure = match &result {
            Err(DsmError::Api { code, .. }) if codes::is_no_such_lun(*code) => None,
            other => other.as_ref().err(),
        };
        if let Some(e) = failure {
            metrics::counter!("berth.dsm.call.errors", "api" => api, "method" => method, "error" => e.kind())
                .increment(1);
        }
        result
    }

    /// Total time this client (and its clones) spent in DSM calls, logins
    /// and re-logins included: how much of an operation was DSM's.
    pub fn time_in_calls(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.inner.busy_nanos.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// [`Self::call`], then `data` decoded as `T`.
    pub(crate) async fn call_as<T: DeserializeOwned>(
        &self,
        api: &'static str,
        method: &'static str,
        params: Params,
    ) -> Result<T, DsmError> {
        let data = self.call(api, method, params).await?;
        serde_json::from_value(data).map_err(|e| DsmError::Malformed { api, method, detail: e.to_string() })
    }

    async fn session(&self, api: &'static str, method: &'static str) -> Result<Session, DsmError> {
        let mut current = self.inner.session.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = self.login(1).await.map_err(|e| with_call(e, api, method))?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// Replaces the session that answered a session error, unless another
    /// call already did.
    async fn relogin(&self, stale: u64, api: &'static str, method: &'static str) -> Result<Session, DsmError> {
        let mut current = self.inner.session.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.generation != stale) {
            return Ok(session.clone());
        }
        *current = None;
        let session = self.login(stale + 1).await.map_err(|e| with_call(e, api, method))?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// Logs in, unless a refused login's back-off still runs; a refusal
    /// (400–411) starts or lengthens it, a success clears it.
    async fn login(&self, generation: u64) -> Result<Session, DsmError> {
        let latched = *self.inner.latch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(latch) = latched.filter(|l| l.until > std::time::Instant::now()) {
            let retry_in = latch.until.saturating_duration_since(std::time::Instant::now());
            return Err(DsmError::LoginLatched { api: AUTH_API, method: "login", code: latch.code, retry_in });
        }
        let result = self.try_login(generation).await;
        let mut latch = self.inner.latch.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *latch = None,
            Err(DsmError::Api { code, .. }) if codes::login_refused(*code) => {
                let config = &self.inner.config;
                let refusals = latch.map_or(0, |l| l.refusals) + 1;
                let pause =
                    config.login_backoff.saturating_mul(1 << (refusals - 1).min(16)).min(config.login_backoff_max);
                tracing::warn!(code, refusals, pause = ?pause, "DSM refused the login; not trying again before the pause ends");
                *latch = Some(Latch { code: *code, refusals, until: std::time::Instant::now() + pause });
            }
            Err(_) => {}
        }
        result
    }

    async fn try_login(&self, generation: u64) -> Result<Session, DsmError> {
        let config = &self.inner.config;
        let mut form: Vec<(&str, &str)> = vec![
            ("api", AUTH_API),
            ("version", AUTH_VERSION),
            ("method", "login"),
            ("account", &config.account),
            ("passwd", config.password.expose()),
            ("format", "sid"),
        ];
        if let Some(name) = &config.session_name {
            form.push(("session", name));
        }
        if config.syno_token {
            form.push(("enable_syno_token", "yes"));
        }
        debug!(account = %config.account, "logging in to DSM");
        let request = self.inner.http.post(format!("{}/webapi/auth.cgi", self.inner.base_url)).form(&form);
        let data = self.execute(AUTH_API, "login", request).await?;
        let login: LoginData = serde_json::from_value(data).map_err(|e| DsmError::Malformed {
            api: AUTH_API,
            method: "login",
            detail: e.to_string(),
        })?;
        Ok(Session { sid: login.sid, token: login.synotoken.filter(|t| !t.is_empty()), generation })
    }

    async fn send(
        &self,
        api: &'static str,
        method: &'static str,
        params: &Params,
        session: &Session,
    ) -> Result<Value, DsmError> {
        let mut query: Vec<(&str, &str)> = vec![("api", api), ("version", "1"), ("method", method)];
        query.extend(params.pairs().iter().map(|(k, v)| (*k, v.as_str())));
        query.push(("_sid", &session.sid));
        let mut request = self
            .inner
            .http
            .get(format!("{}/webapi/entry.cgi", self.inner.base_url))
            .query(&query)
            .header(COOKIE, format!("id={}", session.sid));
        if let Some(token) = &session.token {
            request = request.header("X-SYNO-TOKEN", token);
        }
        debug!(api, method, "DSM call");
        self.execute(api, method, request).await
    }

    async fn execute(
        &self,
        api: &'static str,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, DsmError> {
        let response = request.send().await.map_err(|e| self.transport_error(api, method, e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
            // The Location may carry the query (and so the SID): keep scheme, host and port only.
            let location = location.and_then(|l| reqwest::Url::parse(l).ok()).map_or_else(
                || "another address".to_owned(),
                |url| {
                    format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"))
                        + &url.port().map(|p| format!(":{p}")).unwrap_or_default()
                },
            );
            return Err(DsmError::Redirected { api, method, location });
        }
        if !status.is_success() {
            return Err(DsmError::HttpStatus { api, method, status: status.as_u16() });
        }
        let body = response.bytes().await.map_err(|e| self.transport_error(api, method, e))?;
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| DsmError::Malformed {
            api,
            method,
            detail: format!("not a DSM JSON envelope: {e}"),
        })?;
        if envelope.success {
            return Ok(envelope.data);
        }
        match envelope.error {
            Some(ErrorBody { code }) => Err(DsmError::Api { api, method, code }),
            None => Err(DsmError::Malformed { api, method, detail: "success is false but no error code".to_owned() }),
        }
    }

    fn transport_error(&self, api: &'static str, method: &'static str, error: reqwest::Error) -> DsmError {
        let error = error.without_url();
        let cause = root_cause(&error);
        let tls = cause.contains("certificate") || cause.contains("UnknownIssuer") || cause.contains("CertNotValid");
        if error.is_timeout() {
            DsmError::Timeout { api, method, timeout: self.inner.config.call_timeout }
        } else if tls {
            DsmError::Certificate { api, method, base_url: self.inner.base_url.clone(), cause }
        } else if error.is_connect() {
            DsmError::Connect { api, method, base_url: self.inner.base_url.clone(), cause, source: error }
        } else {
            DsmError::Transport { api, method, cause, source: error }
        }
    }
}

/// A login failure seen while making another call keeps login's own error
/// code but says which call needed the session.
fn with_call(error: DsmError, api: &'static str, method: &'static str) -> DsmError {
    match error {
        DsmError::Connect { base_url, cause, source, .. } => DsmError::Connect { api, method, base_url, cause, source },
        DsmError::Timeout { timeout, .. } => DsmError::Timeout { api, method, timeout },
        DsmError::Certificate { base_url, cause, .. } => DsmError::Certificate { api, method, base_url, cause },
        other => other,
    }
}
