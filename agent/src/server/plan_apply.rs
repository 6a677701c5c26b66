//! Turns a scheduler plan into the single state write that commits it: the
//! evaluation completed (with its failure metrics), a blocked evaluation
//! for what could not be placed (superseding older ones of the job),
//! follow-up evaluations, allocations, deployments, and the job's status.

use std::collections::BTreeMap;

use super::jobs::job_status;
use super::scheduler::{new_id, Plan};
use super::state::{Tables, WriteBatch};
use crate::structs::{eval_status, Evaluation};

/// The write for a plan, and the evaluations to queue once it is applied.
pub struct PlanWrite {
    /// Everything the plan changes, as one batch.
    pub batch: WriteBatch,
    /// Follow-up evaluations (reschedule delays) to queue after the write.
    pub followups: Vec<Evaluation>,
}

/// Builds the write that commits `plan`, computed for `eval` over `snap`.
pub fn plan_write(snap: &Tables, eval: &Evaluation, plan: Plan) -> PlanWrite {
    let mut batch = WriteBatch::default();
    let mut done = eval.clone();
    done.status = eval_status::COMPLETE.into();
    done.snapshot_index = snap.index;
    done.failed_tg_allocs = plan.failed_tg_allocs.clone();
    done.queued_allocations = plan.queued.clone();
    if !plan.failed_tg_allocs.is_empty() {
        for old in snap
            .evals()
            .filter(|e| e.status == eval_status::BLOCKED && e.job_id == eval.job_id && e.namespace == eval.namespace)
        {
            let mut c = (**old).clone();
            c.status = eval_status::CANCELED.into();
            c.status_description = "evaluation superseded by a newer blocked evaluation".into();
            batch.evals.push(c);
        }
        let mut blocked = eval.clone();
        blocked.id = new_id();
        blocked.status = eval_status::BLOCKED.into();
        blocked.triggered_by = "queued-allocs".into();
        blocked.previous_eval = eval.id.clone();
        blocked.failed_tg_allocs = BTreeMap::new();
        blocked.wait_until = 0;
        done.blocked_eval = blocked.id.clone();
        batch.evals.push(blocked);
    }
    if let Some(f) = plan.followups.first() {
        done.next_eval = f.id.clone();
    }
    batch.evals.push(done);
    batch.evals.extend(plan.followups.iter().cloned());
    let replaced: BTreeMap<String, String> = plan
        .place
        .iter()
        .filter(|a| !a.previous_allocation.is_empty())
        .map(|a| (a.previous_allocation.clone(), a.id.clone()))
        .collect();
    batch.allocs = plan.place;
    batch.allocs.extend(plan.update);
    link_replacements(snap, &mut batch, replaced);
    batch.deployments.extend(plan.cancel_deployments);
    batch.deployments.extend(plan.deployment);
    if let Some(job) = snap.job(&eval.namespace, &eval.job_id) {
        let status = job_status(snap, &job, &batch.allocs);
        if status != job.status {
            let mut j = (*job).clone();
            j.status = status;
            batch.jobs.push(j);
        }
    }
    PlanWrite { batch, followups: plan.followups }
}

/// Sets `NextAllocation` on each allocation a placement replaces (given as
/// replaced ID to replacement ID), in the batch or from the snapshot.
fn link_replacements(snap: &Tables, batch: &mut WriteBatch, mut replaced: BTreeMap<String, String>) {
    for a in &mut batch.allocs {
        if let Some(next) = replaced.remove(&a.id) {
            a.next_allocation = next;
        }
    }
    for (id, next) in replaced {
        if let Some(old) = snap.alloc(&id) {
            let mut linked = (*old).clone();
            linked.next_allocation = next;
            batch.allocs.push(linked);
        }
    }
}
