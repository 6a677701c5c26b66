//! The client's view of an in-process server: an agent that is both
//! server and client (a dev agent) calls its own server directly instead
//! of over HTTP. The one place where client and server meet.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::client::rpc::{RpcError, ServerRpc};
use crate::server::{Server, ServerError};
use crate::structs::{Allocation, Node};
use crate::wire::csi::ClaimGrant;
use crate::wire::identity::{SignIdentitiesRequest, SignedIdentity};
use crate::wire::node::{AllocClientUpdate, NodeAllocIndexes};

/// A server error as the client would see it over HTTP: classified by the
/// status the API answers it with.
fn from_server(e: ServerError) -> RpcError {
    let crate::http::ApiError(status, message) = e.into();
    RpcError::from_status(status.as_u16(), message.clone()).unwrap_or(RpcError::Failed(message))
}

/// An in-process server.
pub struct LocalRpc(pub Arc<Server>);

impl ServerRpc for LocalRpc {
    fn register(&self, node: Node) -> BoxFuture<'_, Result<Duration, RpcError>> {
        async move { self.0.register_node(node).map_err(from_server) }.boxed()
    }

    fn heartbeat<'a>(&'a self, node_id: &'a str, secret: &'a str) -> BoxFuture<'a, Result<Duration, RpcError>> {
        async move { self.0.heartbeat(node_id, secret).map_err(from_server) }.boxed()
    }

    fn alloc_indexes<'a>(
        &'a self,
        node_id: &'a str,
        min_index: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<NodeAllocIndexes, RpcError>> {
        async move { Ok(self.0.node_alloc_indexes(node_id, min_index, wait).await) }.boxed()
    }

    fn fetch_allocs<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<Allocation>, RpcError>> {
        async move { self.0.fetch_node_allocs(node_id, secret, &ids).map_err(from_server) }.boxed()
    }

    fn update_allocs<'a>(
        &'a self,
        node_id: &'a str,
        _secret: &'a str,
        updates: Vec<AllocClientUpdate>,
    ) -> BoxFuture<'a, Result<(), RpcError>> {
        async move { self.0.update_allocs(node_id, updates).map_err(from_server) }.boxed()
    }

    fn claim_volumes<'a>(
        &'a self,
        node_id: &'a str,
        _secret: &'a str,
        alloc_id: &'a str,
    ) -> BoxFuture<'a, Result<ClaimGrant, RpcError>> {
        async move { self.0.claim_volumes(node_id, alloc_id).await.map_err(from_server) }.boxed()
    }

    fn sign_identities<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: SignIdentitiesRequest,
    ) -> BoxFuture<'a, Result<Vec<SignedIdentity>, RpcError>> {
        async move { self.0.sign_identities(node_id, secret, &request).map_err(from_server) }.boxed()
    }

    fn sync_services<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        alloc_id: &'a str,
        registrations: Vec<crate::structs::ServiceRegistration>,
    ) -> BoxFuture<'a, Result<(), RpcError>> {
        async move {
            self.0.sync_alloc_services(node_id, secret, alloc_id, registrations).map(|_| ()).map_err(from_server)
        }
        .boxed()
    }

    fn template_reads<'a>(
        &'a self,
        node_id: &'a str,
        secret: &'a str,
        request: crate::wire::template::TemplateReadRequest,
    ) -> BoxFuture<'a, Result<crate::wire::template::TemplateReadAnswer, RpcError>> {
        async move { self.0.template_reads(node_id, secret, &request).await.map_err(from_server) }.boxed()
    }
}
