//! Deployments on the servers: how a service job's rollout moves with its
//! allocations' health (counts, progress deadlines, auto-promotion of
//! healthy canaries, success marking the job version stable, failure
//! reverting to the latest stable version when `auto_revert` says so), and
//! what an operator does to one: promote, fail, pause, resume, and set
//! allocations' health by hand.

use std::collections::HashMap;

use super::jobs::spec;
use super::state::{Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{
    deployment_description as describe, deployment_status as status, AllocDeploymentStatus, Allocation, Deployment,
    Evaluation, Job,
};
use crate::util::now_nanos;

/// Why evaluations that carry a rollout on are made.
const WATCHER: &str = "deployment-watcher";

/// Recounts the job's active deployment from its allocations (those of
/// `overlay`, about to be written, over the snapshot's) and adds what
/// follows to `batch`: the deployment, an evaluation when the rollout can
/// go on, the job marked stable or reverted.
pub(super) fn track(snap: &Tables, job: &Job, overlay: &[Allocation], batch: &mut WriteBatch) {
    let Some(dep) = snap.latest_deployment(&job.namespace, &job.id) else { return };
    if !dep.is_active() || dep.job_version != job.version {
        return;
    }
    let stored = snap.allocs_by_job(&job.namespace, &job.id);
    let mut allocs: HashMap<&str, &Allocation> = stored.iter().map(|a| (a.id.as_str(), &**a)).collect();
    for a in overlay.iter().filter(|a| a.job_id == job.id && a.namespace == job.namespace) {
        allocs.insert(a.id.as_str(), a);
    }
    let now = now_nanos();
    let mut d = (*dep).clone();
    let mut progressed = false;
    let mut fails_early = false;
    for (group, state) in &mut d.task_groups {
        let placed = allocs.values().filter(|a| a.deployment_id == dep.id && &a.task_group == group);
        let healthy = placed.clone().filter(|a| a.is_healthy() && !a.server_terminal()).count() as u32;
        let unhealthy = placed.clone().filter(|a| a.is_unhealthy()).count() as u32;
        if healthy > state.healthy_allocs {
            progressed = true;
            if state.progress_deadline > 0 {
                state.require_progress_by = now + state.progress_deadline;
            }
        }
        state.healthy_allocs = healthy;
        state.unhealthy_allocs = unhealthy;
        // Nomad waits for the progress deadline while an unhealthy
        // allocation can be replaced; berth replaces only failed ones.
        fails_early |= placed.filter(|a| a.is_unhealthy()).any(|a| {
            state.progress_deadline == 0
                || a.client_status != crate::structs::client_status::FAILED
                || !super::scheduler::reschedule_eligible(job, a, now)
        });
    }
    let older = allocs.values().any(|a| a.job_version() < job.version && !a.is_terminal());
    if fails_early {
        fail(snap, job, &mut d, describe::FAILED_ALLOCATIONS, batch);
    } else {
        progressed |= auto_promote(&mut d, &allocs);
        settle(job, &mut d, older, batch);
    }
    if progressed && d.status == status::RUNNING {
        batch.evals.push(Evaluation::pending(job, WATCHER));
    }
    if d != *dep {
        batch.deployments.push(d);
    }
}

/// Promotes the canaries of groups that promote themselves once every
/// canary is healthy, when every group that waits for promotion does.
fn auto_promote(d: &mut Deployment, allocs: &HashMap<&str, &Allocation>) -> bool {
    let waiting: Vec<_> = d.task_groups.values().filter(|s| s.desired_canaries > 0 && !s.promoted).collect();
    let ready = |s: &&crate::structs::DeploymentState| {
        let healthy = s.placed_canaries.iter().filter(|id| allocs.get(id.as_str()).is_some_and(|a| a.is_healthy()));
        s.auto_promote && healthy.count() as u32 >= s.desired_canaries
    };
    if waiting.is_empty() || !waiting.iter().all(ready) || d.status != status::RUNNING {
        return false;
    }
    for s in d.task_groups.values_mut() {
        s.promoted |= s.desired_canaries > 0;
    }
    true
}

/// Marks the deployment successful once every group has its count of
/// healthy allocations and no old ones are left (the job version turns
/// stable), or describes what it waits for.
fn settle(job: &Job, d: &mut Deployment, older: bool, batch: &mut WriteBatch) {
    if d.status != status::RUNNING {
        return;
    }
    let done = d.task_groups.values().all(|s| s.healthy_allocs >= s.desired_total);
    if done && !older && !d.requires_promotion() {
        d.status = status::SUCCESSFUL.into();
        d.status_description = describe::SUCCESSFUL.into();
        let mut stable = latest(batch, job);
        stable.stable = true;
        batch.jobs.push(stable);
        return;
    }
    let auto = d.task_groups.values().filter(|s| s.desired_canaries > 0 && !s.promoted).all(|s| s.auto_promote);
    d.status_description = match d.requires_promotion() {
        true if auto => describe::AUTO_PROMOTION,
        true => describe::NEEDS_PROMOTION,
        false => describe::RUNNING,
    }
    .into();
}

/// The job as `batch` leaves it (its status may be written already).
fn latest(batch: &WriteBatch, job: &Job) -> Job {
    let written = batch.jobs.iter().rev().find(|j| j.id == job.id && j.namespace == job.namespace);
    written.unwrap_or(job).clone()
}

/// Fails the deployment for `why` and, when a group reverts, registers
/// the latest stable version before the job's own as a new version.
fn fail(snap: &Tables, job: &Job, d: &mut Deployment, why: &str, batch: &mut WriteBatch) {
    d.status = status::FAILED.into();
    d.status_description = why.into();
    if !d.auto_reverts() {
        return;
    }
    let stable = snap.job_versions(&job.namespace, &job.id).into_iter().find(|v| v.stable && v.version < job.version);
    let Some(stable) = stable else {
        d.status_description = format!("{why} - no stable job version to auto revert to");
        return;
    };
    if spec(&stable) == spec(job) {
        d.status_description = format!(
            "{why} - not rolling back to stable job version {} as current job has same specification",
            stable.version
        );
        return;
    }
    d.status_description = format!("{why} - rolling back to job version {}", stable.version);
    let reverted = reverted_to(&latest(batch, job), &stable);
    batch.evals.push(Evaluation::pending(&reverted, WATCHER));
    batch.jobs.push(reverted);
}

/// `target`'s specification registered as the version after `current`.
pub(super) fn reverted_to(current: &Job, target: &Job) -> Job {
    Job {
        version: current.version + 1,
        stable: false,
        submit_time: now_nanos(),
        status: current.status.clone(),
        status_description: current.status_description.clone(),
        create_index: current.create_index,
        job_modify_index: 0,
        ..target.clone()
    }
}

/// An operator's change to a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentAction {
    /// Promote the canaries of these groups (all when empty).
    Promote(Vec<String>),
    /// Fail it (reverting when it auto-reverts).
    Fail,
    /// Pause (true) or resume (false) it.
    Pause(bool),
    /// Set these allocations healthy and those unhealthy.
    SetHealth { healthy: Vec<String>, unhealthy: Vec<String> },
}

