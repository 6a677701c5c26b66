//! `service` (with its `check`s) and `constraint` blocks.

use crate::hclspan::{Block, HclError};
use crate::structs::{Constraint, Service, ServiceCheck};

/// Decodes a `service` block.
pub(super) fn decode_service(mut block: Block<'_>) -> Result<Service, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    super::refuse_consul_and_vault(b)?;
    let mut service = Service {
        name: b.string("name")?.unwrap_or_default(),
        tags: b.strings("tags")?.unwrap_or_default(),
        port_label: b.string("port")?.unwrap_or_default(),
        provider: b.string("provider")?.unwrap_or_default(),
        address_mode: b.string("address_mode")?.unwrap_or_default(),
        meta: b.string_map("meta")?.unwrap_or_default(),
        checks: Vec::new(),
    };
    for mut check in b.blocks("check") {
        check.no_labels()?;
        let c = &mut check.body;
        service.checks.push(ServiceCheck {
            name: c.string("name")?.unwrap_or_default(),
            check_type: c.string("type")?.unwrap_or_default(),
            path: c.string("path")?.unwrap_or_default(),
            protocol: c.string("protocol")?.unwrap_or_default(),
            port_label: c.string("port")?.unwrap_or_default(),
            method: c.string("method")?.unwrap_or_default(),
            interval: c.duration("interval")?.unwrap_or(0),
            timeout: c.duration("timeout")?.unwrap_or(0),
        });
        check.body.finish()?;
    }
    block.body.finish()?;
    Ok(service)
}

/// Decodes a `constraint` block, including Nomad's shorthands
/// (`distinct_hosts = true`, `regexp = "..."`, `version = "..."`, ...).
pub(super) fn decode_constraint(mut block: Block<'_>) -> Result<Constraint, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut c = Constraint {
        l_target: b.string("attribute")?.unwrap_or_default(),
        r_target: b.string("value")?.unwrap_or_default(),
        operand: b.string("operator")?.unwrap_or_else(|| "=".into()),
    };
    for operand in ["regexp", "version", "semver", "set_contains", "set_contains_any", "set_contains_all"] {
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
