//! Node membership and allocation status between client and server:
//! what the server answers to a registration or heartbeat, and what a
//! client reports about its allocations.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::structs::TaskState;

/// Header carrying the node's secret on the client's calls to the servers
/// and the servers' calls to a client's plugins.
pub const NODE_SECRET_HEADER: &str = "X-Berth-Node-Secret";

/// The server's answer to a registration or a heartbeat: how long until
/// the node must beat again (nanoseconds, as Nomad's `HeartbeatTTL`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatAnswer {
    #[serde(rename = "HeartbeatTTL")]
    pub heartbeat_ttl: u64,
}

impl HeartbeatAnswer {
    /// The answer for a TTL.
    pub fn new(ttl: Duration) -> Self {
        HeartbeatAnswer { heartbeat_ttl: ttl.as_nanos() as u64 }
    }

    /// The TTL.
    pub fn ttl(self) -> Duration {
        Duration::from_nanos(self.heartbeat_ttl)
    }
}

/// The servers' answer to a client's allocation query: the node's
/// allocations as ID → `AllocModifyIndex` (as Nomad's
/// `Node.GetClientAllocs`), and the index to block on next. The client
/// fetches only the allocations whose index moved.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeAllocIndexes {
    pub allocs: BTreeMap<String, u64>,
    pub index: u64,
}

/// A client's request for the allocations whose index moved.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocFetchRequest {
    #[serde(rename = "AllocIDs")]
    pub alloc_ids: Vec<String>,
}

/// What a client sends about one of its allocations.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocClientUpdate {
    #[serde(rename = "ID")]
    pub id: String,
    pub client_status: String,
    pub client_description: String,
    pub task_states: BTreeMap<String, TaskState>,
    /// The client has unpublished the allocation's CSI volumes.
    #[serde(rename = "CSIVolumesReleased", default)]
    pub csi_volumes_released: bool,
    /// The allocation's address in its bridge or CNI network.
    pub network_status: Option<crate::structs::AllocNetworkStatus>,
    /// Its health in the deployment `health_deployment_id`, once decided.
    pub deployment_status: Option<crate::structs::AllocDeploymentStatus>,
    /// The deployment `deployment_status` is about.
    #[serde(rename = "HealthDeploymentID", default)]
    pub health_deployment_id: String,
}

/// `POST /v1/node/:id/drain`: a drain to start, or none to cancel one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDrainRequest {
    pub drain_spec: Option<crate::structs::DrainSpec>,
    /// With no spec: make the node eligible again.
    pub mark_eligible: bool,
    pub meta: BTreeMap<String, String>,
}

/// `POST /v1/node/:id/eligibility`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeEligibilityRequest {
    /// `eligible` or `ineligible`.
    pub eligibility: String,
}

/// The answer to a drain or eligibility change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeUpdateResponse {
    #[serde(rename = "EvalIDs")]
    pub eval_ids: Vec<String>,
    pub eval_create_index: u64,
    pub node_modify_index: u64,
    pub index: u64,
}
