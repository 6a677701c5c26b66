//! The `job` block: job-level fields, the job-level `update` and
//! `reschedule` blocks that groups inherit, job-level tasks (each wrapped
//! in a group of its own), and the `periodic` and `parameterized` blocks.

use super::group;
use super::policy::{MigratePatch, ReschedulePatch, UpdatePatch};
use super::Places;
use crate::hclspan::{Block, HclError};
use crate::structs::{
    dispatch_payload, Job, JobUiConfig, JobUiLink, ParameterizedJobConfig, PeriodicConfig, ReschedulePolicy,
    UpdateStrategy, JOB_TYPE_SERVICE,
};

/// Decodes the `job "id" { ... }` block.
pub(super) fn decode(mut block: Block<'_>, warnings: &mut Vec<String>) -> Result<(Job, Places), HclError> {
    let mut places = Places { job: block.pos, ..Places::default() };
    let id = block.label()?;
    let b = &mut block.body;
    super::refuse_what_berth_lacks(b)?;
    let mut job = Job {
        id,
        name: b.string("name")?.unwrap_or_default(),
        namespace: b.string("namespace")?.unwrap_or_default(),
        region: b.string("region")?.unwrap_or_default(),
        job_type: b.string("type")?.unwrap_or_else(|| JOB_TYPE_SERVICE.into()),
        priority: b.number("priority")?.unwrap_or(0),
        all_at_once: b.bool("all_at_once")?.unwrap_or(false),
        datacenters: b.strings("datacenters")?.unwrap_or_default(),
        node_pool: b.string("node_pool")?.unwrap_or_default(),
        meta: b.string_map("meta")?.unwrap_or_default(),
        ..Job::default()
    };
    super::placement::decode(b, &mut job.constraints, &mut job.affinities, Some(&mut job.spreads))?;
    if let Some(mut p) = b.block("periodic")? {
        p.no_labels()?;
        let b = &mut p.body;
        let spec = b.string("cron")?;
        let specs = b.strings("crons")?.unwrap_or_default();
        job.periodic = Some(PeriodicConfig {
            enabled: b.bool("enabled")?.unwrap_or(true),
            spec: spec.or_else(|| specs.first().cloned()).unwrap_or_default(),
            specs,
            spec_type: "cron".into(),
            prohibit_overlap: b.bool("prohibit_overlap")?.unwrap_or(false),
            time_zone: b.string("time_zone")?.unwrap_or_else(|| "UTC".into()),
        });
        p.body.finish()?;
    }
    if let Some(mut ui) = b.block("ui")? {
        ui.no_labels()?;
        let mut config =
            JobUiConfig { description: ui.body.string("description")?.unwrap_or_default(), links: Vec::new() };
        for mut link in ui.body.blocks("link") {
            link.no_labels()?;
            let label = link.body.string("label")?.unwrap_or_default();
            config.links.push(JobUiLink { label, url: link.body.string("url")?.unwrap_or_default() });
            link.body.finish()?;
        }
        ui.body.finish()?;
        job.ui = Some(config);
    }
    if let Some(mut p) = b.block("parameterized")? {
        p.no_labels()?;
        let b = &mut p.body;
        job.parameterized_job = Some(ParameterizedJobConfig {
            payload: b.string("payload")?.unwrap_or_else(|| dispatch_payload::OPTIONAL.into()),
            meta_required: b.strings("meta_required")?.unwrap_or_default(),
            meta_optional: b.strings("meta_optional")?.unwrap_or_default(),
        });
        p.body.finish()?;
    }
    let update = b.block("update")?.map(UpdatePatch::decode).transpose()?;
    let reschedule = b.block("reschedule")?.map(ReschedulePatch::decode).transpose()?;
    let migrate = b.block("migrate")?.map(MigratePatch::decode).transpose()?;
    job.migrate = migrate.as_ref().map(|m| MigratePatch::merged([m]));
    let service = job.job_type == JOB_TYPE_SERVICE;
    job.update = match &update {
        Some(patch) => Some(patch.apply(&UpdateStrategy::nomad_default())),
        None if service => Some(UpdateStrategy::nomad_default()),
        None => None,
    };
    let inherited = group::Inherited {
        job_type: job.job_type.clone(),
        update,
        migrate,
        reschedule_base: ReschedulePolicy::default_for(&job.job_type).unwrap_or_default(),
        reschedule,
    };
    job.reschedule = inherited.reschedule.as_ref().map(|p| p.apply(&inherited.reschedule_base));
    for g in b.blocks("group") {
        let group_pos = g.pos;
        let (tg, task_places) = group::decode(g, &inherited, warnings)?;
        places.groups.entry(tg.name.clone()).or_insert(group_pos);
        for (task, pos) in task_places {
            places.tasks.entry((tg.name.clone(), task)).or_insert(pos);
        }
        job.task_groups.push(tg);
    }
    for t in b.blocks("task") {
        let (tg, pos) = group::wrap_task(t, &inherited)?;
        places.groups.entry(tg.name.clone()).or_insert(pos);
        places.tasks.entry((tg.name.clone(), tg.name.clone())).or_insert(pos);
        job.task_groups.push(tg);
    }
    block.body.finish()?;
    Ok((job, places))
}
