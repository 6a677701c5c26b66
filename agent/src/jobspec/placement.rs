//! Where allocations may and would rather go: `constraint` (a filter),
//! `affinity` and `spread` (preferences the scheduler scores), at job,
//! group and task level.

use crate::hclspan::{Block, Decoder, HclError};
use crate::structs::{Affinity, Constraint, Spread, SpreadTarget};

/// Operators that may be written as the attribute carrying the value
/// (`regexp = "..."` for `operator = "regexp"  value = "..."`).
const SHORTHAND_OPERANDS: [&str; 6] =
    ["regexp", "version", "semver", "set_contains", "set_contains_any", "set_contains_all"];

/// The `constraint` and `affinity` blocks of a body, and its `spread`
/// blocks when `spreads` is given (a task has none).
pub(super) fn decode(
    b: &mut Decoder<'_>,
    constraints: &mut Vec<Constraint>,
    affinities: &mut Vec<Affinity>,
    spreads: Option<&mut Vec<Spread>>,
) -> Result<(), HclError> {
    for c in b.blocks("constraint") {
        constraints.push(decode_constraint(c)?);
    }
    for a in b.blocks("affinity") {
        affinities.push(decode_affinity(a)?);
    }
    if let Some(spreads) = spreads {
        for s in b.blocks("spread") {
            spreads.push(decode_spread(s)?);
        }
    }
    Ok(())
}

/// Decodes a `constraint` block, including Nomad's shorthands
/// (`distinct_hosts = true`, `regexp = "..."`, `version = "..."`, ...).
fn decode_constraint(mut block: Block<'_>) -> Result<Constraint, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut c = Constraint {
        l_target: b.string("attribute")?.unwrap_or_default(),
        r_target: b.string("value")?.unwrap_or_default(),
        operand: b.string("operator")?.unwrap_or_else(|| "=".into()),
    };
    for operand in SHORTHAND_OPERANDS {
        if let Some(value) = b.string(operand)? {
            c.operand = operand.into();
            c.r_target = value;
        }
    }
    if let Some(enabled) = b.bool("distinct_hosts")? {
        c.operand = "distinct_hosts".into();
        c.r_target = enabled.to_string();
    }
    if let Some(property) = b.string("distinct_property")? {
        c.operand = "distinct_property".into();
        c.l_target = property;
    }
    block.body.finish()?;
    Ok(c)
}

/// Decodes an `affinity` block (the constraint shorthands apply).
fn decode_affinity(mut block: Block<'_>) -> Result<Affinity, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut a = Affinity {
        l_target: b.string("attribute")?.unwrap_or_default(),
        r_target: b.string("value")?.unwrap_or_default(),
        operand: b.string("operator")?.unwrap_or_else(|| "=".into()),
        weight: b.number::<i8>("weight")?.unwrap_or(crate::structs::DEFAULT_WEIGHT),
    };
    for operand in SHORTHAND_OPERANDS {
        if let Some(value) = b.string(operand)? {
            a.operand = operand.into();
            a.r_target = value;
        }
    }
    if a.weight == 0 {
        return Err(block.error("affinity weight cannot be zero"));
    }
    block.body.finish()?;
    Ok(a)
}

/// Decodes a `spread` block with its `target "value" { percent }` blocks.
fn decode_spread(mut block: Block<'_>) -> Result<Spread, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut spread = Spread {
        attribute: b.string("attribute")?.unwrap_or_default(),
        weight: b.number::<i8>("weight")?.unwrap_or(crate::structs::DEFAULT_WEIGHT),
        spread_target: Vec::new(),
    };
    for mut target in b.blocks("target") {
        let value = target.label()?;
        let percent = target.body.number::<u8>("percent")?.unwrap_or(0);
        target.body.finish()?;
        spread.spread_target.push(SpreadTarget { value, percent });
    }
    if spread.weight == 0 {
        return Err(block.error("spread weight must be from 1 to 100"));
    }
    block.body.finish()?;
    Ok(spread)
}
