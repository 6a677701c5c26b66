//! The bridge network: per allocation, a namespace with a veth into the
//! bridge (hairpin on), an address from IPAM, a default route via the
//! bridge's gateway address, and its port mappings; and the reverse, plus
//! garbage collection of what allocations that no longer exist left.
//! This is what Nomad's loopback + bridge + firewall + portmap chain does.
//!
//! Every step of [`BridgeNetwork::setup`] tolerates having been done
//! already, so calling it again for a running allocation after an agent
//! restart re-adopts its network without disturbing it.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use crate::firewall::PortMapping;
use crate::ipam::Ipam;
use crate::netns::NetNs;
use crate::portmap::PortMap;
use crate::reaper::{Reaper, Work};
use crate::spares::Spares;
use crate::{firewall, link, sysctl, NetError, Result};

/// The interface name inside allocation namespaces (Nomad's `eth0`).
pub const CONTAINER_IFNAME: &str = "eth0";

/// Where and how the bridge network lives on this node.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Bridge name (client `bridge_network_name`).
    pub name: String,
    /// Subnet (client `bridge_network_subnet`); its first address is the gateway.
    pub subnet: Ipv4Net,
    /// Directory of the IPAM store (one subdirectory per network).
    pub ipam_dir: PathBuf,
    /// Where allocation namespaces are mounted.
    pub netns_dir: PathBuf,
}

/// The network of one allocation, as set up. Persisted by the caller and
/// handed back to [`BridgeNetwork::teardown`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocNetwork {
    /// The allocation (opaque ID).
    pub id: String,
    /// Its namespace file.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
    /// Interface name inside the namespace.
    pub interface: String,
    /// The host end of its veth.
    pub host_veth: String,
    /// Its port mappings.
    pub ports: Vec<PortMapping>,
}

/// What a garbage collection removed, by allocation ID.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Allocations whose leftovers were removed.
    pub removed: Vec<String>,
}

