//! Soft placement preferences: `affinity` (job, group and task) and
//! `spread` (job and group), and a group's `scaling` bounds, with Nomad's
//! defaults and validation. The scheduler's scoring of preferences lives in
//! `server::scheduler::preference`.

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

/// A group's `scaling { enabled min max policy {} }`: the bounds `job
/// scale` keeps the count in. The policy is for an autoscaler and kept as
/// written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScalingPolicy {
    #[serde(rename = "Type")]
    pub policy_type: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub enabled: bool,
    pub policy: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ScalingPolicy {
    /// Nomad's defaults: horizontal, and `min` the group's count.
    pub fn canonicalize(&mut self, count: u32) {
        if self.policy_type.is_empty() {
            self.policy_type = "horizontal".into();
        }
        self.min.get_or_insert(i64::from(count));
    }

    /// Why `count` is outside the bounds, as Nomad says it.
    pub fn count_problem(&self, count: i64) -> Option<String> {
        match (self.min, self.max) {
            (Some(min), _) if count < min => {
                Some(format!("group count was less than scaling policy minimum: {count} < {min}"))
            }
            (_, Some(max)) if count > max => {
                Some(format!("group count was greater than scaling policy maximum: {count} > {max}"))
            }
            _ => None,
        }
    }

    /// What is wrong with the bounds themselves.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.max {
            None => out.push("scaling policy needs a max".to_string()),
            Some(max) if max < 0 => out.push("scaling policy maximum must not be negative".to_string()),
            Some(max) if self.min.is_some_and(|min| max < min) => {
                out.push("scaling policy maximum count must not be less than minimum count".to_string())
            }
            _ => {}
        }
        if self.min.is_some_and(|min| min < 0) {
            out.push("scaling policy minimum must not be negative".to_string());
        }
        if self.policy_type != "horizontal" {
            out.push(format!("scaling policy type {:?} is not supported (only horizontal)", self.policy_type));
        }
        out
    }
}
