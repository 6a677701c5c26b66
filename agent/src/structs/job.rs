//! The job model: `Job`, `TaskGroup`, `Task` and their blocks, shaped like
//! Nomad's API structs so that JSON from existing Nomad clients decodes as is
//! (PascalCase, acronyms upper case, durations in nanoseconds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Affinity, ScalingPolicy, Service, Spread, Template};

/// Nomad's warning for HCL1-era task-level networks.
pub const TASK_NETWORK_DEPRECATED: &str = "task network resources have been deprecated as of Nomad 0.12.0. \
     Please configure networking via group network block.";
/// Nomad's warning for `mbits`.
pub const MBITS_DEPRECATED: &str =
    "mbits has been deprecated as of Nomad 0.12.0. Please remove mbits from the network block";

/// Job types the scheduler knows.
pub const JOB_TYPE_SERVICE: &str = "service";
/// Run-to-completion jobs.
pub const JOB_TYPE_BATCH: &str = "batch";
/// One allocation per eligible node.
pub const JOB_TYPE_SYSTEM: &str = "system";
/// Run-to-completion on every eligible node.
pub const JOB_TYPE_SYSBATCH: &str = "sysbatch";

/// A job as registered with the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Job {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub region: String,
    #[serde(rename = "Type")]
    pub job_type: String,
    pub priority: i64,
    pub all_at_once: bool,
    pub datacenters: Vec<String>,
    pub node_pool: String,
    pub constraints: Vec<Constraint>,
    pub affinities: Vec<Affinity>,
    pub spreads: Vec<Spread>,
    pub task_groups: Vec<TaskGroup>,
    pub update: Option<UpdateStrategy>,
    /// The job-level `migrate` block; canonicalizing copies it into groups.
    pub migrate: Option<super::MigrateStrategy>,
    pub reschedule: Option<ReschedulePolicy>,
    pub meta: BTreeMap<String, String>,
    /// The `ui` block: a description (Markdown) and links for a Web UI.
    #[serde(rename = "UI")]
    pub ui: Option<JobUiConfig>,
    #[serde(rename = "ParentID")]
    pub parent_id: String,
    /// Launched on a schedule: the job is a template for its children.
    pub periodic: Option<PeriodicConfig>,
    /// Dispatched on request: the job is a template for its children.
    pub parameterized_job: Option<ParameterizedJobConfig>,
    /// A child made by `job dispatch`.
    pub dispatched: bool,
    /// The idempotency token of the dispatch that made this child.
    pub dispatch_idempotency_token: String,
    /// The dispatch payload of a dispatched child (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub stop: bool,
    pub status: String,
    pub status_description: String,
    pub stable: bool,
    pub version: u64,
    pub submit_time: i64,
    pub create_index: u64,
    pub modify_index: u64,
    pub job_modify_index: u64,
}

/// A job's `periodic` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeriodicConfig {
    pub enabled: bool,
    /// The first cron expression (`cron`, or the first of `crons`).
    pub spec: String,
    /// Every cron expression (`crons`).
    pub specs: Vec<String>,
    /// Always `cron`.
    pub spec_type: String,
    /// Skip a launch while a child of the previous one still runs.
    pub prohibit_overlap: bool,
    /// IANA time zone the expressions are read in (UTC when empty).
    pub time_zone: String,
}

impl PeriodicConfig {
    /// Every expression of the block.
    pub fn expressions(&self) -> Vec<&str> {
        if self.specs.is_empty() {
            vec![self.spec.as_str()]
        } else {
            self.specs.iter().map(String::as_str).collect()
        }
    }
}

/// A job's `parameterized` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ParameterizedJobConfig {
    /// `optional` (the default), `required` or `forbidden`.
    pub payload: String,
    pub meta_required: Vec<String>,
    pub meta_optional: Vec<String>,
}

