//! Services: a job's `service` and `check` blocks, what a client registers
//! for them in the servers' registry (Nomad's `ServiceRegistration`) and
//! what its checks report (Nomad's `CheckQueryResult`), with the rules a
//! job's services must follow.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A check's status, as Nomad's native checks name them, plus `warning`
/// (after `failures_before_warning`, as Consul has it).
pub mod check_status {
    /// The last results passed (`success_before_passing` of them).
    pub const SUCCESS: &str = "success";
    /// Failing (`failures_before_critical` results in a row).
    pub const FAILURE: &str = "failure";
    /// Failing, but fewer times than makes it critical.
    pub const WARNING: &str = "warning";
    /// No result yet (the `initial_status` unless one is given).
    pub const PENDING: &str = "pending";
}

/// What a check's result decides (Nomad's `CheckMode`).
pub mod check_mode {
    /// Its failures make the allocation unhealthy.
    pub const HEALTHINESS: &str = "healthiness";
    /// `on_update = "ignore"`: reported only.
    pub const READINESS: &str = "readiness";
}

/// Values of `on_update`.
pub mod on_update {
    /// A deployment waits for the check to pass (the default).
    pub const REQUIRE_HEALTHY: &str = "require_healthy";
    /// A warning counts as passing for deployments.
    pub const IGNORE_WARNINGS: &str = "ignore_warnings";
    /// Deployments do not look at it.
    pub const IGNORE: &str = "ignore";
}

/// Values of `address_mode`.
pub mod address_mode {
    /// The host's address unless the task only has its driver's.
    pub const AUTO: &str = "auto";
    /// The node's address and the host port.
    pub const HOST: &str = "host";
    /// The allocation's own (bridge) address and the port inside it.
    pub const ALLOC: &str = "alloc";
    /// The address the driver gave the task (a container's).
    pub const DRIVER: &str = "driver";
}

/// A `service` block (group or task level).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Service {
    pub name: String,
    /// Group services only: the task whose state the service follows.
    pub task_name: String,
    pub port_label: String,
    pub address_mode: String,
    /// An address to advertise instead of a detected one.
    pub address: String,
    pub tags: Vec<String>,
    /// Tags of a canary allocation, instead of `tags`.
    pub canary_tags: Vec<String>,
    pub checks: Vec<ServiceCheck>,
    pub meta: BTreeMap<String, String>,
    pub canary_meta: BTreeMap<String, String>,
    pub on_update: String,
    pub provider: String,
}

/// A `check` inside a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceCheck {
    pub name: String,
    #[serde(rename = "Type")]
    pub check_type: String,
    /// Script checks: what runs inside the task.
    pub command: String,
    pub args: Vec<String>,
    pub path: String,
    pub protocol: String,
    pub port_label: String,
    pub address_mode: String,
    /// Nanoseconds.
    pub interval: i64,
    /// Nanoseconds.
    pub timeout: i64,
    pub initial_status: String,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub check_restart: Option<CheckRestart>,
    #[serde(rename = "GRPCService")]
    pub grpc_service: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// Group services: the task a script check runs in.
    pub task_name: String,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub failures_before_warning: u32,
    pub on_update: String,
}

/// A `check_restart` block: restart the task after failing checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckRestart {
    /// Consecutive failures that restart the task; 0 never does.
    pub limit: u32,
    /// Nanoseconds after the task starts before failures count.
    pub grace: i64,
    /// A warning is not a failure.
    pub ignore_warnings: bool,
}

/// One instance of a service in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    pub service_name: String,
    pub namespace: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub datacenter: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub create_index: u64,
    pub modify_index: u64,
    /// Berth's addition: the latest results of the instance's checks
    /// (Nomad clients ignore the field).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckQueryResult>,
}

impl ServiceRegistration {
    /// Nomad's registration ID: the allocation, the task (`group-<name>`
    /// for a group service), the service name and its port label.
    pub fn id_for(alloc_id: &str, owner: &str, service: &Service) -> String {
        format!("_nomad-task-{alloc_id}-{owner}-{}-{}", service.name, service.port_label)
    }

    /// True when the registration says the same as `other`, indexes aside.
    pub fn same_as(&self, other: &ServiceRegistration) -> bool {
        let strip = |r: &ServiceRegistration| ServiceRegistration { create_index: 0, modify_index: 0, ..r.clone() };
        strip(self) == strip(other)
    }

    /// True when every check of the instance passes (none counts too).
    pub fn passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == check_status::SUCCESS)
    }
}

