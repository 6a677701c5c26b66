//! How a client talks to the servers: register, heartbeat, follow its
//! allocations (a blocking query for their indexes, then a fetch of those
//! that changed) and report their status, through
//! [`ServerRpc`]. [`HttpRpc`] uses the servers' internal HTTP endpoints,
//! trying each configured server in turn; the agent's wiring provides the
//! in-process one for an agent that is also a server.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::structs::{Allocation, Node, ServiceRegistration};
use crate::wire::csi::ClaimGrant;
use crate::wire::identity::{SignIdentitiesRequest, SignedIdentity};
use crate::wire::node::{AllocClientUpdate, AllocFetchRequest, HeartbeatAnswer, NodeAllocIndexes, NODE_SECRET_HEADER};
use crate::wire::template::{TemplateReadAnswer, TemplateReadRequest};

/// Failures talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The server does not know this node (re-register).
    #[error("node not registered")]
    NodeNotFound,
    /// The server understood the request and refused it (HTTP 400): asking
    /// again will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Any other failure (unreachable, overloaded, unexpected reply): worth
    /// a retry.
    #[error("{0}")]
    Failed(String),
}

impl RpcError {
    /// The error a server's HTTP status means for the client, when asking
    /// another server would not help: 404 (the node is unknown: register
    /// again), 400 and 403 (refused: the request or the node's secret is
    /// wrong). `None` for a status another server may answer differently.
    /// The in-process server's errors take the same way, through their
    /// status, so both transports fail alike.
    pub fn from_status(status: u16, message: String) -> Option<RpcError> {
        match status {
            404 => Some(RpcError::NodeNotFound),
            400 | 403 => Some(RpcError::Refused(message)),
            _ => None,
        }
    }
}

/// The client's view of the servers.
pub trait ServerRpc: Send + Sync {
    /// Registers the node; returns the heartbeat TTL.
    fn register(&self, node: Node) -> BoxFuture<'_, Result<Duration, RpcError>>;
    /// Heartbeats; returns the TTL.
    fn heartbeat<'a>(&'a self, node_id: &'a str, secret: &'a str) -> BoxFuture<'a, Result<Duration, RpcError>>;
    /// The node's allocation IDs and `AllocModifyIndex`es once a
    /// server-side change to them passes `min_index` (or `wait` elapses).
    fn alloc_indexes<'a>(
        &'a self,
        node_id: &'a str,
        min_index: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<NodeAllocIndexes, RpcError>>;
    /// The named allocations of the node (those whose index moved).
    fn fetch_allocs<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<Allocation>, RpcError>>;
    /// Reports allocation status.
    fn update_allocs<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        updates: Vec<AllocClientUpdate>,
    ) -> BoxFuture<'a, Result<(), RpcError>>;
    /// Asks whether an allocation may mount its CSI volumes now.
    fn claim_volumes<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        alloc_id: &'a str,
    ) -> BoxFuture<'a, Result<ClaimGrant, RpcError>>;
    /// Has workload identities of one of the node's allocations signed.
    fn sign_identities<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: SignIdentitiesRequest,
    ) -> BoxFuture<'a, Result<Vec<SignedIdentity>, RpcError>>;
    /// Makes `registrations` the whole set of one allocation's services
    /// in the registry (empty: deregisters them all).
    fn sync_services<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        alloc_id: &'a str,
        registrations: Vec<ServiceRegistration>,
    ) -> BoxFuture<'a, Result<(), RpcError>>;
    /// What one task's templates read, once the state passes the
    /// request's `min_index` (or its wait elapses).
    fn template_reads<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: TemplateReadRequest,
    ) -> BoxFuture<'a, Result<TemplateReadAnswer, RpcError>>;
}

/// Servers reached over HTTP.
pub struct HttpRpc {
    servers: Vec<String>,
    http: reqwest::Client,
    current: parking_lot::Mutex<usize>,
}

impl HttpRpc {
    /// Servers as `host:port` (or full URLs).
    pub fn new(servers: Vec<String>) -> Self {
        let servers =
            servers.into_iter().map(|s| if s.starts_with("http") { s } else { format!("http://{s}") }).collect();
        let http = crate::util::http_client_with(|b| b.connect_timeout(Duration::from_secs(3)));
        HttpRpc { servers, http, current: parking_lot::Mutex::new(0) }
    }

