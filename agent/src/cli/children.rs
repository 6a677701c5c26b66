//! Periodic and parameterized jobs from the command line: `job dispatch`,
//! `job periodic force`, what `job run` prints for them, and the
//! children sections of `job status`.

use std::collections::BTreeMap;

use chrono::Utc;

use super::api::{job_path, ApiClient};
use super::format;
use super::monitor;
use crate::structs::{Job, Schedule};
use crate::wire::plan::{DispatchRequest, DispatchResult, PeriodicForceResult};
use crate::wire::stubs::JobListStub;

/// `Approximate next launch time: …` for a periodic job, if it has one.
pub fn next_launch_line(job: &Job) -> Option<String> {
    let next = next_launch(job)?;
    let wait = (next - Utc::now()).num_seconds().max(0);
    Some(format!("{} ({} from now)", next.with_timezone(&chrono::Local).format("%Y-%m-%dT%H:%M:%S%:z"), human(wait)))
}

fn next_launch(job: &Job) -> Option<chrono::DateTime<Utc>> {
    let p = job.periodic.as_ref().filter(|p| p.enabled && !job.stop)?;
    Schedule::parse(p).ok()?.next_after(Utc::now())
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m{}s", s / 3600, s % 3600 / 60, s % 60),
    }
}

/// Reads `-meta key=value` flags.
fn meta(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("Error parsing meta value: {p:?} is not key=value"))
        })
        .collect()
}

/// `job dispatch [-meta k=v]... [-detach] JOB [INPUT]` (INPUT a file, or `-` for stdin).
/// The flags of `job dispatch`.
pub struct Dispatch {
    /// `-meta key=value`, repeated.
    pub meta: Vec<String>,
    /// `-detach`.
    pub detach: bool,
    /// `-id-prefix-template`.
    pub id_prefix_template: String,
    /// `-idempotency-token`.
    pub idempotency_token: String,
}

pub async fn dispatch(api: &ApiClient, prefix: &str, input: Option<&str>, how: Dispatch) -> i32 {
    let meta = match meta(&how.meta) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let payload = match input {
        None => Vec::new(),
        Some("-") => match std::io::Read::bytes(std::io::stdin()).collect::<Result<Vec<u8>, _>>() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("Error reading input data: {e}");
                return 1;
            }
        },
        Some(file) => match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("Error reading input data: {file}: {e}");
                return 1;
            }
        },
    };
    let id = match super::lookup::resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let body = DispatchRequest { payload, meta, id_prefix_template: how.id_prefix_template };
    let mut path = format!("{}/dispatch", job_path(&id));
    if !how.idempotency_token.is_empty() {
        path = format!(
            "{path}?idempotency_token={}",
            percent_encoding::utf8_percent_encode(&how.idempotency_token, percent_encoding::NON_ALPHANUMERIC)
        );
    }
    let resp: DispatchResult = match api.put(&path, &body).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Failed to dispatch job: {e}");
            return 1;
        }
    };
    // An earlier dispatch with the token made the child: nothing to watch.
    if resp.eval_id.is_empty() {
        println!("{}", format::kv(&[format!("Dispatched Job ID|{}", resp.dispatched_job_id)]));
        return 0;
    }
    println!(
        "{}",
        format::kv(&[
            format!("Dispatched Job ID|{}", resp.dispatched_job_id),
            format!("Evaluation ID|{}", resp.eval_id)
        ])
    );
    if how.detach {
        return 0;
    }
    println!();
    monitor::monitor(api, &resp.eval_id, false).await
}

/// `job periodic force [-detach] JOB`.
pub async fn periodic_force(api: &ApiClient, prefix: &str, detach: bool) -> i32 {
    let id = match super::lookup::resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let resp: PeriodicForceResult = match api.put(&format!("{}/periodic/force", job_path(&id)), &()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error forcing periodic job {id:?}: {e}");
            return 1;
        }
    };
    if detach {
        println!("Force periodic successful");
        println!("Evaluation ID: {}", resp.eval_id);
        return 0;
    }
    monitor::monitor(api, &resp.eval_id, false).await
}

/// The KV rows `job status` adds for a periodic or parameterized job.
pub fn status_rows(job: &Job) -> Vec<String> {
    let mut rows = vec![format!("Periodic|{}", job.is_periodic()), format!("Parameterized|{}", job.is_parameterized())];
    if let Some(line) = next_launch_line(job) {
        rows.push(format!("Next Periodic Launch|{line}"));
    }
    rows
}

/// `job status` of a periodic or parameterized job: its block and its children.
pub async fn print_children(api: &ApiClient, job: &Job) {
    if let Some(p) = job.parameterized_job.as_ref().filter(|_| job.is_parameterized()) {
        println!("\nParameterized Job");
        println!(
            "{}",
            format::kv(&[
                format!("Payload|{}", p.payload),
                format!("Required Metadata|{}", p.meta_required.join(", ")),
                format!("Optional Metadata|{}", p.meta_optional.join(", ")),
            ])
        );
    }
    let prefix = format!("{}/", job.id);
    let children: Vec<JobListStub> = api
        .get::<Vec<JobListStub>>(&format!(
            "/v1/jobs?prefix={}",
            percent_encoding::utf8_percent_encode(&prefix, percent_encoding::NON_ALPHANUMERIC)
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.parent_id == job.id)
        .collect();
    let count = |status: &str| children.iter().filter(|c| c.status == status).count();
    let what = if job.is_periodic() { "Children Job Summary" } else { "Parameterized Job Summary" };
    println!("\n{what}");
    println!(
        "{}",
        format::list(&[
            "Pending|Running|Dead".into(),
            format!("{}|{}|{}", count("pending"), count("running"), count("dead"))
        ])
    );
    let title = if job.is_periodic() { "Previously Launched Jobs" } else { "Dispatched Jobs" };
    println!("\n{title}");
    if children.is_empty() {
        println!(
            "No {} found",
            if job.is_periodic() { "instances of periodic job" } else { "dispatched instances of parameterized job" }
        );
        return;
    }
    let mut rows = vec!["ID|Status".to_string()];
    rows.extend(children.iter().map(|c| format!("{}|{}", c.id, c.status)));
    println!("{}", format::list(&rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_flags_must_be_key_value() {
        let m = meta(&["target=nas".into(), "note=a=b".into()]).unwrap();
        assert_eq!(m["target"], "nas");
        assert_eq!(m["note"], "a=b");
        assert!(meta(&["oops".into()]).unwrap_err().contains("\"oops\" is not key=value"));
    }

    #[test]
    fn durations_read_like_nomads() {
        assert_eq!(human(5), "5s");
        assert_eq!(human(95), "1m35s");
        assert_eq!(human(3_725), "1h2m5s");
    }
}
