//! `restart`, `reschedule`, `update` and `migrate` blocks. Each decodes to a patch of
//! only the fields written, so a group or task block overrides just those
//! fields of the defaults (or of the enclosing level's block), as Nomad merges.

use crate::hclspan::{Block, HclError};
use crate::structs::{MigrateStrategy, ReschedulePolicy, RestartPolicy, UpdateStrategy};

/// Copies each `Some` field of a patch onto a target.
macro_rules! apply_fields {
    ($patch:expr, $target:expr, $($field:ident),+) => {
        $(if let Some(v) = &$patch.$field { $target.$field = v.clone(); })+
    };
}

/// The fields a `restart` block sets.
#[derive(Debug, Default, Clone)]
pub(super) struct RestartPatch {
    attempts: Option<u32>,
    interval: Option<i64>,
    delay: Option<i64>,
    mode: Option<String>,
    render_templates: Option<bool>,
}

impl RestartPatch {
    pub(super) fn decode(mut block: Block<'_>) -> Result<Self, HclError> {
        block.no_labels()?;
        let b = &mut block.body;
        let patch = RestartPatch {
            attempts: b.number("attempts")?,
            interval: b.duration("interval")?,
            delay: b.duration("delay")?,
            mode: b.string("mode")?,
            render_templates: b.bool("render_templates")?,
        };
        block.body.finish()?;
        Ok(patch)
    }

    /// `base` with this patch's fields written over it.
    pub(super) fn apply(&self, base: &RestartPolicy) -> RestartPolicy {
        let mut out = base.clone();
        apply_fields!(self, out, attempts, interval, delay, mode, render_templates);
        out
    }
}

/// The fields a `reschedule` block sets.
#[derive(Debug, Default, Clone)]
pub(super) struct ReschedulePatch {
    attempts: Option<u32>,
    interval: Option<i64>,
    delay: Option<i64>,
    delay_function: Option<String>,
    max_delay: Option<i64>,
    unlimited: Option<bool>,
}

impl ReschedulePatch {
    pub(super) fn decode(mut block: Block<'_>) -> Result<Self, HclError> {
        block.no_labels()?;
        let b = &mut block.body;
        let patch = ReschedulePatch {
            attempts: b.number("attempts")?,
            interval: b.duration("interval")?,
            delay: b.duration("delay")?,
            delay_function: b.string("delay_function")?,
            max_delay: b.duration("max_delay")?,
            unlimited: b.bool("unlimited")?,
        };
        block.body.finish()?;
        Ok(patch)
    }

    /// `base` with this patch's fields written over it.
    pub(super) fn apply(&self, base: &ReschedulePolicy) -> ReschedulePolicy {
        let mut out = base.clone();
        apply_fields!(self, out, attempts, interval, delay, delay_function, max_delay, unlimited);
        out
    }
}

/// The fields an `update` block sets.
#[derive(Debug, Default, Clone)]
pub(super) struct UpdatePatch {
    stagger: Option<i64>,
    max_parallel: Option<u32>,
    health_check: Option<String>,
    min_healthy_time: Option<i64>,
    healthy_deadline: Option<i64>,
    progress_deadline: Option<i64>,
    auto_revert: Option<bool>,
    auto_promote: Option<bool>,
    canary: Option<u32>,
}

impl UpdatePatch {
    pub(super) fn decode(mut block: Block<'_>) -> Result<Self, HclError> {
        block.no_labels()?;
        let b = &mut block.body;
        let patch = UpdatePatch {
            stagger: b.duration("stagger")?,
            max_parallel: b.number("max_parallel")?,
            health_check: b.string("health_check")?,
            min_healthy_time: b.duration("min_healthy_time")?,
            healthy_deadline: b.duration("healthy_deadline")?,
            progress_deadline: b.duration("progress_deadline")?,
            auto_revert: b.bool("auto_revert")?,
            auto_promote: b.bool("auto_promote")?,
            canary: b.number("canary")?,
        };
        block.body.finish()?;
        Ok(patch)
    }

    /// `base` with this patch's fields written over it.
    pub(super) fn apply(&self, base: &UpdateStrategy) -> UpdateStrategy {
        let mut out = base.clone();
        apply_fields!(
            self,
            out,
            stagger,
            max_parallel,
            health_check,
            min_healthy_time,
            healthy_deadline,
            progress_deadline,
            auto_revert,
            auto_promote,
            canary
        );
        out
    }
}

/// The fields a `migrate` block sets.
#[derive(Debug, Default, Clone)]
pub(super) struct MigratePatch {
    max_parallel: Option<i64>,
    health_check: Option<String>,
    min_healthy_time: Option<i64>,
    healthy_deadline: Option<i64>,
}

impl MigratePatch {
    pub(super) fn decode(mut block: Block<'_>) -> Result<Self, HclError> {
        block.no_labels()?;
        let b = &mut block.body;
        let patch = MigratePatch {
            max_parallel: b.number("max_parallel")?,
            health_check: b.string("health_check")?,
            min_healthy_time: b.duration("min_healthy_time")?,
            healthy_deadline: b.duration("healthy_deadline")?,
        };
        block.body.finish()?;
        Ok(patch)
    }

    /// Nomad's defaults with the job's patch, then the group's, written over.
    pub(super) fn merged<'a>(patches: impl IntoIterator<Item = &'a MigratePatch>) -> MigrateStrategy {
        let mut out = MigrateStrategy::default();
        for patch in patches {
            apply_fields!(patch, out, max_parallel, health_check, min_healthy_time, healthy_deadline);
        }
        out
    }
}
