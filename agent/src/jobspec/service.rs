//! `service` blocks, with their `check`s and `check_restart`s.

use std::collections::BTreeMap;

use crate::hclspan::{Block, HclError};
use crate::structs::{CheckRestart, Service, ServiceCheck};

/// Decodes a `service` block.
pub(super) fn decode_service(mut block: Block<'_>) -> Result<Service, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    super::refuse_what_berth_lacks(b)?;
    let mut service = Service {
        name: b.string("name")?.unwrap_or_default(),
        task_name: b.string("task")?.unwrap_or_default(),
        tags: b.strings("tags")?.unwrap_or_default(),
        canary_tags: b.strings("canary_tags")?.unwrap_or_default(),
        port_label: b.string("port")?.unwrap_or_default(),
        provider: b.string("provider")?.unwrap_or_default(),
        address_mode: b.string("address_mode")?.unwrap_or_default(),
        address: b.string("address")?.unwrap_or_default(),
        meta: b.string_map("meta")?.unwrap_or_default(),
        canary_meta: b.string_map("canary_meta")?.unwrap_or_default(),
        on_update: b.string("on_update")?.unwrap_or_default(),
        checks: Vec::new(),
    };
    let restart = b.block("check_restart")?.map(decode_check_restart).transpose()?;
    for check in b.blocks("check") {
        let mut check = decode_check(check)?;
        // A service's check_restart applies to its checks without one.
        if check.check_restart.is_none() {
            check.check_restart = restart.clone();
        }
        service.checks.push(check);
    }
    block.body.finish()?;
    Ok(service)
}

fn decode_check(mut check: Block<'_>) -> Result<ServiceCheck, HclError> {
    check.no_labels()?;
    let c = &mut check.body;
    let header = match c.block("header")? {
        Some(mut h) => {
            let mut out = BTreeMap::new();
            for (name, value) in h.body.free_form()? {
                let values = match value {
                    serde_json::Value::Array(items) => {
                        items.into_iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<String>>>()
                    }
                    serde_json::Value::String(s) => Some(vec![s]),
                    _ => None,
                };
                let values = values.ok_or_else(|| h.error(format!("header {name:?} must be a list of strings")))?;
                out.insert(name, values);
            }
            out
        }
        None => BTreeMap::new(),
    };
    let parsed = ServiceCheck {
        name: c.string("name")?.unwrap_or_default(),
        check_type: c.string("type")?.unwrap_or_default(),
        command: c.string("command")?.unwrap_or_default(),
        args: c.strings("args")?.unwrap_or_default(),
        path: c.string("path")?.unwrap_or_default(),
        protocol: c.string("protocol")?.unwrap_or_default(),
        port_label: c.string("port")?.unwrap_or_default(),
        address_mode: c.string("address_mode")?.unwrap_or_default(),
        method: c.string("method")?.unwrap_or_default(),
        body: c.string("body")?.unwrap_or_default(),
        header,
        interval: c.duration("interval")?.unwrap_or(0),
        timeout: c.duration("timeout")?.unwrap_or(0),
        initial_status: c.string("initial_status")?.unwrap_or_default(),
        tls_skip_verify: c.bool("tls_skip_verify")?.unwrap_or(false),
        grpc_service: c.string("grpc_service")?.unwrap_or_default(),
        grpc_use_tls: c.bool("grpc_use_tls")?.unwrap_or(false),
        task_name: c.string("task")?.unwrap_or_default(),
        success_before_passing: c.number("success_before_passing")?.unwrap_or(0),
        failures_before_critical: c.number("failures_before_critical")?.unwrap_or(0),
        failures_before_warning: c.number("failures_before_warning")?.unwrap_or(0),
        on_update: c.string("on_update")?.unwrap_or_default(),
        check_restart: c.block("check_restart")?.map(decode_check_restart).transpose()?,
    };
    check.body.finish()?;
    Ok(parsed)
}

fn decode_check_restart(mut block: Block<'_>) -> Result<CheckRestart, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let restart = CheckRestart {
        limit: b.number("limit")?.unwrap_or(0),
        grace: b.duration("grace")?.unwrap_or(1_000_000_000),
        ignore_warnings: b.bool("ignore_warnings")?.unwrap_or(false),
    };
    block.body.finish()?;
    Ok(restart)
}
