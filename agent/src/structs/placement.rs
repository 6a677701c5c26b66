//! Soft placement preferences: `affinity` (job, group and task) and
//! `spread` (job and group), with Nomad's defaults and validation. The
//! scheduler's scoring of them lives in `server::scheduler::preference`.

use serde::{Deserialize, Serialize};

/// `affinity { attribute operator value weight }`: nodes that match score
/// higher (or, with a negative weight, lower); never a filter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct Affinity {
    pub l_target: String,
    pub r_target: String,
    pub operand: String,
    /// -100 to 100, not 0; 50 when not given.
    pub weight: i8,
}

/// `spread { attribute weight target "value" { percent } }`: placements are
/// spread over the values of a node attribute, evenly or by the targets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct Spread {
    pub attribute: String,
    /// 1 to 100; 50 when not given.
    pub weight: i8,
    pub spread_target: Vec<SpreadTarget>,
}

/// One `target "value" { percent }` of a spread.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "PascalCase", default)]
pub struct SpreadTarget {
    pub value: String,
    pub percent: u8,
}

/// The weight an affinity or spread has when none is given.
pub const DEFAULT_WEIGHT: i8 = 50;

impl Affinity {
    /// Nomad's defaults: operator `=`, weight 50.
    pub fn canonicalize(&mut self) {
        if self.operand.is_empty() {
            self.operand = "=".into();
        }
        if self.weight == 0 {
            self.weight = DEFAULT_WEIGHT;
        }
    }

    /// What is wrong with it, as Nomad says it.
    pub fn problems(&self, level: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.l_target.is_empty() {
            out.push(format!("{level} affinity needs an attribute"));
        }
        let op = self.operand.as_str();
        if !super::canonicalize::CONSTRAINT_OPERANDS.contains(&op) || op.starts_with("distinct_") {
            out.push(format!("{level} affinity has unknown operator {:?}", self.operand));
        }
        if !(-100..=100).contains(&self.weight) {
            out.push(format!("{level} affinity weight {} must be within the range [-100,100]", self.weight));
        }
        out
    }
}

impl Spread {
    /// Nomad's default weight, 50.
    pub fn canonicalize(&mut self) {
        if self.weight == 0 {
            self.weight = DEFAULT_WEIGHT;
        }
    }

    /// What is wrong with it, as Nomad says it.
    pub fn problems(&self, level: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.attribute.is_empty() {
            out.push(format!("{level} spread needs an attribute"));
        }
        if !(1..=100).contains(&self.weight) {
            out.push(format!("{level} spread must have a positive weight from 0 to 100, not {}", self.weight));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut sum = 0u32;
        for t in &self.spread_target {
            if !seen.insert(t.value.as_str()) {
                out.push(format!("{level} spread target value {:?} already defined", t.value));
            }
            if t.percent > 100 {
                out.push(format!("{level} spread target percentage for value {:?} must be between 0 and 100", t.value));
            }
            sum += u32::from(t.percent);
        }
        if sum > 100 {
            out.push(format!("sum of {level} spread target percentages must not be greater than 100%; got {sum}%"));
        }
        out
    }
}
