//! Sessions of the simulated DSM: `SYNO.API.Auth` login/logout, the SID
//! check every SAN call goes through, and the idle timeout.
//!
//! Rules (reference §2.4, §8): several SIDs per account live side by side;
//! an unknown SID answers 119; a SID idle longer than the session timeout, or
//! expired by fault injection, answers 106 from then on; with CSRF
//! protection on, a call without the session's SynoToken answers 105.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

struct SessionRec {
    token: String,
    last_used: Instant,
    expired: bool,
}

/// The live sessions.
pub(crate) struct Sessions {
    by_sid: HashMap<String, SessionRec>,
    timeout: Duration,
    csrf: bool,
}

impl Sessions {
    pub fn new(timeout: Duration, csrf: bool) -> Self {
        Self { by_sid: HashMap::new(), timeout, csrf }
    }

    /// Opens a session and returns its SID and SynoToken.
    pub fn login(&mut self) -> (String, String) {
        let sid = uuid::Uuid::new_v4().simple().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.by_sid.insert(sid.clone(), SessionRec { token: token.clone(), last_used: Instant::now(), expired: false });
        (sid, token)
    }

    pub fn logout(&mut self, sid: &str) {
        self.by_sid.remove(sid);
    }

    /// Marks every session as timed out.
    pub fn expire_all(&mut self) {
        for session in self.by_sid.values_mut() {
            session.expired = true;
        }
    }

    /// Admits a call carrying `sid` (and `token`), or says which code DSM answers.
    pub fn check(&mut self, sid: Option<&str>, token: Option<&str>) -> Result<(), i64> {
        let session = sid.and_then(|sid| self.by_sid.get_mut(sid)).ok_or(119)?;
        if session.expired || session.last_used.elapsed() > self.timeout {
            session.expired = true;
            return Err(106);
        }
        if self.csrf && token != Some(session.token.as_str()) {
            return Err(105);
        }
        session.last_used = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_expired_and_tokenless_sessions_get_their_codes() {
        let mut sessions = Sessions::new(Duration::from_secs(900), true);
        let (sid, token) = sessions.login();
        assert_eq!(sessions.check(Some("nope"), Some(&token)), Err(119));
        assert_eq!(sessions.check(None, None), Err(119));
        assert_eq!(sessions.check(Some(&sid), None), Err(105));
        assert_eq!(sessions.check(Some(&sid), Some(&token)), Ok(()));
        sessions.expire_all();
        assert_eq!(sessions.check(Some(&sid), Some(&token)), Err(106));
        sessions.logout(&sid);
        assert_eq!(sessions.check(Some(&sid), Some(&token)), Err(119));
    }
}
