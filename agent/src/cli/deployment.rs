//! `deployment list|status|promote|fail|pause|resume`, `job history` and
//! `job revert`, with Nomad's layouts; and the deployment block that
//! `job status` and the `job run` monitor print.

use super::api::{job_path, ApiClient};
use super::format::{kv, list};
use super::monitor;
use super::tables::{alloc_table, print_deployment};
use crate::structs::{Deployment, Job};
use crate::util::{format_timestamp, short_id};
use crate::wire::deployment::{DeploymentUpdateResponse, PauseRequest, PromoteRequest, RevertRequest};
use crate::wire::plan::{JobDiff, RegisterResult};
use crate::wire::stubs::AllocListStub;

/// `deployment list`.
pub async fn list_deployments(api: &ApiClient, verbose: bool) -> i32 {
    let deps: Vec<Deployment> = match api.get("/v1/deployments").await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("Error retrieving deployments: {e}");
            return 1;
        }
    };
    if deps.is_empty() {
        println!("No deployments found");
        return 0;
    }
    let mut rows = vec!["ID|Job ID|Job Version|Status|Description".to_string()];
    for d in &deps {
        let id = if verbose { d.id.as_str() } else { short_id(&d.id) };
        rows.push(format!("{id}|{}|{}|{}|{}", d.job_id, d.job_version, d.status, d.status_description));
    }
    println!("{}", list(&rows));
    0
}

/// The deployment an ID prefix names.
async fn lookup(api: &ApiClient, prefix: &str) -> Result<Deployment, i32> {
    api.get(&format!("/v1/deployment/{prefix}")).await.map_err(|e| {
        eprintln!("Error retrieving deployment: {e}");
        1
    })
}

/// `deployment status`.
pub async fn status(api: &ApiClient, prefix: &str, verbose: bool) -> i32 {
    let dep = match lookup(api, prefix).await {
        Ok(d) => d,
        Err(code) => return code,
    };
    print_deployment(&dep);
    if verbose {
        match api.get::<Vec<AllocListStub>>(&format!("/v1/deployment/allocations/{}", dep.id)).await {
            Ok(allocs) => println!("\nAllocations\n{}", alloc_table(&allocs, true)),
            Err(e) => eprintln!("Error fetching allocations: {e}"),
        }
    }
    0
}

/// What an operator does to a deployment from the CLI.
pub enum Change {
    Promote(Vec<String>),
    Fail,
    Pause,
    Resume,
}

/// `deployment promote|fail|pause|resume`: the change, then (unless
/// detached or paused) the evaluation it created.
pub async fn change(api: &ApiClient, prefix: &str, change: Change, detach: bool) -> i32 {
    let dep = match lookup(api, prefix).await {
        Ok(d) => d,
        Err(code) => return code,
    };
    let id = dep.id.clone();
    let pause = |pause| serde_json::to_value(PauseRequest { deployment_id: id.clone(), pause });
    let (path, body, verb) = match change {
        Change::Promote(groups) => {
            let req = PromoteRequest { deployment_id: id.clone(), all: groups.is_empty(), groups };
            ("promote", serde_json::to_value(req), "promoting")
        }
        Change::Fail => ("fail", Ok(serde_json::json!({ "DeploymentID": id })), "failing"),
        Change::Pause => ("pause", pause(true), "pausing"),
        Change::Resume => ("pause", pause(false), "resuming"),
    };
    // Plain structs: their serialization does not fail.
    let body = body.unwrap_or_default();
    let update = match api.put::<_, DeploymentUpdateResponse>(&format!("/v1/deployment/{path}/{id}"), &body).await {
        Ok(u) => u,
        Err(e) => {
            eprintln!("Error {verb} deployment: {e}");
            return 1;
        }
    };
    match verb {
        "failing" => {
            println!("Deployment {:?} failed", short_id(&id));
            let after = lookup(api, &id).await.map(|d| d.status_description).unwrap_or_default();
            if let Some((_, version)) = after.split_once("rolling back to job version ") {
                println!("Rolling back to job version {version}");
            }
        }
        "pausing" => println!("Deployment {:?} paused", short_id(&id)),
        "resuming" => println!("Deployment {:?} resumed", short_id(&id)),
        _ => {}
    }
    if update.eval_id.is_empty() {
        return 0;
    }
    if detach {
        println!("Evaluation ID: {}", update.eval_id);
        return 0;
    }
    monitor::monitor(api, &update.eval_id, false).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Versions {
    versions: Vec<Job>,
    #[serde(default)]
    diffs: Option<Vec<JobDiff>>,
}

/// `job history [-p] [-version N] JOB`.
pub async fn history(api: &ApiClient, prefix: &str, diffs: bool, version: Option<u64>) -> i32 {
    let id = match super::lookup::resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let v: Versions = match api.get(&format!("{}/versions?diffs={diffs}", job_path(&id))).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error retrieving job versions: {e}");
            return 1;
        }
    };
    let all_diffs = v.diffs.unwrap_or_default();
    let mut printed = false;
    for (i, job) in v.versions.iter().enumerate() {
        if version.is_some_and(|want| want != job.version) {
            continue;
        }
        if printed {
            println!();
        }
        printed = true;
        let mut rows = vec![
            format!("Version|{}", job.version),
            format!("Stable|{}", job.stable),
            format!("Submit Date|{}", format_timestamp(job.submit_time)),
        ];
        if let Some(d) = all_diffs.get(i).filter(|_| diffs) {
            rows.push(format!("Diff|\n{}", super::job::render_diff(d).trim()));
        }
        println!("{}", kv(&rows));
    }
    if let (Some(want), false) = (version, printed) {
        eprintln!("Job {id:?} has no version {want}");
        return 1;
    }
    0
}

/// `job revert [-detach] JOB VERSION`.
pub async fn revert(api: &ApiClient, prefix: &str, version: u64, detach: bool) -> i32 {
    let id = match super::lookup::resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let req = RevertRequest { job_id: id.clone(), job_version: version, enforce_prior_version: None };
    let result: RegisterResult = match api.put(&format!("{}/revert", job_path(&id)), &req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error retrieving job version {version} for job {id:?}: {e}");
            return 1;
        }
    };
    if detach || result.eval_id.is_empty() {
        println!("Evaluation ID: {}", result.eval_id);
        return 0;
    }
    monitor::monitor(api, &result.eval_id, true).await
}
