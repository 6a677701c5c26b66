//! `job init|run|plan|status|stop|validate|inspect`.

use std::collections::BTreeMap;

use serde_json::json;

use super::api::{job_path, ApiClient};
use super::children;
use super::format;
use super::lookup::{job_status_text, job_table, resolve};
use super::monitor::{self, print_failures};
use super::tables::alloc_table;
use crate::structs::{Deployment, Job};
use crate::util::format_timestamp;
use crate::wire::plan::{FieldDiff, JobDiff, ObjectDiff, PlanResult, RegisterResult};
use crate::wire::stubs::{AllocListStub, JobListStub, JobSummary};

const EXAMPLE: &str = include_str!("../../assets/example.nomad.hcl");
const EXAMPLE_SHORT: &str = include_str!("../../assets/example-short.nomad.hcl");

/// How a job file is read.
pub struct JobInput<'a> {
    /// Path, or `-` for stdin.
    pub file: &'a str,
    /// `-var name=value`.
    pub vars: &'a [String],
    /// `-var-file` paths.
    pub var_files: &'a [String],
    /// `-json`: the file is API JSON.
    pub json: bool,
}

/// Reads, parses and validates a job file; errors are ready to print.
pub fn load_job(input: &JobInput) -> Result<(Job, Vec<String>), String> {
    read_job(input, true)
}

/// Reads and parses a job file; with `validate` false, a fragment Nomad's
/// parser accepts (no groups, no driver) is returned as it is.
fn read_job(input: &JobInput, validate: bool) -> Result<(Job, Vec<String>), String> {
    let text = if input.file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("Error reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(input.file)
            .map_err(|e| format!("Error getting job struct: error reading {}: {e}", input.file))?
    };
    if input.json || input.file.ends_with(".json") {
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("Error parsing job file from {}: {e}", input.file))?;
        if let Some(inner) = v.get("Job").cloned() {
            v = inner;
        }
        let job: Job =
            serde_json::from_value(v).map_err(|e| format!("Error parsing job file from {}: {e}", input.file))?;
        return Ok((job, vec![]));
    }
    let mut args = BTreeMap::new();
    for kv in input.vars {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("Error parsing -var {kv:?}: expected name=value"))?;
        args.insert(k.to_string(), v.to_string());
    }
    let mut vars = crate::jobspec::VarInputs::args(args).with_env(std::env::vars());
    for path in input.var_files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("Error reading -var-file {path}: {e}"))?;
        vars.files.push((path.clone(), text));
    }
    let decoded =
        crate::jobspec::decode_job(input.file, &text, &vars).map_err(|e| format!("Error getting job struct: {e}"))?;
    if !validate {
        return Ok((decoded.job, decoded.warnings));
    }
    let parsed = decoded.validate().map_err(|e| format!("Error getting job struct: {e}"))?;
    Ok((parsed.job, parsed.warnings))
}

fn print_warnings(local: &[String], server: &str) {
    let mut all: Vec<String> = local.to_vec();
    for w in server.lines().filter(|l| !l.trim().is_empty()) {
        if !all.iter().any(|x| x == w) {
            all.push(w.to_string());
        }
    }
    if !all.is_empty() {
        println!("Job Warnings:\n{} warning(s):\n", all.len());
        for w in &all {
            println!("* {w}");
        }
        println!();
    }
}

/// `job init [-short] [file]`.
pub fn init(short: bool, file: Option<&str>) -> i32 {
    let file = file.unwrap_or("example.nomad.hcl");
    if std::path::Path::new(file).exists() {
        eprintln!("Job '{file}' already exists");
        return 1;
    }
    let content = if short { EXAMPLE_SHORT } else { EXAMPLE };
    if let Err(e) = std::fs::write(file, content) {
        eprintln!("Failed to write '{file}': {e}");
        return 1;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o660));
    println!("Example job file written to {file}");
    0
}