/// The payload values of `ParameterizedJobConfig::payload`.
pub mod dispatch_payload {
    /// A payload may be given.
    pub const OPTIONAL: &str = "optional";
    /// A payload must be given.
    pub const REQUIRED: &str = "required";
    /// A payload may not be given.
    pub const FORBIDDEN: &str = "forbidden";
    /// Nomad's limit on a payload, in bytes.
    pub const MAX_SIZE: usize = 16 * 1024;
}

/// A task's `dispatch_payload` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DispatchPayloadConfig {
    /// Where the payload is written, relative to the task's `local/`.
    pub file: String,
}

/// `[]byte` fields as Go encodes them in JSON: base64, `null` when empty.
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Base64, or `null` for no bytes.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if bytes.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }

    /// Base64 or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(text) => {
                base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(serde::de::Error::custom)
            }
        }
    }
}

/// A group of tasks placed together on one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskGroup {
    pub name: String,
    pub count: u32,
    pub constraints: Vec<Constraint>,
    pub affinities: Vec<Affinity>,
    pub spreads: Vec<Spread>,
    pub tasks: Vec<Task>,
    pub restart_policy: Option<RestartPolicy>,
    pub reschedule_policy: Option<ReschedulePolicy>,
    pub update: Option<UpdateStrategy>,
    /// How a drain moves the group's allocations (service jobs).
    pub migrate: Option<super::MigrateStrategy>,
    pub networks: Vec<NetworkResource>,
    pub volumes: BTreeMap<String, VolumeRequest>,
    pub services: Vec<Service>,
    pub ephemeral_disk: Option<EphemeralDisk>,
    pub meta: BTreeMap<String, String>,
    /// Nanoseconds a stopping group waits before its tasks are signalled.
    pub shutdown_delay: Option<i64>,
    pub scaling: Option<ScalingPolicy>,
    /// What happens while the group's node is out of touch.
    pub disconnect: Option<super::DisconnectStrategy>,
    /// Nanoseconds a batch or sysbatch allocation may run, counted from its
    /// creation, before the client stops it (complete, not failed).
    pub max_run_duration: Option<i64>,
}

/// One unit of work run by a driver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Task {
    pub name: String,
    pub driver: String,
    pub user: String,
    /// Driver configuration; keys stay in the driver's own snake_case.
    pub config: BTreeMap<String, serde_json::Value>,
    pub env: BTreeMap<String, String>,
    pub services: Vec<Service>,
    pub constraints: Vec<Constraint>,
    pub affinities: Vec<Affinity>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    pub meta: BTreeMap<String, String>,
    /// Nanoseconds.
    pub kill_timeout: Option<i64>,
    pub kill_signal: String,
    /// Nanoseconds between the stop of the task and its kill signal.
    pub shutdown_delay: i64,
    pub templates: Vec<Template>,
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(rename = "CSIPluginConfig")]
    pub csi_plugin_config: Option<CsiPluginConfig>,
    pub log_config: Option<LogConfig>,
    pub leader: bool,
    /// When the task runs relative to the group's main tasks.
    pub lifecycle: Option<TaskLifecycle>,
    /// Where a dispatched job's payload is written.
    pub dispatch_payload: Option<DispatchPayloadConfig>,
    /// The task's default workload identity (an `identity` block without
    /// a name).
    pub identity: Option<super::WorkloadIdentity>,
    /// Its named identities.
    pub identities: Vec<super::WorkloadIdentity>,
    /// Files fetched into the task directory before it starts.
    pub artifacts: Vec<TaskArtifact>,
}

/// A task's `artifact` block (Nomad's `TaskArtifact`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskArtifact {
    /// The URL (`source`).
    pub getter_source: String,
    /// `options`: `checksum = "sha256:…"`, `archive = "false"`.
    pub getter_options: BTreeMap<String, String>,
    /// Request headers.
    pub getter_headers: BTreeMap<String, String>,
    /// `any` (the default), `file` or `dir`.
    pub getter_mode: String,
    /// Where it goes, relative to the task directory (`local/` by default).
    pub relative_dest: String,
    /// Hand the files to the task's user (accepted; files belong to the agent's user).
    pub chown: bool,
}

