//! Node drains and what paces them: a node's `DrainStrategy` and
//! `LastDrain`, a group's `migrate` block (`MigrateStrategy`), and the
//! `DesiredTransition` that marks an allocation for migration. The JSON is
//! Nomad's.

use serde::{Deserialize, Serialize};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;

/// `LastDrain.Status` values.
pub mod drain_status {
    /// The drain runs.
    pub const DRAINING: &str = "draining";
    /// Every allocation left the node.
    pub const COMPLETE: &str = "complete";
    /// An operator turned the drain off.
    pub const CANCELED: &str = "canceled";
}

/// `migrate.health_check` values.
pub mod migrate_health {
    /// Healthy when its checks pass (berth's: its tasks run).
    pub const CHECKS: &str = "checks";
    /// Healthy when its tasks run.
    pub const TASK_STATES: &str = "task_states";
}

/// How a drain asked for by an operator runs (`DrainSpec` in requests).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainSpec {
    /// Nanoseconds after which what is left is stopped: 0 none, < 0 now.
    pub deadline: i64,
    /// Leave system jobs' allocations on the node.
    pub ignore_system_jobs: bool,
}

/// A running drain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainStrategy {
    pub deadline: i64,
    pub ignore_system_jobs: bool,
    /// When what is left is stopped (RFC 3339); empty without a deadline.
    pub force_deadline: String,
    /// Unix nanoseconds of `force_deadline` (0 without one).
    #[serde(rename = "ForceDeadlineUnixNano")]
    pub force_deadline_nanos: i64,
    pub started_at: String,
}

impl DrainStrategy {
    /// The strategy `spec` starts at `now` (Unix nanoseconds).
    pub fn start(spec: &DrainSpec, now: i64) -> Self {
        let force = match spec.deadline {
            0 => 0,
            d if d < 0 => now,
            d => now.saturating_add(d),
        };
        DrainStrategy {
            deadline: spec.deadline,
            ignore_system_jobs: spec.ignore_system_jobs,
            force_deadline: if force == 0 { String::new() } else { crate::util::rfc3339(force) },
            force_deadline_nanos: force,
            started_at: crate::util::rfc3339(now),
        }
    }

    /// Whether the deadline has passed at `now`: everything left goes.
    pub fn forced(&self, now: i64) -> bool {
        self.force_deadline_nanos != 0 && now >= self.force_deadline_nanos
    }
}

/// The node's last drain (`LastDrain`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainMetadata {
    pub started_at: String,
    pub updated_at: String,
    pub status: String,
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    pub meta: std::collections::BTreeMap<String, String>,
}

/// A group's `migrate` block: how many of its allocations a drain moves at
/// once, and when a replacement counts as healthy. Durations in
/// nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MigrateStrategy {
    pub max_parallel: i64,
    pub health_check: String,
    pub min_healthy_time: i64,
    pub healthy_deadline: i64,
}

impl Default for MigrateStrategy {
    /// Nomad's defaults.
    fn default() -> Self {
        MigrateStrategy {
            max_parallel: 1,
            health_check: migrate_health::CHECKS.into(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
        }
    }
}

impl MigrateStrategy {
    /// What Nomad's validation says is wrong with it.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_parallel < 0 {
            out.push(format!("migrate: max_parallel must be >= 0 but found {}", self.max_parallel));
        }
        if ![migrate_health::CHECKS, migrate_health::TASK_STATES].contains(&self.health_check.as_str()) {
            out.push(format!(
                "migrate: health_check must be \"checks\" or \"task_states\", not {:?}",
                self.health_check
            ));
        }
        if self.min_healthy_time < 0 {
            out.push("migrate: min_healthy_time must be >= 0".into());
        }
        if self.healthy_deadline < 0 {
            out.push("migrate: healthy_deadline must be >= 0".into());
        }
        if self.min_healthy_time > self.healthy_deadline {
            out.push("migrate: min_healthy_time must be less than healthy_deadline".into());
        }
        out
    }
}

/// What the server wants to happen to an allocation next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DesiredTransition {
    /// A drain moves it: the scheduler stops it and places a replacement.
    pub migrate: Option<bool>,
}

impl DesiredTransition {
    /// Whether the allocation is marked for migration.
    pub fn should_migrate(&self) -> bool {
        self.migrate == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_relative_to_the_start_and_negative_means_now() {
        let spec = |deadline| DrainSpec { deadline, ignore_system_jobs: false };
        let none = DrainStrategy::start(&spec(0), 1_000);
        assert!(!none.forced(i64::MAX) && none.force_deadline.is_empty());
        let now = DrainStrategy::start(&spec(-1), 1_000);
        assert!(now.forced(1_000));
        let later = DrainStrategy::start(&spec(60 * SECOND), 1_000);
        assert!(!later.forced(1_000 + 59 * SECOND) && later.forced(1_000 + 60 * SECOND));
    }

    #[test]
    fn migrate_validation_is_nomads() {
        assert!(MigrateStrategy::default().problems().is_empty());
        let bad = MigrateStrategy {
            max_parallel: -1,
            health_check: "http".into(),
            min_healthy_time: 10 * MINUTE,
            healthy_deadline: MINUTE,
        };
        let problems = bad.problems().join("; ");
        assert!(problems.contains("max_parallel must be >= 0 but found -1"), "{problems}");
        assert!(problems.contains("\"http\""), "{problems}");
        assert!(problems.contains("min_healthy_time must be less than healthy_deadline"), "{problems}");
    }
}
