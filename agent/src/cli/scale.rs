//! `job scale JOB [GROUP] COUNT`: changes a group's count through the
//! server (which keeps it inside the group's `scaling` bounds) and
//! monitors the evaluation, as Nomad's command does.

use serde_json::json;

use super::api::{job_path, ApiClient};
use super::monitor;
use crate::structs::Job;
use crate::wire::plan::RegisterResult;

/// Runs `job scale`; `args` are `[GROUP] COUNT` after the job.
pub async fn scale(api: &ApiClient, prefix: &str, args: &[String], detach: bool) -> i32 {
    let (group, count) = match args {
        [count] => (None, count),
        [group, count] => (Some(group.clone()), count),
        _ => {
            eprintln!("This command takes a job, an optional group and a count: job scale <job> [<group>] <count>");
            return 1;
        }
    };
    let Ok(count) = count.parse::<i64>() else {
        eprintln!("Failed to convert count string to int: {count:?}");
        return 1;
    };
    let id = match super::lookup::resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let group = match group {
        Some(g) => g,
        None => {
            let job: Job = match api.get(&job_path(&id)).await {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("Error querying job: {e}");
                    return 1;
                }
            };
            match job.task_groups.as_slice() {
                [only] => only.name.clone(),
                _ => {
                    eprintln!("Group name required: job {id:?} has {} groups", job.task_groups.len());
                    return 1;
                }
            }
        }
    };
    let body = json!({ "Count": count, "Target": { "Group": group }, "Message": "submitted using the berth CLI" });
    let resp: RegisterResult = match api.put(&format!("{}/scale", job_path(&id)), &body).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error submitting scaling request: {e}");
            return 1;
        }
    };
    if detach {
        println!("Job scale successful");
        println!("Evaluation ID: {}", resp.eval_id);
        return 0;
    }
    monitor::monitor(api, &resp.eval_id, true).await
}
