//! Per-allocation port mappings, in nftables. Each bridge has a table
//! `ip berth-<bridge>` holding one map, `hostports`, from (protocol, host
//! port) to (allocation address, container port), and two nat chains
//! (prerouting and output, just before Docker's iptables nat chains) that
//! DNAT traffic to a local address through it:
//!
//! ```text
//! fib daddr type local dnat ip to meta l4proto . th dport map @hostports
//! ```
//!
//! A mapping is a map element, not a rule: adding or removing one is a
//! single netlink transaction that touches neither chains nor rules, so it
//! costs microseconds, needs no process and waits for no RCU grace
//! period. Nothing here spawns a process; messages are written and read
//! with `netlink-packet-core`'s attribute types on a `NETLINK_NETFILTER`
//! socket. (No permissively licensed crate speaks nftables without the C
//! libnftnl; the few message types used here are encoded below.)
//!
//! The socket is kept open for the network's lifetime: closing a netfilter
//! netlink socket waits for the kernel to free what earlier transactions
//! removed (an RCU grace period, ~10 ms), which would otherwise land on
//! every change.
//!
//! Masquerading of hairpin and localhost traffic, and the forward accepts,
//! stay in berth's iptables chains ([`crate::firewall`]), which match
//! DNATed connections whichever table did the DNAT.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use netlink_packet_core::{
    Emitable, Nla, NlasIterator, NLA_F_NESTED, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};

use crate::firewall::PortMapping;
use crate::{NetError, Result};

/// The map of mappings in each bridge's table.
pub const MAP: &str = "hostports";
/// Protocols every mapping covers (IP protocol numbers), as Nomad maps both.
const PROTOCOLS: [u8; 2] = [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8];

/// One installed mapping, as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    /// IP protocol number (6 tcp, 17 udp).
    pub protocol: u8,
    /// Port on every local address.
    pub host_port: u16,
    /// The allocation's address.
    pub ip: Ipv4Addr,
    /// Port inside the allocation.
    pub container_port: u16,
}

impl Mapping {
    /// The map elements (both protocols) of `ports` of the allocation at `ip`.
    pub fn of(ip: Ipv4Addr, ports: &[PortMapping]) -> Vec<Mapping> {
        let mut out: Vec<Mapping> = ports
            .iter()
            .flat_map(|p| {
                PROTOCOLS.map(|protocol| Mapping {
                    protocol,
                    host_port: p.host_port,
                    ip,
                    container_port: p.container_port,
                })
            })
            .collect();
        out.sort();
        out
    }

    /// The key: protocol and host port, each in a 32-bit register.
    fn key(&self) -> [u8; 8] {
        let [a, b] = self.host_port.to_be_bytes();
        [self.protocol, 0, 0, 0, a, b, 0, 0]
    }

    /// The value: address and port, each in a 32-bit register.
    fn value(&self) -> [u8; 8] {
        let [a, b, c, d] = self.ip.octets();
        let [e, f] = self.container_port.to_be_bytes();
        [a, b, c, d, e, f, 0, 0]
    }

    fn parse(key: &[u8], value: &[u8]) -> Option<Mapping> {
        let (key, value): (&[u8; 8], &[u8; 8]) = (key.try_into().ok()?, value.try_into().ok()?);
        Some(Mapping {
            protocol: key[0],
            host_port: u16::from_be_bytes([key[4], key[5]]),
            ip: Ipv4Addr::new(value[0], value[1], value[2], value[3]),
            container_port: u16::from_be_bytes([value[4], value[5]]),
        })
    }
}

/// The nftables table of `bridge`.
pub fn table(bridge: &str) -> String {
    format!("berth-{bridge}")
}

