//! Berth's Container Storage Interface layer: how Berth talks to CSI plugins.
//!
//! * [`v1`]: the csi.v1 protocol (spec v1.12.0): messages plus client and
//!   server code for the Identity, Controller and Node services, generated at
//!   build time from our own `proto/csi.proto`.
//! * [`client`]: [`CsiClient`], one plugin on a unix socket: per-call
//!   timeouts, bounded retries of transient failures, errors that name the
//!   socket, the RPC, the volume and the gRPC code, and helpers such as
//!   [`CsiClient::probe_ready`] and [`CsiClient::capabilities`].
//! * [`answers`]: plugin info, capability lists and capacity ranges,
//!   answered the same way by every built-in plugin.
//! * [`mount`]: node-side helpers shared by block-backed volumes: signature
//!   check, format only when blank, fsck-safe mount, bind/read-only publish,
//!   growth after expansion, usage.
//! * [`iscsi`]: iSCSI LUNs on the node: attach through open-iscsi or the
//!   userspace initiator, and the CSI Node service for iSCSI volumes.
//! * [`local`]: `berth.local`, the CSI plugin built into Berth: directory or
//!   image-file volumes on the node's own disk, with snapshots, clones and
//!   expansion, served on a unix socket by [`local::serve`].
//! * `redact` (private): `Debug` for the request messages that carry secrets,
//!   which never prints the secret values.
//!
//! Nothing here knows about jobs or allocations: volumes are plugin IDs and
//! paths.

#![warn(missing_docs)]

pub mod answers;
mod authority;
pub mod client;
pub mod iscsi;
pub mod local;
mod locks;
pub mod mount;
mod redact;
mod rpc;
pub mod serve;

pub use client::{Call, Capabilities, ClientConfig, ClientError, CsiClient, RetryPolicy, Rpc};
/// The gRPC status codes plugins answer with (what [`ClientError::code`] returns).
pub use tonic::Code;

/// The csi.v1 protocol, generated from `proto/csi.proto`.
///
/// Messages are plain structs (`prost`); `identity_client`, `controller_client`
/// and `node_client` hold the gRPC clients, `identity_server`,
/// `controller_server` and `node_server` the traits a plugin implements (RPCs
/// left unimplemented answer `UNIMPLEMENTED`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));
}
