//! Reconciliation: sorts a job's allocations into buckets and decides what
//! to place, update and stop.
//!
//! Vocabulary (as in Nomad's scheduler):
//! - *untainted*: desired run, on a live node, not finished: kept as is;
//! - *lost*: on a node that is down: stopped as lost and replaced;
//! - *unknown*: on a disconnected node, for a group with
//!   `disconnect.lost_after`: kept (and replaced unless `replace = false`)
//!   until `lost_after` passes, then lost; if its node comes back first,
//!   it or its replacement stays, as `disconnect.reconcile` says;
//! - *failed*: the client gave up on it: replaced when the reschedule policy
//!   allows (possibly after a delay, via a follow-up evaluation);
//! - *migrating*: marked by a node drain: stopped and replaced elsewhere;
//! - *complete*: a batch allocation that succeeded: counts as done;
//! - *destructive update*: the group's tasks changed: stop and replace,
//!   at most `update.max_parallel` at a time;
//! - *in-place update*: only non-task fields changed: the allocation takes
//!   the new job version where it runs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use super::disconnect;
use super::rank::Placer;
use super::{new_id, Plan};
use crate::server::state::Tables;
use crate::structs::{
    client_status, deployment_description, deployment_status, desired, eval_status, node_status, AllocDeploymentStatus,
    AllocMetric, Allocation, Deployment, Evaluation, Job, RescheduleEvent, ReschedulePolicy, RescheduleTracker,
    TaskGroup, JOB_TYPE_SERVICE,
};
use crate::util::now_nanos;
use crate::wire::plan::DesiredUpdates;

/// True when the difference between two versions of a group needs its
/// allocations replaced rather than updated in place.
pub fn tasks_updated(old: &TaskGroup, new: &TaskGroup) -> bool {
    let fingerprint = |tg: &TaskGroup| {
        serde_json::to_string(&(&tg.tasks, &tg.networks, &tg.volumes, &tg.ephemeral_disk)).unwrap_or_default()
    };
    fingerprint(old) != fingerprint(new)
}

/// An allocation's name, `job.group[index]`, built without `format!`'s
/// machinery (one per placement).
fn alloc_name(job_id: &str, group: &str, index: u32) -> String {
    // Room for the separators and a u32 index.
    let mut name = String::with_capacity(job_id.len() + group.len() + 13);
    name.push_str(job_id);
    name.push('.');
    name.push_str(group);
    let _ = write!(name, "[{index}]");
    name
}

/// Why a drained node's allocation stops.
const MIGRATING: &str = "alloc is being migrated";

/// A placement the plan still has to find a node for.
/// A group's originals and replacements (see `reconnect_choices`).
#[derive(Default)]
struct Replacements {
    /// Allocations with a live replacement that stays.
    replaced: HashSet<String>,
    /// Replacements that stop: the original they replaced is back.
    not_needed: HashSet<String>,
}

struct PlaceRequest {
    index: u32,
    previous: Option<Arc<Allocation>>,
    reschedule: bool,
    /// A canary of the job's new version, placed beside the old one.
    canary: bool,
}

impl PlaceRequest {
    /// A placement at `index`, replacing `previous` if any.
    fn at(index: u32, previous: Option<Arc<Allocation>>) -> PlaceRequest {
        PlaceRequest { index, previous, reschedule: false, canary: false }
    }
}

/// One evaluation's reconciliation.
pub struct Reconciler<'a> {
    snap: &'a Tables,
    eval: &'a Evaluation,
    now: i64,
    plan: Plan,
    /// Canaries each group wants in this job version's deployment.
    canaries: BTreeMap<String, u32>,
}

fn stopped(a: &Allocation, description: &str, client: Option<&str>) -> Allocation {
    let mut s = a.clone();
    s.desired_status = desired::STOP.into();
    s.desired_description = description.into();
    if let Some(c) = client {
        s.client_status = c.into();
        s.client_description = description.into();
    }
    s
}

/// Whether a failed allocation may still be replaced under its group's
/// reschedule policy at `now`.
pub fn reschedule_eligible(job: &Job, a: &Allocation, now: i64) -> bool {
    let policy = job.task_group(&a.task_group).and_then(|tg| tg.reschedule_policy.clone()).unwrap_or_default();
    reschedule_delay(&policy, a.reschedule_tracker.as_ref(), now).is_some()
}

