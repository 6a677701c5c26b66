//! Bodies of the deployment endpoints (`/v1/deployment/promote/:id`,
//! `fail`, `pause`, `allocation-health`) and of `/v1/job/:id/revert`,
//! and their answer, with Nomad's field names.

use serde::{Deserialize, Serialize};

/// `POST /v1/deployment/promote/:id`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PromoteRequest {
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    /// Promote every group.
    pub all: bool,
    /// Or these groups.
    pub groups: Vec<String>,
}

/// `POST /v1/deployment/pause/:id`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PauseRequest {
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    /// Pause (true) or resume (false).
    pub pause: bool,
}

/// `POST /v1/deployment/allocation-health/:id`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocHealthRequest {
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    #[serde(rename = "HealthyAllocationIDs")]
    pub healthy_allocation_ids: Vec<String>,
    #[serde(rename = "UnhealthyAllocationIDs")]
    pub unhealthy_allocation_ids: Vec<String>,
}

/// The answer to a change to a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentUpdateResponse {
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub eval_create_index: u64,
    pub deployment_modify_index: u64,
    pub index: u64,
}

/// `POST /v1/job/:id/revert`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RevertRequest {
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// The version whose specification is registered again.
    pub job_version: u64,
    /// Refuse unless the job's current version is this one.
    pub enforce_prior_version: Option<u64>,
}
