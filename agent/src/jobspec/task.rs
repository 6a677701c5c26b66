//! The `task` block: driver and its free-form `config`, resources,
//! templates, volume mounts, the CSI plugin role, services, lifecycle and
//! logs.

use super::network;
use super::policy::RestartPatch;
use super::service::decode_service;
use crate::hclspan::{Block, HclError};
use crate::structs::{
    ChangeScript, CsiPluginConfig, DispatchPayloadConfig, LogConfig, RequestedDevice, Resources, RestartPolicy, Task,
    TaskArtifact, TaskLifecycle, Template, VolumeMount, WaitConfig, WorkloadIdentity,
};

/// Decodes a `task "name" { ... }` block; `group_restart` is the group's
/// restart policy, which a task `restart` block overrides field by field.
pub(super) fn decode(mut block: Block<'_>, group_restart: &RestartPolicy) -> Result<Task, HclError> {
    let name = block.label()?;
    let b = &mut block.body;
    super::refuse_what_berth_lacks(b)?;
    let mut task = Task {
        name,
        driver: b.string("driver")?.unwrap_or_default(),
        user: b.string("user")?.unwrap_or_default(),
        env: b.string_map("env")?.unwrap_or_default(),
        meta: b.string_map("meta")?.unwrap_or_default(),
        kill_timeout: b.duration("kill_timeout")?,
        kill_signal: b.string("kill_signal")?.unwrap_or_default(),
        shutdown_delay: b.duration("shutdown_delay")?.unwrap_or(0),
        leader: b.bool("leader")?.unwrap_or(false),
        ..Task::default()
    };
    if let Some(mut config) = b.block("config")? {
        config.no_labels()?;
        task.config = config.body.free_form()?;
    }
    if let Some(restart) = b.block("restart")? {
        task.restart_policy = Some(RestartPatch::decode(restart)?.apply(group_restart));
    }
    if let Some(resources) = b.block("resources")? {
        task.resources = Some(decode_resources(resources)?);
    }
    super::placement::decode(b, &mut task.constraints, &mut task.affinities, None)?;
    for s in b.blocks("service") {
        task.services.push(decode_service(s)?);
    }
    for t in b.blocks("template") {
        task.templates.push(decode_template(t)?);
    }
    for mut m in b.blocks("volume_mount") {
        m.no_labels()?;
        task.volume_mounts.push(VolumeMount {
            volume: m.body.string("volume")?.unwrap_or_default(),
            destination: m.body.string("destination")?.unwrap_or_default(),
            read_only: m.body.bool("read_only")?.unwrap_or(false),
            propagation_mode: m.body.string("propagation_mode")?.unwrap_or_default(),
        });
        m.body.finish()?;
    }
    if let Some(mut p) = b.block("csi_plugin")? {
        p.no_labels()?;
        task.csi_plugin_config = Some(CsiPluginConfig {
            id: p.body.string("id")?.unwrap_or_default(),
            plugin_type: p.body.string("type")?.unwrap_or_default(),
            mount_dir: p.body.string("mount_dir")?.unwrap_or_default(),
            stage_publish_base_dir: p.body.string("stage_publish_base_dir")?.unwrap_or_default(),
            health_timeout: p.body.duration("health_timeout")?.unwrap_or(0),
        });
        p.body.finish()?;
    }
    if let Some(mut l) = b.block("lifecycle")? {
        l.no_labels()?;
        task.lifecycle = Some(TaskLifecycle {
            hook: l.body.string("hook")?.unwrap_or_default(),
            sidecar: l.body.bool("sidecar")?.unwrap_or(false),
        });
        l.body.finish()?;
    }
    for mut a in b.blocks("artifact") {
        a.no_labels()?;
        let body = &mut a.body;
        let artifact = TaskArtifact {
            getter_source: body.string("source")?.unwrap_or_default(),
            getter_mode: body.string("mode")?.unwrap_or_else(|| "any".into()),
            relative_dest: body.string("destination")?.unwrap_or_else(|| "local/".into()),
            chown: body.bool("chown")?.unwrap_or(false),
            getter_options: body.string_map("options")?.unwrap_or_default(),
            getter_headers: body.string_map("headers")?.unwrap_or_default(),
        };
        a.body.finish()?;
        task.artifacts.push(artifact);
    }
    if let Some(mut d) = b.block("dispatch_payload")? {
        d.no_labels()?;
        task.dispatch_payload = Some(DispatchPayloadConfig { file: d.body.string("file")?.unwrap_or_default() });
        d.body.finish()?;
    }
    for mut i in b.blocks("identity") {
        i.no_labels()?;
        let body = &mut i.body;
        let identity = WorkloadIdentity {
            name: body.string("name")?.unwrap_or_default(),
            audience: body.strings("aud")?.unwrap_or_default(),
            env: body.bool("env")?.unwrap_or(false),
            file: body.bool("file")?.unwrap_or(false),
            filepath: body.string("filepath")?.unwrap_or_default(),
            change_mode: body.string("change_mode")?.unwrap_or_default(),
            change_signal: body.string("change_signal")?.unwrap_or_default(),
            ttl: body.duration("ttl")?.unwrap_or(0),
        };
        i.body.finish()?;
        if identity.is_default() && task.identity.is_none() {
            task.identity = Some(identity);
        } else {
            task.identities.push(identity);
        }
    }
    if let Some(mut logs) = b.block("logs")? {
        logs.no_labels()?;
        // `enabled` is Nomad 1.5's, which its servers drop since 1.6.
        let enabled = logs.body.bool("enabled")?;
        task.log_config = Some(LogConfig {
            max_files: logs.body.number("max_files")?.unwrap_or(10),
            max_file_size_mb: logs.body.number("max_file_size")?.unwrap_or(10),
            disabled: logs.body.bool("disabled")?.unwrap_or(enabled == Some(false)),
        });
        logs.body.finish()?;
    }
    block.body.finish()?;
    Ok(task)
}