fn reschedule_delay(policy: &ReschedulePolicy, tracker: Option<&RescheduleTracker>, now: i64) -> Option<i64> {
    let events = tracker.map(|t| t.events.as_slice()).unwrap_or(&[]);
    if !policy.unlimited {
        if policy.attempts == 0 {
            return None;
        }
        let recent =
            events.iter().filter(|e| policy.interval == 0 || e.reschedule_time > now - policy.interval).count();
        if recent >= policy.attempts as usize {
            return None;
        }
    }
    let n = events.len() as u32;
    let delay = match policy.delay_function.as_str() {
        "exponential" => policy.delay.saturating_mul(1i64 << n.min(30)),
        "fibonacci" => {
            let (mut a, mut b) = (policy.delay, policy.delay);
            for _ in 0..n {
                (a, b) = (b, a.saturating_add(b));
            }
            a
        }
        _ => policy.delay,
    };
    Some(if policy.max_delay > 0 { delay.min(policy.max_delay) } else { delay })
}

impl<'a> Reconciler<'a> {
    /// A reconciler for `eval` over `snap`.
    pub fn new(snap: &'a Tables, eval: &'a Evaluation) -> Self {
        Reconciler { snap, eval, now: now_nanos(), plan: Plan::default(), canaries: BTreeMap::new() }
    }

    /// Runs the reconciliation and returns the plan.
    pub fn run(mut self) -> Plan {
        let job = self.snap.job(&self.eval.namespace, &self.eval.job_id);
        let allocs = self.snap.allocs_by_job(&self.eval.namespace, &self.eval.job_id);
        let live: Vec<Arc<Allocation>> = allocs.into_iter().filter(|a| !a.server_terminal()).collect();
        let job = match job {
            Some(j) if !j.stop => j,
            _ => {
                for a in &live {
                    let upd = self.plan.desired_updates.entry(a.task_group.clone()).or_default();
                    if !a.client_terminal() {
                        upd.stop += 1;
                    }
                    self.plan.update.push(stopped(a, "alloc not needed since job stopped", None));
                }
                return self.plan;
            }
        };
        // Allocations of groups that no longer exist are stopped.
        for a in live.iter().filter(|a| job.task_group(&a.task_group).is_none()) {
            self.plan.desired_updates.entry(a.task_group.clone()).or_default().stop += 1;
            self.plan.update.push(stopped(a, "alloc not needed due to job update", None));
        }
        let mut placer_freed = HashSet::new();
        let mut requests: Vec<(usize, Vec<PlaceRequest>, Option<String>)> = Vec::new();
        for (gi, tg) in job.task_groups.iter().enumerate() {
            let group_allocs: Vec<Arc<Allocation>> = live.iter().filter(|a| a.task_group == tg.name).cloned().collect();
            if job.is_system_like() {
                continue;
            }
            let reqs = self.reconcile_group(&job, tg, group_allocs, &mut placer_freed);
            requests.push((gi, reqs, None));
        }
        let mut placer = Placer::new(self.snap, &job, placer_freed);
        if job.is_system_like() {
            for tg in &job.task_groups {
                let group_allocs: Vec<Arc<Allocation>> =
                    live.iter().filter(|a| a.task_group == tg.name).cloned().collect();
                self.reconcile_system_group(&job, tg, group_allocs, &mut placer);
            }
        } else {
            for (gi, reqs, _) in requests {
                self.place_group(&job, &job.task_groups[gi], reqs, &mut placer);
            }
        }
        self.finish_deployment(&job);
        self.plan
    }

