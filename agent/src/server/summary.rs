//! The job summary: counts of a job's allocations by status per task group,
//! derived from allocations and evaluations on read rather than stored.

use std::collections::BTreeMap;

use super::state::Tables;
use crate::structs::{client_status, eval_status, Job};
use crate::wire::stubs::{JobSummary, TaskGroupSummary};

/// Summarises a job's allocations per task group.
pub fn job_summary(snap: &Tables, job: &Job) -> JobSummary {
    let mut summary: BTreeMap<String, TaskGroupSummary> =
        job.task_groups.iter().map(|tg| (tg.name.clone(), TaskGroupSummary::default())).collect();
    for a in snap.allocs_by_job(&job.namespace, &job.id) {
        let s = summary.entry(a.task_group.clone()).or_default();
        match a.client_status.as_str() {
            client_status::PENDING if !a.server_terminal() => s.starting += 1,
            client_status::RUNNING => s.running += 1,
            client_status::COMPLETE => s.complete += 1,
            client_status::FAILED => s.failed += 1,
            client_status::LOST => s.lost += 1,
            client_status::UNKNOWN => s.unknown += 1,
            _ => {}
        }
    }
    if let Some(latest) = snap
        .evals()
        .filter(|e| e.namespace == job.namespace && e.job_id == job.id && e.status != eval_status::CANCELED)
        .filter(|e| e.status != eval_status::BLOCKED)
        .max_by_key(|e| e.create_index)
    {
        for (tg, n) in &latest.queued_allocations {
            summary.entry(tg.clone()).or_default().queued = *n;
        }
    }
    JobSummary {
        job_id: job.id.clone(),
        namespace: job.namespace.clone(),
        summary,
        children: [("Pending", 0), ("Running", 0), ("Dead", 0)].into_iter().map(|(k, v)| (k.into(), v)).collect(),
        create_index: job.create_index,
        modify_index: snap.index,
    }
}
