//! The soft preferences of one task group, scored per node as Nomad's
//! node-affinity and allocation-spread iterators do:
//!
//! * **node-affinity**: the weights of the affinities (job, group and
//!   task) a node matches, over the sum of all their absolute weights,
//!   from -1 to 1. Cached per computed class unless a target is unique to
//!   each node.
//! * **allocation-spread**: per `spread`, how far the node's attribute
//!   value is below its desired share of the group's allocations. With
//!   targets, `(desired - used) / desired` weighted by the spread's share
//!   of all spread weights (values with no target share the remainder as
//!   `*`, or get the full penalty); without, a boost towards the least used
//!   value. A node without the attribute gets the full penalty, -1.
//!
//! Counts include the group's live allocations and this plan's placements,
//! less what the plan stops.

use std::collections::HashMap;

use super::feasible;
use crate::structs::{Affinity, Job, Node, TaskGroup};

/// The value standing for every value without a target of its own.
const IMPLICIT_TARGET: &str = "*";

/// One spread and the group's allocations per value of its attribute.
/// Values are numbered as first seen; each node's is looked up once.
struct SpreadCount {
    attribute: String,
    weight: f64,
    /// Desired allocations per value; empty for an even spread.
    desired: HashMap<String, f64>,
    numbers: HashMap<String, usize>,
    /// Per value number: its desired count (targets only) and its use.
    desired_of: Vec<Option<f64>>,
    used: Vec<u64>,
    /// Per node position: its value's number, `None` without the attribute.
    node_value: Vec<Option<Option<usize>>>,
}

impl SpreadCount {
    fn number(&mut self, value: &str) -> usize {
        if let Some(n) = self.numbers.get(value) {
            return *n;
        }
        let n = self.used.len();
        self.numbers.insert(value.to_string(), n);
        let desired = self.desired.get(value).or_else(|| self.desired.get(IMPLICIT_TARGET)).copied();
        self.desired_of.push(desired);
        self.used.push(0);
        n
    }

    fn value_at(&mut self, node: &Node, position: usize) -> Option<usize> {
        if let Some(known) = self.node_value[position] {
            return known;
        }
        let number = node.resolve(&self.attribute).map(str::to_string).map(|v| self.number(&v));
        self.node_value[position] = Some(number);
        number
    }
}

/// Affinities and spreads of one group, with their running counts.
pub(super) struct Preferences {
    affinities: Vec<Affinity>,
    affinity_weights: f64,
    /// Affinity scores by class (or node position).
    affinity_by_class: bool,
    affinity_cache: Vec<Option<f64>>,
    spreads: Vec<SpreadCount>,
    spread_weights: f64,
}

impl Preferences {
    /// The group's preferences, or `None` when it has none. `classes` and
    /// `nodes` size the affinity cache.
    pub fn new(job: &Job, tg: &TaskGroup, classes: usize, nodes: usize) -> Option<Preferences> {
        let affinities: Vec<Affinity> = job
            .affinities
            .iter()
            .chain(&tg.affinities)
            .chain(tg.tasks.iter().flat_map(|t| &t.affinities))
            .cloned()
            .collect();
        let spreads: Vec<SpreadCount> =
            job.spreads.iter().chain(&tg.spreads).map(|s| spread_count(s, tg.count, nodes)).collect();
        if affinities.is_empty() && spreads.is_empty() {
            return None;
        }
        let affinity_by_class = !affinities
            .iter()
            .any(|a| feasible::target_escapes_class(&a.l_target) || feasible::target_escapes_class(&a.r_target));
        Some(Preferences {
            affinity_weights: affinities.iter().map(|a| f64::from(a.weight).abs()).sum(),
            affinity_cache: vec![None; if affinity_by_class { classes } else { nodes }],
            affinity_by_class,
            affinities,
            spread_weights: spreads.iter().map(|s| s.weight).sum(),
            spreads,
        })
    }

    /// The node-affinity score of `node` (class `class`, position `position`).
    pub fn affinity(&mut self, node: &Node, class: usize, position: usize) -> f64 {
        if self.affinities.is_empty() {
            return 0.0;
        }
        let key = if self.affinity_by_class { class } else { position };
        let (affinities, total) = (&self.affinities, self.affinity_weights);
        *self.affinity_cache[key].get_or_insert_with(|| {
            let matched: f64 = affinities
                .iter()
                .filter(|a| feasible::holds(&a.l_target, &a.operand, &a.r_target, node))
                .map(|a| f64::from(a.weight))
                .sum();
            if total > 0.0 {
                // An empty sum is -0.0; scores show as 0.
                matched / total + 0.0
            } else {
                0.0
            }
        })
    }

    /// The allocation-spread score of placing one more allocation on
    /// `node` (at `position`).
    pub fn spread(&mut self, node: &Node, position: usize) -> f64 {
        let weights = self.spread_weights;
        let mut total = 0.0;
        for s in &mut self.spreads {
            let Some(value) = s.value_at(node, position) else {
                total -= 1.0;
                continue;
            };
            if s.desired.is_empty() {
                total += even_spread_boost(&s.used, value);
                continue;
            }
            let Some(desired) = s.desired_of[value] else {
                total -= 1.0;
                continue;
            };
            let used = s.used[value] as f64 + 1.0;
            let share = if weights > 0.0 { s.weight / weights } else { 0.0 };
            total += if desired > 0.0 { (desired - used) / desired * share } else { -share };
        }
        total
    }

    /// Counts an allocation of the group on `node` in (`placed`) or out.
    pub fn count(&mut self, node: &Node, placed: bool) {
        for s in &mut self.spreads {
            let Some(value) = node.resolve(&s.attribute).map(str::to_owned) else { continue };
            let n = s.number(&value);
            s.used[n] = if placed { s.used[n] + 1 } else { s.used[n].saturating_sub(1) };
        }
    }
}

fn spread_count(spread: &crate::structs::Spread, count: u32, nodes: usize) -> SpreadCount {
    let count = f64::from(count);
    let mut desired: HashMap<String, f64> =
        spread.spread_target.iter().map(|t| (t.value.clone(), f64::from(t.percent) / 100.0 * count)).collect();
    let sum: u32 = spread.spread_target.iter().map(|t| u32::from(t.percent)).sum();
    if !desired.is_empty() && sum < 100 {
        desired.insert(IMPLICIT_TARGET.into(), f64::from(100 - sum) / 100.0 * count);
    }
    SpreadCount {
        attribute: spread.attribute.clone(),
        weight: f64::from(spread.weight),
        desired,
        numbers: HashMap::new(),
        desired_of: Vec::new(),
        used: Vec::new(),
        node_value: vec![None; nodes],
    }
}

/// Nomad's even-spread boost: positive for a value used less than the
/// least used one so far, -1 when all values are used alike.
fn even_spread_boost(used: &[u64], value: usize) -> f64 {
    let in_use = used.iter().copied().filter(|n| *n > 0);
    let (Some(min), Some(max)) = (in_use.clone().min(), in_use.max()) else { return 0.0 };
    let current = used[value];
    if current != min {
        // Below the least used value (not used at all) or above it.
        return (min as f64 - current as f64) / min as f64;
    }
    if min == max {
        return -1.0;
    }
    (max - min) as f64 / min as f64
}