    /// Buckets one group's allocations; stops what must stop and returns
    /// the placements still needed.
    fn reconcile_group(
        &mut self,
        job: &Arc<Job>,
        tg: &TaskGroup,
        allocs: Vec<Arc<Allocation>>,
        freed: &mut HashSet<String>,
    ) -> Vec<PlaceRequest> {
        let mut upd = DesiredUpdates::default();
        let mut occupied: BTreeSet<u32> = BTreeSet::new();
        let mut untainted: Vec<Arc<Allocation>> = Vec::new();
        let mut requests = Vec::new();
        let replacements = self.reconnect_choices(tg, &allocs);
        let mut reconnected = Vec::new();
        for mut a in allocs {
            if replacements.not_needed.contains(&a.id) {
                self.plan.update.push(stopped(&a, disconnect::REPLACEMENT_NOT_NEEDED, None));
                freed.insert(a.id.clone());
                upd.stop += 1;
                continue;
            }
            let replaced = replacements.replaced.contains(&a.id);
            let node = self.snap.node(&a.node_id);
            let out_of_touch = node.as_ref().is_none_or(|n| n.out_of_touch());
            if out_of_touch && !a.client_terminal() {
                if let Some(until) = disconnect::unknown_until(tg, &a, node.as_deref(), self.now) {
                    if a.client_status != client_status::UNKNOWN {
                        self.mark_unknown(job, &a, until);
                        upd.disconnect += 1;
                    }
                    occupied.insert(a.index());
                    if tg.replaces_unknown() && !replaced {
                        upd.place += 1;
                        requests.push(PlaceRequest::at(a.index(), Some(a.clone())));
                    }
                    continue;
                }
            }
            if out_of_touch && !a.client_terminal() {
                // Its client stops it itself; replace it once it surely has.
                let at = disconnect::replaceable_at(tg, node.as_deref()).filter(|at| *at > self.now);
                if let Some(at) = at {
                    self.follow_up_at(job, &a, at, "stop-on-client-after");
                    occupied.insert(a.index());
                    upd.ignore += 1;
                    continue;
                }
            }
            if a.client_status == client_status::LOST || (out_of_touch && !a.client_terminal()) {
                self.plan.update.push(stopped(&a, "alloc is lost since its node is down", Some(client_status::LOST)));
                freed.insert(a.id.clone());
                upd.stop += 1;
                occupied.insert(a.index());
                if !replaced {
                    upd.place += 1;
                    requests.push(PlaceRequest::at(a.index(), Some(a.clone())));
                }
                continue;
            }
            if a.unknown_since().is_some() {
                // Back from a node that was out of touch.
                if a.client_status == client_status::UNKNOWN {
                    // Its client has not said how it is yet.
                    occupied.insert(a.index());
                    upd.ignore += 1;
                    continue;
                }
                if replaced {
                    self.plan.update.push(stopped(&a, disconnect::ORIGINAL_NOT_NEEDED, None));
                    freed.insert(a.id.clone());
                    upd.stop += 1;
                    continue;
                }
                let mut back = (*a).clone();
                back.record_client_status(&a.client_status, self.now);
                a = Arc::new(back);
                reconnected.push(a.clone());
                upd.reconnect += 1;
            } else if replaced && a.client_terminal() {
                // Finished while its replacement runs: nothing to redo.
                self.plan.update.push(stopped(&a, disconnect::ORIGINAL_NOT_NEEDED, None));
                upd.stop += 1;
                continue;
            }
            if a.desired_transition.should_migrate() && !a.is_terminal() {
                self.plan.update.push(stopped(&a, MIGRATING, None));
                freed.insert(a.id.clone());
                upd.migrate += 1;
                requests.push(PlaceRequest::at(a.index(), Some(a.clone())));
                occupied.insert(a.index());
                continue;
            }
            match a.client_status.as_str() {
                client_status::COMPLETE if job.is_batch_like() => {
                    occupied.insert(a.index());
                }
                client_status::COMPLETE => {
                    self.plan.update.push(stopped(&a, "alloc complete; replacing", None));
                    freed.insert(a.id.clone());
                    upd.place += 1;
                    requests.push(PlaceRequest::at(a.index(), Some(a.clone())));
                    occupied.insert(a.index());
                }
                client_status::FAILED => {
                    occupied.insert(a.index());
                    if let Some(req) = self.reschedule(job, tg, &a) {
                        freed.insert(a.id.clone());
                        upd.stop += 1;
                        upd.place += 1;
                        requests.push(req);
                    }
                }
                _ => {
                    occupied.insert(a.index());
                    untainted.push(a);
                }
            }
        }
        // Scale down: replacements above the new count are not placed (their
        // lost or failed allocations are already stopped), then the highest
        // running indexes stop.
        let desired_count = tg.count as usize;
        let mut live_count = occupied.len();
        requests.retain(|r: &PlaceRequest| {
            if live_count > desired_count && r.index as usize >= desired_count {
                occupied.remove(&r.index);
                upd.place -= 1;
                live_count -= 1;
                return false;
            }
            true
        });
        if live_count > desired_count {
            untainted.sort_by_key(|a| std::cmp::Reverse(a.index()));
            let mut keep = Vec::new();
            for a in untainted {
                if live_count > desired_count && a.index() as usize >= desired_count.min(live_count) {
                    self.plan.update.push(stopped(&a, "alloc not needed due to job update", None));
                    freed.insert(a.id.clone());
                    occupied.remove(&a.index());
                    upd.stop += 1;
                    live_count -= 1;
                } else {
                    keep.push(a);
                }
            }
            untainted = keep;
        }
        self.roll_out(job, tg, untainted, &mut upd, &mut requests, freed);
        // Scale up into the lowest free indexes.
        let mut next = 0u32;
        while occupied.len() < desired_count {
            while occupied.contains(&next) {
                next += 1;
            }
            occupied.insert(next);
            upd.place += 1;
            requests.push(PlaceRequest::at(next, None));
        }
        // Reconnected allocations the plan does not already change.
        let changed: HashSet<&str> = self.plan.update.iter().map(|u| u.id.as_str()).collect();
        let recorded: Vec<Allocation> =
            reconnected.iter().filter(|a| !changed.contains(a.id.as_str())).map(|a| (**a).clone()).collect();
        self.plan.update.extend(recorded);
        self.plan.desired_updates.insert(tg.name.clone(), upd);
        requests
    }

