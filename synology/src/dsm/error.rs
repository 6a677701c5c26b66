//! [`DsmError`], every way a DSM Web API call can fail, each naming the API
//! and method (and, for DSM's own refusals, the code and its meaning).
//!
//! Errors never carry the SID, the SynoToken or the password: transport
//! errors are stripped of their URL before they are stored.

use std::time::Duration;

use super::codes;

/// A failed DSM Web API call.
#[derive(Debug, thiserror::Error)]
pub enum DsmError {
    /// DSM answered `success: false` with an error code.
    #[error("{api} {method}: DSM error {code} ({meaning})", meaning = codes::meaning(*code))]
    Api {
        /// The API called, e.g. `SYNO.Core.ISCSI.LUN`.
        api: &'static str,
        /// The method called, e.g. `create`.
        method: &'static str,
        /// DSM's error code.
        code: i64,
    },
    /// Nothing answered at the DSM address (refused, unreachable, DNS).
    #[error("{api} {method}: cannot connect to DSM at {base_url}: {cause}")]
    Connect {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// The configured DSM base URL.
        base_url: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        cause: String,
        /// The transport error, without its URL.
        #[source]
        source: reqwest::Error,
    },
    /// DSM's TLS certificate is not trusted (DSM ships a self-signed one).
    #[error(
        "{api} {method}: the TLS certificate of {base_url} is not trusted ({cause}): DSM's own certificate is \
         self-signed; set httpConnection.allowInsecure: true, or give DSM a certificate this host trusts"
    )]
    Certificate {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// The configured DSM base URL.
        base_url: String,
        /// What the TLS layer said.
        cause: String,
    },
    /// DSM did not answer within the per-call timeout.
    #[error("{api} {method}: DSM did not answer within {timeout:?}")]
    Timeout {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// The per-call timeout that expired.
        timeout: Duration,
    },
    /// Any other transport failure while sending or reading the call.
    #[error("{api} {method}: request to DSM failed: {cause}")]
    Transport {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// The innermost cause.
        cause: String,
        /// The transport error, without its URL.
        #[source]
        source: reqwest::Error,
    },
    /// DSM answered with an HTTP status other than 200.
    #[error("{api} {method}: DSM answered HTTP {status}")]
    HttpStatus {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// The HTTP status.
        status: u16,
    },
    /// DSM's answer was not the documented JSON envelope or data shape.
    #[error("{api} {method}: unexpected answer from DSM: {detail}")]
    Malformed {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The client could not be built from its configuration.
    #[error("invalid DSM client configuration: {0}")]
    Config(String),
    /// A target IQN longer than RFC 3720 allows.
    #[error("target IQN {iqn:?} is {len} bytes, longer than the 223 bytes RFC 3720 allows")]
    IqnTooLong {
        /// The refused IQN.
        iqn: String,
        /// Its length in bytes.
        len: usize,
    },
    /// DSM refused the last login, and logging in again is held back so
    /// that retries never trip DSM's Auto Block.
    #[error(
        "{api} {method}: DSM refused the last login with DSM error {code} ({meaning}){hint}; berth logs in again in \
         {secs} s (no sooner, so that retries never trip DSM's Auto Block)",
        meaning = codes::meaning(*code), hint = codes::login_hint(*code), secs = retry_in.as_secs().max(1)
    )]
    LoginLatched {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// DSM's code for the refused login.
        code: i64,
        /// Until the next login try.
        retry_in: Duration,
    },
    /// DSM answered with a redirect (its "redirect HTTP to HTTPS" setting),
    /// which berth does not follow: a followed POST would lose its body.
    #[error(
        "{api} {method}: DSM redirected the request to {location}: its \"redirect HTTP to HTTPS\" setting is on; set \
         httpConnection.protocol: https and the HTTPS port (5001 by default), with allowInsecure: true for DSM's \
         self-signed certificate"
    )]
    Redirected {
        /// The API called.
        api: &'static str,
        /// The method called.
        method: &'static str,
        /// Where DSM sent it.
        location: String,
    },
    /// A LUN stayed locked by DSM (copying a clone) past the wait.
    #[error(
        "LUN {name} is still locked by DSM after {waited:?} (a clone or restore is being copied); try again later"
    )]
    Locked {
        /// The LUN's name.
        name: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// The storage volume LUNs are made on does not exist on the NAS.
    #[error("storage volume {path} does not exist on the NAS (check synology.volume, e.g. /volume1)")]
    NoVolume {
        /// The volume path asked for.
        path: String,
    },
    /// A deleted LUN was still listed when the removal wait ran out.
    #[error("LUN {uuid} still present {waited:?} after DSM accepted its deletion")]
    DeletionTimedOut {
        /// The LUN's uuid.
        uuid: String,
        /// How long the client waited.
        waited: Duration,
    },
}

/// The innermost error of a chain: for transport failures the one that says
/// what actually went wrong (refused, reset, certificate).
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

impl DsmError {
    /// A short, stable name of the kind of failure, for metrics labels:
    /// `api-<code>` for DSM's own refusals, else the variant's name.
    pub fn kind(&self) -> String {
        let kind = match self {
            Self::Api { code, .. } => return format!("api-{code}"),
            Self::Connect { .. } => "connect",
            Self::Certificate { .. } => "certificate",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::HttpStatus { .. } => "http-status",
            Self::Malformed { .. } => "malformed",
            Self::Config(_) => "config",
            Self::IqnTooLong { .. } => "iqn-too-long",
            Self::LoginLatched { .. } => "login-latched",
            Self::Redirected { .. } => "redirected",
            Self::Locked { .. } => "locked",
            Self::NoVolume { .. } => "no-volume",
            Self::DeletionTimedOut { .. } => "deletion-timed-out",
        };
        kind.to_string()
    }

    /// DSM's error code, when DSM itself refused the call (or, latched,
    /// the last login).
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } | Self::LoginLatched { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying the same call later may succeed: DSM unreachable, slow,
    /// busy (HTTP 5xx) or out of session; not for refusals of the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::HttpStatus { status, .. } => *status >= 500,
            Self::Api { code, .. } => codes::needs_relogin(*code),
            Self::Locked { .. } => true,
            Self::Certificate { .. } => false,
            Self::Malformed { .. }
            | Self::Config(_)
            | Self::IqnTooLong { .. }
            | Self::DeletionTimedOut { .. }
            | Self::LoginLatched { .. }
            | Self::Redirected { .. }
            | Self::NoVolume { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_names_code_and_meaning() {
        let err = DsmError::Api { api: "SYNO.API.Auth", method: "login", code: 400 };
        assert_eq!(err.to_string(), "SYNO.API.Auth login: DSM error 400 (no such account or incorrect password)");
        assert_eq!(err.code(), Some(400));
        assert!(!err.is_retryable());
    }
}