/// What an operator's change wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentUpdate {
    /// The evaluation it created, if any.
    pub eval_id: String,
    /// The state index of the write.
    pub index: u64,
}

impl Server {
    /// Fails running deployments whose groups missed their progress
    /// deadline (reverting those that auto-revert).
    pub fn check_deployment_deadlines(&self) -> Result<(), ServerError> {
        let (_, evals) = self.state.commit(|snap| {
            let now = now_nanos();
            let mut batch = WriteBatch::default();
            for d in snap.deployments().filter(|d| d.status == status::RUNNING) {
                let missed = d.task_groups.values().any(|s| {
                    let wanted =
                        if s.desired_canaries > 0 && !s.promoted { s.desired_canaries } else { s.desired_total };
                    s.require_progress_by > 0 && now > s.require_progress_by && s.healthy_allocs < wanted
                });
                let Some(job) = snap.job(&d.namespace, &d.job_id).filter(|_| missed) else { continue };
                let mut failed = (**d).clone();
                fail(snap, &job, &mut failed, describe::PROGRESS_DEADLINE, &mut batch);
                batch.deployments.push(failed);
            }
            let evals = batch.evals.clone();
            Ok::<_, ServerError>((batch, evals))
        })?;
        for e in &evals {
            self.enqueue(e);
        }
        Ok(())
    }