// Message types (nfnetlink subsystem nf_tables) and attributes, from
// <linux/netfilter/nf_tables.h> and <linux/netfilter/nfnetlink.h>.
const SUBSYS_NFTABLES: u16 = 10;
const BATCH_BEGIN: u16 = 16;
const BATCH_END: u16 = 17;
const MSG_NEWTABLE: u16 = 0;
const MSG_NEWCHAIN: u16 = 3;
const MSG_NEWRULE: u16 = 6;
const MSG_DELRULE: u16 = 8;
const MSG_NEWSET: u16 = 9;
const MSG_NEWSETELEM: u16 = 12;
const MSG_GETSETELEM: u16 = 13;
const MSG_DELSETELEM: u16 = 14;
const NFPROTO_IPV4: u8 = 2;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const LIST_ELEM: u16 = 1;
const DATA_VALUE: u16 = 1;
/// 32-bit registers as nft uses them: register 1 (the first four 32-bit
/// ones) and 32-bit register 1 (its second word).
const REG_1: u32 = 1;
const REG32_01: u32 = 9;
/// nft's type IDs, for `nft list` to print the map: `inet_proto .
/// inet_service : ipv4_addr . inet_service` (concatenations shift by 6 bits).
const KEY_TYPE: u32 = (12 << 6) | 13;
const DATA_TYPE: u32 = (7 << 6) | 13;
/// Just before the iptables nat chains (priority -100), so a mapping wins
/// over a Docker-published port of the same number.
const NAT_PRIORITY: i32 = -110;

/// A netlink attribute of the messages built here.
enum Attr {
    Str(u16, String),
    U32(u16, u32),
    Bytes(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Str(_, s) => s.len() + 1,
            Attr::U32(..) => 4,
            Attr::Bytes(_, b) => b.len(),
            Attr::Nest(_, v) => v.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Str(k, _) | Attr::U32(k, _) | Attr::Bytes(k, _) => *k,
            Attr::Nest(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::Str(_, s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            Attr::U32(_, v) => buf.copy_from_slice(&v.to_be_bytes()),
            Attr::Bytes(_, b) => buf.copy_from_slice(b),
            Attr::Nest(_, v) => v.as_slice().emit(buf),
        }
    }
}

fn s(kind: u16, v: &str) -> Attr {
    Attr::Str(kind, v.to_string())
}

/// One expression of a rule.
fn expr(name: &str, data: Vec<Attr>) -> Attr {
    Attr::Nest(LIST_ELEM, vec![s(1, name), Attr::Nest(2, data)])
}

/// `fib daddr type local dnat ip to meta l4proto . th dport map @hostports`.
fn dnat_rule(table: &str, chain: &str) -> Vec<Attr> {
    let rtn_local = 2u32.to_ne_bytes().to_vec();
    let exprs = vec![
        // fib: dreg, result addrtype, flags daddr.
        expr("fib", vec![Attr::U32(1, REG_1), Attr::U32(2, 3), Attr::U32(3, 2)]),
        // cmp: sreg, op eq, data.
        expr(
            "cmp",
            vec![Attr::U32(1, REG_1), Attr::U32(2, 0), Attr::Nest(3, vec![Attr::Bytes(DATA_VALUE, rtn_local)])],
        ),
        // meta: dreg, key l4proto.
        expr("meta", vec![Attr::U32(1, REG_1), Attr::U32(2, 16)]),
        // payload: dreg, base transport header, offset 2, length 2.
        expr("payload", vec![Attr::U32(1, REG32_01), Attr::U32(2, 2), Attr::U32(3, 2), Attr::U32(4, 2)]),
        // lookup: set, sreg, dreg.
        expr("lookup", vec![s(1, MAP), Attr::U32(2, REG_1), Attr::U32(3, REG_1)]),
        // nat: type dnat, family ipv4, address and port registers, flags
        // map-ips | proto-specified.
        expr(
            "nat",
            vec![
                Attr::U32(1, 1),
                Attr::U32(2, u32::from(NFPROTO_IPV4)),
                Attr::U32(3, REG_1),
                Attr::U32(4, REG_1),
                Attr::U32(5, REG32_01),
                Attr::U32(6, REG32_01),
                Attr::U32(7, 3),
            ],
        ),
    ];
    vec![s(1, table), s(2, chain), Attr::Nest(4, exprs)]
}

fn base_chain(table: &str, name: &str, hook: u32) -> Vec<Attr> {
    vec![
        s(1, table),
        s(3, name),
        Attr::Nest(4, vec![Attr::U32(1, hook), Attr::U32(2, NAT_PRIORITY as u32)]),
        Attr::U32(5, 1), // policy accept
        s(7, "nat"),
    ]
}

fn elements(table: &str, mappings: &[Mapping], with_values: bool) -> Vec<Attr> {
    let list = mappings
        .iter()
        .map(|m| {
            let mut e = vec![Attr::Nest(1, vec![Attr::Bytes(DATA_VALUE, m.key().to_vec())])];
            if with_values {
                e.push(Attr::Nest(2, vec![Attr::Bytes(DATA_VALUE, m.value().to_vec())]));
            }
            Attr::Nest(LIST_ELEM, e)
        })
        .collect();
    vec![s(1, table), s(2, MAP), Attr::Nest(3, list)]
}

fn nl_error(op: &str, errno: i32) -> NetError {
    NetError::Nftables { op: op.to_string(), source: std::io::Error::from_raw_os_error(errno) }
}

/// Appends one netlink message (header, nfgenmsg, attributes) to `buf`.
fn message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[Attr]) {
    let len = 16 + 4 + attrs.buffer_len();
    let start = buf.len();
    buf.resize(start + len, 0);
    let m = &mut buf[start..];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16] = family;
    m[18..20].copy_from_slice(&res_id.to_be_bytes());
    attrs.emit(&mut m[20..]);
}

