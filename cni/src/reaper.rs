//! Deferred teardown. What a stopped allocation had is removed by one
//! background task per network, in order: its port mappings and namespace
//! mount (which takes the veth pair along), then its conntrack entries,
//! any veth a still-held namespace kept, and only then its address,
//! so a new allocation never inherits entries nor loses its own to a flush.
//! Link deletion waits out kernel RCU grace periods, and a conntrack
//! flush walks the whole table, so none of it belongs on an allocation's
//! critical path; the task gathers what is queued (waiting a few
//! milliseconds for more, so that a burst of stops makes one batch),
//! removes all its mappings in one transaction and walks the table once
//! per batch. Stale-UDP flushes for new mappings ride the same walk.
//! (Until its turn comes, a stopped allocation's host ports can already be
//! taken over by a new allocation: [`PortMap::add`] replaces them, and the
//! removal here only deletes mappings that still point at the old address.)

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::ipam::Ipam;
use crate::netns::NetNs;
use crate::portmap::PortMap;
use crate::{conntrack, link};

/// One piece of deferred work.
pub(crate) enum Work {
    /// Remove an allocation's veth, namespace mount, conntrack entries and address.
    Allocation {
        /// Allocation ID (the IPAM holder).
        id: String,
        /// Host end of its veth.
        veth: String,
        /// Directory and name of its namespace mount.
        netns: (PathBuf, String),
    },
    /// Flush UDP entries to these host ports (new mappings).
    UdpPorts(Vec<u16>),
}

/// The handle of a network's reaper task.
pub(crate) struct Reaper {
    tx: mpsc::UnboundedSender<Work>,
    pending: watch::Sender<usize>,
}

impl Reaper {
    /// Starts the task (needs a tokio runtime).
    pub fn spawn(bridge: String, host: rtnetlink::Handle, ipam: Ipam, ports: std::sync::Arc<PortMap>) -> Reaper {
        let (tx, rx) = mpsc::unbounded_channel();
        let (pending, _) = watch::channel(0usize);
        tokio::spawn(run(rx, bridge, host, ipam, ports, pending.clone()));
        Reaper { tx, pending }
    }

    /// Queues work.
    pub fn queue(&self, work: Work) {
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send(work).is_err() {
            self.pending.send_modify(|n| *n -= 1);
        }
        publish_queue(&self.pending);
    }

    /// Resolves once everything queued so far is done.
    pub async fn idle(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// How long the reaper waits for more work once some has come: teardowns
/// arriving together (a job stopped, a node drained) then share one
/// nftables transaction, one conntrack walk and the kernel's link removal,
/// which each cost about as much for many allocations as for one.
const GATHER_QUIET: Duration = Duration::from_millis(5);
/// The longest a teardown waits for others to join it.
const GATHER_MAX: Duration = Duration::from_millis(50);

/// Adds to `batch` what arrives until the queue has been quiet for
/// `GATHER_QUIET`, or `GATHER_MAX` has passed.
async fn gather(rx: &mut mpsc::UnboundedReceiver<Work>, batch: &mut Vec<Work>) {
    let deadline = tokio::time::Instant::now() + GATHER_MAX;
    loop {
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let quiet = (tokio::time::Instant::now() + GATHER_QUIET).min(deadline);
        match tokio::time::timeout_at(quiet, rx.recv()).await {
            Ok(Some(w)) => batch.push(w),
            Ok(None) | Err(_) => return,
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
    }
}

/// Sets `berth.network.teardown.queue` to the work not yet done.
fn publish_queue(pending: &watch::Sender<usize>) {
    metrics::gauge!("berth.network.teardown.queue").set(*pending.borrow() as f64);
}

/// Sets `berth.network.bridge.allocations` to the addresses held on `bridge`.
pub(crate) fn publish_allocations(bridge: &str, ipam: &Ipam) {
    metrics::gauge!("berth.network.bridge.allocations", "bridge" => bridge.to_string()).set(ipam.handed_out() as f64);
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Work>,
    bridge: String,
    host: rtnetlink::Handle,
    ipam: Ipam,
    ports: std::sync::Arc<PortMap>,
    pending: watch::Sender<usize>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        gather(&mut rx, &mut batch).await;
        let mut ids = Vec::new();
        let mut udp = Vec::new();
        for w in &batch {
            match w {
                Work::Allocation { id, .. } => ids.push(id.clone()),
                Work::UdpPorts(p) => udp.extend_from_slice(p),
            }
        }
        let ips: Vec<Ipv4Addr> = ids.iter().filter_map(|id| ipam.lookup(id)).collect();
        if let Err(e) = ports.remove(&ips) {
            tracing::warn!(error = %e, "removing port mappings");
        }
        for w in &batch {
            if let Work::Allocation { netns, .. } = w {
                // Unmounting drops the last reference to a bare namespace;
                // the kernel then destroys it with its end of the veth pair
                // (which takes the host end along), in its own batches.
                if let Err(e) = NetNs::delete(&netns.0, &netns.1) {
                    tracing::warn!(error = %e, "deleting network namespace {}", netns.1);
                }
            }
        }
        let walk = tokio::task::spawn_blocking(move || {
            let udp_proto = u8::from(netlink_packet_netfilter::conntrack::Protocol::Udp);
            conntrack::flush(|e| {
                let of_alloc = [e.orig_src, e.orig_dst, e.reply_src].iter().flatten().any(|a| ips.contains(a));
                let stale_udp = e.protocol == udp_proto && e.orig_dst_port.is_some_and(|p| udp.contains(&p));
                of_alloc || stale_udp
            })
        });
        if let Ok(Err(e)) = walk.await {
            tracing::warn!(error = %e, "flushing conntrack entries");
        }
        // A namespace something else still holds (a pause container not
        // yet removed, a stray process) keeps its veth: delete it here.
        for w in &batch {
            if let Work::Allocation { veth, .. } = w {
                if let Err(e) = link::delete(&host, veth).await {
                    tracing::warn!(error = %e, %veth, "deleting veth");
                }
            }
        }
        for id in &ids {
            if let Err(e) = ipam.release(id) {
                tracing::warn!(error = %e, alloc_id = %id, "freeing the address");
            }
        }
        pending.send_modify(|n| *n -= batch.len());
        publish_queue(&pending);
        publish_allocations(&bridge, &ipam);
    }
}