/// The latest result of one check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckQueryResult {
    #[serde(rename = "ID")]
    pub id: String,
    pub mode: String,
    pub status: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub status_code: u16,
    pub output: String,
    /// Unix seconds of the result.
    pub timestamp: i64,
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub task: String,
    pub service: String,
    pub check: String,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// Check types berth runs.
const CHECK_TYPES: [&str; 2] = ["tcp", "http"];

/// Check types Nomad knows that berth does not run yet, and why.
const CHECK_TYPES_LACKING: [(&str, &str); 2] =
    [("script", "commands run inside a running task (task exec)"), ("grpc", "a gRPC health client")];

/// Nomad's shortest check interval and timeout.
const MIN_CHECK_DURATION: i64 = 1_000_000_000;

impl ServiceCheck {
    /// The status before the first result: `initial_status` (Consul's
    /// words) in Nomad's, else pending.
    pub fn initial(&self) -> &'static str {
        match self.initial_status.as_str() {
            "passing" => check_status::SUCCESS,
            "warning" => check_status::WARNING,
            "critical" => check_status::FAILURE,
            _ => check_status::PENDING,
        }
    }

    /// What `on_update` makes of the check's result.
    pub fn mode(&self) -> &'static str {
        if self.on_update == on_update::IGNORE {
            check_mode::READINESS
        } else {
            check_mode::HEALTHINESS
        }
    }

    /// What is wrong with the check, for a service named `service` at
    /// group level (`in_group`) of a group with these tasks.
    fn problems(&self, service: &str, in_group: bool, tasks: &BTreeSet<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let what = format!("service {service:?}: check {:?}", self.name);
        if let Some((_, needs)) = CHECK_TYPES_LACKING.iter().find(|(t, _)| *t == self.check_type) {
            out.push(format!("{what}: {} checks need {needs}, which berth does not have yet", self.check_type));
        } else if !CHECK_TYPES.contains(&self.check_type.as_str()) {
            out.push(format!("{what}: type {:?} must be tcp or http", self.check_type));
        }
        if self.interval < MIN_CHECK_DURATION {
            out.push(format!("{what}: interval must be at least 1s"));
        }
        if self.timeout < MIN_CHECK_DURATION {
            out.push(format!("{what}: timeout must be at least 1s"));
        }
        if self.check_type == "http" && self.path.is_empty() {
            out.push(format!("{what}: http checks need a path"));
        }
        if self.check_type == "script" {
            if self.command.is_empty() {
                out.push(format!("{what}: script checks need a command"));
            }
            if in_group && self.task_name.is_empty() {
                out.push(format!("{what}: a script check of a group service must name its task"));
            }
        }
        if !self.task_name.is_empty() && !tasks.contains(self.task_name.as_str()) {
            out.push(format!("{what}: task {:?} is not in the group", self.task_name));
        }
        if !["", "http", "https"].contains(&self.protocol.as_str()) {
            out.push(format!("{what}: protocol {:?} must be http or https", self.protocol));
        }
        if !["", "passing", "warning", "critical"].contains(&self.initial_status.as_str()) {
            out.push(format!("{what}: initial_status {:?} must be passing, warning or critical", self.initial_status));
        }
        if self.failures_before_warning > 0
            && self.failures_before_critical > 0
            && self.failures_before_warning >= self.failures_before_critical
        {
            out.push(format!("{what}: failures_before_warning must be less than failures_before_critical"));
        }
        if let Some(r) = &self.check_restart {
            if r.grace < 0 {
                out.push(format!("{what}: check_restart grace must not be negative"));
            }
        }
        out.extend(on_update_problem(&self.on_update).map(|m| format!("{what}: {m}")));
        out.extend(address_mode_problem(&self.address_mode).map(|m| format!("{what}: {m}")));
        out
    }
}

fn on_update_problem(value: &str) -> Option<String> {
    let known = ["", on_update::REQUIRE_HEALTHY, on_update::IGNORE_WARNINGS, on_update::IGNORE];
    (!known.contains(&value)).then(|| format!("on_update {value:?} must be require_healthy, ignore_warnings or ignore"))
}

fn address_mode_problem(value: &str) -> Option<String> {
    match value {
        "" | address_mode::AUTO | address_mode::HOST | address_mode::ALLOC | address_mode::DRIVER => None,
        "alloc_ipv6" => Some("address_mode \"alloc_ipv6\": berth gives allocations no IPv6 address".into()),
        other => Some(format!("address_mode {other:?} must be auto, host, alloc or driver")),
    }
}

