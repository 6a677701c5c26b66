//! Nomad's defaults and sanity checks for a job, wherever it came from (a
//! parsed jobspec or JSON submitted to the API): `Job::canonicalize` fills
//! what was left out, `Job::validate` rejects what cannot run.

use std::collections::BTreeSet;

use super::{
    dispatch_payload, EphemeralDisk, Job, LogConfig, NetworkResource, ReschedulePolicy, Resources, RestartPolicy,
    Service, Task, UpdateStrategy, JOB_TYPE_BATCH, JOB_TYPE_SERVICE, JOB_TYPE_SYSBATCH, JOB_TYPE_SYSTEM,
};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

/// Access modes a CSI volume request may ask for.
const CSI_ACCESS_MODES: [&str; 5] = [
    "single-node-reader-only",
    "single-node-writer",
    "multi-node-reader-only",
    "multi-node-single-writer",
    "multi-node-multi-writer",
];
/// Access modes a (dynamic) host volume request may ask for.
const HOST_ACCESS_MODES: [&str; 4] =
    ["single-node-writer", "single-node-reader-only", "single-node-single-writer", "single-node-multi-writer"];
const ATTACHMENT_MODES: [&str; 2] = ["file-system", "block-device"];
pub(super) const CONSTRAINT_OPERANDS: [&str; 19] = [
    "=",
    "==",
    "is",
    "!=",
    "not",
    ">",
    ">=",
    "<",
    "<=",
    "distinct_hosts",
    "distinct_property",
    "regexp",
    "set_contains",
    "set_contains_all",
    "set_contains_any",
    "version",
    "semver",
    "is_set",
    "is_not_set",
];

impl RestartPolicy {
    /// Nomad's restart policy for a job type.
    pub fn default_for(job_type: &str) -> RestartPolicy {
        let batch = job_type == JOB_TYPE_BATCH || job_type == JOB_TYPE_SYSBATCH;
        RestartPolicy {
            attempts: if batch { 3 } else { 2 },
            interval: if batch { 24 * HOUR } else { 30 * MINUTE },
            delay: 15 * SECOND,
            mode: "fail".into(),
            render_templates: false,
        }
    }
}

impl ReschedulePolicy {
    /// Nomad's reschedule policy for a job type; system jobs never reschedule.
    pub fn default_for(job_type: &str) -> Option<ReschedulePolicy> {
        match job_type {
            JOB_TYPE_SERVICE => Some(ReschedulePolicy {
                attempts: 0,
                interval: 0,
                delay: 30 * SECOND,
                delay_function: "exponential".into(),
                max_delay: HOUR,
                unlimited: true,
            }),
            JOB_TYPE_BATCH => Some(ReschedulePolicy {
                attempts: 1,
                interval: 24 * HOUR,
                delay: 5 * SECOND,
                delay_function: "constant".into(),
                max_delay: 0,
                unlimited: false,
            }),
            _ => None,
        }
    }
}

impl UpdateStrategy {
    /// Nomad's update strategy defaults.
    pub fn nomad_default() -> UpdateStrategy {
        UpdateStrategy {
            stagger: 30 * SECOND,
            max_parallel: 1,
            health_check: "checks".into(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
            progress_deadline: 10 * MINUTE,
            auto_revert: false,
            auto_promote: false,
            canary: 0,
        }
    }

    /// Fills fields whose zero value cannot be meant literally.
    fn fill_defaults(&mut self) {
        let d = UpdateStrategy::nomad_default();
        if self.health_check.is_empty() {
            self.health_check = d.health_check;
        }
        for (field, default) in [
            (&mut self.stagger, d.stagger),
            (&mut self.min_healthy_time, d.min_healthy_time),
            (&mut self.healthy_deadline, d.healthy_deadline),
            (&mut self.progress_deadline, d.progress_deadline),
        ] {
            if *field == 0 {
                *field = default;
            }
        }
    }
}

/// One reason a job cannot run, with the group and task it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// The task group involved, if any.
    pub group: Option<String>,
    /// The task involved, if any (always inside `group`).
    pub task: Option<String>,
    /// The complete message, naming the group and task.
    pub message: String,
}

