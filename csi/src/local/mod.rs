//! `berth.local`, the CSI plugin built into Berth: volumes on the node's own
//! disk, served over the Identity, Controller and Node services on one unix
//! socket (what `berth csi-plugin local` runs).
//!
//! A volume is either a directory (`backing=directory`, the default; its
//! capacity is recorded, not enforced) or a sparse image file holding a
//! filesystem (`backing=image`, `fs_type` default `ext4`), attached through
//! a loop device when staged and usable as a raw block device too. Volumes
//! can be snapshotted (full copies), cloned, restored from snapshots and
//! expanded. Every volume lives on this node, which the topology segment
//! `berth.local/node=<node id>` says.
//!
//! Controller side: `CreateVolume`/`DeleteVolume`, `ValidateVolumeCapabilities`,
//! `ListVolumes`, `GetCapacity`, `CreateSnapshot`/`DeleteSnapshot`/`ListSnapshots`,
//! `ControllerExpandVolume`; no controller publish (nothing to attach from
//! afar). Node side: stage/unstage, publish/unpublish, volume stats,
//! expansion. Everything the plugin knows is in its state directory (see
//! `store`), and the kernel's mount table is the truth about what is
//! mounted, so a restarted plugin carries on where it stopped. Operations
//! on one volume run one at a time; blocking work runs on the blocking pool.
//!
//! Modules: `store` (records on disk), `capability` (access types and
//! modes), `params` (CreateVolume parameters, capacity ranges), `locks`
//! (per-volume serialization), `host` (losetup, cp), and the three
//! services: `identity`, `controller`, `node`.

mod backing;
pub(crate) mod capability;
mod controller;
mod host;
mod identity;
mod node;
mod params;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::service::Routes;
use tonic::Status;

pub use store::StoreError;

use crate::locks::{KeyGuard, KeyLocks};
use crate::mount::MountError;
pub(crate) use crate::rpc::{blocking, bytes_i64, reply, require};
use crate::serve::{serve_unix, ServeError};
use crate::v1::controller_server::ControllerServer;
use crate::v1::identity_server::IdentityServer;
use crate::v1::node_server::NodeServer;
use crate::v1::Topology;
use host::HostError;
use store::{Store, VolumeRecord};

/// The plugin's name, as `GetPluginInfo` reports it.
pub const PLUGIN_NAME: &str = "berth.local";

/// The topology key of the node a volume lives on.
pub const TOPOLOGY_KEY: &str = "berth.local/node";

/// The filesystem of an image volume whose parameters and capabilities
/// name none.
const DEFAULT_FS_TYPE: &str = "ext4";

/// Where the plugin keeps its volumes and which node it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The state directory (created if missing): volumes, snapshots and
    /// node-side records.
    pub state_dir: PathBuf,
    /// This node's ID (`NodeGetInfo`, topology): 1 to 63 characters,
    /// letters, digits, `-`, `_` and `.`, beginning and ending with a letter
    /// or digit.
    pub node_id: String,
}