impl Service {
    /// What is wrong with the service: `in_group` for a group service,
    /// `ports` the group's port labels, `tasks` its task names.
    pub fn problems(&self, in_group: bool, ports: &BTreeSet<&str>, tasks: &BTreeSet<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let what = format!("service {:?}", self.name);
        if self.name.is_empty() || self.name.contains(char::is_whitespace) {
            out.push(format!("{what}: a service name must not be empty or contain spaces"));
        }
        if !["nomad", "consul"].contains(&self.provider.as_str()) {
            out.push(format!("{what}: provider {:?} must be nomad or consul", self.provider));
        }
        out.extend(address_mode_problem(&self.address_mode).map(|m| format!("{what}: {m}")));
        out.extend(on_update_problem(&self.on_update).map(|m| format!("{what}: {m}")));
        if !self.address.is_empty() && !["", address_mode::AUTO].contains(&self.address_mode.as_str()) {
            out.push(format!("{what}: an address needs address_mode \"auto\""));
        }
        if !self.port_label.is_empty()
            && self.port_label.parse::<u16>().is_err()
            && !ports.contains(self.port_label.as_str())
        {
            out.push(format!("{what}: port {:?} is not a port label of the group", self.port_label));
        }
        if !self.task_name.is_empty() && !tasks.contains(self.task_name.as_str()) {
            out.push(format!("{what}: task {:?} is not in the group", self.task_name));
        }
        let mut names = BTreeSet::new();
        for c in &self.checks {
            if !names.insert(c.name.as_str()) {
                out.push(format!("{what}: duplicate check {:?}", c.name));
            }
            if !c.port_label.is_empty()
                && c.port_label.parse::<u16>().is_err()
                && !ports.contains(c.port_label.as_str())
            {
                out.push(format!(
                    "{what}: check {:?}: port {:?} is not a port label of the group",
                    c.name, c.port_label
                ));
            }
            if c.port_label.is_empty()
                && self.port_label.is_empty()
                && ["tcp", "http", "grpc"].contains(&c.check_type.as_str())
            {
                out.push(format!("{what}: check {:?}: a {} check needs a port", c.name, c.check_type));
            }
            out.extend(c.problems(&self.name, in_group, tasks));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: &str) -> ServiceCheck {
        ServiceCheck {
            name: "c".into(),
            check_type: kind.into(),
            interval: MIN_CHECK_DURATION,
            timeout: MIN_CHECK_DURATION,
            ..Default::default()
        }
    }

    fn service(checks: Vec<ServiceCheck>) -> Service {
        Service {
            name: "web".into(),
            provider: "nomad".into(),
            port_label: "http".into(),
            checks,
            ..Default::default()
        }
    }

    #[test]
    fn services_and_checks_follow_nomads_rules() {
        let ports = BTreeSet::from(["http"]);
        let tasks = BTreeSet::from(["app"]);
        assert!(service(vec![check("tcp")]).problems(false, &ports, &tasks).is_empty());
        let mut http = check("http");
        let problems = service(vec![http.clone()]).problems(false, &ports, &tasks);
        assert_eq!(problems, ["service \"web\": check \"c\": http checks need a path"]);
        http.path = "/health".into();
        http.interval = 500_000_000;
        assert!(service(vec![http]).problems(false, &ports, &tasks)[0].contains("interval must be at least 1s"));
        let mut script = check("script");
        script.command = "/bin/true".into();
        let problems = service(vec![script.clone()]).problems(true, &ports, &tasks);
        assert!(problems.iter().any(|p| p.contains("must name its task")), "{problems:?}");
        assert!(problems[0].contains("script checks need commands run inside a running task"), "{problems:?}");
        let mut bad = service(vec![]);
        bad.port_label = "db".into();
        bad.address_mode = "alloc_ipv6".into();
        let problems = bad.problems(false, &ports, &tasks);
        assert!(problems.iter().any(|p| p.contains("\"db\" is not a port label")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("no IPv6")), "{problems:?}");
    }

    #[test]
    fn registration_ids_follow_nomads_format() {
        let s = Service { name: "redis".into(), port_label: "db".into(), ..Default::default() };
        assert_eq!(ServiceRegistration::id_for("a1", "redis", &s), "_nomad-task-a1-redis-redis-db");
        assert_eq!(ServiceRegistration::id_for("a1", "group-cache", &s), "_nomad-task-a1-group-cache-redis-db");
    }
}
