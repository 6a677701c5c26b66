//! The jobspec parser: a Nomad job file (HCL2, plus the HCL1-era shapes
//! seed-era files still use) to a canonicalized [`Job`](crate::structs::Job),
//! decoded first and validated apart as Nomad splits them (`decode_job`,
//! `parse_job`), with Nomad's deprecation warnings.
//!
//! ```
//! let src = r#"
//! job "hello" {
//!   group "g" {
//!     task "t" {
//!       driver = "raw_exec"
//!       config { command = "/bin/true" }
//!     }
//!   }
//! }
//! "#;
//! let parsed = berth::jobspec::parse_job("hello.nomad.hcl", src, &Default::default()).unwrap();
//! assert_eq!(parsed.job.task_groups[0].count, 1);
//! ```

mod group;
mod job;
mod network;
mod placement;
mod policy;
mod service;
mod task;
mod variables;
mod volume;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::hclspan::{Decoder, HclError, Pos, Source};
use crate::structs::Job;

pub use variables::VarInputs;
pub use volume::parse_volume;

/// A parsed job and the warnings Nomad would print under `Job Warnings:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedJob {
    /// The canonicalized, validated job.
    pub job: Job,
    /// Deprecations and ignored blocks.
    pub warnings: Vec<String>,
}

/// Parses a job file with its variable values from `vars`, and validates it.
pub fn parse_job(file_name: &str, src: &str, vars: &VarInputs) -> Result<ParsedJob, HclError> {
    decode_job(file_name, src, vars)?.validate()
}

/// Parses a job file without validating it, as Nomad's parser does: a
/// fragment without groups, tasks or drivers decodes (for `job run -output`
/// and `/v1/jobs/parse`) and only [`DecodedJob::validate`] rejects it.
pub fn decode_job(file_name: &str, src: &str, vars: &VarInputs) -> Result<DecodedJob, HclError> {
    // `file()` and `templatefile()` read relative to the job file.
    let dir = std::path::Path::new(file_name).parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(std::path::Path::new(".")).to_path_buf();
    crate::hclspan::functions::with_base_dir(&dir, || decode_in_dir(file_name, src, vars))
}

fn decode_in_dir(file_name: &str, src: &str, vars: &VarInputs) -> Result<DecodedJob, HclError> {
    let source = Source::parse(file_name, src)?;
    let scope = variables::scope(&source, vars)?;
    let mut root = Decoder::root(&source, &scope);
    root.skip(&["variable", "variables", "locals"]);
    let mut jobs = root.blocks("job");
    if jobs.len() > 1 {
        return Err(jobs[1].error("only one \"job\" block is allowed per file"));
    }
    let block = jobs.pop().ok_or_else(|| source.error_at(0, "no \"job\" block found"))?;
    root.finish()?;

    let mut warnings = Vec::new();
    let (mut job, places) = job::decode(block, &mut warnings)?;
    job.canonicalize();
    for w in job.warnings() {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    Ok(DecodedJob { file_name: file_name.to_string(), job, warnings, places })
}

/// A job file decoded and canonicalized but not yet validated.
#[derive(Debug)]
pub struct DecodedJob {
    file_name: String,
    /// The canonicalized job, which may not be runnable.
    pub job: Job,
    /// Deprecations.
    pub warnings: Vec<String>,
    places: Places,
}

impl DecodedJob {
    /// Validates the job as Nomad's servers do; every issue is in the error,
    /// placed at the block of the first one.
    pub fn validate(self) -> Result<ParsedJob, HclError> {
        let issues = self.job.validation_issues();
        if let Some(first) = issues.first() {
            let pos = self.places.locate(first.group.as_deref(), first.task.as_deref());
            let messages: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
            return Err(HclError::new(&self.file_name, pos, messages.join("; ")));
        }
        Ok(ParsedJob { job: self.job, warnings: self.warnings })
    }
}

/// Where the job, its groups and tasks start, for validation errors.
#[derive(Debug, Default)]
struct Places {
    job: Pos,
    groups: BTreeMap<String, Pos>,
    tasks: BTreeMap<(String, String), Pos>,
}

impl Places {
    fn locate(&self, group: Option<&str>, task: Option<&str>) -> Pos {
        let group_pos = group.and_then(|g| self.groups.get(g));
        let task_pos = group.zip(task).and_then(|(g, t)| self.tasks.get(&(g.to_string(), t.to_string())));
        task_pos.or(group_pos).copied().unwrap_or(self.job)
    }
}

/// Blocks that need what berth does not have (Consul, Vault, federated
/// regions), and what each needs: a job asking for them is refused rather
/// than run without.
const NEEDS_WHAT_BERTH_LACKS: [(&str, &str); 5] = [
    ("vault", "Vault"),
    ("consul", "Consul"),
    ("connect", "Consul Connect"),
    ("multiregion", "federated regions (one berth cluster is one region)"),
    ("action", "commands run inside a running task (task exec)"),
];

/// Refuses a block of `NEEDS_WHAT_BERTH_LACKS`, naming it and its place.
fn refuse_what_berth_lacks(body: &mut Decoder<'_>) -> Result<(), HclError> {
    for (name, needs) in NEEDS_WHAT_BERTH_LACKS {
        if let Some(block) = body.blocks(name).first() {
            return Err(block.error(format!(
                "the \"{name}\" block needs {needs}, which berth does not have; remove it to run the job without it"
            )));
        }
    }
    Ok(())
}
