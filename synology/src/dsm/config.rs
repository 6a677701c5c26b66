//! [`DsmConfig`], where and how the client reaches DSM, and [`Password`],
//! the account password that never shows in `Debug` or logs.

use std::fmt;
use std::time::Duration;

/// The DSM account password. `Debug` prints `<redacted>`; the only way to
/// the text is [`Password::expose`], used when building the login form.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password text, for the login request only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach one DSM and behave towards it.
#[derive(Clone, Debug)]
pub struct DsmConfig {
    /// Base URL without the `/webapi` part, e.g. `https://nas.lan:5001`.
    pub base_url: String,
    /// Skip TLS certificate verification (self-signed NAS certificates).
    pub insecure: bool,
    /// DSM account; SAN APIs need an administrator.
    pub account: String,
    /// The account's password.
    pub password: Password,
    /// Login `session` name; `None` omits it, as synology-csi does.
    pub session_name: Option<String>,
    /// Ask DSM for a SynoToken at login (needed when CSRF protection is on);
    /// the token is sent back with every call when DSM returns one.
    pub syno_token: bool,
    /// Timeout of one HTTP call, connection included.
    pub call_timeout: Duration,
    /// Calls in flight at once; DSM serialises SAN work internally anyway.
    pub max_concurrency: usize,
    /// How long [`crate::dsm::DsmClient::delete_lun`] waits for DSM's
    /// asynchronous removal to finish.
    pub delete_wait: Duration,
    /// Interval between checks while waiting for a LUN removal.
    pub delete_poll_interval: Duration,
    /// After DSM refuses a login, no new login for this long, doubling with
    /// each refusal up to [`DsmConfig::login_backoff_max`]: at most two
    /// tries in any five minutes, so a wrong password never trips DSM's
    /// Auto Block (3 to 10 failures in 5 minutes).
    pub login_backoff: Duration,
    /// The longest pause between login tries after refusals.
    pub login_backoff_max: Duration,
    /// How long to wait for a cloned or restored LUN's action lock.
    pub lock_wait: Duration,
}

impl DsmConfig {
    /// A configuration with democratic-csi's defaults for everything but the
    /// address and the credentials: 60 s timeout, 40 s removal wait polled
    /// every second, four calls at once, certificates verified, SynoToken
    /// requested.
    pub fn new(base_url: impl Into<String>, account: impl Into<String>, password: Password) -> Self {
        Self {
            base_url: base_url.into(),
            insecure: false,
            account: account.into(),
            password,
            session_name: None,
            syno_token: true,
            call_timeout: Duration::from_secs(60),
            max_concurrency: 4,
            delete_wait: Duration::from_secs(40),
            delete_poll_interval: Duration::from_secs(1),
            login_backoff: Duration::from_secs(150),
            login_backoff_max: Duration::from_secs(15 * 60),
            lock_wait: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let config = DsmConfig::new("http://127.0.0.1:5000", "admin", Password::new("hunter2"));
        let shown = format!("{config:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("hunter2"));
    }
}
