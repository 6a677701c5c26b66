//! Allocations, evaluations and their status vocabulary,
//! shaped like Nomad's API structs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::job::Job;

/// Desired status values set by the server.
pub mod desired {
    /// The allocation should run.
    pub const RUN: &str = "run";
    /// The allocation should stop.
    pub const STOP: &str = "stop";
    /// The allocation was evicted.
    pub const EVICT: &str = "evict";
}

/// Client status values reported by the node.
pub mod client_status {
    /// Why the client stopped an allocation whose `max_run_duration` ran out.
    pub const MAX_RUN_DURATION_EXCEEDED: &str = "allocation exceeded max_run_duration";
    /// Not started yet.
    pub const PENDING: &str = "pending";
    /// All tasks running.
    pub const RUNNING: &str = "running";
    /// Finished successfully (or stopped on request).
    pub const COMPLETE: &str = "complete";
    /// A task failed beyond its restart policy.
    pub const FAILED: &str = "failed";
    /// The node went down.
    pub const LOST: &str = "lost";
    /// Its node is out of touch and its `disconnect` block keeps it for now.
    pub const UNKNOWN: &str = "unknown";
}

/// Evaluation status values.
pub mod eval_status {
    /// Waiting for a scheduler.
    pub const PENDING: &str = "pending";
    /// Scheduled.
    pub const COMPLETE: &str = "complete";
    /// The scheduler failed.
    pub const FAILED: &str = "failed";
    /// Waiting for capacity.
    pub const BLOCKED: &str = "blocked";
    /// Superseded.
    pub const CANCELED: &str = "canceled";
}

/// A placement of a task group on a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Allocation {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub name: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_name: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job: Option<std::sync::Arc<Job>>,
    pub task_group: String,
    pub allocated_resources: AllocatedResources,
    pub desired_status: String,
    pub desired_description: String,
    pub desired_transition: super::DesiredTransition,
    pub client_status: String,
    pub client_description: String,
    pub task_states: BTreeMap<String, TaskState>,
    #[serde(rename = "PreviousAllocation")]
    pub previous_allocation: String,
    #[serde(rename = "NextAllocation")]
    pub next_allocation: String,
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    /// Its health within its deployment, as its client found it.
    pub deployment_status: Option<super::AllocDeploymentStatus>,
    /// A delayed evaluation that will reschedule this failed allocation.
    #[serde(rename = "FollowupEvalID")]
    pub followup_eval_id: String,
    pub reschedule_tracker: Option<RescheduleTracker>,
    pub metrics: Option<AllocMetric>,
    pub create_index: u64,
    pub modify_index: u64,
    pub alloc_modify_index: u64,
    /// Set once the client has unpublished the allocation's CSI volumes
    /// (or the server gave up on a lost node): its volume claims end.
    #[serde(rename = "CSIVolumesReleased")]
    pub csi_volumes_released: bool,
    /// Why the claims ended without the client (timeout, operator detach).
    #[serde(rename = "CSIReleaseReason", skip_serializing_if = "String::is_empty")]
    pub csi_release_reason: String,
    pub create_time: i64,
    pub modify_time: i64,
    /// The address the allocation's bridge or CNI network gave it, as its
    /// client reported it.
    pub network_status: Option<AllocNetworkStatus>,
    /// Status changes the servers made (the node went out of touch, came back).
    pub alloc_states: Vec<super::AllocState>,
}

/// Nomad's `AllocNetworkStatus`: the interface and address of an
/// allocation in a network namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocNetworkStatus {
    pub interface_name: String,
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
}

/// Resources granted to an allocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedResources {
    pub tasks: BTreeMap<String, AllocatedTaskResources>,
    pub shared: AllocatedSharedResources,
}

/// Per-task CPU and memory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedTaskResources {
    pub cpu: AllocatedCpu,
    pub memory: AllocatedMemory,
}

/// CPU shares in MHz.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedCpu {
    pub cpu_shares: u64,
}

