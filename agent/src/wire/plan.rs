//! Job registration, dispatch and `job plan` answers: the evaluation a registration
//! made, and a plan's diff (Nomad's `JobDiff` shape) with its per-group
//! counts and placement failures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::structs::AllocMetric;

/// Answer to a job registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResult {
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub eval_create_index: u64,
    pub job_modify_index: u64,
    pub warnings: String,
    pub index: u64,
}

/// Body of `POST /v1/job/:id/dispatch` (Nomad's `JobDispatchRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DispatchRequest {
    /// The input, base64 in JSON.
    #[serde(with = "crate::structs::base64_bytes")]
    pub payload: Vec<u8>,
    pub meta: BTreeMap<String, String>,
    /// Put into the child's ID: `<parent>/dispatch-<prefix>-<time>-<8 hex>`.
    pub id_prefix_template: String,
}

/// Answer to a dispatch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DispatchResult {
    #[serde(rename = "DispatchedJobID")]
    pub dispatched_job_id: String,
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub eval_create_index: u64,
    pub job_create_index: u64,
    pub index: u64,
}

/// Answer to `POST /v1/job/:id/periodic/force`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeriodicForceResult {
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    pub eval_create_index: u64,
    pub index: u64,
}

/// Body of `POST /v1/job/:id/scale`, as Nomad's API takes it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScaleRequest {
    /// The new count; Nomad allows none (an event only), berth needs one.
    pub count: Option<i64>,
    /// `{"Group": "<name>"}`.
    pub target: BTreeMap<String, String>,
    pub message: String,
    pub policy_override: bool,
}

/// Answer to `job plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PlanResult {
    pub diff: JobDiff,
    pub annotations: PlanAnnotations,
    #[serde(rename = "FailedTGAllocs")]
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    pub job_modify_index: u64,
    pub warnings: String,
    /// Berth's addition: per group, the scores of the best nodes for its
    /// first placement (what `job plan -verbose` prints).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placement_scores: BTreeMap<String, Vec<crate::structs::NodeScoreMeta>>,
}

/// Per-group counts of what a plan would do.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PlanAnnotations {
    #[serde(rename = "DesiredTGUpdates")]
    pub desired_tg_updates: BTreeMap<String, DesiredUpdates>,
}

/// How many allocations of each kind a plan changes for one task group,
/// as Nomad's `DesiredTGUpdates` reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DesiredUpdates {
    pub ignore: u64,
    pub place: u64,
    pub migrate: u64,
    pub stop: u64,
    pub in_place_update: u64,
    pub destructive_update: u64,
    pub canary: u64,
    pub preemptions: u64,
    /// Allocations marked unknown because their node is out of touch.
    pub disconnect: u64,
    /// Allocations kept as their node came back.
    pub reconnect: u64,
}

/// Added, Deleted, Edited or None.
pub type DiffType = String;

/// One changed (or unchanged) primitive field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FieldDiff {
    #[serde(rename = "Type")]
    pub diff_type: DiffType,
    pub name: String,
    pub old: String,
    pub new: String,
    pub annotations: Vec<String>,
}

/// A nested object (Config, Env, Resources, …) and its fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectDiff {
    #[serde(rename = "Type")]
    pub diff_type: DiffType,
    pub name: String,
    pub fields: Vec<FieldDiff>,
    pub objects: Vec<ObjectDiff>,
}

/// A task's diff.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TaskDiff {
    #[serde(rename = "Type")]
    pub diff_type: DiffType,
    pub name: String,
    pub annotations: Vec<String>,
    pub fields: Vec<FieldDiff>,
    pub objects: Vec<ObjectDiff>,
}

/// A task group's diff with the plan's update counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroupDiff {
    #[serde(rename = "Type")]
    pub diff_type: DiffType,
    pub name: String,
    pub fields: Vec<FieldDiff>,
    pub objects: Vec<ObjectDiff>,
    pub tasks: Vec<TaskDiff>,
    pub updates: BTreeMap<String, u64>,
}

/// The whole job's diff.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct JobDiff {
    #[serde(rename = "Type")]
    pub diff_type: DiffType,
    #[serde(rename = "ID")]
    pub id: String,
    pub fields: Vec<FieldDiff>,
    pub objects: Vec<ObjectDiff>,
    pub task_groups: Vec<TaskGroupDiff>,
}
