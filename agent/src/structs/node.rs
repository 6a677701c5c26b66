//! Client nodes as the server knows them: fingerprinted attributes,
//! resources, drivers and host volumes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Node status values.
pub mod node_status {
    /// Registered, not yet heartbeating.
    pub const INITIALIZING: &str = "initializing";
    /// Heartbeating and schedulable.
    pub const READY: &str = "ready";
    /// Missed its heartbeat deadline.
    pub const DOWN: &str = "down";
    /// Missed its heartbeat deadline while running allocations whose
    /// `disconnect.lost_after` keeps them for a while; down after that.
    pub const DISCONNECTED: &str = "disconnected";
}

/// A client node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    /// Shared between the client and servers only; never shown by the API.
    #[serde(rename = "SecretID", skip_serializing_if = "String::is_empty")]
    pub secret_id: String,
    pub datacenter: String,
    pub name: String,
    #[serde(rename = "HTTPAddr")]
    pub http_addr: String,
    pub attributes: BTreeMap<String, String>,
    pub node_resources: NodeResources,
    pub meta: BTreeMap<String, String>,
    pub node_class: String,
    pub node_pool: String,
    pub drivers: BTreeMap<String, DriverInfo>,
    pub host_volumes: BTreeMap<String, ClientHostVolume>,
    /// CSI controller plugins running on the node, by plugin ID.
    #[serde(rename = "CSIControllerPlugins")]
    pub csi_controller_plugins: BTreeMap<String, super::CsiInfo>,
    /// CSI node plugins running on the node, by plugin ID.
    #[serde(rename = "CSINodePlugins")]
    pub csi_node_plugins: BTreeMap<String, super::CsiInfo>,
    pub status: String,
    pub status_description: String,
    pub status_updated_at: i64,
    pub scheduling_eligibility: String,
    /// True while `drain_strategy` is set.
    pub drain: bool,
    pub drain_strategy: Option<super::DrainStrategy>,
    pub last_drain: Option<super::DrainMetadata>,
    pub events: Vec<NodeEvent>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// What a node offers to the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeResources {
    pub cpu: NodeCpu,
    pub memory: NodeMemory,
    pub disk: NodeDisk,
    pub min_dynamic_port: u16,
    pub max_dynamic_port: u16,
}

/// Total CPU compute in MHz.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeCpu {
    pub cpu_shares: u64,
    pub total_core_count: u64,
}

/// Total memory in MB.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeMemory {
    #[serde(rename = "MemoryMB")]
    pub memory_mb: u64,
}

/// Disk available for allocations, in MB.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDisk {
    #[serde(rename = "DiskMB")]
    pub disk_mb: u64,
}

/// A task driver's fingerprint on a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverInfo {
    pub attributes: BTreeMap<String, String>,
    pub detected: bool,
    pub healthy: bool,
    pub health_description: String,
    /// RFC 3339.
    pub update_time: String,
}

/// A host volume declared in the client config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ClientHostVolume {
    pub name: String,
    pub path: String,
    pub read_only: bool,
}

/// Something that happened to a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeEvent {
    pub message: String,
    pub subsystem: String,
    /// RFC 3339.
    pub timestamp: String,
    pub create_index: u64,
}

/// True for attribute and meta keys whose values are unique to each node
/// (`unique.network.ip-address`), which the computed class leaves out.
pub fn is_unique_key(key: &str) -> bool {
    key.starts_with("unique.")
}

impl Node {
    /// Resolves `${attr.x}`, `${node.x}`, `${meta.x}` against this node
    /// (constraints, task environment); literal text is returned as is.
    /// `None` when the referenced value is not set.
    pub fn resolve<'a>(&'a self, target: &'a str) -> Option<&'a str> {
        let Some(inner) = target.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
            return Some(target);
        };
        if let Some(attr) = inner.strip_prefix("attr.") {
            return self.attributes.get(attr).map(String::as_str);
        }
        if let Some(key) = inner.strip_prefix("meta.") {
            return self.meta.get(key).map(String::as_str);
        }
        match inner {
            "node.unique.id" => Some(&self.id),
            "node.unique.name" => Some(&self.name),
            "node.datacenter" => Some(&self.datacenter),
            "node.class" => Some(&self.node_class),
            "node.pool" => Some(&self.node_pool),
            _ => None,
        }
    }

    /// True when it missed its heartbeat deadline (down or disconnected).
    pub fn out_of_touch(&self) -> bool {
        self.status == node_status::DOWN || self.status == node_status::DISCONNECTED
    }

    /// True when the scheduler may place new allocations here.
    pub fn is_schedulable(&self) -> bool {
        self.status == node_status::READY && self.scheduling_eligibility != "ineligible" && !self.drain
    }

    /// The node's computed class, the scheduler's feasibility cache key: a
    /// hash of everything the scheduler's `check_node` reads from a node
    /// except values unique to it (ID, name, `unique.` attributes and meta).
    /// Two nodes of one class pass or fail `check_node` alike for any group
    /// that does not `escapes_class`. Keep in step with `check_node`.
    pub fn computed_class(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.datacenter.hash(&mut h);
        self.node_class.hash(&mut h);
        self.node_pool.hash(&mut h);
        self.is_schedulable().hash(&mut h);
        for map in [&self.attributes, &self.meta] {
            let shared: Vec<_> = map.iter().filter(|(k, _)| !is_unique_key(k)).collect();
            shared.hash(&mut h);
        }
        self.drivers.len().hash(&mut h);
        for (name, d) in &self.drivers {
            (name, d.detected && d.healthy).hash(&mut h);
        }
        self.host_volumes.len().hash(&mut h);
        for (name, v) in &self.host_volumes {
            (name, v.read_only).hash(&mut h);
        }
        h.finish()
    }

    /// A copy without the secret, for API output.
    pub fn redacted(&self) -> Node {
        Node { secret_id: String::new(), ..self.clone() }
    }
}
