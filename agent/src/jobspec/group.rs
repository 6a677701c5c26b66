//! The `group` block: count, network, volumes, policies, services, tasks.

use super::policy::{MigratePatch, ReschedulePatch, RestartPatch, UpdatePatch};
use super::service::decode_service;
use super::{network, task};
use crate::hclspan::{Block, HclError, Pos};
use crate::structs::{
    CsiMountOptions, DisconnectStrategy, EphemeralDisk, ReschedulePolicy, RestartPolicy, ScalingPolicy, TaskGroup,
    UpdateStrategy, VolumeRequest, JOB_TYPE_SERVICE,
};

/// What a group inherits from its job.
pub(super) struct Inherited {
    pub job_type: String,
    pub update: Option<UpdatePatch>,
    pub migrate: Option<MigratePatch>,
    /// The job type's default reschedule policy (zero for system jobs).
    pub reschedule_base: ReschedulePolicy,
    pub reschedule: Option<ReschedulePatch>,
}

/// Decodes a `group "name" { ... }` block; also returns where each task starts.
pub(super) fn decode(
    mut block: Block<'_>,
    job: &Inherited,
    warnings: &mut Vec<String>,
) -> Result<(TaskGroup, Vec<(String, Pos)>), HclError> {
    let name = block.label()?;
    let b = &mut block.body;
    super::refuse_what_berth_lacks(b)?;
    let disconnect = decode_disconnect(b, warnings)?;
    let count = b.number("count")?;
    let scaling = match b.block("scaling")? {
        Some(block) => Some(decode_scaling(block)?),
        None => None,
    };
    // Without a count, a group starts at its scaling minimum (Nomad).
    let min = scaling.as_ref().and_then(|s: &ScalingPolicy| s.min).and_then(|m| u32::try_from(m).ok());
    let mut tg = TaskGroup {
        name,
        count: count.or(min).unwrap_or(1),
        scaling,
        meta: b.string_map("meta")?.unwrap_or_default(),
        shutdown_delay: b.duration("shutdown_delay")?,
        max_run_duration: b.duration("max_run_duration")?,
        disconnect,
        ..TaskGroup::default()
    };
    super::placement::decode(b, &mut tg.constraints, &mut tg.affinities, Some(&mut tg.spreads))?;
    if let Some(net) = b.block("network")? {
        tg.networks.push(network::decode(net, false)?);
    }
    for v in b.blocks("volume") {
        let (alias, volume) = decode_volume(v)?;
        tg.volumes.insert(alias, volume);
    }

    let restart = RestartPolicy::default_for(&job.job_type);
    let restart = match b.block("restart")? {
        Some(r) => RestartPatch::decode(r)?.apply(&restart),
        None => restart,
    };
    tg.restart_policy = Some(restart.clone());

    let reschedule = b.block("reschedule")?.map(ReschedulePatch::decode).transpose()?;
    let update = b.block("update")?.map(UpdatePatch::decode).transpose()?;
    inherit(&mut tg, job, reschedule.as_ref(), update.as_ref());
    let migrate = b.block("migrate")?.map(MigratePatch::decode).transpose()?;
    if job.migrate.is_some() || migrate.is_some() {
        tg.migrate = Some(MigratePatch::merged(job.migrate.iter().chain(&migrate)));
    }

    if let Some(mut disk) = b.block("ephemeral_disk")? {
        disk.no_labels()?;
        tg.ephemeral_disk = Some(EphemeralDisk {
            size_mb: disk.body.number("size")?.unwrap_or(300),
            sticky: disk.body.bool("sticky")?.unwrap_or(false),
            migrate: disk.body.bool("migrate")?.unwrap_or(false),
        });
        disk.body.finish()?;
    }
    for s in b.blocks("service") {
        tg.services.push(decode_service(s)?);
    }
    let mut places = Vec::new();
    for t in b.blocks("task") {
        let pos = t.pos;
        let task = task::decode(t, &restart)?;
        places.push((task.name.clone(), pos));
        tg.tasks.push(task);
    }
    block.body.finish()?;
    Ok((tg, places))
}