/// One nf_tables transaction: applied whole or not at all.
struct Batch {
    buf: Vec<u8>,
    first: u32,
    seq: u32,
}

impl Batch {
    fn new(first: u32) -> Batch {
        let mut b = Batch { buf: Vec::with_capacity(2048), first, seq: first };
        message(&mut b.buf, BATCH_BEGIN, NLM_F_REQUEST, first, 0, SUBSYS_NFTABLES, &[]);
        b
    }

    fn add(&mut self, msg: u16, flags: u16, attrs: &[Attr]) {
        self.seq += 1;
        let kind = (SUBSYS_NFTABLES << 8) | msg;
        message(&mut self.buf, kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, NFPROTO_IPV4, 0, attrs);
    }
}

/// The netfilter socket and the next sequence number.
struct Channel {
    sock: netlink_sys::Socket,
    seq: u32,
}

/// The nftables port map of one bridge, over a socket opened in the
/// caller's network namespace.
pub struct PortMap {
    table: String,
    channel: Mutex<Channel>,
}

impl PortMap {
    /// Opens the netlink socket for `bridge`'s table (nothing is created yet).
    pub fn open(bridge: &str) -> Result<PortMap> {
        let sock = crate::netfilter_socket()?;
        Ok(PortMap { table: table(bridge), channel: Mutex::new(Channel { sock, seq: 0 }) })
    }