/// The bridge network of this node.
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    ipam: Ipam,
    host: rtnetlink::Handle,
    ports: Arc<PortMap>,
    bridge_index: tokio::sync::OnceCell<u32>,
    reaper: Reaper,
    /// Started by the first namespace this network creates.
    spares: std::sync::OnceLock<Spares>,
    /// Route sockets opened inside the spare namespaces handed out, by
    /// allocation, until its set-up uses them.
    inside: std::sync::Mutex<HashMap<String, netlink_sys::Socket>>,
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl BridgeNetwork {
    /// Checks the configuration against this node: the bridge name must be
    /// free or a bridge, and no route outside the bridge may overlap the
    /// subnet. Nothing is created until the first allocation needs it.
    pub async fn open(cfg: BridgeConfig) -> Result<BridgeNetwork> {
        if cfg.name.is_empty() || cfg.name.len() > 15 || cfg.name.contains(['/', ' ', ':']) {
            return Err(NetError::Config(format!(
                "bridge_network_name {:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)",
                cfg.name
            )));
        }
        let ipam = Ipam::new(cfg.ipam_dir.join(&cfg.name), cfg.subnet)?;
        let (conn, host, _) = rtnetlink::new_connection().map_err(crate::io_err("opening netlink"))?;
        tokio::spawn(conn);
        let existing = link::get(&host, &cfg.name).await?;
        if let Some(l) = &existing {
            if l.kind.as_deref() != Some("bridge") {
                return Err(NetError::Config(format!(
                    "bridge_network_name {:?} is already used by a {} interface on this node; set another name",
                    cfg.name,
                    l.kind.as_deref().unwrap_or("non-bridge")
                )));
            }
        }
        let ours = existing.map(|l| l.index);
        let links = link::list(&host).await?;
        for (dst, oif) in link::routes(&host).await? {
            if dst.prefix_len() == 0 || (ours.is_some() && oif == ours) || !overlaps(dst, cfg.subnet) {
                continue;
            }
            let dev = links.iter().find(|l| Some(l.index) == oif).map(|l| l.name.as_str()).unwrap_or("?");
            return Err(NetError::Config(format!(
                "bridge_network_subnet {} overlaps the route to {dst} via {dev}; choose a free subnet",
                cfg.subnet
            )));
        }
        // The reaper's slow deletions get their own socket, so they never queue
        // ahead of a setup's requests.
        let (conn, reaper_link, _) = rtnetlink::new_connection().map_err(crate::io_err("opening netlink"))?;
        tokio::spawn(conn);
        let ports = Arc::new(PortMap::open(&cfg.name)?);
        let reaper = Reaper::spawn(cfg.name.clone(), reaper_link, ipam.clone(), ports.clone());
        Ok(BridgeNetwork {
            cfg,
            ipam,
            host,
            ports,
            bridge_index: tokio::sync::OnceCell::new(),
            reaper,
            spares: std::sync::OnceLock::new(),
            inside: Default::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Creates the bridge, its address, forwarding, the shared iptables
    /// rules and the nftables port map, once per process.
    async fn ready(&self) -> Result<u32> {
        self.bridge_index
            .get_or_try_init(|| async {
                sysctl::ensure("net/ipv4/ip_forward", "1")?;
                let gw = Ipv4Net::new(self.ipam.gateway(), self.cfg.subnet.prefix_len())
                    .map_err(|e| NetError::Config(e.to_string()))?;
                let index = link::ensure_bridge(&self.host, &self.cfg.name, gw).await?;
                // Lets DNATed packets from 127.0.0.1 leave through the bridge.
                sysctl::ensure(&format!("net/ipv4/conf/{}/route_localnet", self.cfg.name), "1")?;
                let (name, subnet, ports) = (self.cfg.name.clone(), self.cfg.subnet, self.ports.clone());
                tokio::task::spawn_blocking(move || {
                    firewall::ensure_base(&name, subnet)?;
                    ports.ensure_table()
                })
                .await
                .map_err(|e| NetError::Config(e.to_string()))??;
                Ok(index)
            })
            .await
            .copied()
    }

    /// The name of an allocation's namespace under the netns directory.
    pub fn netns_name(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.name)
    }

    /// Creates (or finds) an allocation's own namespace: a spare made
    /// ahead of time when one is ready.
    pub fn create_netns(&self, id: &str) -> Result<NetNs> {
        let name = self.netns_name(id);
        if let Some(ns) = NetNs::open(&self.cfg.netns_dir, &name) {
            return Ok(ns);
        }
        let Some(spare) = self.spares.get_or_init(Spares::start).take() else {
            return NetNs::create(&self.cfg.netns_dir, &name);
        };
        let fd = std::path::PathBuf::from(format!("/proc/self/fd/{}", spare.ns.as_raw_fd()));
        let ns = NetNs::adopt(&self.cfg.netns_dir, &name, &fd)?;
        if let Some(route) = spare.route {
            self.opened_inside().insert(id.to_string(), route);
        }
        Ok(ns)
    }

    fn opened_inside(&self) -> std::sync::MutexGuard<'_, HashMap<String, netlink_sys::Socket>> {
        self.inside.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A netlink handle inside the allocation's namespace: over the socket
    /// its spare came with, or a new one.
    fn netlink_inside(&self, id: &str, ns: &NetNs) -> Result<rtnetlink::Handle> {
        let opened = self.opened_inside().remove(id);
        match opened {
            Some(socket) => crate::netns::route_handle(socket),
            None => ns.netlink(),
        }
    }

    /// Names an existing namespace (a pause container's) as the allocation's.
    pub fn adopt_netns(&self, id: &str, source: &std::path::Path) -> Result<NetNs> {
        NetNs::adopt(&self.cfg.netns_dir, &self.netns_name(id), source)
    }

    /// The host end of an allocation's veth.
    pub fn host_veth(&self, id: &str) -> String {
        format!("bv{}", &firewall::short_hash(&format!("{}/{id}", self.cfg.name))[..12])
    }

    /// Connects allocation `id`, whose namespace is `ns`, to the bridge
    /// with `ports` mapped. Idempotent.
    pub async fn setup(&self, id: &str, ns: &NetNs, ports: &[PortMapping]) -> Result<AllocNetwork> {
        let started = std::time::Instant::now();
        let bridge = self.ready().await?;
        let ip = self.ipam.reserve(id, CONTAINER_IFNAME)?;
        crate::reaper::publish_allocations(&self.cfg.name, &self.ipam);
        let net = AllocNetwork {
            id: id.to_string(),
            netns: ns.path().to_path_buf(),
            ip,
            gateway: self.ipam.gateway(),
            prefix_len: self.cfg.subnet.prefix_len(),
            interface: CONTAINER_IFNAME.into(),
            host_veth: self.host_veth(id),
            ports: ports.to_vec(),
        };
        let connected = self.connect(bridge, ns, &net).await;
        metrics::histogram!("berth.network.bridge.setup").record(started.elapsed().as_secs_f64() * 1e3);
        if let Err(e) = connected {
            metrics::counter!("berth.network.bridge.setup.errors").increment(1);
            let _ = self.teardown(&net).await;
            return Err(e);
        }
        Ok(net)
    }

    async fn connect(&self, bridge: u32, ns: &NetNs, net: &AllocNetwork) -> Result<()> {
        let inside = self.netlink_inside(&net.id, ns)?;
        let adopted = self.is_connected(bridge, &inside, net).await?;
        // One netlink transaction each, answered within the send.
        if adopted {
            self.ports.ensure(net.ip, &net.ports)?;
        } else {
            self.ports.add(net.ip, &net.ports)?;
        }
        self.connect_links(bridge, ns, &inside, net, adopted).await?;
        // Stale UDP entries for the new host ports would bypass the DNAT
        // (as portmap notes); the reaper flushes them.
        if !net.ports.is_empty() {
            self.reaper.queue(Work::UdpPorts(net.ports.iter().map(|p| p.host_port).collect()));
        }
        Ok(())
    }

    /// True when the allocation's veth pair is already in place (re-adoption).
    async fn is_connected(&self, bridge: u32, inside: &rtnetlink::Handle, net: &AllocNetwork) -> Result<bool> {
        match link::get(&self.host, &net.host_veth).await? {
            Some(l) if l.controller == Some(bridge) => Ok(link::get(inside, &net.interface).await?.is_some()),
            Some(_) => {
                link::delete(&self.host, &net.host_veth).await?;
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn connect_links(
        &self,
        bridge: u32,
        ns: &NetNs,
        inside: &rtnetlink::Handle,
        net: &AllocNetwork,
        adopted: bool,
    ) -> Result<()> {
        let mut peer = None;
        if !adopted {
            let file =
                std::fs::File::open(ns.path()).map_err(crate::io_err(format!("opening {}", ns.path().display())))?;
            let create = || link::create_veth(&self.host, &net.host_veth, &net.interface, &file, bridge);
            peer = match create().await {
                // A half-made pair from an interrupted setup.
                Err(e) if link::is_exists(&e) => {
                    link::delete(inside, &net.interface).await?;
                    link::delete(&self.host, &net.host_veth).await?;
                    create().await?.1
                }
                made => made?.1,
            };
        }
        let addr = Ipv4Net::new(net.ip, net.prefix_len).map_err(|e| NetError::Config(e.to_string()))?;
        link::configure_container(inside, &net.interface, peer, addr, net.gateway).await
    }

    /// Removes everything [`setup`](Self::setup) made for `net`, including
    /// the namespace mount. Missing pieces are fine.
    pub async fn teardown(&self, net: &AllocNetwork) -> Result<()> {
        self.release(&net.id).await
    }

    /// Removes what allocation `id` has, knowing only its ID: what an
    /// agent restarted after the allocation ended must do. Missing pieces
    /// are fine. The work is queued for the network's background reaper,
    /// which removes port mappings, namespace mount (and veth), conntrack
    /// entries and address in that order ([`settled`](Self::settled)
    /// waits for it).
    pub async fn release(&self, id: &str) -> Result<()> {
        self.opened_inside().remove(id);
        self.reaper.queue(Work::Allocation {
            id: id.to_string(),
            veth: self.host_veth(id),
            netns: (self.cfg.netns_dir.clone(), self.netns_name(id)),
        });
        Ok(())
    }

    /// Resolves once every teardown so far is complete, background part
    /// included, and the spare namespaces are made again.
    pub async fn settled(&self) {
        self.reaper.idle().await;
        if let Some(spares) = self.spares.get() {
            spares.full().await;
        }
    }

    /// Removes what allocations not in `live` left: namespaces, veths,
    /// addresses and port mappings.
    pub async fn gc(&self, live: &HashSet<String>) -> Result<GcReport> {
        let mut doomed: Vec<String> = Vec::new();
        let mut add = |id: String| {
            if !live.contains(&id) && !doomed.contains(&id) {
                doomed.push(id);
            }
        };
        let holders = self.ipam.holders();
        for (_, id) in &holders {
            add(id.clone());
        }
        let prefix = format!("{}-", self.cfg.name);
        for name in NetNs::list(&self.cfg.netns_dir, &prefix) {
            add(name[prefix.len()..].to_string());
        }
        // Mappings to an address nobody holds belong to nothing that can
        // be released by ID.
        let orphans: Vec<Ipv4Addr> = self
            .ports
            .list()?
            .into_iter()
            .map(|m| m.ip)
            .filter(|ip| !holders.iter().any(|(held, _)| held == ip))
            .collect();
        self.ports.remove(&orphans)?;
        for id in &doomed {
            tracing::info!(alloc_id = %id, "removing the network of an allocation that no longer exists");
            self.release(id).await?;
        }
        self.settled().await;
        // Veths on the bridge whose allocation is unknown (their namespace is gone).
        if let Some(br) = link::get(&self.host, &self.cfg.name).await? {
            let keep: HashSet<String> = live.iter().map(|id| self.host_veth(id)).collect();
            for l in link::list(&self.host).await? {
                if l.controller == Some(br.index) && l.name.starts_with("bv") && !keep.contains(&l.name) {
                    link::delete(&self.host, &l.name).await?;
                }
            }
        }
        Ok(GcReport { removed: doomed })
    }
}
