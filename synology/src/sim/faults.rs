//! Fault injection: what the simulator is told to get wrong, set by CLI
//! flags at start and changed at run time through `POST /sim/faults`.

use serde::{Deserialize, Serialize};

/// Faults in force. All zero/`None` means a healthy DSM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Answer the next N `/webapi` requests with HTTP 500.
    pub http_500_next: u32,
    /// Delay every `/webapi` request by this many milliseconds.
    pub latency_ms: u64,
    /// Answer the next SAN call (after the session check) with this DSM code.
    pub error_code_next: Option<i64>,
    /// Time out every session once this many more SAN calls have been
    /// served (1: right after the next one), to expire a session in the
    /// middle of a multi-call operation.
    #[serde(default)]
    pub expire_sessions_after_calls: Option<u32>,
    /// Hold every call of this SAN method (`API.method`, e.g.
    /// `SYNO.Core.ISCSI.Target.create`) for [`Faults::stall_ms`] before
    /// serving it: a window to kill a client between two steps.
    #[serde(default)]
    pub stall_method: Option<String>,
    /// How long [`Faults::stall_method`] is held.
    #[serde(default)]
    pub stall_ms: u64,
    /// Answer the next login with this code (407: as if Auto Block had
    /// blocked the client's IP).
    #[serde(default)]
    pub login_error_next: Option<i64>,
}

/// Body of `POST /sim/faults`: fields present replace the current ones;
/// `expire_sessions_now` times out every live session at once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FaultsUpdate {
    /// Time out every session now (their next call answers 106).
    #[serde(default)]
    pub expire_sessions_now: bool,
    /// Lift every Auto Block (DSM's Allow/Block List emptied).
    #[serde(default)]
    pub clear_auto_block: bool,
    /// New [`Faults::http_500_next`].
    pub http_500_next: Option<u32>,
    /// New [`Faults::latency_ms`].
    pub latency_ms: Option<u64>,
    /// New [`Faults::error_code_next`].
    pub error_code_next: Option<i64>,
    /// New [`Faults::expire_sessions_after_calls`].
    #[serde(default)]
    pub expire_sessions_after_calls: Option<u32>,
    /// New [`Faults::stall_method`]; an empty string clears it.
    #[serde(default)]
    pub stall_method: Option<String>,
    /// New [`Faults::stall_ms`].
    #[serde(default)]
    pub stall_ms: Option<u64>,
    /// New [`Faults::login_error_next`].
    #[serde(default)]
    pub login_error_next: Option<i64>,
}

impl Faults {
    /// Applies the fault fields of an update.
    pub(crate) fn apply(&mut self, update: &FaultsUpdate) {
        if let Some(n) = update.http_500_next {
            self.http_500_next = n;
        }
        if let Some(ms) = update.latency_ms {
            self.latency_ms = ms;
        }
        if update.error_code_next.is_some() {
            self.error_code_next = update.error_code_next;
        }
        if update.expire_sessions_after_calls.is_some() {
            self.expire_sessions_after_calls = update.expire_sessions_after_calls;
        }
        if let Some(method) = &update.stall_method {
            self.stall_method = Some(method.clone()).filter(|m| !m.is_empty());
        }
        if let Some(ms) = update.stall_ms {
            self.stall_ms = ms;
        }
        if update.login_error_next.is_some() {
            self.login_error_next = update.login_error_next;
        }
    }
}
