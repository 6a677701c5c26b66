//! Node drains (Nomad's node drainer): an operator's drain makes the node
//! ineligible and moves its allocations elsewhere, each service group at
//! the pace of its `migrate` block (at most `max_parallel` of its
//! allocations away from health at once, a replacement counting once it
//! has run `min_healthy_time` or its `healthy_deadline` passed). Batch
//! allocations are left to finish until the deadline; system jobs' and
//! CSI plugins' allocations go last, once nothing else is left (system
//! ones stay with `ignore_system_jobs`). At the deadline everything left
//! is moved at once. A drain with nothing left completes: the node stays
//! ineligible and `LastDrain` says so.
//!
//! The drainer only marks allocations (`DesiredTransition.Migrate`) and
//! creates evaluations; the scheduler stops them and places replacements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::nodes::node_event;
use super::state::{Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{
    client_status, drain_status, Allocation, DrainMetadata, DrainSpec, DrainStrategy, Evaluation, MigrateStrategy, Node,
};
use crate::util::{now_nanos, now_rfc3339};
use crate::wire::node::NodeUpdateResponse;

/// How often running drains are looked at.
const DRAIN_TICK: Duration = Duration::from_millis(500);

/// What one look at a draining node decided.
#[derive(Debug, Default, PartialEq, Eq)]
struct DrainStep {
    /// Allocations to mark for migration now.
    migrate: Vec<String>,
    /// Nothing is left on the node that the drain has to move.
    done: bool,
}

/// Whether an allocation still occupies its node (the server wants it and
/// the client has not ended it).
fn live(a: &Allocation) -> bool {
    !a.is_terminal()
}

/// Whether the drain moves this allocation last: a system job's, or one
/// running a CSI plugin.
fn goes_last(a: &Allocation) -> bool {
    is_system(a) || a.group().is_some_and(|tg| tg.tasks.iter().any(|t| t.csi_plugin_config.is_some()))
}

fn is_system(a: &Allocation) -> bool {
    a.job.as_ref().is_some_and(|j| j.is_system_like())
}

fn is_batch(a: &Allocation) -> bool {
    a.job.as_ref().is_some_and(|j| j.is_batch_like())
}

/// Unix nanoseconds of an RFC 3339 time.
fn nanos(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok().and_then(|t| t.timestamp_nanos_opt())
}

/// Whether a live allocation's health is settled for migration: its
/// tasks have all run `min_healthy_time` (healthy), or `healthy_deadline`
/// passed since it was made (it will not get healthier). Until then it
/// counts as moving.
fn health_settled(a: &Allocation, migrate: &MigrateStrategy, now: i64) -> bool {
    if now.saturating_sub(a.create_time) >= migrate.healthy_deadline {
        return true;
    }
    if a.client_status != client_status::RUNNING || a.task_states.is_empty() {
        return false;
    }
    let started = a.task_states.values().map(|t| {
        let running = t.state == "running";
        running.then(|| t.started_at.as_deref().and_then(nanos)).flatten()
    });
    // Finished prestart tasks do not run; the main tasks must.
    let latest = started.flatten().max();
    let main_running = a
        .group()
        .map(|tg| {
            tg.tasks
                .iter()
                .filter(|t| t.lifecycle.is_none())
                .all(|t| a.task_states.get(&t.name).is_some_and(|s| s.state == "running"))
        })
        .unwrap_or(false);
    main_running && latest.is_some_and(|t| now.saturating_sub(t) >= migrate.min_healthy_time)
}

/// One look at draining `node`: which of its allocations to mark now.
fn drain_step(snap: &Tables, node: &Node, strategy: &DrainStrategy, now: i64) -> DrainStep {
    let on_node: Vec<Arc<Allocation>> = snap.allocs_by_node(&node.id).into_iter().filter(|a| live(a)).collect();
    let remaining: Vec<&Arc<Allocation>> =
        on_node.iter().filter(|a| !(strategy.ignore_system_jobs && is_system(a))).collect();
    if remaining.is_empty() {
        return DrainStep { migrate: Vec::new(), done: true };
    }
    let unmarked = remaining.iter().filter(|a| !a.desired_transition.should_migrate());
    if strategy.forced(now) {
        return DrainStep { migrate: unmarked.map(|a| a.id.clone()).collect(), done: false };
    }
    let first: Vec<&Arc<Allocation>> = remaining.iter().copied().filter(|a| !goes_last(a)).collect();
    if first.is_empty() {
        return DrainStep { migrate: unmarked.map(|a| a.id.clone()).collect(), done: false };
    }
    // Service groups at their migrate pace; batch waits for the deadline.
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&Arc<Allocation>>> = BTreeMap::new();
    for a in first.iter().filter(|a| !is_batch(a) && !a.desired_transition.should_migrate()) {
        groups.entry((a.namespace.as_str(), a.job_id.as_str(), a.task_group.as_str())).or_default().push(a);
    }
    let mut migrate = Vec::new();
    for ((ns, job_id, group), drainable) in groups {
        let Some(job) = snap.job(ns, job_id) else { continue };
        let Some(tg) = job.task_group(group) else { continue };
        let pace = tg.migrate.clone().unwrap_or_default();
        let settled = snap
            .allocs_by_job(ns, job_id)
            .iter()
            // A marked allocation is on its way out, healthy or not.
            .filter(|a| a.task_group == group && live(a) && !a.desired_transition.should_migrate())
            .filter(|a| health_settled(a, &pace, now))
            .count();
        let threshold = i64::from(tg.count) - pace.max_parallel;
        let allowed = (settled as i64 - threshold).clamp(0, drainable.len() as i64) as usize;
        migrate.extend(drainable.iter().take(allowed).map(|a| a.id.clone()));
    }
    DrainStep { migrate, done: false }
}

impl Server {
    /// `POST /v1/node/:id/drain`: starts (or replaces) a drain with `spec`,
    /// or with `None` cancels one (`mark_eligible` then makes the node
    /// eligible again).
    pub fn drain_node(
        &self,
        node_id: &str,
        spec: Option<DrainSpec>,
        mark_eligible: bool,
        meta: BTreeMap<String, String>,
    ) -> Result<NodeUpdateResponse, ServerError> {
        let now = now_nanos();
        let (index, ()) = self.state.commit(|snap| {
            let node = snap.node(node_id).ok_or_else(|| ServerError::NotFound(format!("node {node_id} not found")))?;
            let mut n = (*node).clone();
            match &spec {
                Some(spec) => {
                    n.drain_strategy = Some(DrainStrategy::start(spec, now));
                    n.drain = true;
                    n.scheduling_eligibility = "ineligible".into();
                    n.last_drain = Some(DrainMetadata {
                        started_at: now_rfc3339(),
                        updated_at: now_rfc3339(),
                        status: drain_status::DRAINING.into(),
                        accessor_id: String::new(),
                        meta,
                    });
                    n.events.push(node_event("Drain", "Node drain strategy set"));
                }
                None => {
                    if n.drain_strategy.take().is_some() {
                        if let Some(last) = &mut n.last_drain {
                            last.status = drain_status::CANCELED.into();
                            last.updated_at = now_rfc3339();
                        }
                        n.events.push(node_event("Drain", "Node drain strategy cleared"));
                    }
                    n.drain = false;
                    if mark_eligible {
                        n.scheduling_eligibility = "eligible".into();
                    }
                }
            }
            let mut batch = WriteBatch::default();
            batch.nodes.push(n);
            Ok::<_, ServerError>((batch, ()))
        })?;
        // A node that becomes eligible again may take blocked work.
        if spec.is_none() && mark_eligible {
            self.unblock_evals()?;
        }
        Ok(NodeUpdateResponse { node_modify_index: index, index, ..Default::default() })
    }

    /// `POST /v1/node/:id/eligibility`. A draining node cannot be made
    /// eligible (Nomad's rule); cancel the drain instead.
    pub fn set_eligibility(&self, node_id: &str, eligible: bool) -> Result<NodeUpdateResponse, ServerError> {
        let (index, ()) = self.state.commit(|snap| {
            let node = snap.node(node_id).ok_or_else(|| ServerError::NotFound(format!("node {node_id} not found")))?;
            if eligible && node.drain_strategy.is_some() {
                return Err(ServerError::BadRequest(
                    "can not set node's scheduling eligibility to eligible while it is draining".into(),
                ));
            }
            let mut n = (*node).clone();
            n.scheduling_eligibility = if eligible { "eligible" } else { "ineligible" }.into();
            let mut batch = WriteBatch::default();
            batch.nodes.push(n);
            Ok::<_, ServerError>((batch, ()))
        })?;
        if eligible {
            self.unblock_evals()?;
        }
        Ok(NodeUpdateResponse { node_modify_index: index, index, ..Default::default() })
    }

    /// Looks at every draining node each tick: marks what may move now
    /// and completes drains with nothing left.
    pub(super) async fn drainer(server: Arc<Server>) {
        let mut tick = tokio::time::interval(DRAIN_TICK);
        loop {
            tick.tick().await;
            if let Err(e) = server.drain_tick() {
                tracing::error!(error = %e, "node drainer");
            }
        }
    }

    fn drain_tick(&self) -> Result<(), ServerError> {
        if !self.state.snapshot().nodes().any(|n| n.drain_strategy.is_some()) {
            return Ok(());
        }
        let now = now_nanos();
        let (_, evals) = self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            let mut jobs: BTreeSet<(String, String)> = BTreeSet::new();
            for node in snap.nodes() {
                let Some(strategy) = &node.drain_strategy else { continue };
                let step = drain_step(snap, node, strategy, now);
                for id in &step.migrate {
                    let Some(a) = snap.alloc(id) else { continue };
                    let mut marked = (*a).clone();
                    marked.desired_transition.migrate = Some(true);
                    jobs.insert((a.namespace.clone(), a.job_id.clone()));
                    batch.allocs.push(marked);
                }
                if step.done {
                    let mut n = (**node).clone();
                    n.drain_strategy = None;
                    n.drain = false;
                    if let Some(last) = &mut n.last_drain {
                        last.status = drain_status::COMPLETE.into();
                        last.updated_at = now_rfc3339();
                    }
                    n.events.push(node_event("Drain", "Node drain complete"));
                    tracing::info!(node = %n.name, "node drain complete");
                    batch.nodes.push(n);
                }
            }
            for (ns, id) in &jobs {
                if let Some(job) = snap.job(ns, id) {
                    batch.evals.push(Evaluation::pending(&job, "node-drain"));
                }
            }
            let evals: Vec<Evaluation> = batch.evals.clone();
            Ok::<_, ServerError>((batch, evals))
        })?;
        for e in &evals {
            self.enqueue(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
