//! Finding a job by ID or prefix, as `job status`, `job stop`, `job
//! dispatch` and the rest do, with Nomad's messages when none or several
//! match.

use super::api::ApiClient;
use super::format;
use crate::util::format_timestamp;
use crate::wire::stubs::JobListStub;

/// Resolves a job ID prefix; prints Nomad's messages on failure.
pub async fn resolve(api: &ApiClient, prefix: &str) -> Result<String, i32> {
    let jobs: Vec<JobListStub> = match api.get(&format!("/v1/jobs?prefix={prefix}")).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("Error querying job prefix: {e}");
            return Err(1);
        }
    };
    if let Some(j) = jobs.iter().find(|j| j.id == prefix) {
        return Ok(j.id.clone());
    }
    match jobs.len() {
        0 => {
            eprintln!("No job(s) with prefix or ID {prefix:?} found");
            Err(1)
        }
        1 => Ok(jobs[0].id.clone()),
        _ => {
            eprintln!("Prefix matched multiple jobs\n");
            eprintln!("{}", job_table(&jobs));
            Err(1)
        }
    }
}

/// Jobs as `job status` lists them (ID, type, priority, status, submit date).
pub fn job_table(jobs: &[JobListStub]) -> String {
    let mut rows = vec!["ID|Type|Priority|Status|Submit Date".to_string()];
    rows.extend(jobs.iter().map(|j| {
        format!(
            "{}|{}|{}|{}|{}",
            j.id,
            j.job_type,
            j.priority,
            job_status_text(j.stop, &j.status),
            format_timestamp(j.submit_time)
        )
    }));
    format::list(&rows)
}

/// A job's status as `job status` shows it.
pub fn job_status_text(stop: bool, status: &str) -> String {
    if stop && status == "dead" {
        "dead (stopped)".into()
    } else {
        status.into()
    }
}