    /// The channel, its sequence numbers restarted long before they could wrap.
    fn channel(&self) -> std::sync::MutexGuard<'_, Channel> {
        let mut ch = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        if ch.seq > u32::MAX / 2 {
            ch.seq = 0;
        }
        ch
    }

    /// Builds a transaction with `fill` and commits it, checking that every
    /// message was acknowledged. The kernel handles a batch within the
    /// send, so every answer is already queued when it returns; answers to
    /// other sequence numbers (an earlier request cut short) are skipped.
    fn commit(&self, op: &str, fill: impl FnOnce(&mut Batch)) -> Result<()> {
        let mut ch = self.channel();
        let mut b = Batch::new(ch.seq + 1);
        fill(&mut b);
        let (first, last) = (b.first + 1, b.seq);
        let expected = (last - b.first) as usize;
        message(&mut b.buf, BATCH_END, NLM_F_REQUEST, last + 1, 0, SUBSYS_NFTABLES, &[]);
        ch.seq = last + 1;
        let fail = |source| NetError::Nftables { op: op.to_string(), source };
        ch.sock.send(&b.buf, 0).map_err(fail)?;
        let mut acked = 0;
        let mut failure = None;
        let mut buf = vec![0u8; 64 * 1024];
        while acked < expected {
            let n = match ch.sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(fail(e)),
            };
            for_each_message(&buf[..n], |kind, seq, payload| {
                if kind == NLMSG_ERROR && payload.len() >= 4 && (first..=last).contains(&seq) {
                    acked += 1;
                    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    if code != 0 && failure.is_none() {
                        failure = Some(-code);
                    }
                }
            });
        }
        match failure {
            Some(errno) => Err(nl_error(op, errno)),
            None if acked < expected => {
                Err(fail(std::io::Error::other(format!("the kernel answered {acked} of {expected} requests"))))
            }
            None => Ok(()),
        }
    }

    /// Creates the table, chains and map, and (re)writes the two rules.
    /// Idempotent and atomic; installed mappings are kept. Run at every start.
    pub fn ensure_table(&self) -> Result<()> {
        let t = &self.table;
        self.commit(&format!("creating nftables table {t}"), |b| {
            b.add(MSG_NEWTABLE, NLM_F_CREATE, &[s(1, t)]);
            b.add(MSG_NEWCHAIN, NLM_F_CREATE, &base_chain(t, "prerouting", 0));
            b.add(MSG_NEWCHAIN, NLM_F_CREATE, &base_chain(t, "output", 3));
            b.add(
                MSG_NEWSET,
                NLM_F_CREATE,
                &[
                    s(1, t),
                    s(2, MAP),
                    Attr::U32(3, 0x8), // a map
                    Attr::U32(4, KEY_TYPE),
                    Attr::U32(5, 8),
                    Attr::U32(6, DATA_TYPE),
                    Attr::U32(7, 8),
                    Attr::U32(10, 1),
                ],
            );
            for chain in ["prerouting", "output"] {
                // A rule request without a handle flushes the chain.
                b.add(MSG_DELRULE, 0, &[s(1, t), s(2, chain)]);
                b.add(MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &dnat_rule(t, chain));
            }
        })
    }

    /// The installed mappings (none if the table does not exist).
    pub fn list(&self) -> Result<Vec<Mapping>> {
        let op = format!("listing the port mappings in {}", self.table);
        let fail = |source| NetError::Nftables { op: op.clone(), source };
        let mut ch = self.channel();
        ch.seq += 1;
        let seq = ch.seq;
        let mut req = Vec::new();
        let kind = (SUBSYS_NFTABLES << 8) | MSG_GETSETELEM;
        let attrs = [s(1, &self.table), s(2, MAP)];
        message(&mut req, kind, NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO_IPV4, 0, &attrs);
        ch.sock.send(&req, 0).map_err(fail)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = ch.sock.recv(&mut &mut buf[..], 0).map_err(fail)?;
            let mut end = None;
            for_each_message(&buf[..n], |kind, got, payload| match kind {
                _ if got != seq => {}
                NLMSG_DONE => end = Some(Ok(())),
                NLMSG_ERROR if payload.len() >= 4 => {
                    let code = -i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    end = Some(if code == libc::ENOENT || code == 0 { Ok(()) } else { Err(nl_error(&op, code)) });
                }
                _ if payload.len() > 4 => out.extend(parse_elements(&payload[4..])),
                _ => {}
            });
            if let Some(r) = end {
                r?;
                out.sort();
                return Ok(out);
            }
        }
    }

    /// Maps `ports` to the allocation at `ip`. A host port still mapped to
    /// another address (an allocation whose teardown is queued) is taken
    /// over in the same transaction.
    pub fn add(&self, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let wanted = Mapping::of(ip, ports);
        let op = format!("mapping ports to {ip}");
        // Adding over a key with another value aborts the transaction,
        // which costs a grace period; look first.
        let installed = self.list()?;
        if installed.iter().any(|m| m.ip != ip && wanted.iter().any(|w| w.key() == m.key())) {
            return self.replace(&installed, &wanted, &op);
        }
        self.commit(&op, |b| b.add(MSG_NEWSETELEM, NLM_F_CREATE, &elements(&self.table, &wanted, true)))
    }

    /// Makes what is installed for `ip` exactly `ports` (re-adoption after
    /// an agent restart): nothing changes when it already is.
    pub fn ensure(&self, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
        let installed = self.list()?;
        let wanted = Mapping::of(ip, ports);
        let have: Vec<Mapping> = installed.iter().filter(|m| m.ip == ip).copied().collect();
        if have == wanted {
            return Ok(());
        }
        self.replace(&installed, &wanted, &format!("mapping ports to {ip}"))
    }

    /// One transaction that removes what `installed` has for `wanted`'s
    /// address or host ports and adds `wanted`.
    fn replace(&self, installed: &[Mapping], wanted: &[Mapping], op: &str) -> Result<()> {
        let ip = wanted.first().map(|m| m.ip);
        let doomed: Vec<Mapping> = installed
            .iter()
            .filter(|m| Some(m.ip) == ip || wanted.iter().any(|w| w.key() == m.key()))
            .copied()
            .collect();
        if doomed.is_empty() && wanted.is_empty() {
            return Ok(());
        }
        self.commit(op, |b| {
            if !doomed.is_empty() {
                b.add(MSG_DELSETELEM, 0, &elements(&self.table, &doomed, false));
            }
            if !wanted.is_empty() {
                b.add(MSG_NEWSETELEM, NLM_F_CREATE, &elements(&self.table, wanted, true));
            }
        })
    }

    /// Removes every mapping to one of `ips` (mappings another address
    /// took over stay).
    pub fn remove(&self, ips: &[Ipv4Addr]) -> Result<()> {
        let doomed: Vec<Mapping> = self.list()?.into_iter().filter(|m| ips.contains(&m.ip)).collect();
        if doomed.is_empty() {
            return Ok(());
        }
        self.commit("removing port mappings", |b| b.add(MSG_DELSETELEM, 0, &elements(&self.table, &doomed, false)))
    }
}

