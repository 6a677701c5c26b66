//! The CLI's HTTP client: `-address`, `BERTH_ADDR`, then `NOMAD_ADDR`, then
//! `http://127.0.0.1:4646`. Non-2xx answers become Nomad's
//! `Unexpected response code: N (text)` errors.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A CLI-side API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The agent answered with an error status.
    #[error("Unexpected response code: {code} ({body})")]
    Status {
        /// HTTP status.
        code: u16,
        /// Plain-text body.
        body: String,
    },
    /// The agent could not be reached or answered garbage.
    #[error("Error querying {url}: {reason}")]
    Transport {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

impl ApiClientError {
    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiClientError::Status { code: 404, .. })
    }
}

/// Talks to one agent.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

/// The address to use, from the flag or the environment.
/// Characters a job ID keeps in a URL path; everything else is
/// percent-encoded (a child job's `/` above all).
const PATH_SAFE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `/v1/job/<id>`, with the ID encoded as one path segment.
pub fn job_path(id: &str) -> String {
    format!("/v1/job/{}", percent_encoding::utf8_percent_encode(id, PATH_SAFE))
}

pub fn resolve_address(flag: Option<&str>) -> String {
    let addr = flag
        .map(str::to_string)
        .or_else(|| std::env::var("BERTH_ADDR").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("NOMAD_ADDR").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:4646".into());
    let addr =
        if addr.starts_with("http://") || addr.starts_with("https://") { addr } else { format!("http://{addr}") };
    addr.trim_end_matches('/').to_string()
}

impl ApiClient {
    /// A client for `address`.
    pub fn new(address: &str) -> Self {
        ApiClient { base: address.to_string(), http: crate::util::http_client() }
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ApiClientError> {
        let resp =
            req.send().await.map_err(|e| ApiClientError::Transport { url: url.into(), reason: e.to_string() })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(ApiClientError::Status { code, body: body.trim().to_string() })
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response, url: &str) -> Result<T, ApiClientError> {
        resp.json()
            .await
            .map_err(|e| ApiClientError::Transport { url: url.into(), reason: format!("decoding response: {e}") })
    }

    /// GET and decode.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        Self::decode(resp, &url).await
    }

    /// GET, returning the raw response for streaming.
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, ApiClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// PUT a JSON body and decode the answer.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ApiClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.put(&url).json(body), &url).await?;
        Self::decode(resp, &url).await
    }

    /// DELETE with one extra header (`X-Nomad-CSI-Secrets`) and decode the answer.
    pub async fn delete_with_header<T: DeserializeOwned>(
        &self,
        path: &str,
        name: &str,
        value: &str,
    ) -> Result<T, ApiClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.delete(&url).header(name, value), &url).await?;
        Self::decode(resp, &url).await
    }

    /// DELETE, for answers without a body (204).
    pub async fn delete_empty(&self, path: &str) -> Result<(), ApiClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.delete(&url), &url).await.map(drop)
    }

    /// DELETE and decode the answer.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.delete(&url), &url).await?;
        Self::decode(resp, &url).await
    }
}