impl Job {
    /// Applies Nomad's defaults to everything the submitter left out.
    ///
    /// Group `Count` is left alone: a zero there may be meant (the jobspec
    /// parser defaults a missing `count` to 1 itself).
    pub fn canonicalize(&mut self) {
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
        default_str(&mut self.namespace, "default");
        default_str(&mut self.region, "global");
        default_str(&mut self.job_type, JOB_TYPE_SERVICE);
        default_str(&mut self.node_pool, "default");
        if let Some(p) = &mut self.periodic {
            default_str(&mut p.spec_type, "cron");
            default_str(&mut p.time_zone, "UTC");
            if p.spec.is_empty() {
                p.spec = p.specs.first().cloned().unwrap_or_default();
            }
        }
        if let Some(p) = &mut self.parameterized_job {
            default_str(&mut p.payload, dispatch_payload::OPTIONAL);
        }
        if self.priority == 0 {
            self.priority = 50;
        }
        if self.datacenters.is_empty() {
            self.datacenters = vec!["*".into()];
        }
        let service = self.job_type == JOB_TYPE_SERVICE;
        if service {
            self.update.get_or_insert_with(UpdateStrategy::nomad_default).fill_defaults();
        }
        self.affinities.iter_mut().for_each(super::Affinity::canonicalize);
        self.spreads.iter_mut().for_each(super::Spread::canonicalize);
        let job_type = self.job_type.clone();
        let job_name = self.name.clone();
        for tg in &mut self.task_groups {
            let restart = tg.restart_policy.get_or_insert_with(|| RestartPolicy::default_for(&job_type));
            default_str(&mut restart.mode, "fail");
            let restart = restart.clone();
            if tg.reschedule_policy.is_none() {
                tg.reschedule_policy = self.reschedule.clone().or_else(|| ReschedulePolicy::default_for(&job_type));
            }
            if service {
                tg.update.get_or_insert_with(|| self.update.clone().unwrap_or_default()).fill_defaults();
            }
            if tg.migrate.is_none() {
                tg.migrate = self.migrate.clone().or_else(|| service.then(super::MigrateStrategy::default));
            }
            if let Some(d) = &mut tg.disconnect {
                d.canonicalize();
            }
            let disk = tg.ephemeral_disk.get_or_insert_with(EphemeralDisk::default);
            if disk.size_mb == 0 {
                disk.size_mb = 300;
            }
            tg.networks.iter_mut().for_each(default_network);
            tg.affinities.iter_mut().for_each(super::Affinity::canonicalize);
            let count = tg.count;
            if let Some(scaling) = &mut tg.scaling {
                scaling.canonicalize(count);
            }
            tg.spreads.iter_mut().for_each(super::Spread::canonicalize);
            let group_prefix = format!("{job_name}-{}", tg.name);
            tg.services.iter_mut().for_each(|s| default_service(s, &group_prefix));
            for task in &mut tg.tasks {
                canonicalize_task(task, &restart, &group_prefix);
            }
        }
    }