/// A task `lifecycle` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskLifecycle {
    /// `prestart`, `poststart` or `poststop`.
    pub hook: String,
    /// Runs for as long as the main tasks do (prestart and poststart).
    pub sidecar: bool,
}

/// Where a task sits in its group's order (Nomad's lifecycle hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    /// Before the main tasks: run to completion, or started first (sidecar).
    Prestart,
    /// A task without a lifecycle block.
    Main,
    /// Once every main task is running.
    Poststart,
    /// Once every other task has stopped.
    Poststop,
}

/// The lifecycle hook names.
pub const LIFECYCLE_HOOKS: [&str; 3] = ["prestart", "poststart", "poststop"];

impl Task {
    /// The task's phase (an unknown hook, refused by validation, is main).
    pub fn phase(&self) -> TaskPhase {
        match self.lifecycle.as_ref().map(|l| l.hook.as_str()) {
            Some("prestart") => TaskPhase::Prestart,
            Some("poststart") => TaskPhase::Poststart,
            Some("poststop") => TaskPhase::Poststop,
            _ => TaskPhase::Main,
        }
    }

    /// A prestart or poststart task that runs beside the main tasks.
    pub fn is_sidecar(&self) -> bool {
        self.phase() != TaskPhase::Main && self.lifecycle.as_ref().is_some_and(|l| l.sidecar)
    }

    /// A lifecycle task that runs once to completion: a clean exit ends
    /// it, whatever the job type.
    pub fn is_ephemeral(&self) -> bool {
        self.phase() != TaskPhase::Main && !self.is_sidecar()
    }
}

/// A task `logs` block: rotation of the captured stdout/stderr, or none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    pub max_files: u32,
    #[serde(rename = "MaxFileSizeMB")]
    pub max_file_size_mb: u64,
    /// No capture: stdout and stderr are dropped and the logs API has none.
    pub disabled: bool,
}

/// `constraint { attribute operator value }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct Constraint {
    pub l_target: String,
    pub r_target: String,
    pub operand: String,
}

/// `restart` block; durations in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub interval: i64,
    pub delay: i64,
    pub mode: String,
    pub render_templates: bool,
}

/// `reschedule` block; durations in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReschedulePolicy {
    pub attempts: u32,
    pub interval: i64,
    pub delay: i64,
    pub delay_function: String,
    pub max_delay: i64,
    pub unlimited: bool,
}

/// `update` block; durations in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateStrategy {
    pub stagger: i64,
    pub max_parallel: u32,
    pub health_check: String,
    pub min_healthy_time: i64,
    pub healthy_deadline: i64,
    pub progress_deadline: i64,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub canary: u32,
}

/// `ephemeral_disk` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EphemeralDisk {
    pub sticky: bool,
    #[serde(rename = "SizeMB")]
    pub size_mb: u64,
    pub migrate: bool,
}

/// Task resources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Resources {
    #[serde(rename = "CPU")]
    pub cpu: u64,
    pub cores: u64,
    #[serde(rename = "MemoryMB")]
    pub memory_mb: u64,
    /// `memory_max`: the hard limit when above `memory` (oversubscription);
    /// 0: `memory` is the limit; -1 ([`MEMORY_NO_LIMIT`]): no limit.
    #[serde(rename = "MemoryMaxMB")]
    pub memory_max_mb: i64,
    #[serde(rename = "DiskMB")]
    pub disk_mb: u64,
    /// Deprecated task-level networks (HCL1 era); merged into the group.
    pub networks: Vec<NetworkResource>,
    pub devices: Vec<RequestedDevice>,
}

/// `memory_max = -1`: the task's memory has no hard limit.
pub const MEMORY_NO_LIMIT: i64 = -1;