    /// Applies an operator's change to the deployment `id`.
    pub fn update_deployment(&self, id: &str, action: DeploymentAction) -> Result<DeploymentUpdate, ServerError> {
        let (index, eval) = self.state.commit(|snap| {
            let dep = snap.deployment(id).ok_or_else(|| ServerError::NotFound(format!("deployment {id} not found")))?;
            let job = snap
                .job(&dep.namespace, &dep.job_id)
                .ok_or_else(|| ServerError::NotFound(format!("job {:?} not found", dep.job_id)))?;
            if !dep.is_active() {
                let verb = match action {
                    DeploymentAction::Promote(_) => "promote",
                    DeploymentAction::Fail => "fail",
                    DeploymentAction::Pause(true) => "pause",
                    DeploymentAction::Pause(false) => "resume",
                    DeploymentAction::SetHealth { .. } => "set health of allocations for",
                };
                return Err(ServerError::BadRequest(format!("can't {verb} terminal deployment")));
            }
            let mut d = (*dep).clone();
            let mut batch = WriteBatch::default();
            match &action {
                DeploymentAction::Promote(groups) => promote(snap, &mut d, groups)?,
                DeploymentAction::Fail => fail(snap, &job, &mut d, describe::FAILED_BY_USER, &mut batch),
                DeploymentAction::Pause(true) => {
                    d.status = status::PAUSED.into();
                    d.status_description = describe::PAUSED.into();
                }
                DeploymentAction::Pause(false) => {
                    d.status = status::RUNNING.into();
                    d.status_description = describe::RUNNING.into();
                }
                DeploymentAction::SetHealth { healthy, unhealthy } => {
                    let allocs = set_health(snap, &d, healthy, unhealthy)?;
                    track(snap, &job, &allocs, &mut batch);
                    batch.allocs = allocs;
                }
            }
            if d != *dep {
                batch.deployments.push(d);
            }
            // The scheduler goes on from the change (a revert brings its own
            // evaluation; a paused deployment waits).
            if batch.evals.is_empty() && action != DeploymentAction::Pause(true) {
                batch.evals.push(Evaluation::pending(&job, WATCHER));
            }
            let eval = batch.evals.first().cloned();
            Ok::<_, ServerError>((batch, eval))
        })?;
        if let Some(e) = &eval {
            self.enqueue(e);
        }
        Ok(DeploymentUpdate { eval_id: eval.map(|e| e.id).unwrap_or_default(), index })
    }
}

/// Promotes the canaries of `groups` (all when empty), each group only
/// when all its canaries are healthy.
fn promote(snap: &Tables, d: &mut Deployment, groups: &[String]) -> Result<(), ServerError> {
    if let Some(unknown) = groups.iter().find(|g| !d.task_groups.contains_key(*g)) {
        return Err(ServerError::BadRequest(format!("deployment has no task group {unknown:?}")));
    }
    if !d.requires_promotion() {
        return Err(ServerError::BadRequest("no canaries to promote".into()));
    }
    let chosen = |name: &String| groups.is_empty() || groups.contains(name);
    for (name, s) in d.task_groups.iter_mut().filter(|(n, s)| s.desired_canaries > 0 && !s.promoted && chosen(n)) {
        let healthy =
            s.placed_canaries.iter().filter(|id| snap.alloc(id).is_some_and(|a| a.is_healthy())).count() as u32;
        if healthy < s.desired_canaries {
            return Err(ServerError::BadRequest(format!(
                "Task group {name:?} has {healthy}/{} healthy allocations",
                s.desired_canaries
            )));
        }
        s.promoted = true;
    }
    d.status_description = match d.requires_promotion() {
        true => describe::NEEDS_PROMOTION,
        false => describe::RUNNING,
    }
    .into();
    Ok(())
}

