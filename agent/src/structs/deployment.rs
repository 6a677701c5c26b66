//! Deployments: a service job's move to a new version, group by group,
//! gated by the health of the allocations it places (and by canaries and
//! their promotion), with Nomad's status vocabulary and descriptions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Deployment status values.
pub mod deployment_status {
    /// Placing and waiting for health.
    pub const RUNNING: &str = "running";
    /// Held by the operator: nothing more is replaced until it resumes.
    pub const PAUSED: &str = "paused";
    /// An allocation was unhealthy, a deadline passed, or the operator
    /// failed it.
    pub const FAILED: &str = "failed";
    /// Every group has its count of healthy allocations of the version.
    pub const SUCCESSFUL: &str = "successful";
    /// A newer version, or the job's stop, took over.
    pub const CANCELLED: &str = "cancelled";
}

/// Nomad's deployment status descriptions.
pub mod deployment_description {
    pub const RUNNING: &str = "Deployment is running";
    pub const NEEDS_PROMOTION: &str = "Deployment is running but requires manual promotion";
    pub const AUTO_PROMOTION: &str = "Deployment is running pending automatic promotion";
    pub const PAUSED: &str = "Deployment is paused";
    pub const SUCCESSFUL: &str = "Deployment completed successfully";
    pub const STOPPED_JOB: &str = "Cancelled because job is stopped";
    pub const NEWER_JOB: &str = "Cancelled due to newer version of job";
    pub const FAILED_ALLOCATIONS: &str = "Failed due to unhealthy allocations";
    pub const PROGRESS_DEADLINE: &str = "Failed due to progress deadline";
    pub const FAILED_BY_USER: &str = "Deployment marked as failed";
}

/// A rolling update of a service job to a new version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Deployment {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_version: u64,
    pub status: String,
    pub status_description: String,
    pub task_groups: BTreeMap<String, DeploymentState>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Deployment {
    /// Still placing or waiting (running or paused).
    pub fn is_active(&self) -> bool {
        self.status == deployment_status::RUNNING || self.status == deployment_status::PAUSED
    }

    /// Some group has canaries that wait for their promotion.
    pub fn requires_promotion(&self) -> bool {
        self.task_groups.values().any(|s| s.desired_canaries > 0 && !s.promoted)
    }

    /// Some group reverts to the last stable version when this fails.
    pub fn auto_reverts(&self) -> bool {
        self.task_groups.values().any(|s| s.auto_revert)
    }
}

/// Progress of one task group within a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentState {
    pub auto_revert: bool,
    pub auto_promote: bool,
    /// Nanoseconds: the progress deadline of the group.
    pub progress_deadline: i64,
    /// Unix nanoseconds by which the group must make progress (0: none).
    pub require_progress_by: i64,
    /// The canaries were promoted: the rest of the group is replaced.
    pub promoted: bool,
    /// IDs of the canaries placed.
    pub placed_canaries: Vec<String>,
    pub desired_canaries: u32,
    pub desired_total: u32,
    pub placed_allocs: u32,
    pub healthy_allocs: u32,
    pub unhealthy_allocs: u32,
}

/// Nomad's `AllocDeploymentStatus`: an allocation's health in its
/// deployment (none until its client has decided) and whether it is a
/// canary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocDeploymentStatus {
    pub healthy: Option<bool>,
    /// Unix nanoseconds of the decision.
    pub timestamp: i64,
    pub canary: bool,
    pub modify_index: u64,
}

impl AllocDeploymentStatus {
    /// Decided healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy == Some(true)
    }

    /// Decided unhealthy.
    pub fn is_unhealthy(&self) -> bool {
        self.healthy == Some(false)
    }
}

impl super::Allocation {
    /// Its client found it healthy in its deployment.
    pub fn is_healthy(&self) -> bool {
        self.deployment_status.as_ref().is_some_and(|d| d.is_healthy())
    }

    /// Its client found it unhealthy in its deployment.
    pub fn is_unhealthy(&self) -> bool {
        self.deployment_status.as_ref().is_some_and(|d| d.is_unhealthy())
    }

    /// Placed as a canary.
    pub fn is_canary(&self) -> bool {
        self.deployment_status.as_ref().is_some_and(|d| d.canary)
    }
}