/// Calls `each(type, sequence number, payload)` for every netlink message in `buf`.
fn for_each_message(buf: &[u8], mut each: impl FnMut(u16, u32, &[u8])) {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("four bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            return;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("four bytes"));
        each(kind, seq, &buf[off + 16..off + len]);
        off += (len + 3) & !3;
    }
}

/// The value of `NFTA_DATA_VALUE` inside a nested data attribute.
fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    NlasIterator::new(nested).flatten().find(|a| a.kind() == DATA_VALUE).map(|a| a.value().to_vec())
}

/// The elements in the attributes of one set-element message.
fn parse_elements(attrs: &[u8]) -> Vec<Mapping> {
    let mut out = Vec::new();
    for list in NlasIterator::new(attrs).flatten().filter(|a| a.kind() == 3) {
        for elem in NlasIterator::new(list.value()).flatten() {
            let (mut key, mut value) = (None, None);
            for a in NlasIterator::new(elem.value()).flatten() {
                match a.kind() {
                    1 => key = data_value(a.value()),
                    2 => value = data_value(a.value()),
                    _ => {}
                }
            }
            if let Some(m) = key.zip(value).and_then(|(k, v)| Mapping::parse(&k, &v)) {
                out.push(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NlaBuffer;

    #[test]
    fn elements_are_laid_out_in_32_bit_registers_as_nft_does() {
        let m = Mapping { protocol: 6, host_port: 8080, ip: Ipv4Addr::new(172, 26, 0, 5), container_port: 80 };
        // `nft --debug=netlink`: element 00000006 0000901f : 05001aac 00005000
        assert_eq!(m.key(), [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(m.value(), [172, 26, 0, 5, 0, 80, 0, 0]);
        assert_eq!(Mapping::parse(&m.key(), &m.value()), Some(m));
        let both = Mapping::of(m.ip, &[PortMapping { host_port: 8080, container_port: 80 }]);
        assert_eq!(both.iter().map(|m| m.protocol).collect::<Vec<_>>(), vec![6, 17]);
    }

    #[test]
    fn element_messages_parse_back() {
        let ms = Mapping::of(Ipv4Addr::new(10, 0, 0, 2), &[PortMapping { host_port: 53, container_port: 5353 }]);
        let attrs = elements("berth-x", &ms, true);
        let mut buf = vec![0; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut buf);
        assert_eq!(parse_elements(&buf), ms);
        let strings: Vec<NlaBuffer<&[u8]>> = NlasIterator::new(&buf[..]).flatten().collect();
        assert_eq!(strings[0].value(), b"berth-x\0");
    }
}
