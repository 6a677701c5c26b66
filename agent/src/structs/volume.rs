//! CSI volumes and plugins as the server stores and the API shows them
//! (Nomad's `CSIVolume`, `CSIInfo`, `CSIPlugin` shapes), and the claim an
//! allocation holds on a volume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CsiMountOptions;

/// CSI access modes, in Nomad's spelling.
pub mod access_mode {
    /// One node, read-only.
    pub const SINGLE_NODE_READER: &str = "single-node-reader-only";
    /// One node, one writer.
    pub const SINGLE_NODE_WRITER: &str = "single-node-writer";
    /// Many nodes, read-only.
    pub const MULTI_NODE_READER: &str = "multi-node-reader-only";
    /// Many nodes, one writer.
    pub const MULTI_NODE_SINGLE_WRITER: &str = "multi-node-single-writer";
    /// Many nodes, many writers.
    pub const MULTI_NODE_MULTI_WRITER: &str = "multi-node-multi-writer";
    /// Every mode, for messages.
    pub const ALL: [&str; 5] =
        [SINGLE_NODE_READER, SINGLE_NODE_WRITER, MULTI_NODE_READER, MULTI_NODE_SINGLE_WRITER, MULTI_NODE_MULTI_WRITER];
}

/// CSI attachment modes.
pub mod attachment_mode {
    /// A mounted filesystem.
    pub const FILE_SYSTEM: &str = "file-system";
    /// A raw block device.
    pub const BLOCK_DEVICE: &str = "block-device";
    /// Every mode, for messages.
    pub const ALL: [&str; 2] = [FILE_SYSTEM, BLOCK_DEVICE];
}

/// One `capability { access_mode attachment_mode }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, PartialOrd, Ord)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiVolumeCapability {
    pub access_mode: String,
    pub attachment_mode: String,
}

/// A topology: segments such as `rack = "r1"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiTopology {
    pub segments: BTreeMap<String, String>,
}

impl CsiTopology {
    /// True when every segment of `self` is present with the same value in
    /// `node` (a node's topology may carry more segments).
    pub fn admits(&self, node: &CsiTopology) -> bool {
        self.segments.iter().all(|(k, v)| node.segments.get(k) == Some(v))
    }
}

/// `topology_request { required {…} preferred {…} }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiTopologyRequest {
    pub required: Vec<CsiTopology>,
    pub preferred: Vec<CsiTopology>,
}

/// A CSI volume (Nomad's `CSIVolume`). Claims are not stored here: they
/// are derived from the allocations that request the volume (see
/// [`VolumeClaim`]), so no claim can outlive the allocation that holds it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiVolume {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub namespace: String,
    #[serde(rename = "ExternalID")]
    pub external_id: String,
    #[serde(rename = "PluginID")]
    pub plugin_id: String,
    /// Vendor name of the plugin that created it (`GetPluginInfo`).
    pub provider: String,
    pub provider_version: String,
    pub requested_capabilities: Vec<CsiVolumeCapability>,
    pub mount_options: Option<CsiMountOptions>,
    /// Sent to the plugin; never shown by the API (see `redacted`).
    pub secrets: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    /// Bytes, as reported by the plugin.
    pub capacity: i64,
    pub requested_capacity_min: i64,
    pub requested_capacity_max: i64,
    #[serde(rename = "SnapshotID")]
    pub snapshot_id: String,
    #[serde(rename = "CloneID")]
    pub clone_id: String,
    /// Where the volume is reachable (from `CreateVolume`).
    pub topologies: Vec<CsiTopology>,
    pub requested_topologies: Option<CsiTopologyRequest>,
    pub schedulable: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl std::fmt::Debug for CsiVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiVolume")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("external_id", &self.external_id)
            .field("plugin_id", &self.plugin_id)
            .field("capacity", &self.capacity)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CsiVolume {
    /// A copy fit for API output: secret values replaced.
    pub fn redacted(&self) -> CsiVolume {
        let mut v = self.clone();
        for value in v.secrets.values_mut() {
            *value = "redacted".into();
        }
        v
    }

    /// True when the request's access and attachment modes match one of
    /// the volume's capabilities exactly, as Nomad requires.
    pub fn offers(&self, access_mode: &str, attachment_mode: &str) -> bool {
        self.requested_capabilities.iter().any(|c| c.access_mode == access_mode && c.attachment_mode == attachment_mode)
    }
}

/// A plugin instance on one node (Nomad's `CSIInfo`), reported by the
/// client in its node registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiInfo {
    #[serde(rename = "PluginID")]
    pub plugin_id: String,
    /// `GetPluginInfo` name.
    pub provider: String,
    pub provider_version: String,
    /// The plugin task's allocation.
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub healthy: bool,
    pub health_description: String,
    /// RFC 3339.
    pub update_time: String,
    pub requires_controller_plugin: bool,
    pub requires_topologies: bool,
    pub controller_info: Option<CsiControllerInfo>,
    pub node_info: Option<CsiNodeInfo>,
}

/// What a controller plugin supports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiControllerInfo {
    pub supports_create_delete: bool,
    pub supports_attach_detach: bool,
    pub supports_list_volumes: bool,
    pub supports_get_capacity: bool,
    pub supports_create_delete_snapshot: bool,
    pub supports_expand: bool,
}

/// What a node plugin reported (`NodeGetInfo`, `NodeGetCapabilities`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiNodeInfo {
    /// The node's ID for the storage provider.
    #[serde(rename = "ID")]
    pub id: String,
    pub max_volumes: i64,
    pub accessible_topology: Option<CsiTopology>,
    pub requires_node_stage_volume: bool,
    pub supports_expand: bool,
    pub supports_stats: bool,
}

/// How an allocation uses a volume.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClaimMode {
    /// Read-only.
    #[serde(rename = "read")]
    Read,
    /// Read-write.
    #[serde(rename = "write")]
    Write,
}

/// The claim one allocation holds on a volume, derived from the allocation:
/// held from placement until its client reports the volume unpublished,
/// or until the claim of a lost allocation times out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeClaim {
    #[serde(rename = "AllocationID")]
    pub alloc_id: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub task_group: String,
    pub mode: ClaimMode,
    /// `taken` while the allocation should run, `releasing` once it is
    /// stopping and its node has not yet unpublished the volume.
    pub state: String,
    /// Why the claim is still held, for `volume status`.
    pub reason: String,
}

/// Claim states.
pub mod claim_state {
    /// The allocation runs, or should.
    pub const TAKEN: &str = "taken";
    /// The allocation stops; its node has not yet unpublished the volume.
    pub const RELEASING: &str = "releasing";
}

/// A plugin across the cluster (Nomad's `CSIPlugin`), aggregated on read
/// from the nodes' reports and the plugin jobs' allocations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiPlugin {
    #[serde(rename = "ID")]
    pub id: String,
    pub provider: String,
    pub version: String,
    pub controller_required: bool,
    pub controllers: BTreeMap<String, CsiInfo>,
    pub nodes: BTreeMap<String, CsiInfo>,
    pub controllers_healthy: u64,
    pub controllers_expected: u64,
    pub nodes_healthy: u64,
    pub nodes_expected: u64,
    pub create_index: u64,
    pub modify_index: u64,
}
