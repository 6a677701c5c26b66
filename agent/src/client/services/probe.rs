//! One run of a check against its target: a TCP connect or an HTTP
//! request (2xx passes), each bounded by the check's timeout.

use std::time::Duration;

use crate::structs::check_status;

/// What a check probes, resolved to an address.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Connect to `host:port`.
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// Send a request; a 2xx answer passes.
    Http {
        /// The whole URL.
        url: String,
        /// `GET` unless given.
        method: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Request body.
        body: String,
        /// Accept any certificate.
        tls_skip_verify: bool,
    },
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `success` or `failure`.
    pub status: &'static str,
    /// HTTP status, when there was one.
    pub status_code: u16,
    /// What happened, for the operator.
    pub output: String,
}

impl Outcome {
    fn failure(output: String) -> Self {
        Outcome { status: check_status::FAILURE, status_code: 0, output }
    }
}

/// HTTP clients the checks share: one that verifies certificates and one
/// that does not (`tls_skip_verify`); no connection is kept between runs,
/// so each run sees the target as a new client would.
#[derive(Clone)]
pub struct HttpClients {
    verify: reqwest::Client,
    skip_verify: reqwest::Client,
}

impl HttpClients {
    /// Builds both clients.
    pub fn new() -> Self {
        let base = |b: reqwest::ClientBuilder| b.pool_max_idle_per_host(0).redirect(reqwest::redirect::Policy::none());
        HttpClients {
            verify: crate::util::http_client_with(base),
            skip_verify: crate::util::http_client_with(|b| base(b).tls_danger_accept_invalid_certs(true)),
        }
    }
}

impl Default for HttpClients {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the probe once, within `timeout`.
pub async fn run(probe: &Probe, timeout: Duration, http: &HttpClients) -> Outcome {
    match probe {
        Probe::Tcp { addr } => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Outcome {
                status: check_status::SUCCESS,
                status_code: 0,
                output: format!("TCP connect {addr}: Success"),
            },
            Ok(Err(e)) => Outcome::failure(format!("dial tcp {addr}: {e}")),
            Err(_) => Outcome::failure(format!("dial tcp {addr}: timed out after {timeout:?}")),
        },
        Probe::Http { url, method, headers, body, tls_skip_verify } => {
            let client = if *tls_skip_verify { &http.skip_verify } else { &http.verify };
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut req = client.request(method.clone(), url).timeout(timeout);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if !body.is_empty() {
                req = req.body(body.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    let code = resp.status();
                    let status = if code.is_success() { check_status::SUCCESS } else { check_status::FAILURE };
                    Outcome { status, status_code: code.as_u16(), output: format!("HTTP {method} {url}: {code}") }
                }
                Err(e) if e.is_timeout() => {
                    Outcome::failure(format!("HTTP {method} {url}: timed out after {timeout:?}"))
                }
                Err(e) => Outcome::failure(format!("HTTP {method} {url}: {}", with_sources(&e))),
            }
        }
    }
}

/// An error with the causes it wraps (reqwest's own message says only
/// "error sending request").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_probes_pass_and_fail_on_what_they_reach() {
        let http = HttpClients::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "fine" }))
            .route("/bad", axum::routing::get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no") }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let second = Duration::from_secs(1);
        let tcp = run(&Probe::Tcp { addr: addr.clone() }, second, &http).await;
        assert_eq!(tcp.status, check_status::SUCCESS, "{tcp:?}");
        let http_probe = |path: &str| Probe::Http {
            url: format!("http://{addr}{path}"),
            method: "GET".into(),
            headers: vec![("X-Check".into(), "1".into())],
            body: String::new(),
            tls_skip_verify: false,
        };
        let ok = run(&http_probe("/ok"), second, &http).await;
        assert_eq!((ok.status, ok.status_code), (check_status::SUCCESS, 200), "{ok:?}");
        let bad = run(&http_probe("/bad"), second, &http).await;
        assert_eq!((bad.status, bad.status_code), (check_status::FAILURE, 503), "{bad:?}");
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let refused = run(&Probe::Tcp { addr: closed.clone() }, second, &http).await;
        assert_eq!(refused.status, check_status::FAILURE);
        assert!(refused.output.contains(&closed), "{refused:?}");
    }
}
