//! The job summary and the scale status: counts of a job's allocations by
//! status per task group, derived from allocations and evaluations on read
//! rather than stored.

use std::collections::BTreeMap;

use super::state::Tables;
use crate::structs::{client_status, eval_status, Job};
use crate::wire::stubs::{JobScaleStatus, JobSummary, TaskGroupScaleStatus, TaskGroupSummary};

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

/// The job's scale status: each group's count and its live allocations
/// (terminal ones left out, as in Nomad).
pub fn job_scale_status(snap: &Tables, job: &Job) -> JobScaleStatus {
    let mut groups: BTreeMap<String, TaskGroupScaleStatus> = job
        .task_groups
        .iter()
        .map(|tg| (tg.name.clone(), TaskGroupScaleStatus { desired: u64::from(tg.count), ..Default::default() }))
        .collect();
    for a in snap.allocs_by_job(&job.namespace, &job.id).iter().filter(|a| !a.is_terminal()) {
        let Some(g) = groups.get_mut(&a.task_group) else { continue };
        g.placed += 1;
        let restarted = a.task_states.values().any(|t| t.restarts > 0);
        if a.client_status == client_status::RUNNING {
            g.running += 1;
            g.healthy += u64::from(!restarted);
        }
        g.unhealthy += u64::from(restarted);
    }
    JobScaleStatus {
        job_id: job.id.clone(),
        namespace: job.namespace.clone(),
        job_create_index: job.create_index,
        job_modify_index: job.job_modify_index,
        job_stopped: job.stop,
        task_groups: groups,
    }
}