    /// Every reason the job cannot run, as messages naming the group and task.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let issues = self.validation_issues();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues.into_iter().map(|i| i.message).collect())
        }
    }

    /// Like `validate`, but keeps which group and task each issue is about.
    pub fn validation_issues(&self) -> Vec<ValidationIssue> {
        let mut out = Vec::new();
        let job = |message: String| ValidationIssue { group: None, task: None, message };
        if self.id.is_empty() {
            out.push(job("missing job ID".into()));
        } else if self.id.contains(' ') {
            out.push(job(format!("job ID {:?} contains a space", self.id)));
        }
        if ![JOB_TYPE_SERVICE, JOB_TYPE_BATCH, JOB_TYPE_SYSTEM, JOB_TYPE_SYSBATCH].contains(&self.job_type.as_str()) {
            out.push(job(format!("invalid job type {:?}: must be service, batch, system or sysbatch", self.job_type)));
        }
        if !(1..=100).contains(&self.priority) {
            out.push(job(format!("job priority {} must be between 1 and 100", self.priority)));
        }
        if self.task_groups.is_empty() {
            out.push(job("job has no task groups".into()));
        }
        if self.reschedule.is_some() && self.is_system_like() {
            out.push(job(format!("reschedule is not allowed for {} jobs", self.job_type)));
        }
        check_constraints(&self.constraints, "job", &mut |m| out.push(job(m)));
        let preferences = self.affinities.iter().flat_map(|a| a.problems("job"));
        for m in preferences.chain(self.spreads.iter().flat_map(|s| s.problems("job"))).collect::<Vec<_>>() {
            out.push(job(m));
        }
        for m in self.template_problems() {
            out.push(job(m));
        }
        let mut names = BTreeSet::new();
        for tg in &self.task_groups {
            if !names.insert(tg.name.as_str()) {
                out.push(ValidationIssue {
                    group: Some(tg.name.clone()),
                    task: None,
                    message: format!("duplicate group {:?}", tg.name),
                });
            }
            self.validate_group(tg, &mut out);
        }
        out
    }

    /// What is wrong with the `periodic` and `parameterized` blocks.
    fn template_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.periodic.as_ref() {
            if !self.is_batch_like() {
                out.push(format!(
                    "periodic can only be used with \"batch\" or \"sysbatch\" jobs, not {:?}",
                    self.job_type
                ));
            }
            if p.spec_type != "cron" {
                out.push(format!("periodic: unknown spec type {:?} (only \"cron\")", p.spec_type));
            }
            if p.enabled {
                if let Err(e) = super::Schedule::parse(p) {
                    out.push(e.to_string());
                }
            }
        }
        if let Some(p) = &self.parameterized_job {
            if !self.is_batch_like() {
                out.push(format!(
                    "parameterized can only be used with \"batch\" or \"sysbatch\" jobs, not {:?}",
                    self.job_type
                ));
            }
            let kinds = [dispatch_payload::OPTIONAL, dispatch_payload::REQUIRED, dispatch_payload::FORBIDDEN];
            if !kinds.contains(&p.payload.as_str()) {
                out.push(format!(
                    "parameterized: unknown payload requirement {:?} (optional, required or forbidden)",
                    p.payload
                ));
            }
            let both: Vec<&String> = p.meta_required.iter().filter(|k| p.meta_optional.contains(k)).collect();
            if !both.is_empty() {
                out.push(format!("parameterized: meta keys {both:?} are both required and optional"));
            }
        }
        out
    }

    fn validate_group(&self, tg: &super::TaskGroup, out: &mut Vec<ValidationIssue>) {
        let prefix = format!("group {:?}", tg.name);
        let mut issue = |task: Option<&Task>, message: String| {
            let (task, message) = match task {
                Some(t) => (Some(t.name.clone()), format!("{prefix}: task {:?}: {message}", t.name)),
                None => (None, format!("{prefix}: {message}")),
            };
            out.push(ValidationIssue { group: Some(tg.name.clone()), task, message });
        };
        if tg.name.is_empty() {
            issue(None, "group has no name".into());
        }
        if let Some(scaling) = &tg.scaling {
            for m in scaling.problems() {
                issue(None, m);
            }
            if let Some(m) = scaling.count_problem(i64::from(tg.count)) {
                issue(None, format!("scaling policy invalid: {m}"));
            }
        }
        if tg.tasks.is_empty() {
            issue(None, "group has no tasks".into());
        }
        if let Some(migrate) = &tg.migrate {
            if self.job_type == JOB_TYPE_SERVICE {
                migrate.problems().into_iter().for_each(|m| issue(None, m));
            } else {
                issue(None, format!("job type {:?} does not allow a migrate block", self.job_type));
            }
        }
        if tg.reschedule_policy.is_some() && self.is_system_like() {
            issue(None, format!("reschedule is not allowed for {} jobs", self.job_type));
        }
        for m in tg.disconnect.iter().flat_map(|d| d.problems(&self.job_type)) {
            issue(None, m);
        }
        if let Some(max) = tg.max_run_duration {
            if max <= 0 {
                issue(None, "max_run_duration must be greater than zero".into());
            }
            if !self.is_batch_like() {
                issue(None, format!("job type {:?} does not allow max_run_duration", self.job_type));
            }
        }
        if let Some(mode) = tg.restart_policy.as_ref().map(|r| r.mode.as_str()).filter(|m| !is_restart_mode(m)) {
            issue(None, format!("restart mode {mode:?} must be \"fail\" or \"delay\""));
        }
        check_constraints(&tg.constraints, "group", &mut |m| issue(None, m));
        let preferences = tg.affinities.iter().flat_map(|a| a.problems("group"));
        for m in preferences.chain(tg.spreads.iter().flat_map(|s| s.problems("group"))).collect::<Vec<_>>() {
            issue(None, m);
        }
        if tg.networks.len() > 1 {
            issue(None, "only one network block is allowed per group".into());
        }
        for (alias, vol) in &tg.volumes {
            for m in volume_problems(vol) {
                issue(None, format!("volume {alias:?}: {m}"));
            }
        }
        let mut labels = BTreeSet::new();
        let networks =
            tg.networks.iter().chain(tg.tasks.iter().flat_map(|t| t.resources.iter().flat_map(|r| &r.networks)));
        for port in networks.flat_map(|n| n.reserved_ports.iter().chain(&n.dynamic_ports)) {
            if !labels.insert(port.label.as_str()) {
                issue(None, format!("duplicate port label {:?}", port.label));
            }
        }
        if !tg.tasks.is_empty() && tg.tasks.iter().all(|t| t.phase() != super::TaskPhase::Main) {
            issue(None, "group has no main task (every task has a lifecycle block)".into());
        }
        let all_tasks: BTreeSet<&str> = tg.tasks.iter().map(|t| t.name.as_str()).collect();
        for m in tg.services.iter().flat_map(|s| s.problems(true, &labels, &all_tasks)).collect::<Vec<_>>() {
            issue(None, m);
        }
        let mut task_names = BTreeSet::new();
        for task in &tg.tasks {
            if !task_names.insert(task.name.as_str()) {
                issue(Some(task), "duplicate task name".into());
            }
            for m in task_problems(task, tg, &labels) {
                issue(Some(task), m);
            }
        }
    }
}

