//! iptables rules of the bridge network, all in berth's own chains:
//!
//! * nat `BERTH-POSTROUTING` (first in POSTROUTING): masquerade for traffic
//!   leaving a bridge subnet, and for packets marked by `BERTH-MASQ-MARK`
//!   (hairpin and localhost port-mapped traffic, as portmap's `snat`).
//! * nat `BERTH-HOSTPORTS` (from PREROUTING and OUTPUT for local
//!   destinations): one jump per allocation and protocol to that
//!   allocation's `BERTH-DN-<hash>` chain, which marks and DNATs its ports.
//! * filter `BERTH-FORWARD` (first in FORWARD): accepts egress from a
//!   bridge, replies to it, and DNATed (mapped) traffic into it, so a
//!   default-drop FORWARD chain (Docker's) does not block them.
//!
//! The shared chains are created once, idempotently, with the `iptables`
//! crate. Per-allocation rules change in one `iptables-restore --noflush`
//! transaction each way (the crate runs one process per rule, and an
//! allocation's setup would pay for several), which keeps setup and
//! teardown in the low milliseconds and atomic.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::{NetError, Result};

/// nat chain that dispatches local-destination traffic to per-allocation chains.
pub const HOSTPORTS: &str = "BERTH-HOSTPORTS";
/// nat chain that marks packets for masquerading.
pub const MASQ_MARK: &str = "BERTH-MASQ-MARK";
/// nat chain jumped to first from POSTROUTING.
pub const POSTROUTING: &str = "BERTH-POSTROUTING";
/// filter chain jumped to first from FORWARD.
pub const FORWARD: &str = "BERTH-FORWARD";
/// Prefix of per-allocation DNAT chains.
pub const DNAT_PREFIX: &str = "BERTH-DN-";
/// The masquerade mark bit (portmap's default, bit 13).
const MARK: &str = "0x2000/0x2000";
/// iptables' multiport match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

/// One host port forwarded to a port of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// Port on every host address.
    pub host_port: u16,
    /// Port inside the allocation's namespace.
    pub container_port: u16,
}

/// A stable 16-hex-digit digest of an ID (FNV-1a, 64 bit), for names with
/// length limits (chain names, interface names).
pub fn short_hash(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The DNAT chain of allocation `id` on `bridge`.
pub fn dnat_chain(bridge: &str, id: &str) -> String {
    format!("{DNAT_PREFIX}{}", short_hash(&format!("{bridge}/{id}")))
}

fn comment(bridge: &str, id: &str) -> String {
    format!("berth alloc {id} on {bridge}")
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
    chain("nat", HOSTPORTS)?;
    chain("nat", MASQ_MARK)?;
    chain("nat", POSTROUTING)?;
    chain("filter", FORWARD)?;
    append("nat", MASQ_MARK, &format!("-j MARK --set-xmark {MARK}"))?;
    let local = format!("-m addrtype --dst-type LOCAL -j {HOSTPORTS}");
    append("nat", "PREROUTING", &local)?;
    append("nat", "OUTPUT", &local)?;
    first("nat", "POSTROUTING", &format!("-j {POSTROUTING}"))?;
    append("nat", POSTROUTING, &format!("-m mark --mark {MARK} -j MASQUERADE"))?;
    let tag = format!("-m comment --comment \"berth bridge {bridge}\"");
    append("nat", POSTROUTING, &format!("-s {subnet} -d {subnet} {tag} -j RETURN"))?;
    append("nat", POSTROUTING, &format!("-s {subnet} -d 224.0.0.0/4 {tag} -j RETURN"))?;
    append("nat", POSTROUTING, &format!("-s {subnet} {tag} -j MASQUERADE"))?;
    first("filter", "FORWARD", &format!("-j {FORWARD}"))?;
    append("filter", FORWARD, &format!("-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"))?;
    append("filter", FORWARD, &format!("-o {bridge} -m conntrack --ctstate DNAT {tag} -j ACCEPT"))?;
    append("filter", FORWARD, &format!("-i {bridge} {tag} -j ACCEPT"))?;
    Ok(())
}

/// The dispatch rules (`-A BERTH-HOSTPORTS …`) of an allocation, in
/// `iptables-save` form.
fn jump_rules(bridge: &str, id: &str, ports: &[PortMapping]) -> Vec<String> {
    let chain = dnat_chain(bridge, id);
    let mut out = Vec::new();
    for proto in ["tcp", "udp"] {
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let list: Vec<String> = chunk.iter().map(|p| p.host_port.to_string()).collect();
            out.push(format!(
                "-A {HOSTPORTS} -p {proto} -m multiport --dports {} -m comment --comment \"{}\" -j {chain}",
                list.join(","),
                comment(bridge, id)
            ));
        }
    }
    out
}

