//! The scheduler: pure logic from a state snapshot and an evaluation to a
//! `Plan`. It never writes; the server's plan applier commits the plan.
//!
//! Pipeline (see README.md beside this file): reconcile the job's existing
//! allocations into buckets (keep, update in place, replace, stop, place),
//! then find nodes for the placements (`rank`), recording why a group could
//! not be placed in an `AllocMetric`.

mod disconnect;
mod feasible;
mod preference;
mod rank;
mod reconcile;
mod score;

use std::collections::BTreeMap;

use rand::RngExt;

use crate::server::state::Tables;
use crate::structs::{AllocMetric, Allocation, Deployment, Evaluation};
use crate::wire::plan::DesiredUpdates;

pub use feasible::{constraint_holds, glob_match};
pub use reconcile::{reschedule_eligible, tasks_updated};

/// The scheduler's output for one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// New allocations, already bound to nodes.
    pub place: Vec<Allocation>,
    /// Existing allocations to change: stops and in-place updates.
    pub update: Vec<Allocation>,
    /// A deployment to create or change.
    pub deployment: Option<Deployment>,
    /// Deployments this plan supersedes.
    pub cancel_deployments: Vec<Deployment>,
    /// Evaluations to run later (reschedule delays).
    pub followups: Vec<Evaluation>,
    /// Groups that could not be fully placed, with why.
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    /// Allocations still waiting for a placement, per group.
    pub queued: BTreeMap<String, u64>,
    /// Per-group counts for `job plan`.
    pub desired_updates: BTreeMap<String, DesiredUpdates>,
}

impl Plan {
    /// True when the plan creates, stops or migrates allocations.
    pub fn changes_allocations(&self) -> bool {
        self.desired_updates.values().any(|u| u.place + u.stop + u.migrate + u.destructive_update + u.canary > 0)
    }
}

/// A new random (version 4) UUID, as `util::new_id` makes, drawn from the
/// thread's cryptographic generator rather than with a system call per ID:
/// a plan needs one for each of its (possibly thousands of) placements.
pub fn new_id() -> String {
    let uuid = uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid();
    uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_string()
}

/// Computes the plan for an evaluation against a snapshot.
pub fn process(snap: &Tables, eval: &Evaluation) -> Plan {
    reconcile::Reconciler::new(snap, eval).run()
}

#[cfg(test)]
mod tests;