fn default_str(field: &mut String, value: &str) {
    if field.is_empty() {
        *field = value.to_string();
    }
}

fn default_network(net: &mut NetworkResource) {
    default_str(&mut net.mode, "host");
}

fn default_service(service: &mut Service, name: &str) {
    default_str(&mut service.name, name);
    default_str(&mut service.provider, "nomad");
    default_str(&mut service.address_mode, super::address_mode::AUTO);
    default_str(&mut service.on_update, super::on_update::REQUIRE_HEALTHY);
    for check in &mut service.checks {
        if check.name.is_empty() {
            check.name = format!("service: {:?} check", service.name);
        }
        default_str(&mut check.address_mode, super::address_mode::HOST);
        default_str(&mut check.on_update, &service.on_update);
        if check.check_type == "http" {
            default_str(&mut check.protocol, "http");
            default_str(&mut check.method, "GET");
        }
    }
}

fn canonicalize_task(task: &mut Task, group_restart: &RestartPolicy, group_prefix: &str) {
    task.restart_policy.get_or_insert_with(|| group_restart.clone());
    task.affinities.iter_mut().for_each(super::Affinity::canonicalize);
    task.identity.iter_mut().chain(&mut task.identities).for_each(super::WorkloadIdentity::canonicalize);
    for a in &mut task.artifacts {
        default_str(&mut a.getter_mode, "any");
        default_str(&mut a.relative_dest, "local/");
    }
    let resources = task.resources.get_or_insert_with(Resources::default);
    if resources.cpu == 0 && resources.cores == 0 {
        resources.cpu = 100;
    }
    if resources.memory_mb == 0 {
        resources.memory_mb = 300;
    }
    resources.networks.iter_mut().for_each(default_network);
    task.kill_timeout.get_or_insert(5 * SECOND);
    task.templates.iter_mut().for_each(super::Template::canonicalize);
    if let Some(plugin) = &mut task.csi_plugin_config {
        default_str(&mut plugin.mount_dir, "/csi");
        default_str(&mut plugin.stage_publish_base_dir, "/local/csi");
        if plugin.health_timeout == 0 {
            plugin.health_timeout = 30 * SECOND;
        }
    }
    let name = format!("{group_prefix}-{}", task.name);
    task.services.iter_mut().for_each(|s| default_service(s, &name));
    let logs = task.log_config.get_or_insert_with(LogConfig::default);
    if logs.max_files == 0 {
        logs.max_files = 10;
    }
    if logs.max_file_size_mb == 0 {
        logs.max_file_size_mb = 10;
    }
}