fn decode_resources(mut block: Block<'_>) -> Result<Resources, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut resources = Resources {
        cpu: b.number("cpu")?.unwrap_or(0),
        cores: b.number("cores")?.unwrap_or(0),
        memory_mb: b.number("memory")?.unwrap_or(0),
        memory_max_mb: b.number("memory_max")?.unwrap_or(0),
        disk_mb: b.number("disk")?.unwrap_or(0),
        ..Resources::default()
    };
    for net in b.blocks("network") {
        resources.networks.push(network::decode(net, true)?);
    }
    for mut d in b.blocks("device") {
        let mut device = RequestedDevice { name: d.label()?, ..RequestedDevice::default() };
        if let Some(count) = d.body.number("count")? {
            device.count = count;
        }
        super::placement::decode(&mut d.body, &mut device.constraints, &mut device.affinities, None)?;
        d.body.finish()?;
        resources.devices.push(device);
    }
    block.body.finish()?;
    Ok(resources)
}

fn decode_template(mut block: Block<'_>) -> Result<Template, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut template = Template {
        embedded_tmpl: b.string("data")?.unwrap_or_default(),
        source_path: b.string("source")?.unwrap_or_default(),
        dest_path: b.string("destination")?.unwrap_or_default(),
        change_mode: b.string("change_mode")?.unwrap_or_default(),
        change_signal: b.string("change_signal")?.unwrap_or_default(),
        once: b.bool("once")?.unwrap_or(false),
        splay: b.duration("splay")?,
        envvars: b.bool("env")?.unwrap_or(false),
        perms: b.string("perms")?.unwrap_or_default(),
        uid: b.int("uid")?,
        gid: b.int("gid")?,
        left_delim: b.string("left_delimiter")?.unwrap_or_default(),
        right_delim: b.string("right_delimiter")?.unwrap_or_default(),
        vault_grace: b.duration("vault_grace")?.unwrap_or(0),
        err_missing_key: b.bool("error_on_missing_key")?.unwrap_or(false),
        ..Template::default()
    };
    if let Some(mut s) = b.block("change_script")? {
        s.no_labels()?;
        template.change_script = Some(ChangeScript {
            command: s.body.string("command")?.unwrap_or_default(),
            args: s.body.strings("args")?.unwrap_or_default(),
            timeout: s.body.duration("timeout")?.unwrap_or(0),
            fail_on_error: s.body.bool("fail_on_error")?.unwrap_or(false),
            run_on_first_render: s.body.bool("run_on_first_render")?.unwrap_or(false),
        });
        s.body.finish()?;
    }
    if let Some(mut w) = b.block("wait")? {
        w.no_labels()?;
        template.wait = Some(WaitConfig { min: w.body.duration("min")?, max: w.body.duration("max")? });
        w.body.finish()?;
    }
    block.body.finish()?;
    Ok(template)
}
