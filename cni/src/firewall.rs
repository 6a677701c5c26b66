//! The static iptables rules of the bridge network, in berth's own chains,
//! made once per bridge and never changed per allocation (port mappings
//! are nftables map elements, [`crate::portmap`]):
//!
//! * nat `BERTH-POSTROUTING` (first in POSTROUTING): masquerade for traffic
//!   leaving a bridge subnet, and for port-mapped (DNATed) connections
//!   from the subnet itself (hairpin) or from loopback into it, as
//!   portmap's `snat` does.
//! * filter `BERTH-FORWARD` (first in FORWARD): accepts egress from a
//!   bridge, replies to it, and DNATed (mapped) traffic into it, so a
//!   default-drop FORWARD chain (Docker's) does not block them.
//!
//! These stay in iptables because Docker's FORWARD policy is an iptables
//! one: an accept in another nftables table would not override its drop.
//! They are created idempotently with the `iptables` crate.

use ipnet::Ipv4Net;

use crate::{NetError, Result};

/// nat chain jumped to first from POSTROUTING.
pub const POSTROUTING: &str = "BERTH-POSTROUTING";
/// filter chain jumped to first from FORWARD.
pub const FORWARD: &str = "BERTH-FORWARD";

/// One host port forwarded to a port of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// Port on every host address.
    pub host_port: u16,
    /// Port inside the allocation's namespace.
    pub container_port: u16,
}

/// A stable 16-hex-digit digest of an ID (FNV-1a, 64 bit), for names with
/// length limits (interface names).
pub fn short_hash(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn ipt_err(op: &str) -> impl FnOnce(Box<dyn std::error::Error>) -> NetError + '_ {
    move |e| NetError::Iptables { op: op.to_string(), detail: e.to_string() }
}

/// Creates the shared chains and their jumps, and the per-bridge rules of
/// `bridge`/`subnet`. Idempotent: run it at every agent start.
pub fn ensure_base(bridge: &str, subnet: Ipv4Net) -> Result<()> {
    let ipt = iptables::new(false).map_err(ipt_err("finding the iptables command"))?;
    let chain = |table: &str, name: &str| -> Result<()> {
        if !ipt.chain_exists(table, name).map_err(ipt_err("listing chains"))? {
            ipt.new_chain(table, name).map_err(ipt_err(&format!("creating chain {table} {name}")))?;
        }
        Ok(())
    };
    let append = |table: &str, chain: &str, rule: &str| -> Result<()> {
        if !ipt.exists(table, chain, rule).map_err(ipt_err("checking a rule"))? {
            ipt.append(table, chain, rule).map_err(ipt_err(&format!("adding {rule:?} to {table} {chain}")))?;
        }
        Ok(())
    };
    let first = |table: &str, chain: &str, rule: &str| -> Result<()> {
        if !ipt.exists(table, chain, rule).map_err(ipt_err("checking a rule"))? {
            ipt.insert(table, chain, rule, 1).map_err(ipt_err(&format!("adding {rule:?} to {table} {chain}")))?;
        }
        Ok(())
    };
    chain("nat", POSTROUTING)?;
    chain("filter", FORWARD)?;
    first("nat", "POSTROUTING", &format!("-j {POSTROUTING}"))?;
    let tag = format!("-m comment --comment \"berth bridge {bridge}\"");
    let mapped = format!("-d {subnet} -m conntrack --ctstate DNAT {tag} -j MASQUERADE");
    append("nat", POSTROUTING, &format!("-s {subnet} {mapped}"))?;
    append("nat", POSTROUTING, &format!("-s 127.0.0.0/8 {mapped}"))?;
    append("nat", POSTROUTING, &format!("-s {subnet} -d {subnet} {tag} -j RETURN"))?;
    append("nat", POSTROUTING, &format!("-s {subnet} -d 224.0.0.0/4 {tag} -j RETURN"))?;
    append("nat", POSTROUTING, &format!("-s {subnet} {tag} -j MASQUERADE"))?;
    first("filter", "FORWARD", &format!("-j {FORWARD}"))?;
    append("filter", FORWARD, &format!("-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"))?;
    append("filter", FORWARD, &format!("-o {bridge} -m conntrack --ctstate DNAT {tag} -j ACCEPT"))?;
    append("filter", FORWARD, &format!("-i {bridge} {tag} -j ACCEPT"))?;
    Ok(())
}