fn is_restart_mode(mode: &str) -> bool {
    mode == "fail" || mode == "delay"
}

fn check_constraints(constraints: &[super::Constraint], level: &str, report: &mut dyn FnMut(String)) {
    for c in constraints {
        if !CONSTRAINT_OPERANDS.contains(&c.operand.as_str()) {
            report(format!("{level} constraint has unknown operator {:?}", c.operand));
        }
    }
}

fn volume_problems(vol: &super::VolumeRequest) -> Vec<String> {
    let mut out = Vec::new();
    let access = vol.access_mode.as_str();
    let attachment = vol.attachment_mode.as_str();
    match vol.volume_type.as_str() {
        "csi" => {
            if access.is_empty() {
                out.push("csi volumes need an access_mode".into());
            } else if !CSI_ACCESS_MODES.contains(&access) {
                out.push(format!("invalid access_mode {access:?} (expected one of {})", CSI_ACCESS_MODES.join(", ")));
            }
            if attachment.is_empty() {
                out.push("csi volumes need an attachment_mode".into());
            }
        }
        "host" => {
            if !access.is_empty() && !HOST_ACCESS_MODES.contains(&access) {
                out.push(format!("invalid access_mode {access:?} (expected one of {})", HOST_ACCESS_MODES.join(", ")));
            }
            if vol.per_alloc {
                out.push("per_alloc is only allowed for csi volumes".into());
            }
            if vol.sticky {
                out.push(
                    "sticky needs a dynamic host volume, which berth does not have (its host volumes are the \
                     clients' own, configured in their agent files); remove sticky, or use a csi volume"
                        .into(),
                );
            }
        }
        other => out.push(format!("invalid type {other:?}: must be \"host\" or \"csi\"")),
    }
    if vol.sticky && vol.per_alloc {
        out.push("volume cannot be per_alloc and sticky at the same time".into());
    }
    if !attachment.is_empty() && !ATTACHMENT_MODES.contains(&attachment) {
        out.push(format!("invalid attachment_mode {attachment:?}: must be \"file-system\" or \"block-device\""));
    }
    if vol.source.is_empty() {
        out.push("volume has no source".into());
    }
    out
}

