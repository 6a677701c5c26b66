//! Requests to a running allocation's tasks, with Nomad's bodies for
//! `/v1/client/allocation/:id/signal` and `/v1/client/allocation/:id/restart`.

use serde::{Deserialize, Serialize};

/// `PUT /v1/client/allocation/:id/signal`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocSignalRequest {
    /// The task; empty for every task of the allocation.
    pub task: String,
    /// The signal ("SIGUSR1").
    pub signal: String,
}

/// `PUT /v1/client/allocation/:id/restart`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocRestartRequest {
    /// The task; empty for every running task.
    pub task_name: String,
    /// Every task, whether running or not.
    pub all_tasks: bool,
}

/// The task a request names, `None` for all of them.
pub fn named_task(task: &str) -> Option<String> {
    (!task.is_empty()).then(|| task.to_string())
}
