//! Allocation status updates to the servers: coalesced per allocation (a
//! newer update replaces one not yet sent), sent in batches, retried while
//! the servers cannot be reached. An update the servers refuse (HTTP 400)
//! is never retried: the batch is split to find it, it is dropped with an
//! error naming the allocation, and the others go through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rpc::{RpcError, ServerRpc};
use crate::structs::Node;
use crate::wire::node::AllocClientUpdate;

/// Updates waiting to be sent, by allocation ID.
type Pending = BTreeMap<String, AllocClientUpdate>;

/// Sends what comes in over `rx` until `shutdown`; `node` is the node as
/// currently registered.
pub async fn run(
    rpc: Arc<dyn ServerRpc>,
    node: impl Fn() -> Arc<Node>,
    mut rx: mpsc::UnboundedReceiver<AllocClientUpdate>,
    shutdown: CancellationToken,
) {
    let mut pending = Pending::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                Some(u) = rx.recv() => { pending.insert(u.id.clone(), u); }
                _ = shutdown.cancelled() => return,
            }
        }
        while let Ok(u) = rx.try_recv() {
            pending.insert(u.id.clone(), u);
        }
        if !send(rpc.as_ref(), &node(), &mut pending).await {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Sends `pending` in one batch; what is sent or refused leaves it. False
/// when something is left to retry.
async fn send(rpc: &dyn ServerRpc, node: &Node, pending: &mut Pending) -> bool {
    let batch: Vec<AllocClientUpdate> = pending.values().cloned().collect();
    match rpc.update_allocs(&node.id, &node.secret_id, batch).await {
        Ok(()) => pending.clear(),
        Err(RpcError::Refused(why)) if pending.len() == 1 => {
            let (id, _) = pending.pop_first().expect("one update");
            tracing::error!(alloc_id = %id, reason = %why, "the servers refused an allocation update; dropped");
        }
        Err(RpcError::Refused(_)) => {
            for (id, update) in std::mem::take(pending) {
                let mut one = Pending::from([(id, update)]);
                if !Box::pin(send(rpc, node, &mut one)).await {
                    pending.extend(one);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "sending allocation updates"),
    }
    pending.is_empty()
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use parking_lot::Mutex;

    use super::*;
    use crate::structs::Allocation;
    use crate::wire::csi::ClaimGrant;
    use crate::wire::node::NodeAllocIndexes;

    /// Servers that refuse any batch holding allocation `bad`, fail while
    /// `down`, and record what they accepted.
    #[derive(Default)]
    struct Servers {
        down: Mutex<bool>,
        accepted: Mutex<Vec<String>>,
        batches: Mutex<usize>,
    }

    impl ServerRpc for Servers {
        fn register(&self, _: Node) -> BoxFuture<'_, Result<Duration, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn heartbeat<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Duration, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn alloc_indexes<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: Duration,
        ) -> BoxFuture<'a, Result<NodeAllocIndexes, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn fetch_allocs<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Vec<String>,
        ) -> BoxFuture<'a, Result<Vec<Allocation>, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn update_allocs<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            updates: Vec<AllocClientUpdate>,
        ) -> BoxFuture<'a, Result<(), RpcError>> {
            *self.batches.lock() += 1;
            let answer = if *self.down.lock() {
                Err(RpcError::Failed("connection refused".into()))
            } else if updates.iter().any(|u| u.id == "bad") {
                Err(RpcError::Refused("allocation bad is not on this node".into()))
            } else {
                self.accepted.lock().extend(updates.into_iter().map(|u| u.id));
                Ok(())
            };
            async move { answer }.boxed()
        }
        fn claim_volumes<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<ClaimGrant, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn sign_identities<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: crate::wire::identity::SignIdentitiesRequest,
        ) -> BoxFuture<'a, Result<Vec<crate::wire::identity::SignedIdentity>, RpcError>> {
            unimplemented!("not used by updates")
        }
        fn sync_services<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
            _: Vec<crate::structs::ServiceRegistration>,
        ) -> BoxFuture<'a, Result<(), RpcError>> {
            unimplemented!("not used by updates")
        }
        fn template_reads<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: crate::wire::template::TemplateReadRequest,
        ) -> BoxFuture<'a, Result<crate::wire::template::TemplateReadAnswer, RpcError>> {
            unimplemented!("not used by updates")
        }
    }

    fn pending(ids: &[&str]) -> Pending {
        ids.iter().map(|id| (id.to_string(), AllocClientUpdate { id: id.to_string(), ..Default::default() })).collect()
    }

    #[tokio::test]
    async fn a_refused_update_is_dropped_and_the_rest_go_through_while_unreachable_servers_are_retried() {
        let servers = Servers::default();
        let node = Node::default();
        let mut p = pending(&["a", "bad", "c"]);
        assert!(send(&servers, &node, &mut p).await, "nothing left to retry");
        assert_eq!(*servers.accepted.lock(), ["a", "c"]);
        assert_eq!(*servers.batches.lock(), 4, "the batch, then one by one");

        *servers.down.lock() = true;
        let mut p = pending(&["d", "e"]);
        assert!(!send(&servers, &node, &mut p).await);
        assert_eq!(p.len(), 2, "kept for a retry");
        *servers.down.lock() = false;
        assert!(send(&servers, &node, &mut p).await);
        assert_eq!(*servers.accepted.lock(), ["a", "c", "d", "e"]);
    }
}