fn task_problems(task: &Task, tg: &super::TaskGroup, port_labels: &BTreeSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if task.driver.is_empty() {
        out.push("task has no driver".into());
    }
    if let Some(mode) = task.restart_policy.as_ref().map(|r| r.mode.as_str()).filter(|m| !is_restart_mode(m)) {
        out.push(format!("restart mode {mode:?} must be \"fail\" or \"delay\""));
    }
    for a in &task.artifacts {
        out.extend(a.problems());
    }
    let own = BTreeSet::from([task.name.as_str()]);
    for s in &task.services {
        out.extend(s.problems(false, port_labels, &own));
        if !s.task_name.is_empty() {
            out.push(format!("service {:?}: task is only for group services", s.name));
        }
    }
    let mut identity_names = BTreeSet::new();
    for identity in task.identity.iter().chain(&task.identities) {
        if !identity_names.insert(identity.name.as_str()) {
            out.push(format!("duplicate identity {:?}", identity.name));
        }
        out.extend(identity.problems());
    }
    if task.identities.iter().any(super::WorkloadIdentity::is_default) {
        out.push("the default identity is the one without a name (or named \"default\"), given once".into());
    }
    if let Some(d) = &task.dispatch_payload {
        let path = std::path::Path::new(&d.file);
        if d.file.is_empty() || path.is_absolute() || path.components().any(|c| c == std::path::Component::ParentDir) {
            out.push(format!("dispatch_payload file {:?} must be a relative path inside local/", d.file));
        }
    }
    for mount in &task.volume_mounts {
        if !tg.volumes.contains_key(&mount.volume) {
            out.push(format!("volume_mount of undeclared volume {:?}", mount.volume));
        }
    }
    for device in task.resources.iter().flat_map(|r| &r.devices) {
        let level = format!("device {:?}", device.name);
        if device.name.is_empty() {
            out.push(
                "device name must be given as one of the following: type, vendor/type, or vendor/type/name".into(),
            );
        }
        for c in device.constraints.iter().filter(|c| c.operand.starts_with("distinct_")) {
            out.push(format!("{level} constraint: using unsupported operand {:?}", c.operand));
        }
        check_constraints(&device.constraints, &level, &mut |m| out.push(m));
        out.extend(device.affinities.iter().flat_map(|a| a.problems(&level)));
    }
    if let Some(r) = &task.resources {
        if r.memory_max_mb > 0 && r.memory_max_mb.unsigned_abs() < r.memory_mb {
            out.push(format!("memory_max ({} MB) must not be below memory ({} MB)", r.memory_max_mb, r.memory_mb));
        } else if r.memory_max_mb < super::MEMORY_NO_LIMIT {
            out.push(format!("memory_max {} must be -1 (no limit), 0 or a size in MB", r.memory_max_mb));
        }
    }
    if let Some(l) = &task.lifecycle {
        if !super::LIFECYCLE_HOOKS.contains(&l.hook.as_str()) {
            out.push(format!("lifecycle hook {:?} must be \"prestart\", \"poststart\" or \"poststop\"", l.hook));
        } else if l.sidecar && l.hook == "poststop" {
            out.push("lifecycle: a poststop task cannot be a sidecar".into());
        }
    }
    if let Some(plugin) = &task.csi_plugin_config {
        if plugin.id.is_empty() {
            out.push("csi_plugin needs an id".into());
        }
        if !["controller", "node", "monolith"].contains(&plugin.plugin_type.as_str()) {
            out.push(format!(
                "csi_plugin type {:?} must be \"controller\", \"node\" or \"monolith\"",
                plugin.plugin_type
            ));
        }
    }
    out.extend(task.templates.iter().flat_map(super::Template::problems));
    let ports = task.config.get("ports").and_then(|p| p.as_array()).into_iter().flatten();
    for label in ports.filter_map(|p| p.as_str()) {
        if !port_labels.contains(label) {
            out.push(format!("config ports: port {label:?} is not declared in the group network"));
        }
    }
    check_constraints(&task.constraints, "task", &mut |m| out.push(m));
    out.extend(task.affinities.iter().flat_map(|a| a.problems("task")));
    out
}

#[cfg(test)]
mod tests {
    use super::super::{CsiPluginConfig, Port, TaskGroup, Template, VolumeMount, VolumeRequest};
    use super::*;

    fn job(job_type: &str) -> Job {
        Job {
            id: "web".into(),
            job_type: job_type.into(),
            task_groups: vec![TaskGroup {
                name: "g".into(),
                count: 1,
                tasks: vec![Task { name: "t".into(), driver: "raw_exec".into(), ..Task::default() }],
                ..TaskGroup::default()
            }],
            ..Job::default()
        }
    }

    #[test]
    fn service_defaults() {
        let mut j = job("");
        j.canonicalize();
        assert_eq!((j.name.as_str(), j.namespace.as_str(), j.region.as_str()), ("web", "default", "global"));
        assert_eq!((j.job_type.as_str(), j.priority, j.node_pool.as_str()), ("service", 50, "default"));
        assert_eq!(j.datacenters, vec!["*".to_string()]);
        let tg = &j.task_groups[0];
        assert_eq!(tg.restart_policy, Some(RestartPolicy::default_for("service")));
        assert_eq!(tg.restart_policy.as_ref().map(|r| (r.attempts, r.interval)), Some((2, 30 * MINUTE)));
        assert_eq!(
            tg.reschedule_policy.as_ref().map(|r| (r.delay_function.as_str(), r.unlimited)),
            Some(("exponential", true))
        );
        assert_eq!(tg.update, Some(UpdateStrategy::nomad_default()));
        assert_eq!(tg.ephemeral_disk.as_ref().map(|d| d.size_mb), Some(300));
        let t = &tg.tasks[0];
        assert_eq!(t.restart_policy, tg.restart_policy);
        assert_eq!(t.resources.as_ref().map(|r| (r.cpu, r.memory_mb)), Some((100, 300)));
        assert_eq!(t.kill_timeout, Some(5 * SECOND));
        assert_eq!(t.log_config.as_ref().map(|l| (l.max_files, l.max_file_size_mb)), Some((10, 10)));
        assert_eq!(j.validate(), Ok(()));
    }