/// The `disconnect` block, or what the fields it replaced (Nomad 1.7's
/// `max_client_disconnect`, `stop_after_client_disconnect` and
/// `prevent_reschedule_on_lost`) say, with a deprecation warning each.
fn decode_disconnect(
    b: &mut crate::hclspan::Decoder<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<DisconnectStrategy>, HclError> {
    let file = b.source().name().to_string();
    let block = b.block("disconnect")?;
    let block_pos = block.as_ref().map(|d| d.pos);
    let mut strategy = match block {
        Some(mut d) => {
            d.no_labels()?;
            let s = DisconnectStrategy {
                lost_after: d.body.duration("lost_after")?.unwrap_or(0),
                replace: d.body.bool("replace")?,
                reconcile: d.body.string("reconcile")?.unwrap_or_default(),
                stop_on_client_after: d.body.duration("stop_on_client_after")?,
            };
            d.body.finish()?;
            Some(s)
        }
        None => None,
    };
    let old_fields = [
        ("max_client_disconnect", "lost_after"),
        ("stop_after_client_disconnect", "stop_on_client_after"),
        ("prevent_reschedule_on_lost", "replace"),
    ];
    for (old, new) in old_fields {
        let Some(pos) = b.attribute_pos(old) else { continue };
        if let Some(at) = block_pos {
            return Err(HclError::new(
                &file,
                pos,
                format!(
                    "{old} and a disconnect block (line {}) cannot both be set; use disconnect {{ {new} }}",
                    at.line
                ),
            ));
        }
        warnings.push(format!("{old} is deprecated; use disconnect {{ {new} }} ({file}:{})", pos.line));
        let s = strategy.get_or_insert_with(DisconnectStrategy::default);
        match old {
            "max_client_disconnect" => s.lost_after = b.duration(old)?.unwrap_or(0),
            "stop_after_client_disconnect" => s.stop_on_client_after = b.duration(old)?,
            _ => s.replace = b.bool(old)?.map(|prevent| !prevent),
        }
    }
    Ok(strategy)
}

/// The group's reschedule and update policies: the job type's defaults,
/// patched by the job's blocks, then by the group's own.
fn inherit(tg: &mut TaskGroup, job: &Inherited, reschedule: Option<&ReschedulePatch>, update: Option<&UpdatePatch>) {
    let system_like = ReschedulePolicy::default_for(&job.job_type).is_none();
    // System jobs get no policy unless one was written (which validation rejects).
    if !system_like || reschedule.is_some() || job.reschedule.is_some() {
        let mut policy = job.reschedule_base.clone();
        for patch in job.reschedule.iter().chain(reschedule) {
            policy = patch.apply(&policy);
        }
        tg.reschedule_policy = Some(policy);
    }
    if job.job_type == JOB_TYPE_SERVICE || update.is_some() {
        let mut strategy = UpdateStrategy::nomad_default();
        for patch in job.update.iter().chain(update) {
            strategy = patch.apply(&strategy);
        }
        tg.update = Some(strategy);
    }
}

/// A job-level `task "name" { ... }` in a group of its own, named after
/// it, with one instance and the job's policies (as Nomad wraps them).
pub(super) fn wrap_task(block: Block<'_>, job: &Inherited) -> Result<(TaskGroup, Pos), HclError> {
    let pos = block.pos;
    let restart = RestartPolicy::default_for(&job.job_type);
    let task = task::decode(block, &restart)?;
    let mut tg = TaskGroup { name: task.name.clone(), count: 1, restart_policy: Some(restart), ..TaskGroup::default() };
    inherit(&mut tg, job, None, None);
    tg.tasks.push(task);
    Ok((tg, pos))
}

/// Decodes `volume "alias" { ... }`.
fn decode_volume(mut block: Block<'_>) -> Result<(String, VolumeRequest), HclError> {
    let alias = block.label()?;
    let b = &mut block.body;
    let mut volume = VolumeRequest {
        name: alias.clone(),
        volume_type: b.string("type")?.unwrap_or_default(),
        source: b.string("source")?.unwrap_or_default(),
        read_only: b.bool("read_only")?.unwrap_or(false),
        access_mode: b.string("access_mode")?.unwrap_or_default(),
        attachment_mode: b.string("attachment_mode")?.unwrap_or_default(),
        per_alloc: b.bool("per_alloc")?.unwrap_or(false),
        mount_options: None,
        sticky: b.bool("sticky")?.unwrap_or(false),
    };
    if let Some(mut opts) = b.block("mount_options")? {
        opts.no_labels()?;
        volume.mount_options = Some(CsiMountOptions {
            fs_type: opts.body.string("fs_type")?.unwrap_or_default(),
            mount_flags: opts.body.strings("mount_flags")?.unwrap_or_default(),
        });
        opts.body.finish()?;
    }
    block.body.finish()?;
    Ok((alias, volume))
}

/// Decodes a group's `scaling` block (`policy` is kept as written).
fn decode_scaling(mut block: Block<'_>) -> Result<ScalingPolicy, HclError> {
    if !block.labels.is_empty() {
        return Err(
            block.error("task-level scaling (vertical autoscaling) is Nomad Enterprise; berth scales groups only")
        );
    }
    let b = &mut block.body;
    let mut scaling = ScalingPolicy {
        min: b.int("min")?,
        max: b.int("max")?,
        enabled: b.bool("enabled")?.unwrap_or(true),
        ..ScalingPolicy::default()
    };
    if let Some(mut policy) = b.block("policy")? {
        policy.no_labels()?;
        scaling.policy = policy.body.free_form()?;
    }
    block.body.finish()?;
    Ok(scaling)
}