/// The rules of an allocation's own chain, in `iptables-save` form.
fn chain_rules(bridge: &str, id: &str, ip: Ipv4Addr, subnet: Ipv4Net, ports: &[PortMapping]) -> Vec<String> {
    let chain = dnat_chain(bridge, id);
    let mut out = Vec::new();
    for p in ports {
        for proto in ["tcp", "udp"] {
            let m = format!("-p {proto} -m {proto} --dport {}", p.host_port);
            out.push(format!("-A {chain} -s {subnet} {m} -j {MASQ_MARK}"));
            out.push(format!("-A {chain} -s 127.0.0.1/32 {m} -j {MASQ_MARK}"));
            out.push(format!("-A {chain} {m} -j DNAT --to-destination {ip}:{}", p.container_port));
        }
    }
    out
}

fn restore(op: &str, script: &str) -> Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Iptables { op: op.into(), detail: format!("running iptables-restore: {e}") })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| NetError::Iptables { op: op.into(), detail: e.to_string() })?;
    let out = child.wait_with_output().map_err(|e| NetError::Iptables { op: op.into(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Iptables { op: op.into(), detail: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// The nat table as `iptables-save` prints it.
fn save_nat() -> Result<String> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map_err(|e| NetError::Iptables { op: "reading the nat table".into(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(NetError::Iptables {
            op: "reading the nat table".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs an allocation's port mappings (nothing if it has none).
pub fn add_mappings(bridge: &str, id: &str, ip: Ipv4Addr, subnet: Ipv4Net, ports: &[PortMapping]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut script = format!("*nat\n:{} - [0:0]\n", dnat_chain(bridge, id));
    // Newest first: a host port handed to a new allocation wins over the
    // rules of one whose teardown is still queued.
    for r in jump_rules(bridge, id, ports) {
        script.push_str(&r.replacen("-A ", "-I ", 1));
        script.push('\n');
    }
    for r in chain_rules(bridge, id, ip, subnet, ports) {
        script.push_str(&r);
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    restore(&format!("mapping ports of {id}"), &script)
}

/// Makes the installed mappings of `id` exactly `ports`: kept as they are
/// when they already match (re-adoption after an agent restart), rewritten
/// otherwise.
pub fn ensure_mappings(bridge: &str, id: &str, ip: Ipv4Addr, subnet: Ipv4Net, ports: &[PortMapping]) -> Result<()> {
    let saved = save_nat()?;
    let chain = dnat_chain(bridge, id);
    let installed: Vec<&str> = saved
        .lines()
        .filter(|l| {
            l.starts_with(&format!("-A {chain} ")) || (l.starts_with("-A ") && l.ends_with(&format!("-j {chain}")))
        })
        .collect();
    let mut wanted = jump_rules(bridge, id, ports);
    wanted.extend(chain_rules(bridge, id, ip, subnet, ports));
    let mut have: Vec<String> = installed.iter().map(|s| s.to_string()).collect();
    have.sort();
    wanted.sort();
    if have == wanted {
        return Ok(());
    }
    remove_from_saved(bridge, id, &saved)?;
    add_mappings(bridge, id, ip, subnet, ports)
}

/// Removes the mappings of several allocations, given as (ID, the
/// mappings it was given). Those with known mappings go in one
/// transaction; when that fails (something was changed by hand), and for
/// unknown mappings, the installed rules are read back and removed.
pub fn remove_mappings(bridge: &str, allocs: &[(String, Option<Vec<PortMapping>>)]) -> Result<()> {
    let known: Vec<(&String, &Vec<PortMapping>)> =
        allocs.iter().filter_map(|(id, p)| p.as_ref().filter(|p| !p.is_empty()).map(|p| (id, p))).collect();
    let mut script = String::from("*nat\n");
    for (id, ports) in &known {
        let chain = dnat_chain(bridge, id);
        script.push_str(&format!(":{chain} - [0:0]\n"));
        for r in jump_rules(bridge, id, ports) {
            script.push_str(&r.replacen("-A ", "-D ", 1));
            script.push('\n');
        }
        script.push_str(&format!("-X {chain}\n"));
    }
    script.push_str("COMMIT\n");
    let fast = !known.is_empty() && restore("removing port mappings", &script).is_ok();
    let slow: Vec<&String> = allocs
        .iter()
        .filter(|(_, p)| p.is_none() || (!fast && p.as_ref().is_some_and(|p| !p.is_empty())))
        .map(|(id, _)| id)
        .collect();
    if slow.is_empty() {
        return Ok(());
    }
    let saved = save_nat()?;
    for id in slow {
        remove_from_saved(bridge, id, &saved)?;
    }
    Ok(())
}

fn remove_from_saved(bridge: &str, id: &str, saved: &str) -> Result<()> {
    let chain = dnat_chain(bridge, id);
    let jumps: Vec<&str> =
        saved.lines().filter(|l| l.starts_with("-A ") && l.ends_with(&format!("-j {chain}"))).collect();
    let exists = saved.lines().any(|l| l == format!(":{chain} - [0:0]") || l.starts_with(&format!(":{chain} ")));
    if jumps.is_empty() && !exists {
        return Ok(());
    }
    let mut script = String::from("*nat\n");
    if exists {
        script.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for j in jumps {
        script.push_str(&j.replacen("-A ", "-D ", 1));
        script.push('\n');
    }
    if exists {
        script.push_str(&format!("-X {chain}\n"));
    }
    script.push_str("COMMIT\n");
    restore(&format!("removing port mappings of {id}"), &script)
}

/// Allocation IDs on `bridge` whose mappings are installed, read from the
/// dispatch rules' comments. (A chain and its jumps are added and removed
/// in one transaction, so there are no chains without jumps to find.)
pub fn installed(bridge: &str) -> Result<Vec<String>> {
    let saved = save_nat()?;
    let mut ids: Vec<String> = Vec::new();
    let marker = "--comment \"berth alloc ";
    for l in saved.lines().filter(|l| l.starts_with(&format!("-A {HOSTPORTS} "))) {
        let Some(text) = l.split(marker).nth(1).and_then(|r| r.split('"').next()) else { continue };
        if let Some((id, on)) = text.split_once(" on ") {
            if on == bridge && !ids.iter().any(|x| x == id) {
                ids.push(id.to_string());
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_rendered_in_iptables_save_form() {
        let ports = [PortMapping { host_port: 8080, container_port: 80 }];
        let ip = Ipv4Addr::new(172, 26, 64, 5);
        let subnet: Ipv4Net = "172.26.64.0/20".parse().unwrap();
        let chain = dnat_chain("berth", "a1");
        assert_eq!(chain.len(), DNAT_PREFIX.len() + 16);
        assert!(chain.len() <= 28, "iptables chain names are at most 28 characters");
        let jumps = jump_rules("berth", "a1", &ports);
        assert_eq!(
            jumps[0],
            format!(
                "-A BERTH-HOSTPORTS -p tcp -m multiport --dports 8080 -m comment --comment \"berth alloc a1 on berth\" -j {chain}"
            )
        );
        let rules = chain_rules("berth", "a1", ip, subnet, &ports);
        assert!(
            rules.contains(&format!("-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.26.64.5:80"))
        );
        assert!(rules.contains(&format!("-A {chain} -s 127.0.0.1/32 -p udp -m udp --dport 8080 -j BERTH-MASQ-MARK")));
    }

    #[test]
    fn multiport_lists_are_split_at_fifteen() {
        let ports: Vec<PortMapping> = (1..=20).map(|p| PortMapping { host_port: p, container_port: p }).collect();
        let jumps = jump_rules("berth", "x", &ports);
        assert_eq!(jumps.len(), 4, "two chunks per protocol");
        assert!(jumps[0].contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 "));
    }
}
