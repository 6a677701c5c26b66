//! Connection-tracking cleanup over netlink (`NETLINK_NETFILTER`): dump the
//! IPv4 table, then delete the entries a filter selects, by their original
//! tuple. Used when a mapping is added (stale UDP entries for its host port
//! would bypass the new DNAT, as portmap notes) and when an allocation is
//! torn down (nothing may keep steering packets to its old address).
//! A kernel without conntrack has nothing to flush.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::Socket;

use crate::{io_err, Result};

/// The parts of a conntrack entry filters look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// IP protocol number (6 tcp, 17 udp).
    pub protocol: u8,
    /// Original direction source address.
    pub orig_src: Option<Ipv4Addr>,
    /// Original direction destination address.
    pub orig_dst: Option<Ipv4Addr>,
    /// Original direction destination port.
    pub orig_dst_port: Option<u16>,
    /// Reply direction source address (the DNAT target).
    pub reply_src: Option<Ipv4Addr>,
}

fn read_tuple(tuple: &[Tuple], src: &mut Option<Ipv4Addr>, dst: &mut Option<Ipv4Addr>, e: &mut Entry, orig: bool) {
    for t in tuple {
        match t {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(IpAddr::V4(a)) => *src = Some(*a),
                        IPTuple::DestinationAddress(IpAddr::V4(a)) => *dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) if orig => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(proto) => e.protocol = u8::from(*proto),
                        ProtoTuple::DestinationPort(port) => e.orig_dst_port = Some(*port),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn entry_of(attrs: &[ConntrackAttribute]) -> (Entry, Option<Vec<Tuple>>) {
    let mut e = Entry::default();
    let mut orig_tuple = None;
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => {
                let (mut s, mut d) = (None, None);
                read_tuple(t, &mut s, &mut d, &mut e, true);
                e.orig_src = s;
                e.orig_dst = d;
                orig_tuple = Some(t.clone());
            }
            ConntrackAttribute::CtaTupleReply(t) => {
                let (mut s, mut d) = (None, None);
                read_tuple(t, &mut s, &mut d, &mut e, false);
                e.reply_src = s;
            }
            _ => {}
        }
    }
    (e, orig_tuple)
}

fn request(msg: ConntrackMessage, flags: u16) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut packet = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0), msg)),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    buf
}

/// Reads messages until the kernel's DONE (dump) or ACK/error (request);
/// calls `each` for every conntrack message. Returns false on a netlink error.
fn receive(s: &Socket, mut each: impl FnMut(&[ConntrackAttribute])) -> Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.recv(&mut &mut buf[..], 0).map_err(io_err("reading conntrack entries"))?;
        let mut off = 0;
        while off < n {
            let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n]) else { return Ok(false) };
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(true),
                NetlinkPayload::Error(e) => return Ok(e.code.is_none()),
                NetlinkPayload::InnerMessage(m) => {
                    if let NetfilterMessageInner::Conntrack(
                        ConntrackMessage::New(attrs) | ConntrackMessage::Get(attrs),
                    ) = &m.inner
                    {
                        each(attrs);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// Deletes every IPv4 entry `select` picks; returns how many went.
pub fn flush(select: impl Fn(&Entry) -> bool) -> Result<usize> {
    let s = crate::netfilter_socket()?;
    s.send(&request(ConntrackMessage::Get(vec![]), NLM_F_REQUEST | NLM_F_DUMP), 0)
        .map_err(io_err("asking for conntrack entries"))?;
    let mut doomed = Vec::new();
    // A kernel without conntrack answers with an error: nothing to flush.
    let ok = receive(&s, |attrs| {
        let (e, tuple) = entry_of(attrs);
        if let Some(t) = tuple.filter(|_| select(&e)) {
            doomed.push(t);
        }
    })?;
    if !ok {
        return Ok(0);
    }
    let mut deleted = 0;
    for t in doomed {
        s.send(
            &request(ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(t)]), NLM_F_REQUEST | NLM_F_ACK),
            0,
        )
        .map_err(io_err("deleting a conntrack entry"))?;
        // An entry that expired meanwhile answers ENOENT: fine.
        if receive(&s, |_| {})? {
            deleted += 1;
        }
    }
    Ok(deleted)
}