    #[test]
    fn batch_and_system_defaults() {
        let mut j = job("batch");
        j.canonicalize();
        let tg = &j.task_groups[0];
        assert_eq!(tg.restart_policy.as_ref().map(|r| (r.attempts, r.interval)), Some((3, 24 * HOUR)));
        assert_eq!(tg.reschedule_policy.as_ref().map(|r| (r.attempts, r.delay)), Some((1, 5 * SECOND)));
        assert_eq!(tg.update, None);
        let mut j = job("system");
        j.canonicalize();
        assert_eq!(j.task_groups[0].reschedule_policy, None);
        assert_eq!(j.validate(), Ok(()));
        j.task_groups[0].reschedule_policy = ReschedulePolicy::default_for("service");
        assert_eq!(j.validate(), Err(vec!["group \"g\": reschedule is not allowed for system jobs".to_string()]));
    }

    #[test]
    fn template_plugin_and_service_defaults() {
        let mut j = job("service");
        let t = &mut j.task_groups[0].tasks[0];
        t.templates.push(Template { embedded_tmpl: "x".into(), dest_path: "local/x".into(), ..Template::default() });
        t.csi_plugin_config =
            Some(CsiPluginConfig { id: "p".into(), plugin_type: "node".into(), ..Default::default() });
        t.services.push(Service::default());
        j.canonicalize();
        let t = &j.task_groups[0].tasks[0];
        let tmpl = &t.templates[0];
        assert_eq!(
            (tmpl.change_mode.as_str(), tmpl.perms.as_str(), tmpl.left_delim.as_str()),
            ("restart", "0644", "{{")
        );
        let p = t.csi_plugin_config.as_ref().expect("plugin");
        assert_eq!(
            (p.mount_dir.as_str(), p.stage_publish_base_dir.as_str(), p.health_timeout),
            ("/csi", "/local/csi", 30 * SECOND)
        );
        assert_eq!((t.services[0].name.as_str(), t.services[0].provider.as_str()), ("web-g-t", "nomad"));
    }

    #[test]
    fn validation_names_group_and_task() {
        let mut j = job("nonsense");
        j.id.clear();
        j.task_groups.push(TaskGroup { name: "g".into(), ..TaskGroup::default() });
        let tg = &mut j.task_groups[0];
        tg.volumes.insert(
            "data".into(),
            VolumeRequest {
                volume_type: "csi".into(),
                source: "d".into(),
                access_mode: "bogus".into(),
                ..Default::default()
            },
        );
        tg.networks.push(NetworkResource {
            dynamic_ports: vec![
                Port { label: "http".into(), ..Port::default() },
                Port { label: "http".into(), ..Port::default() },
            ],
            ..NetworkResource::default()
        });
        let t = &mut tg.tasks[0];
        t.driver.clear();
        t.volume_mounts.push(VolumeMount { volume: "logs".into(), ..VolumeMount::default() });
        t.config.insert("ports".into(), serde_json::json!(["http", "db"]));
        t.templates.push(Template::default());
        t.csi_plugin_config =
            Some(CsiPluginConfig { id: "p".into(), plugin_type: "sidecar".into(), ..Default::default() });
        t.restart_policy = Some(RestartPolicy { mode: "sometimes".into(), ..RestartPolicy::default() });
        let errors = j.validate().expect_err("invalid");
        for expected in [
            "missing job ID",
            "invalid job type \"nonsense\": must be service, batch, system or sysbatch",
            "duplicate group \"g\"",
            "group \"g\": group has no tasks",
            "group \"g\": volume \"data\": invalid access_mode \"bogus\"",
            "group \"g\": volume \"data\": csi volumes need an attachment_mode",
            "group \"g\": duplicate port label \"http\"",
            "group \"g\": task \"t\": task has no driver",
            "group \"g\": task \"t\": volume_mount of undeclared volume \"logs\"",
            "group \"g\": task \"t\": config ports: port \"db\" is not declared in the group network",
            "group \"g\": task \"t\": template has no destination",
            "group \"g\": task \"t\": template needs data or source",
            "group \"g\": task \"t\": csi_plugin type \"sidecar\"",
            "group \"g\": task \"t\": restart mode \"sometimes\"",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(expected)), "missing {expected:?} in {errors:#?}");
        }
    }
}