/// `job validate FILE`.
pub fn validate(input: &JobInput) -> i32 {
    match load_job(input) {
        Ok((mut job, warnings)) => {
            job.canonicalize();
            if let Err(errs) = job.validate() {
                eprintln!(
                    "Job validation errors:\n{}",
                    errs.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n")
                );
                return 1;
            }
            print_warnings(&warnings, "");
            println!("Job validation successful");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `job run`.
pub async fn run(api: &ApiClient, input: &JobInput<'_>, detach: bool, check_index: Option<u64>, output: bool) -> i32 {
    let (job, warnings) = match read_job(input, !output) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if output {
        println!("{}", serde_json::to_string_pretty(&json!({ "Job": job })).unwrap_or_default());
        return 0;
    }
    let body = json!({
        "Job": job,
        "EnforceIndex": check_index.is_some(),
        "JobModifyIndex": check_index.unwrap_or(0),
    });
    let resp: RegisterResult = match api.put("/v1/jobs", &body).await {
        Ok(r) => r,
        Err(e) => {
            let text = e.to_string();
            if let Some(i) = text.find("Enforcing job modify index") {
                eprintln!("{}", text[i..].trim_end_matches(')'));
                eprintln!("Job not updated");
            } else {
                eprintln!("Error submitting job: {text}");
            }
            return 1;
        }
    };
    print_warnings(&warnings, &resp.warnings);
    // Periodic and parameterized jobs are not evaluated: nothing to monitor.
    if job.is_template() {
        println!("Job registration successful");
        if let Some(line) = children::next_launch_line(&job) {
            println!("Approximate next launch time: {line}");
        }
        return 0;
    }
    if detach {
        println!("Job registration successful");
        println!("Evaluation ID: {}", resp.eval_id);
        return 0;
    }
    monitor::monitor(api, &resp.eval_id, job.job_type.is_empty() || job.job_type == "service").await
}

fn diff_prefix(t: &str) -> &'static str {
    match t {
        "Added" => "+ ",
        "Deleted" => "- ",
        "Edited" => "+/- ",
        _ => "",
    }
}

fn field_line(f: &FieldDiff, indent: usize) -> String {
    let ann = if f.annotations.is_empty() { String::new() } else { format!(" ({})", f.annotations.join(", ")) };
    let pad = " ".repeat(indent);
    match f.diff_type.as_str() {
        "Added" => format!("{pad}+ {}: {:?}{ann}", f.name, f.new),
        "Deleted" => format!("{pad}- {}: {:?}{ann}", f.name, f.old),
        "Edited" => format!("{pad}+/- {}: {:?} => {:?}{ann}", f.name, f.old, f.new),
        _ => format!("{pad}{}: {:?}{ann}", f.name, f.new),
    }
}

fn object_lines(o: &ObjectDiff, indent: usize, out: &mut Vec<String>) {
    out.push(format!("{}{}{} {{", " ".repeat(indent), diff_prefix(&o.diff_type), o.name));
    for f in &o.fields {
        out.push(field_line(f, indent + 2));
    }
    out.push(format!("{}}}", " ".repeat(indent)));
}

/// Renders a job diff as Nomad's `job plan` does.
pub fn render_diff(d: &JobDiff) -> String {
    let mut out = vec![format!("{}Job: {:?}", diff_prefix(&d.diff_type), d.id)];
    for f in &d.fields {
        out.push(field_line(f, 0));
    }
    for o in &d.objects {
        object_lines(o, 0, &mut out);
    }
    for g in &d.task_groups {
        let counts: Vec<String> = g.updates.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let suffix = if counts.is_empty() { String::new() } else { format!(" ({})", counts.join(", ")) };
        out.push(format!("{}Task Group: {:?}{suffix}", diff_prefix(&g.diff_type), g.name));
        for f in &g.fields {
            out.push(field_line(f, 2));
        }
        for o in &g.objects {
            object_lines(o, 2, &mut out);
        }
        for t in &g.tasks {
            let ann = if t.annotations.is_empty() { String::new() } else { format!(" ({})", t.annotations.join(", ")) };
            out.push(format!("  {}Task: {:?}{ann}", diff_prefix(&t.diff_type), t.name));
            for f in &t.fields {
                out.push(field_line(f, 4));
            }
            for o in &t.objects {
                object_lines(o, 4, &mut out);
            }
        }
    }
    out.join("\n")
}

/// `job plan`: exit 0 no allocation change, 1 changes, 255 error.
pub async fn plan(api: &ApiClient, input: &JobInput<'_>, verbose: bool) -> i32 {
    let (job, warnings) = match load_job(input) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e}");
            return 255;
        }
    };
    let body = json!({ "Job": job, "Diff": true });
    let resp: PlanResult = match api.put(&format!("{}/plan", job_path(&job.id)), &body).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error during plan: {e}");
            return 255;
        }
    };
    print_warnings(&warnings, &resp.warnings);
    println!("{}\n", render_diff(&resp.diff));
    println!("Scheduler dry-run:");
    let system = matches!(job.job_type.as_str(), "system" | "sysbatch");
    if resp.failed_tg_allocs.is_empty() {
        println!("- All tasks successfully allocated{}.", if system { " on all nodes" } else { "" });
    } else {
        println!("- WARNING: Failed to place all allocations{}.", if system { " on all nodes" } else { "" });
        print_failures(&resp.failed_tg_allocs, "  ");
    }
    if verbose {
        for (group, top) in &resp.placement_scores {
            println!("\nPlacement scores of task group {group:?} (its first placement, best nodes first):");
            println!("{}", monitor::score_table(top));
        }
    }
    let files = input.var_files.iter().map(|f| format!("-var-file '{f}' "));
    let vars: String = files.chain(input.vars.iter().map(|v| format!("-var '{v}' "))).collect();
    println!("\nJob Modify Index: {}", resp.job_modify_index);
    println!("To submit the job with version verification run:\n");
    println!("berth job run -check-index {} {vars}{}\n", resp.job_modify_index, input.file);
    println!("When running the job with the check-index flag, the job will only be run if the");
    println!("job modify index given matches the server-side version. If the index has");
    println!("changed, another user has modified the job and the plan's results are");
    println!("potentially invalid.");
    let changes = resp
        .annotations
        .desired_tg_updates
        .values()
        .any(|u| u.place + u.stop + u.migrate + u.destructive_update + u.canary > 0);
    if changes || !resp.failed_tg_allocs.is_empty() {
        1
    } else {
        0
    }
}