/// Memory in MB.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedMemory {
    #[serde(rename = "MemoryMB")]
    pub memory_mb: u64,
    /// The hard limit; 0: `memory_mb`, -1: none.
    #[serde(rename = "MemoryMaxMB")]
    pub memory_max_mb: i64,
}

/// Group-wide network resources: the mode and the ports granted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedSharedResources {
    #[serde(rename = "DiskMB")]
    pub disk_mb: u64,
    pub networks: Vec<super::NetworkResource>,
    pub ports: Vec<AllocatedPort>,
}

/// A port granted on the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedPort {
    pub label: String,
    /// Host port.
    pub value: u16,
    /// Port inside the allocation's network namespace (0 = same as value).
    pub to: i32,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
}

/// The state of one task on the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskState {
    /// pending, running or dead.
    pub state: String,
    pub failed: bool,
    pub restarts: u64,
    /// RFC 3339, empty when never.
    pub last_restart: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub events: Vec<TaskEvent>,
}

/// An event in a task's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskEvent {
    #[serde(rename = "Type")]
    pub event_type: String,
    /// Unix nanoseconds.
    pub time: i64,
    pub display_message: String,
    pub message: String,
    pub exit_code: i64,
    pub signal: i64,
    pub driver_error: String,
    pub download_error: String,
    pub restart_reason: String,
    pub details: BTreeMap<String, String>,
}

/// Past reschedules of an allocation's lineage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RescheduleTracker {
    pub events: Vec<RescheduleEvent>,
}

/// One reschedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RescheduleEvent {
    /// Unix nanoseconds.
    pub reschedule_time: i64,
    #[serde(rename = "PrevAllocID")]
    pub prev_alloc_id: String,
    #[serde(rename = "PrevNodeID")]
    pub prev_node_id: String,
    /// Nanoseconds.
    pub delay: i64,
}

/// Why placements failed, or how one was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocMetric {
    pub nodes_evaluated: u64,
    pub nodes_filtered: u64,
    pub nodes_in_pool: u64,
    pub nodes_available: BTreeMap<String, u64>,
    pub class_filtered: BTreeMap<String, u64>,
    pub constraint_filtered: BTreeMap<String, u64>,
    pub nodes_exhausted: u64,
    pub class_exhausted: BTreeMap<String, u64>,
    pub dimension_exhausted: BTreeMap<String, u64>,
    pub quota_exhausted: Vec<String>,
    pub coalesced_failures: u64,
    /// Nanoseconds.
    pub allocation_time: i64,
    /// The best-scoring nodes considered, highest first (at most 5).
    pub score_meta_data: Vec<NodeScoreMeta>,
}

/// One node's scores for a placement: each scorer's (`binpack`,
/// `job-anti-affinity`, `node-affinity`, `allocation-spread`) and their mean.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeScoreMeta {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// By scorer name (the scheduler's are static strings).
    pub scores: BTreeMap<std::borrow::Cow<'static, str>, f64>,
    pub norm_score: f64,
}

/// A request for the scheduler to reconcile a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Evaluation {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
    pub priority: i64,
    #[serde(rename = "Type")]
    pub eval_type: String,
    pub triggered_by: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_modify_index: u64,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    pub status: String,
    pub status_description: String,
    /// Unix nanoseconds; the eval is not processed before this.
    pub wait_until: i64,
    pub next_eval: String,
    pub previous_eval: String,
    pub blocked_eval: String,
    #[serde(rename = "FailedTGAllocs")]
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    pub queued_allocations: BTreeMap<String, u64>,
    pub snapshot_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub create_time: i64,
    pub modify_time: i64,
}

