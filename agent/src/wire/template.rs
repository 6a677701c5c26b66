//! What a task's templates read from the servers (`nomadVar`,
//! `nomadVarList`, `nomadService`, `nomadServices`), asked by the node
//! that runs the task, all reads of one task in one request. A request
//! with a `MinIndex` waits (up to `WaitMs`) until the servers' state moves
//! past it, so a client follows what its templates read with one blocking
//! query per task. The servers answer a variable only where the task may
//! read it (its job's paths).

use serde::{Deserialize, Serialize};

use crate::structs::{ServiceRegistration, Variable};

/// One read a template makes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "Kind", rename_all = "PascalCase")]
pub enum TemplateRead {
    /// `nomadVar "path"`.
    Variable {
        #[serde(rename = "Path")]
        path: String,
    },
    /// `nomadVarList "prefix"`.
    Variables {
        #[serde(rename = "Prefix")]
        prefix: String,
    },
    /// `nomadService "name"` or `"tag.name"`.
    Service {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Tag")]
        tag: String,
    },
    /// `nomadServices`.
    Services,
}

/// What one read found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Kind", content = "Value", rename_all = "PascalCase")]
pub enum TemplateValue {
    /// The variable, if it exists.
    Variable(Option<Variable>),
    /// The readable variables under the prefix, by path.
    Variables(Vec<Variable>),
    /// The service's instances, oldest first.
    Service(Vec<ServiceRegistration>),
    /// Every service name with the tags its instances carry.
    Services(Vec<ServiceName>),
}

/// A service's name and tags (`nomadServices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceName {
    pub name: String,
    pub tags: Vec<String>,
}

/// `PUT /v1/internal/node/:id/template-reads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TemplateReadRequest {
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub task: String,
    pub reads: Vec<TemplateRead>,
    /// Wait for a state index above this (0: answer at once).
    pub min_index: u64,
    pub wait_ms: u64,
}

/// The answer: one value per read, in order, at the state's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TemplateReadAnswer {
    pub index: u64,
    pub values: Vec<TemplateValue>,
}
