//! Variables between a client and the servers: what a task's templates
//! read (`nomadVar`, `nomadVarList`), asked by the node that runs it. The
//! servers answer only for paths the task may read.

use serde::{Deserialize, Serialize};

/// `PUT /v1/internal/node/:id/variables`: one task's read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct WorkloadVariablesRequest {
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub task: String,
    /// The variable at this path (`nomadVar`), or with `list` every
    /// variable under this prefix that the task may read (`nomadVarList`).
    pub path: String,
    pub list: bool,
}
