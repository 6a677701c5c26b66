//! The netlink operations the bridge network needs, each one request:
//! look up links, create the bridge and its gateway address, create a veth
//! pair with one end placed straight into a namespace, attach a port to the
//! bridge with hairpin mode, configure the container end, delete links,
//! and read the routing table (for the subnet overlap check).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::{nl_err, NetError, Result};

/// What netlink says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfoSummary {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Link kind (`bridge`, `veth`, …), if any.
    pub kind: Option<String>,
    /// Index of the bridge it is attached to.
    pub controller: Option<u32>,
    /// The link it is bound to (a veth's peer, by its index in the peer's namespace).
    pub peer: Option<u32>,
}

fn summarize(m: &LinkMessage) -> LinkInfoSummary {
    let mut s =
        LinkInfoSummary { index: m.header.index, name: String::new(), kind: None, controller: None, peer: None };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Controller(c) => s.controller = Some(*c),
            LinkAttribute::Link(l) => s.peer = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// True when a request failed because a link of that name exists.
pub fn is_exists(e: &NetError) -> bool {
    matches!(e, NetError::Netlink { source, .. } if is_errno(source, libc::EEXIST))
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

/// The link called `name`, if there is one.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkInfoSummary>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(summarize)),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format!("looking up link {name}"))(e)),
    }
}

/// Every link.
pub async fn list(h: &Handle) -> Result<Vec<LinkInfoSummary>> {
    let msgs: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(nl_err("listing links"))?;
    Ok(msgs.iter().map(summarize).collect())
}

/// IPv4 addresses on link `index`, with prefix lengths.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<Ipv4Net>> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("listing addresses"))?;
    Ok(msgs
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Ipv4Net::new(*ip, m.header.prefix_len).ok(),
                _ => None,
            })
        })
        .collect())
}

/// Creates the bridge `name` (or checks that the existing link of that name
/// is one), gives it `gateway` (address with the subnet's prefix) unless it
/// has it, and sets it up. Returns its index.
pub async fn ensure_bridge(h: &Handle, name: &str, gateway: Ipv4Net) -> Result<u32> {
    let link = match get(h, name).await? {
        Some(l) => l,
        None => {
            match h.link().add(LinkBridge::new(name).up().build()).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl_err(format!("creating bridge {name}"))(e)),
            }
            get(h, name).await?.ok_or_else(|| NetError::Config(format!("bridge {name} vanished after creation")))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(NetError::Config(format!(
            "bridge_network_name {name:?} is already used by a {} link on this node; choose another name",
            link.kind.as_deref().unwrap_or("non-bridge")
        )));
    }
    let have = addresses(h, link.index).await?;
    if !have.contains(&gateway) {
        if let Some(other) = have.first() {
            return Err(NetError::Config(format!(
                "bridge {name} already has address {other}, not {gateway}; it belongs to another network"
            )));
        }
        add_address(h, link.index, name, gateway).await?;
    }
    set_up(h, link.index, name).await?;
    Ok(link.index)
}

/// Creates a veth pair: `host_name` attached to bridge `bridge` (up, with
/// hairpin mode on), and `peer_name` placed straight into the namespace
/// `peer_ns`. Returns the host end's index and the peer's index inside
/// its namespace.
///
/// The creation, the hairpin setting (by name) and the lookup are sent at
/// once: the kernel handles a socket's requests in the order sent.
pub async fn create_veth(
    h: &Handle,
    host_name: &str,
    peer_name: &str,
    peer_ns: &std::fs::File,
    bridge: u32,
) -> Result<(u32, Option<u32>)> {
    let peer =
        LinkMessageBuilder::<LinkUnspec>::new().name(peer_name.to_string()).setns_by_fd(peer_ns.as_raw_fd()).build();
    let msg = LinkVeth::new(host_name, peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(bridge)
        .up()
        .build();
    let create = async { h.link().add(msg).execute().await.map_err(nl_err(format!("creating veth {host_name}"))) };
    let hairpin = async {
        let port = LinkBridgePort::new(0).name(host_name.to_string()).hairpin(true).build();
        h.link().set_port(port).execute().await.map_err(nl_err(format!("setting hairpin mode on {host_name}")))
    };
    let ((), (), link) = futures::try_join!(create, hairpin, get(h, host_name))?;
    let link = link.ok_or_else(|| NetError::Config(format!("veth {host_name} vanished after creation")))?;
    Ok((link.index, link.peer))
}

/// Inside a namespace: loopback up, `address` on `ifname` (whose index is
/// looked up unless given), `ifname` up, and a default route via
/// `gateway`. Each step tolerates having been done. The four requests are
/// sent at once; the kernel handles them in order, so the route finds
/// its gateway reachable.
pub async fn configure_container(
    h: &Handle,
    ifname: &str,
    index: Option<u32>,
    address: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<()> {
    let index = match index {
        Some(i) => i,
        None => {
            get(h, ifname)
                .await?
                .ok_or_else(|| NetError::Config(format!("interface {ifname} is missing in the namespace")))?
                .index
        }
    };
    let route = async {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
        match h.route().add(route).execute().await {
            Err(e) if !is_errno(&e, libc::EEXIST) => Err(nl_err(format!("adding default route via {gateway}"))(e)),
            _ => Ok(()),
        }
    };
    futures::try_join!(loopback_up(h), add_address(h, index, ifname, address), set_up(h, index, ifname), route)?;
    Ok(())
}

/// Sets the loopback interface up (index 1 in every namespace).
pub async fn loopback_up(h: &Handle) -> Result<()> {
    set_up(h, 1, "lo").await
}

/// Adds `address` (with its prefix) to link `index`; present already is fine.
async fn add_address(h: &Handle, index: u32, name: &str, address: Ipv4Net) -> Result<()> {
    match h.address().add(index, IpAddr::V4(address.addr()), address.prefix_len()).execute().await {
        Err(e) if !is_errno(&e, libc::EEXIST) => Err(nl_err(format!("adding {address} to {name}"))(e)),
        _ => Ok(()),
    }
}

/// Sets link `index` up.
async fn set_up(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err(format!("setting {name} up")))
}

/// Deletes link `name`; returns false if there was none.
pub async fn delete(h: &Handle, name: &str) -> Result<bool> {
    let Some(link) = get(h, name).await? else { return Ok(false) };
    match h.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(nl_err(format!("deleting link {name}"))(e)),
    }
}

/// Unicast IPv4 routes of the main table, with their output interface.
pub async fn routes(h: &Handle) -> Result<Vec<(Ipv4Net, Option<u32>)>> {
    let msgs: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("listing routes"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.kind == RouteType::Unicast && m.header.table == 254)
        .filter_map(|m| {
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            Some((Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?, oif))
        })
        .collect())
}