    async fn call(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RpcError> {
        let n = self.servers.len().max(1);
        let mut last = RpcError::Failed("no servers configured".into());
        for attempt in 0..n {
            let i = (*self.current.lock() + attempt) % n;
            let Some(base) = self.servers.get(i) else { break };
            match build(&self.http, base).send().await {
                Ok(resp) if resp.status().is_success() => {
                    *self.current.lock() = i;
                    return Ok(resp);
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if let Some(e) = RpcError::from_status(status.as_u16(), body.clone()) {
                        return Err(e);
                    }
                    last = RpcError::Failed(format!("server {base}: {status}: {body}"));
                }
                Err(e) => last = RpcError::Failed(format!("server {base}: {e}")),
            }
        }
        Err(last)
    }
}

impl ServerRpc for HttpRpc {
    fn register(&self, node: Node) -> BoxFuture<'_, Result<Duration, RpcError>> {
        async move {
            let resp = self.call(|c, base| c.put(format!("{base}/v1/internal/node/register")).json(&node)).await?;
            resp.json::<HeartbeatAnswer>().await.map(HeartbeatAnswer::ttl).map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, node_id: &'a str, secret: &'a str) -> BoxFuture<'a, Result<Duration, RpcError>> {
        async move {
            let resp = self
                .call(|c, base| {
                    c.put(format!("{base}/v1/internal/node/{node_id}/heartbeat")).header(NODE_SECRET_HEADER, secret)
                })
                .await?;
            resp.json::<HeartbeatAnswer>().await.map(HeartbeatAnswer::ttl).map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn alloc_indexes<'a>(
        &'a self,
        node_id: &'a str,
        min_index: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<NodeAllocIndexes, RpcError>> {
        async move {
            let url = |base: &str| {
                format!("{base}/v1/internal/node/{node_id}/allocations?index={min_index}&wait={}ms", wait.as_millis())
            };
            // The server may add up to 1/16 of the wait at random.
            let timeout = wait + wait / 16 + Duration::from_secs(10);
            let resp = self.call(|c, base| c.get(url(base)).timeout(timeout)).await?;
            resp.json().await.map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn fetch_allocs<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<Allocation>, RpcError>> {
        async move {
            let req = AllocFetchRequest { alloc_ids: ids };
            let resp = self
                .call(|c, base| {
                    c.put(format!("{base}/v1/internal/node/{node_id}/allocations/fetch"))
                        .header(NODE_SECRET_HEADER, secret)
                        .json(&req)
                })
                .await?;
            resp.json().await.map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn update_allocs<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        updates: Vec<AllocClientUpdate>,
    ) -> BoxFuture<'a, Result<(), RpcError>> {
        async move {
            self.call(|c, base| {
                c.put(format!("{base}/v1/internal/node/{node_id}/allocations"))
                    .header(NODE_SECRET_HEADER, secret)
                    .json(&updates)
            })
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn claim_volumes<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        alloc_id: &'a str,
    ) -> BoxFuture<'a, Result<ClaimGrant, RpcError>> {
        async move {
            let resp = self
                .call(|c, base| {
                    c.put(format!("{base}/v1/internal/node/{node_id}/csi-claim/{alloc_id}"))
                        .header(NODE_SECRET_HEADER, secret)
                })
                .await?;
            resp.json().await.map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn sign_identities<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: SignIdentitiesRequest,
    ) -> BoxFuture<'a, Result<Vec<SignedIdentity>, RpcError>> {
        async move {
            let resp = self
                .call(|c, base| {
                    c.put(format!("{base}/v1/internal/node/{node_id}/identities"))
                        .header(NODE_SECRET_HEADER, secret)
                        .json(&request)
                })
                .await?;
            resp.json().await.map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }

    fn sync_services<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        alloc_id: &'a str,
        registrations: Vec<ServiceRegistration>,
    ) -> BoxFuture<'a, Result<(), RpcError>> {
        async move {
            self.call(|c, base| {
                c.put(format!("{base}/v1/internal/node/{node_id}/services/{alloc_id}"))
                    .header(NODE_SECRET_HEADER, secret)
                    .json(&registrations)
            })
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn template_reads<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: TemplateReadRequest,
    ) -> BoxFuture<'a, Result<TemplateReadAnswer, RpcError>> {
        async move {
            // The server may add up to 1/16 of the wait at random.
            let wait = Duration::from_millis(request.wait_ms);
            let timeout = wait + wait / 16 + Duration::from_secs(10);
            let resp = self
                .call(|c, base| {
                    c.put(format!("{base}/v1/internal/node/{node_id}/template-reads"))
                        .header(NODE_SECRET_HEADER, secret)
                        .timeout(timeout)
                        .json(&request)
                })
                .await?;
            resp.json().await.map_err(|e| RpcError::Failed(e.to_string()))
        }
        .boxed()
    }
}
