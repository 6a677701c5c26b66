//! The evaluation and deployment monitor shared by `job run` and
//! `job stop`, with Nomad's output and exit codes (0 ok, 1 error or failed
//! deployment, 2 placement failures).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;

use super::api::{job_path, ApiClient};
use crate::structs::{deployment_status, AllocMetric, Deployment, Evaluation};
use crate::util::short_id;
use crate::wire::stubs::AllocListStub;

fn ts() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Nomad's placement-failure metric lines.
pub fn metric_lines(m: &AllocMetric, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    if m.nodes_evaluated == 0 {
        out.push(format!("{indent}* No nodes were eligible for evaluation"));
    }
    for (dc, n) in &m.nodes_available {
        if *n == 0 {
            out.push(format!("{indent}* No nodes are available in datacenter {dc:?}"));
        }
    }
    for (class, n) in &m.class_filtered {
        out.push(format!("{indent}* Class {class:?}: {n} nodes excluded by filter"));
    }
    for (c, n) in &m.constraint_filtered {
        out.push(format!("{indent}* Constraint {c:?}: {n} nodes excluded by filter"));
    }
    if m.nodes_exhausted > 0 {
        out.push(format!("{indent}* Resources exhausted on {} nodes", m.nodes_exhausted));
    }
    for (d, n) in &m.dimension_exhausted {
        out.push(format!("{indent}* Dimension {d:?} exhausted on {n} nodes"));
    }
    out
}

/// The scores of the best nodes a placement considered, as Nomad's
/// `alloc status -verbose` table: one column per scorer, then the final score.
pub fn score_table(top: &[crate::structs::NodeScoreMeta]) -> String {
    let mut scorers: Vec<&str> = top.iter().flat_map(|m| m.scores.keys().map(|k| k.as_ref())).collect();
    scorers.sort();
    scorers.dedup();
    let mut rows = vec![format!("Node|{}|final score", scorers.join("|"))];
    for m in top {
        let cells: Vec<String> =
            scorers.iter().map(|s| m.scores.get(*s).map(|v| format!("{v:.3}")).unwrap_or_default()).collect();
        rows.push(format!("{}|{}|{:.3}", m.node_id, cells.join("|"), m.norm_score));
    }
    super::format::list(&rows)
}

/// Prints a group's failure block.
pub fn print_failures(failed: &BTreeMap<String, AllocMetric>, prefix: &str) {
    for (tg, m) in failed {
        let n = m.coalesced_failures + 1;
        println!("{prefix}Task Group {tg:?} (failed to place {n} allocation{}):", if n == 1 { "" } else { "s" });
        for l in metric_lines(m, &format!("{prefix}  ")) {
            println!("{l}");
        }
    }
}

/// Watches an evaluation (and, for service jobs, the deployment it starts)
/// to the end; returns the exit code.
pub async fn monitor(api: &ApiClient, eval_id: &str, watch_deployment: bool) -> i32 {
    println!("==> {}: Monitoring evaluation {:?}", ts(), short_id(eval_id));
    let mut last_status = String::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut announced = false;
    let eval = loop {
        let eval: Evaluation = match api.get(&format!("/v1/evaluation/{eval_id}")).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("Error reading evaluation: {e}");
                return 1;
            }
        };
        if !announced {
            announced = true;
            match eval.node_id.is_empty() {
                true => println!("    {}: Evaluation triggered by job {:?}", ts(), eval.job_id),
                false => println!("    {}: Evaluation triggered by node {:?}", ts(), short_id(&eval.node_id)),
            }
        }
        if let Ok(allocs) = api.get::<Vec<AllocListStub>>(&format!("/v1/evaluation/{eval_id}/allocations")).await {
            for a in allocs {
                if seen.insert(a.id.clone()) {
                    println!(
                        "    {}: Allocation {:?} created: node {:?}, group {:?}",
                        ts(),
                        short_id(&a.id),
                        short_id(&a.node_id),
                        a.task_group
                    );
                }
            }
        }
        if eval.status != last_status {
            if !last_status.is_empty() {
                println!("    {}: Evaluation status changed: {:?} -> {:?}", ts(), last_status, eval.status);
            }
            last_status = eval.status.clone();
        }
        if !matches!(eval.status.as_str(), "pending" | "") {
            break eval;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !eval.failed_tg_allocs.is_empty() {
        println!(
            "==> {}: Evaluation {:?} finished with status {:?} but failed to place all allocations:",
            ts(),
            short_id(&eval.id),
            eval.status
        );
        print_failures(&eval.failed_tg_allocs, &format!("    {}: ", ts()));
        if !eval.blocked_eval.is_empty() {
            println!(
                "    {}: Evaluation {:?} waiting for additional capacity to place remainder",
                ts(),
                short_id(&eval.blocked_eval)
            );
        }
        return 2;
    }
    println!("==> {}: Evaluation {:?} finished with status {:?}", ts(), short_id(&eval.id), eval.status);
    if eval.status != "complete" {
        return 1;
    }
    if watch_deployment {
        return monitor_deployment(api, &eval.job_id).await;
    }
    0
}

/// Follows the deployment of the job's current version to its end, and
/// the rollback deployment a failed one starts when it auto-reverts; 0
/// only when the first succeeds.
async fn monitor_deployment(api: &ApiClient, job_id: &str) -> i32 {
    let job: crate::structs::Job = match api.get(&job_path(job_id)).await {
        Ok(j) => j,
        Err(_) => return 0,
    };
    let latest =
        || async { api.get::<Option<Deployment>>(&format!("{}/deployment", job_path(job_id))).await.unwrap_or(None) };
    let Some(dep) = latest().await.filter(|d| d.job_version == job.version) else { return 0 };
    let ended = follow(api, &dep.id).await;
    if ended.as_ref().is_some_and(|d| d.status == deployment_status::SUCCESSFUL) {
        return 0;
    }
    if ended.is_some_and(|d| d.status == deployment_status::FAILED && d.auto_reverts()) {
        // The rollback's deployment starts once its evaluation is placed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(rollback) = latest().await.filter(|r| r.id != dep.id) {
            println!();
            follow(api, &rollback.id).await;
        }
    }
    1
}

/// Prints a deployment's progress until it ends; `None` if it cannot be
/// read.
async fn follow(api: &ApiClient, id: &str) -> Option<Deployment> {
    println!("==> {}: Monitoring deployment {:?}", ts(), short_id(id));
    let mut described = String::new();
    loop {
        let dep: Deployment = match api.get(&format!("/v1/deployment/{id}")).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}: Error fetching deployment: {e}", ts());
                return None;
            }
        };
        if dep.status_description != described {
            println!("    {}: {}", ts(), dep.status_description);
            described = dep.status_description.clone();
        }
        if !dep.is_active() {
            let mark = if dep.status == deployment_status::SUCCESSFUL { "✓" } else { "!" };
            println!("  {mark} Deployment {:?} {}\n", short_id(&dep.id), dep.status);
            super::tables::print_deployment(&dep);
            return Some(dep);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
