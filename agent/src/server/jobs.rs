//! Job writes: register (with `-check-index` enforcement and versioning),
//! stop or purge, plan (a dry run of the scheduler with a diff), and the
//! registration of children that periodic and parameterized jobs launch.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::diff;
use super::scheduler;
use super::state::{Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{client_status, Allocation, Evaluation, Job};
use crate::util::now_nanos;
use crate::wire::plan::{PlanAnnotations, PlanResult, RegisterResult};

/// The answer to a job write committed at `index` with its evaluation
/// (none for periodic and parameterized jobs, which are not scheduled).
fn registered(eval: Option<crate::structs::Evaluation>, index: u64, warnings: String) -> RegisterResult {
    let (eval_id, eval_create_index) = eval.map(|e| (e.id, index)).unwrap_or_default();
    RegisterResult { eval_id, eval_create_index, job_modify_index: index, warnings, index }
}

/// The user-controlled part of a job, for "did the spec change?".
pub(super) fn spec(job: &Job) -> Job {
    Job {
        status: String::new(),
        status_description: String::new(),
        stable: false,
        version: 0,
        submit_time: 0,
        create_index: 0,
        modify_index: 0,
        job_modify_index: 0,
        ..job.clone()
    }
}

/// A job's status from its allocations, with `overlay` (allocations about
/// to be written) taking precedence over the snapshot's.
pub fn job_status(snap: &Tables, job: &Job, overlay: &[Allocation]) -> String {
    let stored = snap.allocs_by_job(&job.namespace, &job.id);
    let overlay = overlay.iter().rev().filter(|a| a.job_id == job.id && a.namespace == job.namespace);
    // The first version of an allocation met here is the one that counts:
    // the overlay's last write of it, else the snapshot's. Any live one
    // settles the answer before the rest are looked at.
    let mut allocs: HashMap<&str, &Allocation> = HashMap::new();
    for a in overlay.chain(stored.iter().map(|a| &**a)) {
        if let Entry::Vacant(slot) = allocs.entry(a.id.as_str()) {
            if !a.is_terminal() {
                return "running".into();
            }
            slot.insert(a);
        }
    }
    if job.stop {
        return "dead".into();
    }
    if job.is_batch_like() && !allocs.is_empty() {
        let done = job.task_groups.iter().all(|tg| {
            allocs.values().filter(|a| a.task_group == tg.name && a.client_status == client_status::COMPLETE).count()
                >= tg.count as usize
        });
        if done {
            return "dead".into();
        }
    }
    "pending".into()
}

fn canonical(mut job: Job) -> Result<(Job, Vec<String>), ServerError> {
    job.canonicalize();
    if let Err(errs) = job.validate() {
        let n = errs.len();
        let list = errs.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n");
        return Err(ServerError::BadRequest(format!("{n} error(s) occurred:\n\n{list}")));
    }
    let warnings = job.warnings();
    Ok((job, warnings))
}

impl Server {
    /// The version a submitted job gets: unchanged specs keep theirs.
    fn next_version(existing: Option<&Job>, job: &Job) -> u64 {
        match existing {
            Some(old) if spec(old) == spec(job) => old.version,
            Some(old) => old.version + 1,
            None => 0,
        }
    }

    /// Registers (or updates) a job and creates its evaluation.
    pub fn register_job(&self, job: Job, enforce_index: Option<u64>) -> Result<RegisterResult, ServerError> {
        let (mut job, warnings) = canonical(job)?;
        let (index, eval) = self.state.commit(|snap| {
            let existing = snap.job(&job.namespace, &job.id);
            if let Some(idx) = enforce_index {
                let prefix = format!("Enforcing job modify index {idx}");
                match (&existing, idx) {
                    (Some(_), 0) => return Err(ServerError::BadRequest(format!("{prefix}: job already exists"))),
                    (None, i) if i > 0 => return Err(ServerError::BadRequest(format!("{prefix}: job does not exist"))),
                    (Some(e), i) if i > 0 && e.job_modify_index != i => {
                        return Err(ServerError::BadRequest(format!(
                            "{prefix}: job exists with conflicting job modify index: {}",
                            e.job_modify_index
                        )))
                    }
                    _ => {}
                }
            }
            job.version = Self::next_version(existing.as_deref(), &job);
            job.submit_time = now_nanos();
            job.status = if job.is_template() {
                "running".into()
            } else {
                existing.as_ref().map(|e| e.status.clone()).unwrap_or_else(|| "pending".into())
            };
            job.job_modify_index = 0;
            // A periodic or parameterized job only launches children.
            let eval = (!job.is_template()).then(|| Evaluation::pending(&job, "job-register"));
            let mut batch = WriteBatch::default();
            batch.jobs.push(job);
            batch.evals.extend(eval.clone());
            Ok::<_, ServerError>((batch, eval))
        })?;
        if let Some(eval) = &eval {
            self.enqueue(eval);
        }
        Ok(registered(eval, index, warnings.join("\n")))
    }

    /// `job revert`: registers version `version`'s specification as the
    /// job's next version (refused unless the current version is
    /// `prior`, when given).
    pub fn revert_job(
        &self,
        ns: &str,
        id: &str,
        version: u64,
        prior: Option<u64>,
    ) -> Result<RegisterResult, ServerError> {
        let snap = self.state.snapshot();
        let job = snap.job(ns, id).ok_or_else(|| ServerError::NotFound(format!("job {id:?} not found")))?;
        if let Some(p) = prior.filter(|p| *p != job.version) {
            return Err(ServerError::BadRequest(format!(
                "Current job has version {}; enforcing version {p}",
                job.version
            )));
        }
        if version == job.version {
            return Err(ServerError::BadRequest("can't revert to current version".into()));
        }
        let target = snap
            .job_versions(ns, id)
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ServerError::NotFound(format!("job {id:?} has no version {version}")))?;
        let spec = Job { stable: false, ..(*target).clone() };
        // Registered only over the job as it was read here.
        self.register_job(spec, Some(job.job_modify_index))
    }

    /// `job scale`: sets a group's count, within its scaling bounds, as a
    /// new version of the job, and evaluates it.
    pub fn scale_job(&self, ns: &str, id: &str, group: &str, count: i64) -> Result<RegisterResult, ServerError> {
        if count < 0 {
            return Err(ServerError::BadRequest("scaling action count can't be negative".into()));
        }
        let (index, eval) = self.state.commit(|snap| {
            let current = snap.job(ns, id).ok_or_else(|| ServerError::NotFound(format!("job {id:?} not found")))?;
            if current.is_template() {
                return Err(ServerError::BadRequest(format!(
                    "job {id:?} is periodic or parameterized: scale the jobs it launches by changing it"
                )));
            }
            let mut job = (*current).clone();
            let tg = job.task_groups.iter_mut().find(|g| g.name == group).ok_or_else(|| {
                ServerError::BadRequest(format!("task group {group:?} specified for scaling does not exist in job"))
            })?;
            if let Some(why) = tg.scaling.as_ref().and_then(|s| s.count_problem(count)) {
                return Err(ServerError::BadRequest(why));
            }
            tg.count =
                u32::try_from(count).map_err(|_| ServerError::BadRequest(format!("count {count} is too large")))?;
            job.version = current.version + 1;
            job.submit_time = now_nanos();
            job.job_modify_index = 0;
            let eval = Evaluation::pending(&job, "job-scaling");
            let mut batch = WriteBatch::default();
            batch.jobs.push(job);
            batch.evals.push(eval.clone());
            Ok::<_, ServerError>((batch, eval))
        })?;
        self.enqueue(&eval);
        Ok(registered(Some(eval), index, String::new()))
    }

    /// Registers a child of a periodic or parameterized job with its
    /// evaluation, unless a job of its ID, or a child of its dispatch
    /// idempotency token, exists already (a launch is never made twice). Returns the evaluation and the index, or `None`.
    pub(super) fn register_child(
        &self,
        mut child: Job,
        triggered_by: &str,
    ) -> Result<Option<(crate::structs::Evaluation, u64)>, ServerError> {
        child.canonicalize();
        let (index, eval) = self.state.commit(|snap| {
            let parent = snap.job(&child.namespace, &child.parent_id);
            let token_taken = parent
                .is_some_and(|p| super::dispatch::token_holder(snap, &p, &child.dispatch_idempotency_token).is_some());
            if snap.job(&child.namespace, &child.id).is_some() || token_taken {
                return Ok::<_, ServerError>((WriteBatch::default(), None));
            }
            child.version = 0;
            child.submit_time = now_nanos();
            child.status = "pending".into();
            child.job_modify_index = 0;
            let eval = Evaluation::pending(&child, triggered_by);
            let mut batch = WriteBatch::default();
            batch.jobs.push(child);
            batch.evals.push(eval.clone());
            Ok((batch, Some(eval)))
        })?;
        Ok(eval.map(|e| {
            self.enqueue(&e);
            (e, index)
        }))
    }

    /// Stops a job (it stays queryable as dead) or purges it.
    pub fn deregister_job(&self, ns: &str, id: &str, purge: bool) -> Result<RegisterResult, ServerError> {
        let (index, eval) = self.state.commit(|snap| {
            let existing = snap.job(ns, id).ok_or_else(|| ServerError::NotFound("job not found".into()))?;
            let mut batch = WriteBatch::default();
            let eval = (!existing.is_template()).then(|| Evaluation::pending(&existing, "job-deregister"));
            if purge {
                batch.delete_jobs.push((ns.to_string(), id.to_string()));
            } else if !existing.stop {
                let mut j = (*existing).clone();
                j.stop = true;
                j.version += 1;
                j.submit_time = now_nanos();
                j.job_modify_index = 0;
                if j.is_template() {
                    j.status = "dead".into();
                }
                batch.jobs.push(j);
            }
            batch.evals.extend(eval.clone());
            Ok::<_, ServerError>((batch, eval))
        })?;
        if let Some(eval) = &eval {
            self.enqueue(eval);
        }
        Ok(registered(eval, index, String::new()))
    }

    /// Stops one allocation (`POST /v1/allocation/:id/stop`); the
    /// scheduler replaces it. Returns the evaluation ID and the index.
    pub fn stop_alloc(&self, id: &str) -> Result<(String, u64), ServerError> {
        let (index, eval) = self.state.commit(|snap| {
            let alloc = snap.alloc(id).ok_or_else(|| ServerError::NotFound("alloc not found".into()))?;
            let job = snap
                .job(&alloc.namespace, &alloc.job_id)
                .ok_or_else(|| ServerError::NotFound("job not found".into()))?;
            let mut stopped = (*alloc).clone();
            stopped.desired_status = crate::structs::desired::STOP.into();
            stopped.desired_description = "alloc was stopped by the user".into();
            let eval = Evaluation::pending(&job, "alloc-stop");
            let mut batch = WriteBatch::default();
            batch.allocs.push(stopped);
            batch.evals.push(eval.clone());
            Ok::<_, ServerError>((batch, eval))
        })?;
        self.enqueue(&eval);
        Ok((eval.id, index))
    }

    /// Dry-runs the scheduler for a submitted job and diffs it against the
    /// registered version.
    pub fn plan_job(&self, job: Job) -> Result<PlanResult, ServerError> {
        let (mut job, warnings) = canonical(job)?;
        let snap = self.state.snapshot();
        let existing = snap.job(&job.namespace, &job.id);
        job.version = Self::next_version(existing.as_deref(), &job);
        job.job_modify_index = existing.as_ref().map(|e| e.job_modify_index).unwrap_or(0);
        let scratch = snap.with_job(job.clone());
        let eval = Evaluation::pending(&job, "job-register");
        let plan = scheduler::process(&scratch, &eval);
        let old = existing.as_deref().filter(|e| !e.stop);
        let diff = diff::job_diff(old, &job, &plan.desired_updates);
        let mut placement_scores = std::collections::BTreeMap::new();
        for a in &plan.place {
            if let Some(m) = a.metrics.as_ref().filter(|m| !m.score_meta_data.is_empty()) {
                placement_scores.entry(a.task_group.clone()).or_insert_with(|| m.score_meta_data.clone());
            }
        }
        Ok(PlanResult {
            diff,
            annotations: PlanAnnotations { desired_tg_updates: plan.desired_updates },
            failed_tg_allocs: plan.failed_tg_allocs,
            job_modify_index: existing.map(|e| e.job_modify_index).unwrap_or(0),
            warnings: warnings.join("\n"),
            placement_scores,
        })
    }
}