/// A job's `ui` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobUiConfig {
    pub description: String,
    pub links: Vec<JobUiLink>,
}

/// A `link` in a job's `ui` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobUiLink {
    pub label: String,
    #[serde(rename = "URL")]
    pub url: String,
}

/// A `device` block: devices of a kind the task needs on its node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestedDevice {
    /// `type`, `vendor/type` or `vendor/type/model` ("nvidia/gpu").
    pub name: String,
    pub count: u64,
    pub constraints: Vec<Constraint>,
    pub affinities: Vec<Affinity>,
}

impl Default for RequestedDevice {
    /// One device, as Nomad asks when `count` is left out.
    fn default() -> Self {
        RequestedDevice { name: String::new(), count: 1, constraints: Vec::new(), affinities: Vec::new() }
    }
}

/// A `network` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkResource {
    pub mode: String,
    pub device: String,
    #[serde(rename = "CIDR")]
    pub cidr: String,
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "MBits")]
    pub mbits: u64,
    #[serde(rename = "DNS")]
    pub dns: Option<DnsConfig>,
    pub hostname: String,
    pub reserved_ports: Vec<Port>,
    pub dynamic_ports: Vec<Port>,
    /// `cni { args }` for a `cni/<name>` network.
    #[serde(rename = "CNI")]
    pub cni: Option<CniConfig>,
}

/// `cni` inside a network block: `CNI_ARGS` for the plugins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CniConfig {
    pub args: BTreeMap<String, String>,
}

/// `dns` inside a network block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A port label with its static value (`Value`) and in-namespace port (`To`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct Port {
    pub label: String,
    pub value: u16,
    pub to: i32,
    pub host_network: String,
}

/// A group `volume` request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeRequest {
    pub name: String,
    #[serde(rename = "Type")]
    pub volume_type: String,
    pub source: String,
    pub read_only: bool,
    pub access_mode: String,
    pub attachment_mode: String,
    pub per_alloc: bool,
    pub mount_options: Option<CsiMountOptions>,
    /// Keep the allocation with its volume (dynamic host volumes in Nomad;
    /// a CSI volume follows its claims anyway).
    pub sticky: bool,
}

impl VolumeRequest {
    /// The volume ID for allocation `index`: `source[index]` with `per_alloc`.
    pub fn volume_id(&self, index: u32) -> String {
        if self.per_alloc {
            format!("{}[{index}]", self.source)
        } else {
            self.source.clone()
        }
    }

    /// True when the request writes: not read-only and not a reader mode.
    pub fn writes(&self) -> bool {
        !self.read_only && !self.access_mode.ends_with("reader-only")
    }
}

/// `mount_options { fs_type mount_flags }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiMountOptions {
    #[serde(rename = "FSType")]
    pub fs_type: String,
    pub mount_flags: Vec<String>,
}

/// A task `volume_mount`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeMount {
    pub volume: String,
    pub destination: String,
    pub read_only: bool,
    pub propagation_mode: String,
}

/// A task `csi_plugin` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CsiPluginConfig {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub plugin_type: String,
    pub mount_dir: String,
    pub stage_publish_base_dir: String,
    /// Nanoseconds.
    pub health_timeout: i64,
}

/// What a job with `provider = "consul"` services is told.
pub const CONSUL_PROVIDER_NOTE: &str = "services with provider \"consul\" are registered in berth's own service \
     registry (as provider \"nomad\"): berth has no Consul";

impl Job {
    /// A periodic job that launches children (not one of them).
    pub fn is_periodic(&self) -> bool {
        self.periodic.is_some()
    }

    /// A parameterized job that is dispatched (not a dispatched child).
    pub fn is_parameterized(&self) -> bool {
        self.parameterized_job.is_some() && !self.dispatched
    }

    /// A template for children, never scheduled itself.
    pub fn is_template(&self) -> bool {
        self.is_periodic() || self.is_parameterized()
    }