/// The allocations of the deployment with the health an operator set.
fn set_health(
    snap: &Tables,
    d: &Deployment,
    healthy: &[String],
    unhealthy: &[String],
) -> Result<Vec<Allocation>, ServerError> {
    let now = now_nanos();
    let mut out = Vec::new();
    for (ids, health) in [(healthy, true), (unhealthy, false)] {
        for id in ids {
            let alloc = snap.alloc(id).filter(|a| a.deployment_id == d.id).ok_or_else(|| {
                ServerError::BadRequest(format!("allocation {id:?} is not part of deployment {:?}", d.id))
            })?;
            let mut a = (*alloc).clone();
            a.deployment_status = Some(AllocDeploymentStatus {
                healthy: Some(health),
                timestamp: now,
                canary: a.is_canary(),
                modify_index: 0,
            });
            out.push(a);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::StateStore;
    use crate::structs::{client_status, DeploymentState, TaskGroup, UpdateStrategy, JOB_TYPE_SERVICE};

    /// A service job at `version` whose group `web` of two rolls with
    /// auto-revert; `args` tells versions apart.
    fn job(version: u64, args: &str, stable: bool) -> Job {
        let update = UpdateStrategy { max_parallel: 1, auto_revert: true, ..Default::default() };
        let mut tg = TaskGroup { name: "web".into(), count: 2, update: Some(update), ..Default::default() };
        tg.meta.insert("args".into(), args.into());
        Job {
            id: "web".into(),
            namespace: "default".into(),
            job_type: JOB_TYPE_SERVICE.into(),
            version,
            stable,
            task_groups: vec![tg],
            ..Default::default()
        }
    }

    fn deployment(job: &Job, state: DeploymentState) -> Deployment {
        Deployment {
            id: format!("dep-{}", job.version),
            namespace: job.namespace.clone(),
            job_id: job.id.clone(),
            job_version: job.version,
            status: status::RUNNING.into(),
            task_groups: [("web".to_string(), DeploymentState { desired_total: 2, ..state })].into(),
            ..Default::default()
        }
    }

    fn alloc(job: &Job, id: &str, healthy: Option<bool>, canary: bool) -> Allocation {
        Allocation {
            id: id.into(),
            namespace: job.namespace.clone(),
            job_id: job.id.clone(),
            job: Some(std::sync::Arc::new(job.clone())),
            task_group: "web".into(),
            deployment_id: format!("dep-{}", job.version),
            desired_status: crate::structs::desired::RUN.into(),
            client_status: client_status::RUNNING.into(),
            deployment_status: Some(AllocDeploymentStatus { healthy, canary, ..Default::default() }),
            ..Default::default()
        }
    }

    /// A store holding the jobs (the last is current), the deployment and
    /// the allocations; then `track` over it with `overlay`.
    fn tracked(jobs: &[Job], dep: Deployment, allocs: Vec<Allocation>, overlay: &[Allocation]) -> WriteBatch {
        let store = StateStore::in_memory();
        for j in jobs {
            store.apply(WriteBatch { jobs: vec![j.clone()], ..Default::default() }).unwrap();
        }
        store.apply(WriteBatch { deployments: vec![dep], allocs, ..Default::default() }).unwrap();
        let snap = store.snapshot();
        let current = snap.job("default", "web").unwrap();
        let mut batch = WriteBatch::default();
        track(&snap, &current, overlay, &mut batch);
        batch
    }

    #[test]
    fn an_unhealthy_allocation_fails_the_deployment_and_reverts_to_the_last_stable_version() {
        let (v0, v1, v2) = (job(0, "good", true), job(1, "good-too", false), job(2, "broken", false));
        let dep = deployment(&v2, DeploymentState { auto_revert: true, ..Default::default() });
        let bad = alloc(&v2, "a1", Some(false), false);
        let pending = alloc(&v2, "a0", None, false);
        let batch = tracked(&[v0, v1, v2], dep, vec![pending], &[bad]);
        let d = &batch.deployments[0];
        assert_eq!(d.status, status::FAILED);
        assert_eq!(d.status_description, "Failed due to unhealthy allocations - rolling back to job version 0");
        let reverted = batch.jobs.last().expect("the job reverted");
        assert_eq!((reverted.version, reverted.stable), (3, false));
        assert_eq!(reverted.task_groups[0].meta["args"], "good", "version 0's specification");
        assert_eq!(batch.evals.len(), 1, "an evaluation places the reverted version");
    }

    #[test]
    fn without_a_stable_version_a_failed_deployment_says_so() {
        let (v0, v1) = (job(0, "first", false), job(1, "broken", false));
        let dep = deployment(&v1, DeploymentState { auto_revert: true, ..Default::default() });
        let batch = tracked(&[v0, v1.clone()], dep, Vec::new(), &[alloc(&v1, "a0", Some(false), false)]);
        let d = &batch.deployments[0];
        assert_eq!(
            d.status_description,
            "Failed due to unhealthy allocations - no stable job version to auto revert to"
        );
        assert!(batch.jobs.is_empty() && batch.evals.is_empty());
    }

    #[test]
    fn healthy_allocations_complete_the_deployment_and_mark_the_version_stable() {
        let v0 = job(0, "first", false);
        let dep = deployment(&v0, DeploymentState { progress_deadline: 60_000_000_000, ..Default::default() });
        // The first healthy one makes progress: the rollout goes on.
        let one = tracked(
            std::slice::from_ref(&v0),
            dep.clone(),
            vec![alloc(&v0, "a1", None, false)],
            &[alloc(&v0, "a0", Some(true), false)],
        );
        let d = &one.deployments[0];
        assert_eq!((d.status.as_str(), d.task_groups["web"].healthy_allocs), (status::RUNNING, 1));
        assert!(d.task_groups["web"].require_progress_by > 0, "progress moves the deadline");
        assert_eq!(one.evals.len(), 1);
        let both = tracked(
            std::slice::from_ref(&v0),
            dep,
            vec![alloc(&v0, "a1", Some(true), false)],
            &[alloc(&v0, "a0", Some(true), false)],
        );
        assert_eq!(both.deployments[0].status, status::SUCCESSFUL);
        assert!(both.jobs.last().is_some_and(|j| j.stable && j.version == 0), "version 0 is stable");
        assert!(both.evals.is_empty());
    }

    #[test]
    fn healthy_canaries_promote_themselves_only_with_auto_promote() {
        let (v0, v1) = (job(0, "first", true), job(1, "second", false));
        for auto_promote in [false, true] {
            let state = DeploymentState {
                auto_promote,
                desired_canaries: 1,
                placed_canaries: vec!["c0".into()],
                ..Default::default()
            };
            let old = [alloc(&v0, "o0", Some(true), false), alloc(&v0, "o1", Some(true), false)];
            let batch = tracked(
                &[v0.clone(), v1.clone()],
                deployment(&v1, state),
                old.to_vec(),
                &[alloc(&v1, "c0", Some(true), true)],
            );
            let d = &batch.deployments[0];
            assert_eq!(d.task_groups["web"].promoted, auto_promote);
            assert_eq!(d.status, status::RUNNING);
            let expected = if auto_promote { describe::RUNNING } else { describe::NEEDS_PROMOTION };
            assert_eq!(d.status_description, expected);
        }
    }
}