    /// Moves a group's kept allocations to the job's version: in place
    /// when only non-task fields changed; otherwise canaries first (when
    /// the group has them and its deployment is not promoted), then
    /// destructive updates, no more at a time than `max_parallel` less the
    /// new allocations not yet healthy, and none while the deployment is
    /// paused or failed.
    fn roll_out(
        &mut self,
        job: &Arc<Job>,
        tg: &TaskGroup,
        mut untainted: Vec<Arc<Allocation>>,
        upd: &mut DesiredUpdates,
        requests: &mut Vec<PlaceRequest>,
        freed: &mut HashSet<String>,
    ) {
        let update = tg.update.as_ref().filter(|u| u.max_parallel > 0 && job.job_type == JOB_TYPE_SERVICE);
        let dep = self.snap.latest_deployment(&job.namespace, &job.id).filter(|d| d.job_version == job.version);
        let held = dep.as_ref().is_some_and(|d| d.status != deployment_status::RUNNING);
        let promoted = dep.as_ref().and_then(|d| d.task_groups.get(&tg.name)).is_some_and(|s| s.promoted);
        let current = |a: &Allocation| a.job_version() == job.version;
        let not_ready = untainted.iter().filter(|a| current(a) && !a.is_healthy()).count();
        let mut budget = match update {
            None => usize::MAX,
            Some(_) if held => 0,
            Some(u) => (u.max_parallel as usize).saturating_sub(not_ready),
        };
        let canary_indexes: BTreeSet<u32> =
            untainted.iter().filter(|a| current(a) && a.is_canary()).map(|a| a.index()).collect();
        untainted.sort_by_key(|a| a.index());
        let mut destructive = Vec::new();
        for a in untainted {
            if current(&a) {
                upd.ignore += 1;
                continue;
            }
            let old_tg = a.job.as_ref().and_then(|j| j.task_group(&tg.name));
            if old_tg.is_some_and(|old| !tasks_updated(old, tg)) {
                let mut updated = (*a).clone();
                updated.job = Some(job.clone());
                self.plan.update.push(updated);
                upd.in_place_update += 1;
            } else {
                destructive.push(a);
            }
        }
        let canaries = update.map_or(0, |u| u.canary);
        if canaries > 0 && !promoted && !destructive.is_empty() {
            self.canaries.insert(tg.name.clone(), canaries);
            let missing = (canaries as usize).saturating_sub(canary_indexes.len());
            let beside = destructive.iter().filter(|a| !canary_indexes.contains(&a.index())).take(missing);
            for a in beside.filter(|_| !held) {
                upd.canary += 1;
                requests.push(PlaceRequest { canary: true, ..PlaceRequest::at(a.index(), None) });
            }
            upd.ignore += destructive.len() as u64;
            return;
        }
        for a in destructive {
            if canary_indexes.contains(&a.index()) {
                // A promoted canary took its place.
                self.plan.update.push(stopped(&a, "alloc not needed due to job update", None));
                freed.insert(a.id.clone());
                upd.stop += 1;
            } else if budget > 0 {
                budget -= 1;
                self.plan.update.push(stopped(&a, "alloc is being updated due to job update", None));
                freed.insert(a.id.clone());
                upd.destructive_update += 1;
                requests.push(PlaceRequest::at(a.index(), Some(a.clone())));
            } else {
                upd.ignore += 1;
            }
        }
    }

