//! Allocations of nodes out of touch, as Nomad's reconciler treats them
//! (`disconnect { lost_after replace reconcile }`): whether an allocation
//! on a disconnected node stays `unknown` and until when, and which of an
//! original and its replacement stays when the original's node is back.

use crate::structs::{client_status, node_status, reconcile, Allocation, Node, TaskGroup};

/// Why an allocation is `unknown`.
pub const UNKNOWN: &str = "alloc is unknown since its node is disconnected";
/// Why a replacement stops when the original it replaced is kept.
pub const REPLACEMENT_NOT_NEEDED: &str = "alloc not needed due to disconnected client reconnect";
/// Why an original stops when its replacement is kept.
pub const ORIGINAL_NOT_NEEDED: &str = "alloc not needed as its replacement was kept when its node reconnected";

/// Until when (Unix nanoseconds) `a`, on a node out of touch, stays
/// `unknown` instead of lost: only on a disconnected node, for a group
/// with `lost_after`, for an allocation that had started, and until
/// `lost_after` has passed since it went unknown.
pub fn unknown_until(tg: &TaskGroup, a: &Allocation, node: Option<&Node>, now: i64) -> Option<i64> {
    let lost_after = tg.lost_after();
    let disconnected = node.is_some_and(|n| n.status == node_status::DISCONNECTED);
    if lost_after <= 0 || !disconnected || a.client_status == client_status::PENDING {
        return None;
    }
    let until = a.unknown_since().unwrap_or(now).saturating_add(lost_after);
    (until > now).then_some(until)
}

/// When (Unix nanoseconds) a lost allocation of a group with
/// `stop_on_client_after` may be replaced: its client stops it that long
/// after losing the servers, and its tasks get their kill timeout on top.
pub fn replaceable_at(tg: &TaskGroup, node: Option<&Node>) -> Option<i64> {
    let stop_after = tg.disconnect.as_ref()?.stop_on_client_after?;
    let down_at = node?.status_updated_at.saturating_mul(1_000_000_000);
    let kill = tg.tasks.iter().map(|t| t.kill_timeout.unwrap_or(5_000_000_000)).max().unwrap_or(0);
    Some(down_at.saturating_add(stop_after).saturating_add(kill))
}

/// Whether `original`, back from a node that was out of touch, stays
/// rather than the `replacement` placed meanwhile. A replacement of a
/// newer job version always stays; otherwise the group's strategy decides.
pub fn keep_original(tg: &TaskGroup, original: &Allocation, replacement: &Allocation) -> bool {
    if replacement.job_version() > original.job_version() {
        return false;
    }
    let strategy = tg.disconnect.as_ref().map_or(reconcile::BEST_SCORE, |d| d.reconcile.as_str());
    match strategy {
        reconcile::KEEP_ORIGINAL => true,
        reconcile::KEEP_REPLACEMENT => false,
        reconcile::LONGEST_RUNNING => match (first_start(original), first_start(replacement)) {
            (Some(o), Some(r)) => o <= r,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => better_or_equal_score(original, replacement),
        },
        _ => better_or_equal_score(original, replacement),
    }
}

/// The original stays unless the replacement scored higher and runs (or
/// the original does not).
fn better_or_equal_score(original: &Allocation, replacement: &Allocation) -> bool {
    let running = |a: &Allocation| a.client_status == client_status::RUNNING;
    let replacement_better = score(replacement) > score(original);
    !(replacement_better && (running(replacement) || !running(original)))
}

/// The highest normalized score its placement saw.
fn score(a: &Allocation) -> f64 {
    let scores = a.metrics.iter().flat_map(|m| m.score_meta_data.iter().map(|s| s.norm_score));
    scores.fold(f64::NEG_INFINITY, f64::max)
}

/// When its first task started (Unix nanoseconds).
fn first_start(a: &Allocation) -> Option<i64> {
    let starts = a.task_states.values().filter_map(|s| s.started_at.as_deref());
    starts.filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).filter_map(|t| t.timestamp_nanos_opt()).min()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::structs::{AllocMetric, DisconnectStrategy, Job, NodeScoreMeta, TaskState};

    const SECOND: i64 = 1_000_000_000;

    fn group(lost_after: i64, strategy: &str) -> TaskGroup {
        let disconnect =
            DisconnectStrategy { lost_after, reconcile: strategy.into(), replace: Some(true), ..Default::default() };
        TaskGroup { name: "g".into(), disconnect: Some(disconnect), ..Default::default() }
    }

    fn alloc(status: &str, score: f64, started: Option<&str>, version: u64) -> Allocation {
        let metric = AllocMetric {
            score_meta_data: vec![NodeScoreMeta { norm_score: score, ..Default::default() }],
            ..Default::default()
        };
        let state = TaskState { started_at: started.map(str::to_string), ..Default::default() };
        Allocation {
            client_status: status.into(),
            metrics: Some(metric),
            task_states: [("t".to_string(), state)].into(),
            job: Some(Arc::new(Job { version, ..Default::default() })),
            ..Default::default()
        }
    }

    #[test]
    fn unknown_only_on_a_disconnected_node_until_lost_after() {
        let tg = group(60 * SECOND, reconcile::BEST_SCORE);
        let disconnected = Node { status: node_status::DISCONNECTED.into(), ..Default::default() };
        let down = Node { status: node_status::DOWN.into(), ..Default::default() };
        let mut a = alloc(client_status::RUNNING, 0.5, None, 0);
        assert_eq!(unknown_until(&tg, &a, Some(&disconnected), 100 * SECOND), Some(160 * SECOND));
        assert_eq!(unknown_until(&tg, &a, Some(&down), 100 * SECOND), None);
        assert_eq!(unknown_until(&TaskGroup::default(), &a, Some(&disconnected), 0), None);
        a.record_client_status(client_status::UNKNOWN, 100 * SECOND);
        assert_eq!(unknown_until(&tg, &a, Some(&disconnected), 150 * SECOND), Some(160 * SECOND));
        assert_eq!(unknown_until(&tg, &a, Some(&disconnected), 160 * SECOND), None, "expired: lost");
        let pending = alloc(client_status::PENDING, 0.5, None, 0);
        assert_eq!(unknown_until(&tg, &pending, Some(&disconnected), 0), None);
    }

    #[test]
    fn reconcile_strategies_pick_as_nomads() {
        let early = Some("2026-12-03T10:00:00Z");
        let late = Some("2026-12-03T11:00:00Z");
        let original = alloc(client_status::RUNNING, 0.4, early, 1);
        let better = alloc(client_status::RUNNING, 0.9, late, 1);
        assert!(!keep_original(&group(SECOND, reconcile::BEST_SCORE), &original, &better));
        assert!(keep_original(&group(SECOND, reconcile::BEST_SCORE), &better, &original));
        assert!(keep_original(&group(SECOND, reconcile::BEST_SCORE), &original, &original.clone()), "a tie keeps it");
        assert!(keep_original(&group(SECOND, reconcile::KEEP_ORIGINAL), &original, &better));
        assert!(!keep_original(&group(SECOND, reconcile::KEEP_REPLACEMENT), &better, &original));
        assert!(keep_original(&group(SECOND, reconcile::LONGEST_RUNNING), &original, &better));
        assert!(!keep_original(&group(SECOND, reconcile::LONGEST_RUNNING), &better, &original));
        let newer = alloc(client_status::PENDING, 0.1, None, 2);
        assert!(!keep_original(&group(SECOND, reconcile::KEEP_ORIGINAL), &original, &newer), "a newer version wins");
    }
}
