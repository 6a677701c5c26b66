//! What happens to a group's allocations while their node is out of touch:
//! the `disconnect` block (`DisconnectStrategy`, Nomad 1.8's), and the
//! `AllocState` history that records when an allocation went `unknown`.
//! The JSON is Nomad's.

use serde::{Deserialize, Serialize};

/// `disconnect.reconcile` values: which allocation stays when a node that
/// was out of touch comes back and a replacement runs meanwhile.
pub mod reconcile {
    /// The allocation that ran on the returning node.
    pub const KEEP_ORIGINAL: &str = "keep_original";
    /// The replacement placed meanwhile.
    pub const KEEP_REPLACEMENT: &str = "keep_replacement";
    /// The one whose placement scored higher (the original on a tie).
    pub const BEST_SCORE: &str = "best_score";
    /// The one whose tasks started first.
    pub const LONGEST_RUNNING: &str = "longest_running";
    /// Every value.
    pub const ALL: [&str; 4] = [KEEP_ORIGINAL, KEEP_REPLACEMENT, BEST_SCORE, LONGEST_RUNNING];
}

/// A group's `disconnect` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DisconnectStrategy {
    /// Nanoseconds an allocation of a node that stopped heartbeating stays
    /// `unknown` (neither stopped nor lost) before it is lost; 0: lost at once.
    pub lost_after: i64,
    /// Whether a replacement is placed while the allocation is unknown
    /// (`None`: yes). A lost one is replaced either way.
    pub replace: Option<bool>,
    /// Which allocation stays on reconnection (see [`reconcile`]).
    pub reconcile: String,
    /// Nanoseconds after which the client itself stops the allocation when
    /// it cannot reach the servers.
    pub stop_on_client_after: Option<i64>,
}

impl DisconnectStrategy {
    /// Nomad's defaults for what the block leaves out.
    pub fn canonicalize(&mut self) {
        if self.reconcile.is_empty() {
            self.reconcile = reconcile::BEST_SCORE.into();
        }
        self.replace.get_or_insert(true);
    }

    /// Whether allocations are replaced while unknown.
    pub fn replaces(&self) -> bool {
        self.replace.unwrap_or(true)
    }

    /// Why the block is invalid for a job of `job_type`, one message each.
    pub fn problems(&self, job_type: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost_after < 0 {
            out.push("disconnect: lost_after cannot be a negative duration".into());
        }
        if let Some(stop) = self.stop_on_client_after {
            if stop < 0 {
                out.push("disconnect: stop_on_client_after cannot be a negative duration".into());
            }
            if !matches!(job_type, super::JOB_TYPE_SERVICE | super::JOB_TYPE_BATCH) {
                out.push(format!(
                    "disconnect: stop_on_client_after can only be used with service or batch jobs, not {job_type:?}"
                ));
            }
            if self.lost_after != 0 {
                out.push("disconnect: lost_after and stop_on_client_after cannot both be set".into());
            }
        }
        if !self.reconcile.is_empty() && !reconcile::ALL.contains(&self.reconcile.as_str()) {
            out.push(format!(
                "disconnect: reconcile {:?} is not keep_original, keep_replacement, best_score or longest_running",
                self.reconcile
            ));
        }
        out
    }
}

/// One server-recorded change of an allocation's status (`AllocStates`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocState {
    /// The field that changed: `ClientStatus`.
    pub field: String,
    /// Its new value.
    pub value: String,
    /// When, as RFC 3339.
    pub time: String,
    /// When, in Unix nanoseconds (berth's, for the timers).
    #[serde(rename = "TimeUnixNano")]
    pub time_nanos: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn defaults_and_rules_are_nomads() {
        let mut d = DisconnectStrategy { lost_after: 60 * SECOND, ..Default::default() };
        d.canonicalize();
        assert_eq!((d.reconcile.as_str(), d.replace), (reconcile::BEST_SCORE, Some(true)));
        assert!(d.problems("service").is_empty());

        let both = DisconnectStrategy { lost_after: SECOND, stop_on_client_after: Some(SECOND), ..Default::default() };
        assert_eq!(both.problems("service"), ["disconnect: lost_after and stop_on_client_after cannot both be set"]);
        let system = DisconnectStrategy { stop_on_client_after: Some(SECOND), ..Default::default() };
        assert!(system.problems("system")[0].contains("only be used with service or batch"));
        let bad = DisconnectStrategy { lost_after: -1, reconcile: "newest".into(), ..Default::default() };
        let problems = bad.problems("batch");
        assert!(problems[0].contains("negative") && problems[1].contains("\"newest\""), "{problems:?}");
    }
}