    /// Marks `a` unknown, with an evaluation at `until` that finds it lost
    /// unless its node is back by then.
    fn mark_unknown(&mut self, job: &Job, a: &Allocation, until: i64) {
        let mut unknown = a.clone();
        unknown.client_status = client_status::UNKNOWN.into();
        unknown.client_description = disconnect::UNKNOWN.into();
        unknown.record_client_status(client_status::UNKNOWN, self.now);
        unknown.followup_eval_id.clear();
        self.follow_up_at(job, &unknown, until, "max-disconnect-timeout");
    }

    /// Updates `a` with a pending evaluation of its job at `at` (unless it
    /// has one already).
    fn follow_up_at(&mut self, job: &Job, a: &Allocation, at: i64, triggered_by: &str) {
        let pending = |id: &str| self.snap.eval(id).is_some_and(|e| e.status == eval_status::PENDING);
        if !a.followup_eval_id.is_empty() && pending(&a.followup_eval_id) {
            return;
        }
        let followup = Evaluation {
            wait_until: at,
            previous_eval: self.eval.id.clone(),
            ..Evaluation::pending(job, triggered_by)
        };
        let mut marked = a.clone();
        marked.followup_eval_id = followup.id.clone();
        self.plan.update.push(marked);
        self.plan.followups.push(followup);
    }

    /// Which allocations of a group have a live replacement, and which
    /// replacements stop because the original they replaced is back and
    /// stays.
    fn reconnect_choices(&self, tg: &TaskGroup, allocs: &[Arc<Allocation>]) -> Replacements {
        let by_id: BTreeMap<&str, &Arc<Allocation>> = allocs.iter().map(|a| (a.id.as_str(), a)).collect();
        let mut out = Replacements::default();
        for r in allocs.iter().filter(|r| !r.client_terminal() && !r.previous_allocation.is_empty()) {
            let Some(original) = by_id.get(r.previous_allocation.as_str()) else { continue };
            let back = original.unknown_since().is_some()
                && original.client_status != client_status::UNKNOWN
                && !original.client_terminal()
                && self.snap.node(&original.node_id).is_some_and(|n| n.status == node_status::READY);
            if back && disconnect::keep_original(tg, original, r) {
                out.not_needed.insert(r.id.clone());
            } else {
                out.replaced.insert(original.id.clone());
            }
        }
        out
    }

    /// Decides whether a failed allocation is replaced now, later, or never.
    fn reschedule(&mut self, job: &Job, tg: &TaskGroup, a: &Arc<Allocation>) -> Option<PlaceRequest> {
        let policy = tg.reschedule_policy.clone().unwrap_or_default();
        let delay = reschedule_delay(&policy, a.reschedule_tracker.as_ref(), self.now)?;
        let due = a.modify_time + delay;
        // The follow-up evaluation created for this allocation is the one
        // that replaces it: it runs at the due time, but marking the
        // allocation with it moved its `ModifyTime`, so `due` has slid.
        if due > self.now && a.followup_eval_id != self.eval.id {
            self.follow_up_at(job, a, due, "alloc-failure");
            return None;
        }
        self.plan.update.push(stopped(a, "alloc was rescheduled because it failed", None));
        Some(PlaceRequest { reschedule: true, ..PlaceRequest::at(a.index(), Some(a.clone())) })
    }

