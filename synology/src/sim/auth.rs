//! Sessions of the simulated DSM: `SYNO.API.Auth` login/logout, the SID
//! check every SAN call goes through, and the idle timeout.
//!
//! Rules (reference §2.4, §8): several SIDs per account live side by side;
//! an unknown SID answers 119; a SID idle longer than the session timeout, or
//! expired by fault injection, answers 106 from then on; with CSRF
//! protection on, a call without the session's SynoToken answers 105.
//!
//! Auto Block ([`AutoBlock`]): after `attempts` refused logins from one IP
//! within `window`, every login from it answers 407 until the block
//! expires, even with the right password; other IPs are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

struct SessionRec {
    token: String,
    last_used: Instant,
    expired: bool,
}

/// DSM's Auto Block setting. `attempts == 0` turns it off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBlock {
    /// Refused logins that block the IP…
    pub attempts: u32,
    /// …within this window.
    pub window: Duration,
    /// How long the IP stays blocked.
    pub expire: Duration,
}

impl Default for AutoBlock {
    /// DSM's default: 10 attempts within 5 minutes, blocked for a day.
    fn default() -> Self {
        Self { attempts: 10, window: Duration::from_secs(300), expire: Duration::from_secs(24 * 3600) }
    }
}

/// Refused logins and blocks per source IP.
#[derive(Default)]
pub(crate) struct Blocks {
    failures: HashMap<IpAddr, Vec<Instant>>,
    blocked_until: HashMap<IpAddr, Instant>,
}

impl Blocks {
    /// Whether `ip` is blocked now.
    pub fn blocked(&mut self, ip: IpAddr) -> bool {
        match self.blocked_until.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.blocked_until.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Counts a refused login from `ip`; blocks it once `setting` says so.
    pub fn refused(&mut self, ip: IpAddr, setting: AutoBlock) {
        if setting.attempts == 0 {
            return;
        }
        let now = Instant::now();
        let recent = self.failures.entry(ip).or_default();
        recent.retain(|at| now.duration_since(*at) < setting.window);
        recent.push(now);
        if recent.len() >= setting.attempts as usize {
            recent.clear();
            self.blocked_until.insert(ip, now + setting.expire);
        }
    }

    /// Lifts every block (DSM's Allow/Block List emptied).
    pub fn clear(&mut self) {
        self.failures.clear();
        self.blocked_until.clear();
    }
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

    #[tokio::test(start_paused = true)]
    async fn auto_block_counts_refusals_per_ip_within_the_window() {
        let setting = AutoBlock { attempts: 3, window: Duration::from_secs(300), expire: Duration::from_secs(60) };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut blocks = Blocks::default();
        blocks.refused(a, setting);
        blocks.refused(a, setting);
        tokio::time::advance(Duration::from_secs(301)).await;
        blocks.refused(a, setting);
        assert!(!blocks.blocked(a), "refusals outside the window do not count");
        blocks.refused(a, setting);
        blocks.refused(a, setting);
        assert!(blocks.blocked(a) && !blocks.blocked(b));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!blocks.blocked(a), "the block expires");
    }

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
