//! The tables more than one command prints: a deployment's block (for
//! `deployment status`, `job status` and the `job run` monitor) and
//! Nomad's allocation list.

use super::format::{kv, list};
use crate::structs::Deployment;
use crate::util::{format_timestamp, pretty_time_ago, short_id};
use crate::wire::stubs::AllocListStub;

/// Prints a deployment's KV block and its per-group table (with Nomad's
/// optional columns: Auto Revert, Promoted and Canaries, Progress
/// Deadline).
pub fn print_deployment(dep: &Deployment) {
    println!(
        "{}",
        kv(&[
            format!("ID|{}", short_id(&dep.id)),
            format!("Job ID|{}", dep.job_id),
            format!("Job Version|{}", dep.job_version),
            format!("Status|{}", dep.status),
            format!("Description|{}", dep.status_description),
        ])
    );
    let groups = dep.task_groups.values();
    let auto_revert = groups.clone().any(|s| s.auto_revert);
    let canaries = groups.clone().any(|s| s.desired_canaries > 0);
    let deadline = groups.clone().any(|s| s.progress_deadline != 0);
    let mut header = vec!["Task Group"];
    header.extend(auto_revert.then_some("Auto Revert"));
    header.extend(canaries.then_some("Promoted"));
    header.push("Desired");
    header.extend(canaries.then_some("Canaries"));
    header.extend(["Placed", "Healthy", "Unhealthy"]);
    header.extend(deadline.then_some("Progress Deadline"));
    let mut rows = vec![header.join("|")];
    for (tg, s) in &dep.task_groups {
        let mut row = vec![tg.clone()];
        row.extend(auto_revert.then(|| s.auto_revert.to_string()));
        let promoted = if s.desired_canaries > 0 { s.promoted.to_string() } else { "N/A".into() };
        row.extend(canaries.then_some(promoted));
        row.push(s.desired_total.to_string());
        row.extend(canaries.then(|| s.desired_canaries.to_string()));
        row.extend([s.placed_allocs.to_string(), s.healthy_allocs.to_string(), s.unhealthy_allocs.to_string()]);
        let by = if s.require_progress_by == 0 { "N/A".into() } else { format_timestamp(s.require_progress_by) };
        row.extend(deadline.then_some(by));
        rows.push(row.join("|"));
    }
    println!("\nDeployed\n{}", list(&rows));
}

/// Nomad's allocation table (job status, deployment status -verbose).
pub fn alloc_table(allocs: &[AllocListStub], verbose: bool) -> String {
    let mut rows = vec![if verbose {
        "ID|Eval ID|Node ID|Node Name|Task Group|Version|Desired|Status|Created|Modified"
    } else {
        "ID|Node ID|Task Group|Version|Desired|Status|Created|Modified"
    }
    .to_string()];
    for a in allocs {
        rows.push(if verbose {
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
                a.id,
                a.eval_id,
                a.node_id,
                a.node_name,
                a.task_group,
                a.job_version,
                a.desired_status,
                a.client_status,
                format_timestamp(a.create_time),
                format_timestamp(a.modify_time)
            )
        } else {
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}",
                short_id(&a.id),
                short_id(&a.node_id),
                a.task_group,
                a.job_version,
                a.desired_status,
                a.client_status,
                pretty_time_ago(a.create_time),
                pretty_time_ago(a.modify_time)
            )
        });
    }
    list(&rows)
}