    /// True for job types whose allocations run to completion.
    pub fn is_batch_like(&self) -> bool {
        self.job_type == JOB_TYPE_BATCH || self.job_type == JOB_TYPE_SYSBATCH
    }

    /// True for job types placed once per eligible node.
    pub fn is_system_like(&self) -> bool {
        self.job_type == JOB_TYPE_SYSTEM || self.job_type == JOB_TYPE_SYSBATCH
    }

    /// Deprecation warnings for HCL1-era forms, with Nomad's texts, once each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |w: &str| {
            if !out.iter().any(|x| x == w) {
                out.push(w.to_string());
            }
        };
        for tg in &self.task_groups {
            for task in &tg.tasks {
                if task.templates.iter().any(|t| t.vault_grace != 0) {
                    add(super::VAULT_GRACE_DEPRECATED);
                }
                let networks = task.resources.iter().flat_map(|r| &r.networks);
                if networks.clone().next().is_some() {
                    add(TASK_NETWORK_DEPRECATED);
                }
                if networks.clone().any(|n| n.mbits > 0) {
                    add(MBITS_DEPRECATED);
                }
            }
            if tg.networks.iter().any(|n| n.mbits > 0) {
                add(MBITS_DEPRECATED);
            }
            let mut services = tg.services.iter().chain(tg.tasks.iter().flat_map(|t| &t.services));
            if services.any(|s| s.provider == "consul") {
                add(CONSUL_PROVIDER_NOTE);
            }
        }
        out
    }

    /// Looks up a task group by name.
    pub fn task_group(&self, name: &str) -> Option<&TaskGroup> {
        self.task_groups.iter().find(|tg| tg.name == name)
    }
}

impl TaskGroup {
    /// Nanoseconds its allocations stay `unknown` on a node out of touch
    /// before they are lost (0: lost at once).
    pub fn lost_after(&self) -> i64 {
        self.disconnect.as_ref().map_or(0, |d| d.lost_after)
    }

    /// Whether its allocations are replaced while they are `unknown`.
    pub fn replaces_unknown(&self) -> bool {
        self.disconnect.as_ref().is_none_or(|d| d.replaces())
    }

    /// The group's network: the group-level block, or, for HCL1-era jobs,
    /// the networks declared inside task resources merged into one.
    pub fn effective_network(&self) -> Option<NetworkResource> {
        if let Some(n) = self.networks.first() {
            return Some(n.clone());
        }
        let mut merged: Option<NetworkResource> = None;
        for task in &self.tasks {
            for n in task.resources.iter().flat_map(|r| r.networks.iter()) {
                let m = merged.get_or_insert_with(|| NetworkResource { mode: "host".into(), ..Default::default() });
                m.mbits += n.mbits;
                m.reserved_ports.extend(n.reserved_ports.iter().cloned());
                m.dynamic_ports.extend(n.dynamic_ports.iter().cloned());
            }
        }
        merged
    }

    /// The group's CSI volume requests for allocation `index`, with the
    /// volume ID `per_alloc` makes of the source (`source[index]`).
    pub fn csi_requests(&self, index: u32) -> Vec<(String, &VolumeRequest)> {
        self.volumes.values().filter(|v| v.volume_type == "csi").map(|v| (v.volume_id(index), v)).collect()
    }

    /// The group's `ephemeral_disk` size in MB (0 when it has none).
    pub fn ephemeral_disk_mb(&self) -> u64 {
        self.ephemeral_disk.as_ref().map(|d| d.size_mb).unwrap_or(0)
    }

    /// Total CPU (MHz) and memory (MB) asked for by the group's tasks.
    pub fn resource_ask(&self) -> (u64, u64) {
        self.tasks.iter().filter_map(|t| t.resources.as_ref()).fold((0, 0), |(c, m), r| (c + r.cpu, m + r.memory_mb))
    }
}
