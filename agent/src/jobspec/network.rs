//! `network` blocks, at group level and (HCL1 era) inside task `resources`,
//! with their `port "label"` and `dns` blocks.

use crate::hclspan::{Block, HclError};
use crate::structs::{CniConfig, DnsConfig, NetworkResource, Port};

/// Decodes a group-level (`task_level == false`) or task-level network block.
pub(super) fn decode(mut block: Block<'_>, task_level: bool) -> Result<NetworkResource, HclError> {
    block.no_labels()?;
    let b = &mut block.body;
    let mut net = NetworkResource { mbits: b.number("mbits")?.unwrap_or(0), ..NetworkResource::default() };
    if !task_level {
        net.mode = b.string("mode")?.unwrap_or_default();
        net.hostname = b.string("hostname")?.unwrap_or_default();
        if let Some(mut dns) = b.block("dns")? {
            dns.no_labels()?;
            net.dns = Some(DnsConfig {
                servers: dns.body.strings("servers")?.unwrap_or_default(),
                searches: dns.body.strings("searches")?.unwrap_or_default(),
                options: dns.body.strings("options")?.unwrap_or_default(),
            });
            dns.body.finish()?;
        }
        if let Some(mut cni) = b.block("cni")? {
            cni.no_labels()?;
            net.cni = Some(CniConfig { args: cni.body.string_map("args")?.unwrap_or_default() });
            cni.body.finish()?;
        }
    }
    for mut port in b.blocks("port") {
        let label = port.label()?;
        let value: Option<u16> = port.body.number("static")?;
        let to: i32 = port.body.number("to")?.unwrap_or(0);
        let host_network = port.body.string("host_network")?.unwrap_or_default();
        port.body.finish()?;
        // A port with a static value is reserved; `static = 0` is dynamic, as in Nomad.
        match value.filter(|v| *v > 0) {
            Some(value) => net.reserved_ports.push(Port { label, value, to, host_network }),
            None => net.dynamic_ports.push(Port { label, value: 0, to, host_network }),
        }
    }
    block.body.finish()?;
    Ok(net)
}
