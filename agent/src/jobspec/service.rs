//! `service` blocks, with their `check`s.

use crate::hclspan::{Block, HclError};
use crate::structs::{Service, ServiceCheck};

/// Decodes a `service` block.
pub(super) fn decode_service(mut block: Block<'_>) -> Result<Service, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    super::refuse_what_berth_lacks(b)?;
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
