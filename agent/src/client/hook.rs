//! The alloc hook contract: what a step of an allocation's set-up and
//! teardown is given, what it hands on to the task runners, and how it
//! fails. The alloc runner runs hooks; the hooks themselves (directories,
//! network, host and CSI volumes) live with what they set up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::driver::{DriverError, TaskHandle, TaskNetwork, VolumeBind};
use super::rpc::RpcError;
use crate::structs::{AllocNetworkStatus, Allocation, TaskState};

/// Outputs hooks share with the task runners and with each other.
#[derive(Debug, Default, Clone)]
pub struct HookResources {
    /// Host paths of the group's volumes, by volume alias.
    pub volume_paths: BTreeMap<String, (PathBuf, bool)>,
    /// The group's bridge network, when it has one.
    pub network: Option<Arc<GroupNetwork>>,
    /// Extra host paths bound into a task, by task name.
    pub task_binds: BTreeMap<String, Vec<VolumeBind>>,
    /// Extra environment of a task (before its own `env`), by task name.
    pub task_env: BTreeMap<String, BTreeMap<String, String>>,
    /// How the checks of the allocation's services stand, as they change
    /// (none when it has no services).
    pub checks: Option<tokio::sync::watch::Receiver<ChecksHealth>>,
}

/// How the checks a deployment waits for stand: the services whose
/// checks do not all pass (none: every one passes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksHealth {
    /// Names of the services with a check that does not pass.
    pub failing: Vec<String>,
    /// The checks a deployment waits for.
    pub total: usize,
}

impl ChecksHealth {
    /// Every check a deployment waits for passes.
    pub fn passing(&self) -> bool {
        self.failing.is_empty()
    }
}

/// An allocation's network (bridge, CNI or `none`), as its tasks see it.
#[derive(Debug, Clone)]
pub struct GroupNetwork {
    /// Address, gateway, veth and mappings.
    pub alloc: cni::AllocNetwork,
    /// The namespace the tasks join.
    pub task: TaskNetwork,
}

impl GroupNetwork {
    /// True for a network that gave the allocation an address of its own
    /// (bridge, CNI), not loopback only (`none`).
    pub fn is_addressed(&self) -> bool {
        !self.alloc.ip.is_loopback()
    }

    /// Nomad's `NetworkStatus` of the allocation.
    pub fn status(&self) -> AllocNetworkStatus {
        AllocNetworkStatus {
            interface_name: self.alloc.interface.clone(),
            address: self.alloc.ip.to_string(),
            address_ipv6: String::new(),
        }
    }
}

/// Why a hook step failed; each names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A file or mount operation on this node failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, with the path.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The allocation asks for what this node does not offer (a host
    /// volume it has not configured, a plugin that is not running here,
    /// an unknown network mode).
    #[error("{0}")]
    Unavailable(String),
    /// Network set-up or teardown failed.
    #[error(transparent)]
    Network(#[from] cni::NetError),
    /// A driver failed to make or remove what it holds for the group.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A CSI plugin call failed; the plugin's gRPC code is kept.
    #[error("{op}: {source}")]
    Plugin {
        /// The call, with the volume.
        op: String,
        /// The plugin's answer.
        source: csi::ClientError,
    },
    /// The servers refused the request or could not be reached.
    #[error("{op}: {source}")]
    Rpc {
        /// What was asked.
        op: &'static str,
        /// Refused or failed.
        source: RpcError,
    },
    /// A record of what the hook did could not be written or read.
    #[error("{op}: {source}")]
    Record {
        /// What was being done, with the path.
        op: String,
        /// The encoding error.
        source: serde_json::Error,
    },
}

impl HookError {
    /// A mapper from an OS error during `op`.
    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> HookError {
        let op = op.into();
        move |source| HookError::Io { op, source }
    }
}

/// What a hook step returns.
pub type HookResult<'a> = BoxFuture<'a, Result<(), HookError>>;

/// A step of allocation set-up and teardown. Prerun runs in the list's
/// order, postrun and destroy in reverse; postrun and destroy must be safe
/// to call without prerun (after a client restart, or when prerun failed).
pub trait AllocHook: Send + Sync {
    /// Name for logs and errors.
    fn name(&self) -> &'static str;
    /// Before any task starts.
    fn prerun<'a>(&'a self, _alloc: &'a Allocation, _res: &'a mut HookResources) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
    /// After a task's state changed: every task's state, and the handles
    /// of those running.
    fn task_states(&self, _states: &BTreeMap<String, TaskState>, _handles: &BTreeMap<String, TaskHandle>) {}
    /// The servers updated the allocation in place (a new job version
    /// that restarts no task), while its tasks run.
    fn update<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
    /// After every task has stopped.
    fn postrun<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
    /// When the allocation is removed from the client.
    fn destroy<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
}