impl Evaluation {
    /// A new pending evaluation of `job`, for `triggered_by`.
    pub fn pending(job: &super::Job, triggered_by: &str) -> Self {
        Evaluation {
            id: crate::util::new_id(),
            namespace: job.namespace.clone(),
            priority: job.priority,
            eval_type: job.job_type.clone(),
            triggered_by: triggered_by.into(),
            job_id: job.id.clone(),
            job_modify_index: job.job_modify_index,
            status: eval_status::PENDING.into(),
            ..Default::default()
        }
    }
}

impl Allocation {
    /// True once the server wants it stopped or the client finished it.
    pub fn is_terminal(&self) -> bool {
        self.server_terminal() || self.client_terminal()
    }

    /// The server asked for it to stop.
    pub fn server_terminal(&self) -> bool {
        self.desired_status == desired::STOP || self.desired_status == desired::EVICT
    }

    /// The client reports it finished, failed or lost.
    pub fn client_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), client_status::COMPLETE | client_status::FAILED | client_status::LOST)
    }

    /// When the servers last marked it `unknown`, unless they have since
    /// seen it back (Unix nanoseconds).
    pub fn unknown_since(&self) -> Option<i64> {
        let last = self.alloc_states.iter().rev().find(|s| s.field == "ClientStatus")?;
        (last.value == client_status::UNKNOWN).then_some(last.time_nanos)
    }

    /// Marks it stopped by its own client, for `why` (the servers' copy
    /// says so too once they see it).
    pub fn stop_locally(&mut self, why: &str) {
        self.desired_status = desired::STOP.into();
        self.desired_description = why.into();
    }

    /// Records that the servers set its client status to `value` at `now`.
    pub fn record_client_status(&mut self, value: &str, now: i64) {
        self.alloc_states.push(super::AllocState {
            field: "ClientStatus".into(),
            value: value.into(),
            time: crate::util::rfc3339(now),
            time_nanos: now,
        });
    }

    /// The job version this allocation runs.
    pub fn job_version(&self) -> u64 {
        self.job.as_ref().map(|j| j.version).unwrap_or(0)
    }

    /// The allocation's task group, from the job it carries.
    pub fn group(&self) -> Option<&super::TaskGroup> {
        self.job.as_ref().and_then(|j| j.task_group(&self.task_group))
    }

    /// When its group's `max_run_duration` runs out (Unix nanoseconds,
    /// counted from its creation, so a client restart or a task restart
    /// does not move it); batch and sysbatch jobs only.
    pub fn max_run_deadline(&self) -> Option<i64> {
        let job = self.job.as_ref().filter(|j| j.is_batch_like())?;
        let max = job.task_group(&self.task_group)?.max_run_duration.filter(|d| *d > 0)?;
        (self.create_time > 0).then(|| self.create_time.saturating_add(max))
    }

    /// The names of the allocation's tasks.
    pub fn task_names(&self) -> Vec<String> {
        self.group().map(|tg| tg.tasks.iter().map(|t| t.name.clone()).collect()).unwrap_or_default()
    }

    /// The CSI volumes its group requests: (volume ID with `per_alloc`
    /// applied, request). Empty for groups without CSI volumes.
    pub fn csi_requests(&self) -> Vec<(String, &super::VolumeRequest)> {
        self.group().map(|tg| tg.csi_requests(self.index())).unwrap_or_default()
    }

    /// True while the allocation holds claims on its CSI volumes.
    pub fn holds_csi_claims(&self) -> bool {
        !self.csi_volumes_released && self.group().is_some_and(|tg| tg.volumes.values().any(|v| v.volume_type == "csi"))
    }

    /// The allocation's index within its group, from `job.group[N]`.
    pub fn index(&self) -> u32 {
        self.name.rsplit_once('[').and_then(|(_, rest)| rest.trim_end_matches(']').parse().ok()).unwrap_or(0)
    }
}

impl TaskEvent {
    /// A new event of `event_type` stamped now.
    pub fn new(event_type: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        TaskEvent {
            event_type: event_type.to_string(),
            time: crate::util::now_nanos(),
            display_message: message.clone(),
            message,
            ..Default::default()
        }
    }
}