/// Why the plugin could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The node ID cannot be a topology value.
    #[error("invalid node id {node_id:?}: {reason}")]
    InvalidNodeId {
        /// The ID as given.
        node_id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The state directory could not be opened.
    #[error("state directory: {0}")]
    State(#[from] StoreError),
    /// The socket could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The plugin: cheap to clone, clones share the state.
#[derive(Debug, Clone)]
pub struct LocalPlugin {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    store: Store,
    locks: KeyLocks,
}

impl LocalPlugin {
    /// Opens the state directory (creating it, and removing what interrupted
    /// creations left behind).
    pub fn open(config: LocalConfig) -> Result<Self, LocalError> {
        check_node_id(&config.node_id)
            .map_err(|reason| LocalError::InvalidNodeId { node_id: config.node_id.clone(), reason })?;
        let store = Store::open(&config.state_dir)?;
        Ok(Self { inner: Arc::new(Inner { node_id: config.node_id, store, locks: KeyLocks::default() }) })
    }
}

/// Serves Identity, Controller and Node for `plugin` on the unix socket at
/// `endpoint` (`unix:///path/csi.sock` or a path) until `shutdown`
/// resolves (see [`crate::serve::serve_unix`]).
pub async fn serve(
    plugin: LocalPlugin,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    tracing::info!(node = %plugin.inner.node_id, "berth.local serves node");
    let routes = Routes::new(IdentityServer::new(plugin.clone()))
        .add_service(ControllerServer::new(plugin.clone()))
        .add_service(NodeServer::new(plugin));
    Ok(serve_unix(routes, endpoint, PLUGIN_NAME, shutdown).await?)
}

/// A topology value: 1-63 characters, alphanumerics at both ends, `-_.`
/// and alphanumerics inside.
fn check_node_id(id: &str) -> Result<(), &'static str> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > 63 {
        return Err("must be 1 to 63 characters long");
    }
    if !alnum(id.chars().next()) || !alnum(id.chars().last()) {
        return Err("must begin and end with a letter or digit");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

impl Inner {
    /// This node as a topology.
    fn topology(&self) -> Topology {
        Topology { segments: HashMap::from([(TOPOLOGY_KEY.to_owned(), self.node_id.clone())]) }
    }

    /// Volume `id`, or NOT_FOUND.
    fn volume(&self, id: &str) -> Result<VolumeRecord, Status> {
        self.store.volume(id)?.ok_or_else(|| Status::not_found(format!("volume {id} does not exist")))
    }

    /// Takes the lock of volume `id`.
    async fn lock_volume(&self, id: &str) -> KeyGuard {
        self.locks.lock(format!("volume/{id}")).await
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        Status::internal(format!("state directory: {error}"))
    }
}

/// A failed host command while working on `subject` (a volume or snapshot).
fn host_failed(subject: &str, error: HostError) -> Status {
    Status::internal(format!("{subject}: {error}"))
}

/// A failed node-side mount operation on volume `id`: a refusal (the
/// target holds something else, an unsupported filesystem) is
/// FAILED_PRECONDITION, anything else INTERNAL.
fn mount_failed(id: &str, error: MountError) -> Status {
    match error {
        MountError::Refused(_) => Status::failed_precondition(format!("volume {id}: {error}")),
        MountError::Tool { .. } | MountError::Sys { .. } => Status::internal(format!("volume {id}: {error}")),
    }
}

/// A filesystem operation on `path` that failed while working on `subject`.
fn io_failed(subject: &str, op: &str, path: &std::path::Path, error: std::io::Error) -> Status {
    Status::internal(format!("{subject}: {op} {}: {error}", path.display()))
}

/// One page of `items` after `starting_token` (an offset; `""` is 0), at
/// most `max_entries` long (0: all); the next token is empty on the last
/// page. A token that is not an offset into `items` is ABORTED.
fn page<T>(items: Vec<T>, starting_token: &str, max_entries: i32) -> Result<(Vec<T>, String), Status> {
    let max = usize::try_from(max_entries)
        .map_err(|_| Status::invalid_argument(format!("max_entries must not be negative, got {max_entries}")))?;
    let start = match starting_token {
        "" => 0,
        token => token
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= items.len())
            .ok_or_else(|| Status::aborted(format!("invalid starting_token {token:?}")))?,
    };
    let end = if max == 0 { items.len() } else { items.len().min(start + max) };
    let next = if end < items.len() { end.to_string() } else { String::new() };
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_be_topology_values() {
        for good in ["n1", "node-1.lab", "a", "berth_node_7"] {
            assert!(check_node_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-n1", "n1.", "node 1", &"x".repeat(64)] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(page(items.clone(), "", 2).unwrap(), (vec![0, 1], "2".into()));
        assert_eq!(page(items.clone(), "2", 2).unwrap(), (vec![2, 3], "4".into()));
        assert_eq!(page(items.clone(), "4", 2).unwrap(), (vec![4], String::new()));
        assert_eq!(page(items.clone(), "", 0).unwrap(), (items.clone(), String::new()));
        assert_eq!(page(items.clone(), "x", 0).unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(page(items.clone(), "6", 0).unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(page(items, "", -1).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