/// `job status [id]`.
pub async fn status(api: &ApiClient, id: Option<&str>, short: bool, verbose: bool) -> i32 {
    let Some(prefix) = id else {
        let jobs: Vec<JobListStub> = match api.get("/v1/jobs").await {
            Ok(j) => j,
            Err(e) => {
                eprintln!("Error querying jobs: {e}");
                return 1;
            }
        };
        if jobs.is_empty() {
            println!("No running jobs");
            return 0;
        }
        println!("{}", job_table(&jobs));
        return 0;
    };
    let id = match resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let job: Job = match api.get(&job_path(&id)).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("Error querying job: {e}");
            return 1;
        }
    };
    println!(
        "{}",
        format::kv(
            &[
                format!("ID|{}", job.id),
                format!("Name|{}", job.name),
                format!("Submit Date|{}", format_timestamp(job.submit_time)),
                format!("Type|{}", job.job_type),
                format!("Priority|{}", job.priority),
                format!("Datacenters|{}", job.datacenters.join(",")),
                format!("Namespace|{}", job.namespace),
                format!("Node Pool|{}", job.node_pool),
                format!("Status|{}", job_status_text(job.stop, &job.status)),
            ]
            .into_iter()
            .chain(children::status_rows(&job))
            .collect::<Vec<_>>()
        )
    );
    if short {
        return 0;
    }
    if job.is_template() {
        children::print_children(api, &job).await;
        return 0;
    }
    if let Ok(summary) = api.get::<JobSummary>(&format!("{}/summary", job_path(&id))).await {
        println!("\nSummary");
        let mut rows = vec!["Task Group|Queued|Starting|Running|Failed|Complete|Lost|Unknown".to_string()];
        for (tg, s) in &summary.summary {
            rows.push(format!(
                "{tg}|{}|{}|{}|{}|{}|{}|{}",
                s.queued, s.starting, s.running, s.failed, s.complete, s.lost, s.unknown
            ));
        }
        println!("{}", format::list(&rows));
    }
    let evals: Vec<crate::structs::Evaluation> =
        api.get(&format!("{}/evaluations", job_path(&id))).await.unwrap_or_default();
    if let Some(blocked) = evals.iter().find(|e| e.status == "blocked") {
        let failed = evals.iter().find(|e| e.blocked_eval == blocked.id && !e.failed_tg_allocs.is_empty());
        if let Some(f) = failed {
            println!("\nPlacement Failure");
            print_failures(&f.failed_tg_allocs, "");
        }
    }
    if job.job_type == "service" {
        if let Ok(Some(dep)) = api.get::<Option<Deployment>>(&format!("{}/deployment", job_path(&id))).await {
            println!("\nLatest Deployment");
            super::tables::print_deployment(&dep);
        }
    }
    let allocs: Vec<AllocListStub> = api.get(&format!("{}/allocations", job_path(&id))).await.unwrap_or_default();
    println!("\nAllocations");
    if allocs.is_empty() {
        println!("No allocations placed");
        return 0;
    }
    println!("{}", alloc_table(&allocs, verbose));
    0
}

/// `job stop [-purge] [-detach] [-yes] ID`.
pub async fn stop(api: &ApiClient, prefix: &str, purge: bool, detach: bool, yes: bool) -> i32 {
    let id = match resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    if id != prefix && !yes {
        eprint!("Are you sure you want to stop job {id:?}? [y/N] ");
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != "y" {
            eprintln!("Cancelling job stop");
            return 0;
        }
    }
    let resp: RegisterResult = match api.delete(&format!("{}?purge={purge}", job_path(&id))).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error deregistering job: {e}");
            return 1;
        }
    };
    // A periodic or parameterized job has no evaluation to follow.
    if detach || resp.eval_id.is_empty() {
        println!("{}", resp.eval_id);
        return 0;
    }
    monitor::monitor(api, &resp.eval_id, false).await
}

/// `job inspect ID`.
pub async fn inspect(api: &ApiClient, prefix: &str) -> i32 {
    let id = match resolve(api, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    match api.get::<Job>(&job_path(&id)).await {
        Ok(job) => {
            println!("{}", serde_json::to_string_pretty(&json!({ "Job": job })).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("Error inspecting job: {e}");
            1
        }
    }
}
