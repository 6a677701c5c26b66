//! CSI between server and client: the claim grant a client asks for
//! before it mounts an allocation's volumes, and the plugin calls the
//! server needs made on some node: controller RPCs (create, delete,
//! validate, expand, snapshots) on a node running a healthy controller,
//! and node expansion on each node that has the volume staged. The server
//! names the node; a [`PluginCalls`] implementation (the agent's own
//! client, or a remote client over HTTP) makes the call.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::structs::{CsiMountOptions, CsiTopology, CsiTopologyRequest, CsiVolume, CsiVolumeCapability, Node};

/// Secret values for a plugin: serialized (they must reach the plugin),
/// never printed by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// One call for a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "Op", rename_all = "PascalCase")]
pub enum PluginCall {
    /// `CreateVolume`.
    #[serde(rename_all = "PascalCase")]
    Create {
        name: String,
        capacity_min: i64,
        capacity_max: i64,
        capabilities: Vec<CsiVolumeCapability>,
        mount_options: Option<CsiMountOptions>,
        parameters: BTreeMap<String, String>,
        secrets: Secrets,
        topology: Option<CsiTopologyRequest>,
        snapshot_id: String,
        clone_id: String,
    },
    /// `DeleteVolume`.
    #[serde(rename_all = "PascalCase")]
    Delete { external_id: String, secrets: Secrets },
    /// `ValidateVolumeCapabilities`.
    #[serde(rename_all = "PascalCase")]
    Validate {
        external_id: String,
        capabilities: Vec<CsiVolumeCapability>,
        mount_options: Option<CsiMountOptions>,
        context: BTreeMap<String, String>,
        parameters: BTreeMap<String, String>,
        secrets: Secrets,
    },
    /// `ControllerPublishVolume` to the node's CSI node ID.
    #[serde(rename_all = "PascalCase")]
    Publish {
        external_id: String,
        node_id: String,
        capability: CsiVolumeCapability,
        mount_options: Option<CsiMountOptions>,
        read_only: bool,
        context: BTreeMap<String, String>,
        secrets: Secrets,
    },
    /// `ControllerUnpublishVolume` from the node's CSI node ID.
    #[serde(rename_all = "PascalCase")]
    Unpublish { external_id: String, node_id: String, secrets: Secrets },
    /// `ControllerExpandVolume`.
    #[serde(rename_all = "PascalCase")]
    Expand {
        external_id: String,
        capacity_min: i64,
        capacity_max: i64,
        capability: Option<CsiVolumeCapability>,
        mount_options: Option<CsiMountOptions>,
        secrets: Secrets,
    },
    /// `NodeExpandVolume` on every staged or published path of the volume
    /// on the node.
    #[serde(rename_all = "PascalCase")]
    NodeExpand {
        volume_id: String,
        namespace: String,
        external_id: String,
        capacity_min: i64,
        capacity_max: i64,
        capability: Option<CsiVolumeCapability>,
        mount_options: Option<CsiMountOptions>,
    },
    /// `CreateSnapshot`.
    #[serde(rename_all = "PascalCase")]
    CreateSnapshot { external_id: String, name: String, parameters: BTreeMap<String, String>, secrets: Secrets },
    /// `DeleteSnapshot`.
    #[serde(rename_all = "PascalCase")]
    DeleteSnapshot { snapshot_id: String, secrets: Secrets },
    /// `ListSnapshots`, optionally of one volume.
    #[serde(rename_all = "PascalCase")]
    ListSnapshots { external_id: String, secrets: Secrets },
}

impl PluginCall {
    /// True for calls served by a node plugin rather than a controller.
    pub fn is_node_call(&self) -> bool {
        matches!(self, PluginCall::NodeExpand { .. })
    }
}

/// A snapshot as the API shows it (Nomad's `CSISnapshot`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiSnapshot {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ExternalSourceVolumeID")]
    pub external_source_volume_id: String,
    pub size_bytes: i64,
    /// Unix seconds.
    pub create_time: i64,
    pub is_ready: bool,
    #[serde(rename = "PluginID")]
    pub plugin_id: String,
    pub name: String,
}

/// What a [`PluginCall`] answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "Reply", rename_all = "PascalCase")]
pub enum PluginReply {
    /// A created volume.
    #[serde(rename_all = "PascalCase")]
    Volume { external_id: String, capacity: i64, context: BTreeMap<String, String>, topologies: Vec<CsiTopology> },
    /// Done, nothing to report.
    Done,
    /// Controller publish: what the node plugin needs to stage and publish.
    #[serde(rename_all = "PascalCase")]
    Published { context: BTreeMap<String, String> },
    /// Capabilities check: `None` when confirmed, else the plugin's reason.
    #[serde(rename_all = "PascalCase")]
    Validated { refusal: Option<String> },
    /// New capacity after expansion.
    #[serde(rename_all = "PascalCase")]
    Expanded { capacity: i64, node_expansion_required: bool },
    /// One snapshot.
    Snapshot(CsiSnapshot),
    /// Snapshots.
    Snapshots(Vec<CsiSnapshot>),
}

/// The gRPC status of a failed plugin call, by its canonical name
/// (`"NOT_FOUND"`); `Unavailable` also stands for a plugin that is not
/// running healthy or a node that cannot be reached.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

/// A failed plugin call: its code, kept from the node that made the call
/// to the servers' HTTP answer, and what went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[serde(rename_all = "PascalCase")]
#[error("{message}")]
pub struct PluginError {
    pub code: PluginCode,
    pub message: String,
}

impl PluginError {
    /// An error with a code.
    pub fn new(code: PluginCode, message: impl Into<String>) -> Self {
        PluginError { code, message: message.into() }
    }

    /// The same error, its message prefixed with where it happened.
    pub fn context(self, what: &str) -> Self {
        PluginError { code: self.code, message: format!("{what}: {}", self.message) }
    }

    /// True when asking again later may succeed (the plugin or its node is
    /// away, busy or slow).
    pub fn is_transient(&self) -> bool {
        matches!(self.code, PluginCode::Unavailable | PluginCode::DeadlineExceeded | PluginCode::Aborted)
    }
}

/// Makes plugin calls on a given node.
pub trait PluginCalls: Send + Sync {
    /// Calls `plugin_id`'s controller (or node plugin, for node calls) on `node`.
    fn call<'a>(
        &'a self,
        node: &'a Node,
        plugin_id: &'a str,
        call: PluginCall,
    ) -> BoxFuture<'a, Result<PluginReply, PluginError>>;
}

/// What a client may do with an allocation's volumes now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum ClaimGrant {
    /// Mount them: the volumes, with what the node plugin needs.
    Granted(Vec<GrantedVolume>),
    /// Not yet, and why (a claim another allocation still holds, or a
    /// controller that has not attached the volume to the node yet).
    Wait(String),
}

/// A volume a client may mount, with the controller's publish context.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantedVolume {
    /// The volume (with the secrets the node plugin needs).
    pub volume: CsiVolume,
    /// From ControllerPublishVolume (empty when the plugin has no controller attach).
    pub publish_context: BTreeMap<String, String>,
}