    /// Finds nodes for a group's placements.
    fn place_group(&mut self, job: &Arc<Job>, tg: &TaskGroup, requests: Vec<PlaceRequest>, placer: &mut Placer) {
        let mut metric = AllocMetric::default();
        let mut failed = 0u64;
        let started = std::time::Instant::now();
        self.plan.place.reserve(requests.len());
        for req in requests {
            if failed > 0 {
                failed += 1;
                continue;
            }
            let mut attempt = AllocMetric::default();
            match placer.place_any(job, tg, req.index, &mut attempt) {
                Some(p) => {
                    attempt.allocation_time = started.elapsed().as_nanos() as i64;
                    let alloc = self.new_alloc(job, tg, req, p, attempt);
                    self.plan.place.push(alloc);
                }
                None => {
                    metric = attempt;
                    failed = 1;
                }
            }
        }
        if failed > 0 {
            metric.nodes_in_pool = placer.node_count() as u64;
            metric.coalesced_failures = failed - 1;
            metric.allocation_time = started.elapsed().as_nanos() as i64;
            self.plan.failed_tg_allocs.insert(tg.name.clone(), metric);
            self.plan.queued.insert(tg.name.clone(), failed);
        }
    }

    /// System jobs: one allocation per feasible node.
    fn reconcile_system_group(
        &mut self,
        job: &Arc<Job>,
        tg: &TaskGroup,
        allocs: Vec<Arc<Allocation>>,
        placer: &mut Placer,
    ) {
        let mut upd = DesiredUpdates::default();
        let feasible: BTreeSet<String> = placer.feasible_nodes(job, tg).into_iter().collect();
        let mut covered: BTreeSet<String> = BTreeSet::new();
        for a in allocs {
            let node = self.snap.node(&a.node_id);
            let node_down = node.as_ref().is_none_or(|n| n.out_of_touch());
            if node_down && !a.client_terminal() {
                self.plan.update.push(stopped(&a, "alloc is lost since its node is down", Some(client_status::LOST)));
                placer.free(&a);
                upd.stop += 1;
                continue;
            }
            if a.desired_transition.should_migrate() && !a.is_terminal() {
                self.plan.update.push(stopped(&a, MIGRATING, None));
                placer.free(&a);
                upd.migrate += 1;
                continue;
            }
            if !feasible.contains(&a.node_id) && !node_down {
                let eligible = node.map(|n| n.is_schedulable()).unwrap_or(false);
                if eligible {
                    self.plan.update.push(stopped(&a, "alloc not needed as node is no longer feasible", None));
                    placer.free(&a);
                    upd.stop += 1;
                    continue;
                }
            }
            covered.insert(a.node_id.clone());
            if a.client_terminal() || a.job_version() == job.version {
                upd.ignore += 1;
                continue;
            }
            let old_tg = a.job.as_ref().and_then(|j| j.task_group(&tg.name));
            if old_tg.map(|old| tasks_updated(old, tg)).unwrap_or(true) {
                self.plan.update.push(stopped(&a, "alloc is being updated due to job update", None));
                // Its replacement goes on the same node: free its resources
                // and ports there first.
                placer.free(&a);
                upd.destructive_update += 1;
                covered.remove(&a.node_id);
            } else {
                let mut updated = (*a).clone();
                updated.job = Some(job.clone());
                self.plan.update.push(updated);
                upd.in_place_update += 1;
            }
        }
        let mut metric = AllocMetric::default();
        let mut failed = 0;
        let started = std::time::Instant::now();
        for node_id in feasible.difference(&covered) {
            let mut attempt = AllocMetric::default();
            match placer.place_on(job, tg, node_id, &mut attempt) {
                Some(p) => {
                    let index = 0;
                    let alloc = self.new_alloc(job, tg, PlaceRequest::at(index, None), p, attempt);
                    self.plan.place.push(alloc);
                    upd.place += 1;
                }
                None => {
                    failed += 1;
                    metric.nodes_evaluated += attempt.nodes_evaluated;
                    metric.nodes_exhausted += attempt.nodes_exhausted;
                    for (k, v) in attempt.dimension_exhausted {
                        *metric.dimension_exhausted.entry(k).or_default() += v;
                    }
                }
            }
        }
        if failed > 0 {
            metric.coalesced_failures = failed - 1;
            metric.allocation_time = started.elapsed().as_nanos() as i64;
            self.plan.failed_tg_allocs.insert(tg.name.clone(), metric);
            self.plan.queued.insert(tg.name.clone(), failed);
        }
        self.plan.desired_updates.insert(tg.name.clone(), upd);
    }

