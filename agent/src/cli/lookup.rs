//! Finding a job or a node by ID or prefix, as `job status`, `job stop`,
//! `node drain` and the rest do, with Nomad's messages when none or
//! several match.

use super::api::ApiClient;
use super::format;
use crate::util::format_timestamp;
use crate::wire::stubs::{JobListStub, NodeListStub};

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

/// The node of the agent being asked (`-self`).
pub async fn self_node_id(api: &ApiClient) -> Result<String, i32> {
    let agent: serde_json::Value = api.get("/v1/agent/self").await.map_err(|e| {
        eprintln!("Error querying agent info: {e}");
        1
    })?;
    let name = agent["config"]["NodeName"].as_str().unwrap_or_default().to_string();
    let nodes: Vec<NodeListStub> = api.get("/v1/nodes").await.unwrap_or_default();
    nodes.into_iter().find(|n| n.name == name).map(|n| n.id).ok_or_else(|| {
        eprintln!("This agent is not running a client");
        1
    })
}

/// Resolves a node ID prefix; prints Nomad's messages on failure.
pub async fn resolve_node(api: &ApiClient, prefix: &str) -> Result<String, i32> {
    let nodes: Vec<NodeListStub> = api.get(&format!("/v1/nodes?prefix={prefix}")).await.map_err(|e| {
        eprintln!("Error querying node status: {e}");
        1
    })?;
    pick_node(&nodes, prefix)
}

/// The one node among those a prefix matched.
pub fn pick_node(nodes: &[NodeListStub], prefix: &str) -> Result<String, i32> {
    if let Some(n) = nodes.iter().find(|n| n.id == prefix) {
        return Ok(n.id.clone());
    }
    match nodes {
        [] => {
            eprintln!("No node(s) with prefix {prefix:?} found");
            Err(1)
        }
        [one] => Ok(one.id.clone()),
        _ => {
            eprintln!("Prefix matched multiple nodes");
            Err(1)
        }
    }
}
