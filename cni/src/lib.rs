//! Berth's built-in container networking: what the CNI reference plugins
//! `bridge`, `host-local`, `portmap` and `firewall` do for Nomad, done in
//! process over netlink (port mappings are nftables map elements; the
//! static masquerade and forward rules are iptables), so a node needs no
//! plugin binaries.
//!
//! * [`netns`]: named network namespaces (create, adopt a container's, enter, delete).
//! * [`link`]: netlink operations on bridges, veth pairs, addresses and routes.
//! * [`ipam`]: the host-local style on-disk address store.
//! * [`firewall`]: masquerade and forward rules in berth's own iptables chains.
//! * [`portmap`]: per-allocation port mappings, elements of an nftables map.
//! * [`conntrack`]: flushing connection-tracking entries of removed mappings.
//! * [`bridge`]: the bridge network that ties them together per allocation.
//! * [`external`]: runs a user's CNI conflist with real plugin binaries (`mode = "cni/<name>"`).
//!
//! Nothing here knows about allocations beyond an opaque ID string.

pub mod bridge;
pub mod conntrack;
pub mod external;
pub mod firewall;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod portmap;
mod reaper;
mod spares;
mod sysctl;

pub use bridge::{AllocNetwork, BridgeConfig, BridgeNetwork, PortMapping};

/// Failures of network setup and teardown. Each names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An OS call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("{op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// An iptables command failed.
    #[error("iptables: {op}: {detail}")]
    Iptables {
        /// What was being done.
        op: String,
        /// What iptables said.
        detail: String,
    },
    /// An nftables request failed.
    #[error("nftables: {op}: {source}")]
    Nftables {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// No address is left, or the store is unreadable.
    #[error("address allocation: {0}")]
    Ipam(String),
    /// The configuration cannot work on this node.
    #[error("{0}")]
    Config(String),
    /// An external CNI plugin failed.
    #[error("CNI plugin {plugin:?}: {msg}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// The plugin's error (code and message).
        msg: String,
    },
}

/// Result of this crate's operations.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

pub(crate) fn io_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Io { op, source }
}

pub(crate) fn nl_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

/// A `NETLINK_NETFILTER` socket connected to the kernel.
pub(crate) fn netfilter_socket() -> Result<netlink_sys::Socket> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(io_err("opening a netfilter netlink socket"))?;
    s.bind_auto().map_err(io_err("binding a netfilter netlink socket"))?;
    s.connect(&SocketAddr::new(0, 0)).map_err(io_err("connecting a netfilter netlink socket"))?;
    Ok(s)
}
