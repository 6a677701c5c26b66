//! Task drivers: the narrow interface the task runner uses to start, wait
//! for, signal, stop and recover a task, plus the drivers themselves.
//! A driver's per-task state lives in an opaque, persisted `TaskHandle`, so
//! a restarted client can re-attach to what is still running.

pub mod docker;
pub mod pause;
mod process;
pub mod raw_exec;
pub mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::logs::Rotation;
use crate::structs::DriverInfo;

/// Failures of a driver operation.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The task's `config` block is wrong.
    #[error("invalid {driver} config: {reason}")]
    Config {
        /// Driver name.
        driver: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The driver is disabled on this client.
    #[error("driver {0} is not enabled on this client")]
    Disabled(&'static str),
    /// The task cannot be reached (its runtime is away, it is gone).
    #[error("{0}")]
    Unreachable(String),
    /// Starting the task failed.
    #[error("failed to start task: {0}")]
    Start(String),
    /// An OS operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a driver needs to start one task.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Allocation ID.
    pub alloc_id: String,
    /// Task name.
    pub task: String,
    /// Driver config, already interpolated.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Complete environment.
    pub env: BTreeMap<String, String>,
    /// The task's directory on the host.
    pub task_dir: PathBuf,
    /// Where log files go.
    pub log_dir: PathBuf,
    /// Log rotation limits.
    pub rotation: Rotation,
    /// User to run as.
    pub user: String,
    /// CPU in MHz.
    pub cpu: u64,
    /// Memory in MB.
    pub memory_mb: u64,
    /// `memory_max` in MB: the hard limit where the driver can let a task
    /// use more than `memory_mb` (oversubscription); 0: `memory_mb` is the
    /// limit; -1: there is none.
    pub memory_max_mb: i64,
    /// Ports granted to the allocation.
    pub ports: Vec<crate::structs::AllocatedPort>,
    /// Host directories bound into the task (volume mounts).
    pub binds: Vec<VolumeBind>,
    /// Kill timeout (for drivers that stop through their runtime).
    pub kill_timeout: Duration,
    /// Where a driver reports progress (image pulls) as task events.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<crate::structs::TaskEvent>>,
    /// The allocation's network namespace (bridge mode), if it has one.
    pub network: Option<TaskNetwork>,
}

/// The network namespace an allocation's tasks join.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNetwork {
    /// The namespace file.
    pub netns: PathBuf,
    /// The container holding the namespace, for drivers whose tasks join it
    /// through their runtime (docker's `container:<name>` network mode).
    pub holder: Option<String>,
}

/// A host path mounted into a task.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeBind {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path inside the task.
    pub destination: String,
    /// Mount propagation for the runtime (`rshared`), empty for the default.
    pub propagation: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl VolumeBind {
    /// A read-write bind with shared propagation (CSI plugin directories,
    /// whose mounts the host and the plugin must both see).
    pub fn shared(host_path: PathBuf, destination: &str) -> Self {
        VolumeBind { host_path, destination: destination.to_string(), read_only: false, propagation: "rshared".into() }
    }
}

/// A driver's persisted reference to a running task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TaskHandle {
    /// Which driver owns it.
    pub driver: String,
    /// Driver-specific state (PIDs, container ID, …).
    pub state: serde_json::Value,
}

/// How a task ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExitResult {
    /// Exit code.
    pub exit_code: i64,
    /// Terminating signal, 0 if none.
    pub signal: i64,
    /// Set when the driver lost track of the task or it could not run.
    pub error: Option<String>,
}

impl ExitResult {
    /// True for a clean exit.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal == 0 && self.error.is_none()
    }
}

/// A task driver.
pub trait Driver: Send + Sync {
    /// The name jobs use in `driver = "..."`.
    fn name(&self) -> &'static str;
    /// Detection and health, for the node's fingerprint.
    fn fingerprint(&self) -> BoxFuture<'_, DriverInfo>;
    /// Starts a task.
    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>>;
    /// Resolves when the task exits.
    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult>;
    /// Sends a signal to the task; fails when the name is not a signal or
    /// the task cannot be reached.
    fn signal<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Stops the task: `signal`, then a hard kill after `timeout`.
    fn stop<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str, timeout: Duration) -> BoxFuture<'a, ()>;
    /// What the running task uses now (memory) and has used (CPU time).
    fn stats<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<usage::TaskUsage, DriverError>>;
    /// After a client restart: re-attaches what the driver keeps for a task
    /// (its log pump) and tells whether the task is still running.
    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, bool>;
    /// True when the task is frozen (a paused container): it holds its
    /// sockets but answers nothing, so its checks fail whatever a probe
    /// of the kernel's side of them says.
    fn paused<'a>(&'a self, _handle: &'a TaskHandle) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
    /// Releases what the task left behind once it will not run again
    /// (a stopped container, say).
    fn destroy<'a>(&'a self, _handle: &'a TaskHandle) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// True when tasks see their own filesystem, with the task directories
    /// mounted at `/alloc`, `/local` and `/secrets`.
    fn fs_isolation(&self) -> bool {
        false
    }
    /// Creates the allocation's network namespace when this driver must own
    /// it (docker keeps it in a pause container). Returns the namespace file
    /// and the holder's name; `None` when the driver runs tasks in any
    /// namespace the client makes. Must be idempotent (re-adoption).
    fn create_network<'a>(&'a self, _alloc_id: &'a str) -> BoxFuture<'a, Result<Option<TaskNetwork>, DriverError>> {
        Box::pin(async { Ok(None) })
    }
    /// Removes what [`create_network`](Self::create_network) made.
    fn destroy_network<'a>(&'a self, _alloc_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// At client start: removes what belongs to allocations not in `known`.
    fn cleanup_orphans<'a>(&'a self, _known: &'a std::collections::HashSet<String>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Parses a signal name ("SIGINT", "INT", "SIGTERM").
pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().ok()
}