    fn new_alloc(
        &self,
        job: &Arc<Job>,
        tg: &TaskGroup,
        req: PlaceRequest,
        placement: super::rank::Placement,
        metric: AllocMetric,
    ) -> Allocation {
        let mut tracker = None;
        if let (Some(prev), true) = (&req.previous, req.reschedule) {
            let mut t = prev.reschedule_tracker.clone().unwrap_or_default();
            t.events.push(RescheduleEvent {
                reschedule_time: self.now,
                prev_alloc_id: prev.id.clone(),
                prev_node_id: prev.node_id.clone(),
                delay: 0,
            });
            tracker = Some(t);
        }
        // A canary's replacement is a canary too.
        let canary =
            req.canary || req.previous.as_ref().is_some_and(|p| p.is_canary() && p.job_version() == job.version);
        Allocation {
            id: new_id(),
            namespace: job.namespace.clone(),
            eval_id: self.eval.id.clone(),
            name: alloc_name(&job.id, &tg.name, req.index),
            node_id: placement.node.id.clone(),
            node_name: placement.node.name.clone(),
            job_id: job.id.clone(),
            job: Some(job.clone()),
            task_group: tg.name.clone(),
            allocated_resources: placement.resources,
            desired_status: desired::RUN.into(),
            client_status: client_status::PENDING.into(),
            previous_allocation: req.previous.map(|p| p.id.clone()).unwrap_or_default(),
            reschedule_tracker: tracker,
            metrics: Some(metric),
            deployment_status: canary.then(|| AllocDeploymentStatus { canary, ..Default::default() }),
            ..Default::default()
        }
    }

    /// Service jobs whose groups have an `update` block get a deployment
    /// per job version that places or updates allocations; it takes in
    /// this plan's placements and in-place updates of those groups.
    fn finish_deployment(&mut self, job: &Arc<Job>) {
        let rolled = |tg: &&TaskGroup| tg.update.as_ref().is_some_and(|u| u.max_parallel > 0);
        if job.job_type != JOB_TYPE_SERVICE || !job.task_groups.iter().any(|tg| rolled(&tg)) {
            return;
        }
        let snap = self.snap;
        let latest = snap.latest_deployment(&job.namespace, &job.id);
        let current = latest.filter(|d| d.job_version == job.version);
        let in_place = |a: &Allocation| {
            a.job_version() == job.version
                && a.desired_status == desired::RUN
                && snap.alloc(&a.id).is_some_and(|old| old.job_version() != job.version)
        };
        let touched = !self.plan.place.is_empty() || self.plan.update.iter().any(in_place);
        let mut dep = match current {
            Some(d) => (*d).clone(),
            None if touched => {
                for old in snap.deployments() {
                    if old.namespace == job.namespace && old.job_id == job.id && old.is_active() {
                        let mut c = (**old).clone();
                        c.status = deployment_status::CANCELLED.into();
                        c.status_description = deployment_description::NEWER_JOB.into();
                        self.plan.cancel_deployments.push(c);
                    }
                }
                Deployment {
                    id: new_id(),
                    namespace: job.namespace.clone(),
                    job_id: job.id.clone(),
                    job_version: job.version,
                    status: deployment_status::RUNNING.into(),
                    status_description: deployment_description::RUNNING.into(),
                    ..Default::default()
                }
            }
            None => return,
        };
        if !dep.is_active() {
            return;
        }
        for tg in job.task_groups.iter().filter(rolled) {
            let Some(update) = &tg.update else { continue };
            let state = dep.task_groups.entry(tg.name.clone()).or_default();
            state.desired_total = tg.count;
            state.auto_revert = update.auto_revert;
            state.auto_promote = update.auto_promote;
            if let Some(n) = self.canaries.get(&tg.name) {
                state.desired_canaries = *n;
            }
            state.progress_deadline = update.progress_deadline;
            if state.progress_deadline > 0 && state.require_progress_by == 0 {
                state.require_progress_by = self.now + state.progress_deadline;
            }
            let group = |a: &&mut Allocation| a.task_group == tg.name;
            for a in self.plan.place.iter_mut().filter(group) {
                a.deployment_id = dep.id.clone();
                state.placed_allocs += 1;
                if a.is_canary() {
                    state.placed_canaries.push(a.id.clone());
                }
            }
            for a in self.plan.update.iter_mut().filter(group).filter(|a| in_place(a) && a.deployment_id != dep.id) {
                a.deployment_id = dep.id.clone();
                a.deployment_status = None;
                state.placed_allocs += 1;
            }
        }
        self.plan.deployment = Some(dep);
    }
}
