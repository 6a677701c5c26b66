//! A client for one CSI plugin listening on a unix socket.
//!
//! [`CsiClient`] wraps the generated Identity, Controller and Node clients
//! with what a container orchestrator needs around every call:
//!
//! * a per-call timeout ([`ClientConfig`]), sent to the plugin as the gRPC
//!   deadline and enforced locally;
//! * bounded retries with exponential backoff ([`RetryPolicy`]) for the codes
//!   that mean "try again": `UNAVAILABLE`, `ABORTED` (an operation is pending
//!   for the volume), `RESOURCE_EXHAUSTED`, and `DEADLINE_EXCEEDED` for the
//!   RPCs the spec makes safe to repeat ([`Rpc::retries_deadline_exceeded`]);
//! * a [`ClientError`] whose message names the socket, the RPC, the volume,
//!   the gRPC code, the plugin's own message and a hint at the usual cause.
//!
//! Requests are never logged: tracing events carry the RPC name and the
//! volume, snapshot or node IDs only, never secrets.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};
use tower::Service;

use crate::v1::controller_client::ControllerClient;
use crate::v1::identity_client::IdentityClient;
use crate::v1::node_client::NodeClient;
use crate::v1::{
    controller_service_capability, node_service_capability, plugin_capability, ControllerExpandVolumeRequest,
    ControllerExpandVolumeResponse, ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerModifyVolumeRequest,
    ControllerModifyVolumeResponse, ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest, CreateSnapshotResponse,
    CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteSnapshotResponse, DeleteVolumeRequest,
    DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse, GetPluginCapabilitiesRequest,
    GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse, GetSnapshotRequest,
    GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse,
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse,
    NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
    ProbeRequest, ProbeResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};

/// Longest unix socket path Linux accepts (`sun_path` is 108 bytes with the
/// terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Every RPC of the Identity, Controller and Node services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    /// `Identity.GetPluginInfo`
    GetPluginInfo,
    /// `Identity.GetPluginCapabilities`
    GetPluginCapabilities,
    /// `Identity.Probe`
    Probe,
    /// `Controller.CreateVolume`
    CreateVolume,
    /// `Controller.DeleteVolume`
    DeleteVolume,
    /// `Controller.ControllerPublishVolume`
    ControllerPublishVolume,
    /// `Controller.ControllerUnpublishVolume`
    ControllerUnpublishVolume,
    /// `Controller.ValidateVolumeCapabilities`
    ValidateVolumeCapabilities,
    /// `Controller.ListVolumes`
    ListVolumes,
    /// `Controller.GetCapacity`
    GetCapacity,
    /// `Controller.ControllerGetCapabilities`
    ControllerGetCapabilities,
    /// `Controller.CreateSnapshot`
    CreateSnapshot,
    /// `Controller.DeleteSnapshot`
    DeleteSnapshot,
    /// `Controller.ListSnapshots`
    ListSnapshots,
    /// `Controller.GetSnapshot` (alpha)
    GetSnapshot,
    /// `Controller.ControllerExpandVolume`
    ControllerExpandVolume,
    /// `Controller.ControllerGetVolume` (alpha)
    ControllerGetVolume,
    /// `Controller.ControllerModifyVolume`
    ControllerModifyVolume,
    /// `Node.NodeStageVolume`
    NodeStageVolume,
    /// `Node.NodeUnstageVolume`
    NodeUnstageVolume,
    /// `Node.NodePublishVolume`
    NodePublishVolume,
    /// `Node.NodeUnpublishVolume`
    NodeUnpublishVolume,
    /// `Node.NodeGetVolumeStats`
    NodeGetVolumeStats,
    /// `Node.NodeExpandVolume`
    NodeExpandVolume,
    /// `Node.NodeGetCapabilities`
    NodeGetCapabilities,
    /// `Node.NodeGetInfo`
    NodeGetInfo,
}

impl Rpc {
    /// The method name as on the wire, e.g. `"NodeStageVolume"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GetPluginInfo => "GetPluginInfo",
            Self::GetPluginCapabilities => "GetPluginCapabilities",
            Self::Probe => "Probe",
            Self::CreateVolume => "CreateVolume",
            Self::DeleteVolume => "DeleteVolume",
            Self::ControllerPublishVolume => "ControllerPublishVolume",
            Self::ControllerUnpublishVolume => "ControllerUnpublishVolume",
            Self::ValidateVolumeCapabilities => "ValidateVolumeCapabilities",
            Self::ListVolumes => "ListVolumes",
            Self::GetCapacity => "GetCapacity",
            Self::ControllerGetCapabilities => "ControllerGetCapabilities",
            Self::CreateSnapshot => "CreateSnapshot",
            Self::DeleteSnapshot => "DeleteSnapshot",
            Self::ListSnapshots => "ListSnapshots",
            Self::GetSnapshot => "GetSnapshot",
            Self::ControllerExpandVolume => "ControllerExpandVolume",
            Self::ControllerGetVolume => "ControllerGetVolume",
            Self::ControllerModifyVolume => "ControllerModifyVolume",
            Self::NodeStageVolume => "NodeStageVolume",
            Self::NodeUnstageVolume => "NodeUnstageVolume",
            Self::NodePublishVolume => "NodePublishVolume",
            Self::NodeUnpublishVolume => "NodeUnpublishVolume",
            Self::NodeGetVolumeStats => "NodeGetVolumeStats",
            Self::NodeExpandVolume => "NodeExpandVolume",
            Self::NodeGetCapabilities => "NodeGetCapabilities",
            Self::NodeGetInfo => "NodeGetInfo",
        }
    }

    /// Whether the RPC only reads what a plugin is or offers and should answer
    /// at once; these get [`ClientConfig::info_timeout`].
    pub const fn is_info(self) -> bool {
        matches!(
            self,
            Self::GetPluginInfo
                | Self::GetPluginCapabilities
                | Self::Probe
                | Self::ControllerGetCapabilities
                | Self::NodeGetCapabilities
                | Self::NodeGetInfo
        )
    }

    /// Whether a call that ran out of time is repeated. The spec requires
    /// every RPC to be idempotent (a repeat of a completed call answers OK)
    /// except the two expansions, where "already expanded → OK" is only a
    /// SHOULD; repeating one of those while the first may still be resizing
    /// is left to the caller.
    pub const fn retries_deadline_exceeded(self) -> bool {
        !matches!(self, Self::ControllerExpandVolume | Self::NodeExpandVolume)
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One RPC and what it was about: the volume, snapshot or node IDs from the
/// request (never anything else from it). Displays as e.g.
/// `NodeStageVolume volume "pvc-1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    rpc: Rpc,
    subject: String,
}

impl Call {
    /// A call about nothing in particular (capabilities, info, listings).
    fn plain(rpc: Rpc) -> Self {
        Self { rpc, subject: String::new() }
    }

    /// A call about the objects named by `parts` (`("volume", id)`, …);
    /// empty IDs are left out.
    fn about(rpc: Rpc, parts: &[(&str, &str)]) -> Self {
        let subject = parts
            .iter()
            .filter(|(_, id)| !id.is_empty())
            .map(|(what, id)| format!("{what} {id:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        Self { rpc, subject }
    }

    /// The RPC.
    pub fn rpc(&self) -> Rpc {
        self.rpc
    }

    /// What the call was about, e.g. `volume "pvc-1" node "n1"`; empty when
    /// the request names nothing.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            write!(f, "{}", self.rpc)
        } else {
            write!(f, "{} {}", self.rpc, self.subject)
        }
    }
}

/// How often and how patiently a failed call is repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The wait after failed attempt number `attempt` (1-based):
    /// `initial_backoff × 2^(attempt-1)`, at most `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 250 ms, 500 ms, 1 s and 2 s between them (at most
    /// 4 s each).
    fn default() -> Self {
        Self { max_attempts: 5, initial_backoff: Duration::from_millis(250), max_backoff: Duration::from_secs(4) }
    }
}

/// Timeouts and retries of a [`CsiClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Limit for opening the socket connection.
    pub connect_timeout: Duration,
    /// Per-attempt limit for the RPCs where [`Rpc::is_info`] holds.
    pub info_timeout: Duration,
    /// Per-attempt limit for every other RPC (volume operations may format a
    /// disk or talk to a storage array).
    pub operation_timeout: Duration,
    /// Per-RPC limits that override the two above.
    pub rpc_timeouts: BTreeMap<Rpc, Duration>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// The per-attempt timeout of `rpc`.
    pub fn timeout(&self, rpc: Rpc) -> Duration {
        match self.rpc_timeouts.get(&rpc) {
            Some(timeout) => *timeout,
            None if rpc.is_info() => self.info_timeout,
            None => self.operation_timeout,
        }
    }

    /// This config with `rpc`'s timeout set to `timeout`.
    pub fn with_timeout(mut self, rpc: Rpc, timeout: Duration) -> Self {
        self.rpc_timeouts.insert(rpc, timeout);
        self
    }
}

impl Default for ClientConfig {
    /// Connect within 5 s; info RPCs within 10 s; volume operations within
    /// 2 minutes (what kubelet allows NodeStageVolume); [`RetryPolicy::default`].
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            info_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(120),
            rpc_timeouts: BTreeMap::new(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a call to a CSI plugin failed. The `Display` text is meant for the
/// operator: it names the socket, the call, the gRPC code, the plugin's
/// message and, for the common codes, what they usually mean.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a unix socket path.
    #[error("invalid CSI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The socket could not be connected to.
    #[error("CSI plugin at {}: cannot connect: {}", socket.display(), error_chain(source))]
    Connect {
        /// The plugin's socket.
        socket: PathBuf,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// No answer within the call's timeout, on every attempt made.
    #[error(
        "CSI plugin at {}: {call}: DEADLINE_EXCEEDED: no answer within {timeout:?} \
         (the plugin is stuck or the operation takes longer than allowed){}",
        socket.display(),
        attempts_note(*attempts)
    )]
    Timeout {
        /// The plugin's socket.
        socket: PathBuf,
        /// The call that timed out.
        call: Call,
        /// The per-attempt timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The plugin (or the transport) answered with a non-OK gRPC status.
    #[error(
        "CSI plugin at {}: {call}: {}: {}{}{}",
        socket.display(),
        code_name(*code),
        plugin_message(message),
        hint_note(call.rpc(), *code),
        attempts_note(*attempts)
    )]
    Status {
        /// The plugin's socket.
        socket: PathBuf,
        /// The call that failed.
        call: Call,
        /// The gRPC code.
        code: Code,
        /// The plugin's message.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl ClientError {
    /// The gRPC code of a failed call: the plugin's, or `DEADLINE_EXCEEDED`
    /// for a timeout. `None` for endpoint and connection errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Timeout { .. } => Some(Code::DeadlineExceeded),
            Self::InvalidEndpoint { .. } | Self::Connect { .. } => None,
        }
    }

    /// The failed call, if the error came from one.
    pub fn call(&self) -> Option<&Call> {
        match self {
            Self::Status { call, .. } | Self::Timeout { call, .. } => Some(call),
            Self::InvalidEndpoint { .. } | Self::Connect { .. } => None,
        }
    }

    /// Attempts made before giving up (0 when no call was made).
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Status { attempts, .. } | Self::Timeout { attempts, .. } => *attempts,
            Self::InvalidEndpoint { .. } | Self::Connect { .. } => 0,
        }
    }
}

/// The canonical upper-case name of a gRPC code, as in the CSI spec.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn plugin_message(message: &str) -> &str {
    if message.is_empty() {
        "(the plugin gave no message)"
    } else {
        message
    }
}

fn hint_note(rpc: Rpc, code: Code) -> String {
    hint(rpc, code).map(|hint| format!(" ({hint})")).unwrap_or_default()
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!("; gave up after {attempts} attempts")
    } else {
        String::new()
    }
}

/// What a code usually means for `rpc`, from the spec's per-RPC error tables.
fn hint(rpc: Rpc, code: Code) -> Option<&'static str> {
    use Rpc::*;
    Some(match (code, rpc) {
        (Code::NotFound, CreateVolume) => "the source snapshot or volume does not exist",
        (Code::NotFound, ControllerPublishVolume) => "the volume or the node does not exist",
        (Code::NotFound, ControllerUnpublishVolume) => "the volume or the node does not exist",
        (Code::NotFound, NodeGetVolumeStats) => "the volume does not exist, or not at the given path",
        (Code::NotFound, DeleteSnapshot | ListSnapshots | GetSnapshot) => "the snapshot does not exist on the storage",
        (Code::NotFound, _) => "the volume does not exist on the storage",
        (Code::AlreadyExists, CreateVolume) => "a volume with this name exists with different parameters",
        (Code::AlreadyExists, CreateSnapshot) => "a snapshot with this name exists for a different source volume",
        (Code::AlreadyExists, ControllerPublishVolume) => {
            "the volume is already published to this node with a different capability or read-only flag"
        }
        (Code::AlreadyExists, NodeStageVolume) => {
            "the volume is already staged at this path with a different capability"
        }
        (Code::AlreadyExists, NodePublishVolume) => {
            "the volume is already published at this target path with different arguments"
        }
        (Code::AlreadyExists, _) => "the object exists with different parameters",
        (Code::FailedPrecondition, Probe) => "the plugin is not healthy or a dependency is missing",
        (Code::FailedPrecondition, DeleteVolume) => "the volume is still in use or has snapshots",
        (Code::FailedPrecondition, ControllerPublishVolume) => {
            "the volume is published to another node and its access mode allows only one"
        }
        (Code::FailedPrecondition, ControllerExpandVolume) => {
            "the volume is published and the plugin cannot expand it online"
        }
        (Code::FailedPrecondition, NodeStageVolume) => "the plugin does not support the requested volume capability",
        (Code::FailedPrecondition, NodePublishVolume) => {
            "the capability is not supported, the volume is published elsewhere, or it must be staged first"
        }
        (Code::FailedPrecondition, NodeExpandVolume) => {
            "the volume is in use and its file system cannot grow online; do not retry"
        }
        (Code::FailedPrecondition, DeleteSnapshot) => "the snapshot is in use",
        (Code::ResourceExhausted, CreateVolume) => "the storage cannot provision the volume (space or topology)",
        (Code::ResourceExhausted, ControllerPublishVolume) => {
            "the node has reached its maximum number of attached volumes"
        }
        (Code::ResourceExhausted, CreateSnapshot) => "the storage has no space for the snapshot",
        (Code::ResourceExhausted, _) => "the storage is out of a resource",
        (Code::OutOfRange, _) => "the storage does not support the requested capacity range",
        (Code::Aborted, ListVolumes | ListSnapshots) => "the starting token is not valid",
        (Code::Aborted, _) => "another operation is pending for this volume",
        (Code::InvalidArgument, _) => "the plugin rejected the request: a field is missing, invalid or unsupported",
        (Code::Unimplemented, _) => "the plugin does not offer this RPC; check its capabilities",
        (Code::Unauthenticated, _) => "the secrets are missing or wrong",
        (Code::PermissionDenied, _) => "the storage denied the operation to the identity in the secrets",
        (Code::Unavailable, _) => "the plugin, or the storage behind it, cannot be reached",
        (Code::DeadlineExceeded, _) => "the plugin ran out of time",
        _ => return None,
    })
}

/// `error` and its sources, joined with `": "`.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The socket path of a CSI endpoint: `unix:///path/to/csi.sock` (the form of
/// `CSI_ENDPOINT`) or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ClientError> {
    let invalid = |reason| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason };
    let path = match endpoint.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => path,
        Some(_) => return Err(invalid("a unix:// endpoint needs an absolute path, as in unix:///run/csi.sock")),
        None if endpoint.contains("://") => {
            return Err(invalid("only unix sockets are supported: unix:///path/to/csi.sock or a plain path"))
        }
        None => endpoint,
    };
    if path.is_empty() {
        return Err(invalid("the socket path is empty"));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(invalid("the socket path is longer than the 107 bytes a unix socket address can hold"));
    }
    Ok(PathBuf::from(path))
}

/// The connector tonic calls for each (re)connection: it ignores the URI and
/// opens the plugin's socket.
fn uds_connector(
    socket: Arc<Path>,
) -> impl Service<Uri, Response = TokioIo<UnixStream>, Error = io::Error, Future: Send> + Send + 'static {
    tower::service_fn(move |_: Uri| {
        let socket = Arc::clone(&socket);
        async move { UnixStream::connect(&*socket).await.map(TokioIo::new) }
    })
}

/// The HTTP/2 endpoint over the socket. The authority is `localhost`, as
/// other CSI clients send it.
fn endpoint(config: &ClientConfig) -> Endpoint {
    Endpoint::from_static("http://localhost").connect_timeout(config.connect_timeout)
}

/// How one attempt failed.
enum Failure {
    Timeout,
    Status(Status),
}

/// A client for one CSI plugin. Cloning is cheap and clones share the
/// connection, which is re-opened on demand if the plugin restarts.
#[derive(Debug, Clone)]
pub struct CsiClient {
    socket: Arc<Path>,
    channel: Channel,
    config: Arc<ClientConfig>,
}

impl CsiClient {
    /// Connects to the plugin at `endpoint` (`unix:///path/csi.sock` or a
    /// path) and fails if the socket cannot be opened now.
    pub async fn connect(endpoint: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let socket: Arc<Path> = socket_path(endpoint)?.into();
        let channel = self::endpoint(&config)
            .connect_with_connector(uds_connector(Arc::clone(&socket)))
            .await
            .map_err(|source| ClientError::Connect { socket: socket.to_path_buf(), source })?;
        Ok(Self { socket, channel, config: Arc::new(config) })
    }

    /// A client for the plugin at `endpoint` that connects on its first call
    /// (for a plugin that is still starting; calls fail with `UNAVAILABLE`,
    /// and are retried, until the socket accepts).
    pub fn lazy(endpoint: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let socket: Arc<Path> = socket_path(endpoint)?.into();
        let channel = self::endpoint(&config).connect_with_connector_lazy(uds_connector(Arc::clone(&socket)));
        Ok(Self { socket, channel, config: Arc::new(config) })
    }

    /// The plugin's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The timeouts and retries in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Runs one RPC with the call's timeout and the retry policy, and
    /// records it: `berth.csi.rpc` (milliseconds, retries included) and
    /// `berth.csi.rpc.errors` by gRPC code. `send` makes one attempt on a
    /// clone of the channel.
    async fn call<Req, Resp, F, Fut>(&self, call: Call, request: Req, send: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let started = Instant::now();
        let rpc = call.rpc.name();
        let result = self.attempts(call, request, send).await;
        metrics::histogram!("berth.csi.rpc", "rpc" => rpc).record(started.elapsed().as_secs_f64() * 1e3);
        if let Err(e) = &result {
            let code = e.code().map_or("UNAVAILABLE", code_name);
            metrics::counter!("berth.csi.rpc.errors", "rpc" => rpc, "code" => code).increment(1);
        }
        result
    }

    async fn attempts<Req, Resp, F, Fut>(&self, call: Call, request: Req, send: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let timeout = self.config.timeout(call.rpc);
        let max_attempts = self.config.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut message = tonic::Request::new(request.clone());
            // Tells the plugin the deadline; tonic also enforces it locally
            // and reports CANCELLED "Timeout expired" when it passes.
            message.set_timeout(timeout);
            let started = Instant::now();
            let failure = match tokio::time::timeout(timeout, send(self.channel.clone(), message)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status))
                    if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
                        && started.elapsed() >= timeout =>
                {
                    Failure::Timeout
                }
                Ok(Err(status)) => Failure::Status(status),
                Err(_elapsed) => Failure::Timeout,
            };
            let code = match &failure {
                Failure::Timeout => Code::DeadlineExceeded,
                Failure::Status(status) => status.code(),
            };
            let retryable = match code {
                Code::Unavailable | Code::Aborted | Code::ResourceExhausted => true,
                Code::DeadlineExceeded => call.rpc.retries_deadline_exceeded(),
                _ => false,
            };
            if !retryable || attempt >= max_attempts {
                return Err(self.error(call, failure, timeout, attempt));
            }
            let delay = self.config.retry.backoff(attempt);
            tracing::debug!(
                rpc = call.rpc.name(),
                subject = call.subject(),
                socket = %self.socket.display(),
                code = code_name(code),
                attempt,
                delay_ms = delay.as_millis() as u64,
                "CSI call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn error(&self, call: Call, failure: Failure, timeout: Duration, attempts: u32) -> ClientError {
        let socket = self.socket.to_path_buf();
        match failure {
            Failure::Timeout => ClientError::Timeout { socket, call, timeout, attempts },
            Failure::Status(status) => ClientError::Status {
                socket,
                call,
                code: status.code(),
                message: status.message().to_owned(),
                attempts,
            },
        }
    }

    /// Whether the plugin is ready: `Probe` answered and did not say
    /// `ready: false` (an unset `ready` means ready). An unhealthy plugin
    /// answers with an error, which is returned.
    pub async fn probe_ready(&self) -> Result<bool, ClientError> {
        Ok(self.probe(ProbeRequest {}).await?.ready.unwrap_or(true))
    }

    /// What the plugin offers, from `GetPluginCapabilities`,
    /// `ControllerGetCapabilities` (asked only if the plugin has the
    /// controller service) and `NodeGetCapabilities` (a plugin without the
    /// node service, answering `UNIMPLEMENTED`, has no node capabilities).
    pub async fn capabilities(&self) -> Result<Capabilities, ClientError> {
        let plugin = self.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await?;
        let mut capabilities = Capabilities::default();
        capabilities.add_plugin(&plugin);
        if capabilities.controller_service {
            capabilities.add_controller(&self.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await?);
        }
        match self.node_get_capabilities(NodeGetCapabilitiesRequest {}).await {
            Ok(node) => capabilities.add_node(&node),
            Err(error) if error.code() == Some(Code::Unimplemented) => {}
            Err(error) => return Err(error),
        }
        Ok(capabilities)
    }
}

/// Defines one thin wrapper per RPC: `$method(request)` runs `$client`'s
/// method of the same name through [`CsiClient::call`].
macro_rules! rpcs {
    ($(
        $(#[$doc:meta])*
        $method:ident($client:ident, $rpc:ident, $request:ident -> $response:ident) $call:expr;
    )*) => {
        impl CsiClient {$(
            $(#[$doc])*
            pub async fn $method(&self, request: $request) -> Result<$response, ClientError> {
                let describe: fn(Rpc, &$request) -> Call = $call;
                let call = describe(Rpc::$rpc, &request);
                self.call(call, request, |channel, request| async move {
                    $client::new(channel).$method(request).await
                })
                .await
            }
        )*}
    };
}

rpcs! {
    /// `Identity.GetPluginInfo`: the plugin's name and version.
    get_plugin_info(IdentityClient, GetPluginInfo, GetPluginInfoRequest -> GetPluginInfoResponse)
        |rpc, _| Call::plain(rpc);
    /// `Identity.GetPluginCapabilities`; see also [`CsiClient::capabilities`].
    get_plugin_capabilities(IdentityClient, GetPluginCapabilities,
        GetPluginCapabilitiesRequest -> GetPluginCapabilitiesResponse)
        |rpc, _| Call::plain(rpc);
    /// `Identity.Probe`; see also [`CsiClient::probe_ready`].
    probe(IdentityClient, Probe, ProbeRequest -> ProbeResponse)
        |rpc, _| Call::plain(rpc);

    /// `Controller.CreateVolume` (idempotent on `name`).
    create_volume(ControllerClient, CreateVolume, CreateVolumeRequest -> CreateVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume name", &r.name)]);
    /// `Controller.DeleteVolume` (an unknown volume is OK).
    delete_volume(ControllerClient, DeleteVolume, DeleteVolumeRequest -> DeleteVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Controller.ControllerPublishVolume`: attach the volume to a node.
    controller_publish_volume(ControllerClient, ControllerPublishVolume,
        ControllerPublishVolumeRequest -> ControllerPublishVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id), ("node", &r.node_id)]);
    /// `Controller.ControllerUnpublishVolume`: detach the volume from a node
    /// (from all nodes if `node_id` is empty).
    controller_unpublish_volume(ControllerClient, ControllerUnpublishVolume,
        ControllerUnpublishVolumeRequest -> ControllerUnpublishVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id), ("node", &r.node_id)]);
    /// `Controller.ValidateVolumeCapabilities`.
    validate_volume_capabilities(ControllerClient, ValidateVolumeCapabilities,
        ValidateVolumeCapabilitiesRequest -> ValidateVolumeCapabilitiesResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Controller.ListVolumes` (one page).
    list_volumes(ControllerClient, ListVolumes, ListVolumesRequest -> ListVolumesResponse)
        |rpc, _| Call::plain(rpc);
    /// `Controller.GetCapacity`.
    get_capacity(ControllerClient, GetCapacity, GetCapacityRequest -> GetCapacityResponse)
        |rpc, _| Call::plain(rpc);
    /// `Controller.ControllerGetCapabilities`; see also [`CsiClient::capabilities`].
    controller_get_capabilities(ControllerClient, ControllerGetCapabilities,
        ControllerGetCapabilitiesRequest -> ControllerGetCapabilitiesResponse)
        |rpc, _| Call::plain(rpc);
    /// `Controller.CreateSnapshot` (idempotent on `name`).
    create_snapshot(ControllerClient, CreateSnapshot, CreateSnapshotRequest -> CreateSnapshotResponse)
        |rpc, r| Call::about(rpc, &[("snapshot name", &r.name), ("of volume", &r.source_volume_id)]);
    /// `Controller.DeleteSnapshot` (an unknown snapshot is OK).
    delete_snapshot(ControllerClient, DeleteSnapshot, DeleteSnapshotRequest -> DeleteSnapshotResponse)
        |rpc, r| Call::about(rpc, &[("snapshot", &r.snapshot_id)]);
    /// `Controller.ListSnapshots` (one page, optionally filtered).
    list_snapshots(ControllerClient, ListSnapshots, ListSnapshotsRequest -> ListSnapshotsResponse)
        |rpc, r| Call::about(rpc, &[("snapshot", &r.snapshot_id), ("of volume", &r.source_volume_id)]);
    /// `Controller.GetSnapshot` (alpha).
    get_snapshot(ControllerClient, GetSnapshot, GetSnapshotRequest -> GetSnapshotResponse)
        |rpc, r| Call::about(rpc, &[("snapshot", &r.snapshot_id)]);
    /// `Controller.ControllerExpandVolume`. Not repeated after a timeout; see
    /// [`Rpc::retries_deadline_exceeded`].
    controller_expand_volume(ControllerClient, ControllerExpandVolume,
        ControllerExpandVolumeRequest -> ControllerExpandVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Controller.ControllerGetVolume` (alpha).
    controller_get_volume(ControllerClient, ControllerGetVolume,
        ControllerGetVolumeRequest -> ControllerGetVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Controller.ControllerModifyVolume`.
    controller_modify_volume(ControllerClient, ControllerModifyVolume,
        ControllerModifyVolumeRequest -> ControllerModifyVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);

    /// `Node.NodeStageVolume`: make the volume usable on this node at the
    /// staging path (attach, format, mount).
    node_stage_volume(NodeClient, NodeStageVolume, NodeStageVolumeRequest -> NodeStageVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodeUnstageVolume`.
    node_unstage_volume(NodeClient, NodeUnstageVolume, NodeUnstageVolumeRequest -> NodeUnstageVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodePublishVolume`: make the volume appear at the target path.
    node_publish_volume(NodeClient, NodePublishVolume, NodePublishVolumeRequest -> NodePublishVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodeUnpublishVolume`.
    node_unpublish_volume(NodeClient, NodeUnpublishVolume,
        NodeUnpublishVolumeRequest -> NodeUnpublishVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodeGetVolumeStats`.
    node_get_volume_stats(NodeClient, NodeGetVolumeStats,
        NodeGetVolumeStatsRequest -> NodeGetVolumeStatsResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodeExpandVolume`. Not repeated after a timeout; see
    /// [`Rpc::retries_deadline_exceeded`].
    node_expand_volume(NodeClient, NodeExpandVolume, NodeExpandVolumeRequest -> NodeExpandVolumeResponse)
        |rpc, r| Call::about(rpc, &[("volume", &r.volume_id)]);
    /// `Node.NodeGetCapabilities`; see also [`CsiClient::capabilities`].
    node_get_capabilities(NodeClient, NodeGetCapabilities,
        NodeGetCapabilitiesRequest -> NodeGetCapabilitiesResponse)
        |rpc, _| Call::plain(rpc);
    /// `Node.NodeGetInfo`: the node's ID, volume limit and topology.
    node_get_info(NodeClient, NodeGetInfo, NodeGetInfoRequest -> NodeGetInfoResponse)
        |rpc, _| Call::plain(rpc);
}

/// What a plugin offers, reduced to what Berth decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The plugin serves the Controller service (`CONTROLLER_SERVICE`).
    pub controller_service: bool,
    /// Volumes are reachable only from some nodes (`VOLUME_ACCESSIBILITY_CONSTRAINTS`).
    pub volume_accessibility_constraints: bool,
    /// `CreateVolume`/`DeleteVolume` (`CREATE_DELETE_VOLUME`).
    pub create_delete_volume: bool,
    /// `ControllerPublishVolume`/`ControllerUnpublishVolume` (`PUBLISH_UNPUBLISH_VOLUME`).
    pub publish_unpublish: bool,
    /// `ListVolumes` (`LIST_VOLUMES`).
    pub list_volumes: bool,
    /// `GetCapacity` (`GET_CAPACITY`).
    pub get_capacity: bool,
    /// `CreateSnapshot`/`DeleteSnapshot` (`CREATE_DELETE_SNAPSHOT`).
    pub snapshots: bool,
    /// `ControllerExpandVolume` (controller `EXPAND_VOLUME`).
    pub expand: bool,
    /// The plugin serves the Node service (`NodeGetCapabilities` answered).
    pub node_service: bool,
    /// `NodeStageVolume`/`NodeUnstageVolume` (`STAGE_UNSTAGE_VOLUME`).
    pub stage_unstage: bool,
    /// `NodeGetVolumeStats` (`GET_VOLUME_STATS`).
    pub node_get_volume_stats: bool,
    /// `NodeExpandVolume` (node `EXPAND_VOLUME`).
    pub node_expand: bool,
}

impl Capabilities {
    /// Adds the plugin-level capabilities of `response`.
    pub fn add_plugin(&mut self, response: &GetPluginCapabilitiesResponse) {
        use plugin_capability::service::Type;
        for capability in &response.capabilities {
            if let Some(plugin_capability::Type::Service(service)) = &capability.r#type {
                match service.r#type() {
                    Type::ControllerService => self.controller_service = true,
                    Type::VolumeAccessibilityConstraints => self.volume_accessibility_constraints = true,
                    Type::Unknown | Type::GroupControllerService | Type::SnapshotMetadataService => {}
                }
            }
        }
    }

    /// Adds the controller capabilities of `response`.
    pub fn add_controller(&mut self, response: &ControllerGetCapabilitiesResponse) {
        use controller_service_capability::rpc::Type;
        for capability in &response.capabilities {
            let Some(controller_service_capability::Type::Rpc(rpc)) = &capability.r#type else { continue };
            match rpc.r#type() {
                Type::CreateDeleteVolume => self.create_delete_volume = true,
                Type::PublishUnpublishVolume => self.publish_unpublish = true,
                Type::ListVolumes => self.list_volumes = true,
                Type::GetCapacity => self.get_capacity = true,
                Type::CreateDeleteSnapshot => self.snapshots = true,
                Type::ExpandVolume => self.expand = true,
                _ => {}
            }
        }
    }

    /// Adds the node capabilities of `response` and marks the node service
    /// as present.
    pub fn add_node(&mut self, response: &NodeGetCapabilitiesResponse) {
        use node_service_capability::rpc::Type;
        self.node_service = true;
        for capability in &response.capabilities {
            let Some(node_service_capability::Type::Rpc(rpc)) = &capability.r#type else { continue };
            match rpc.r#type() {
                Type::StageUnstageVolume => self.stage_unstage = true,
                Type::GetVolumeStats => self.node_get_volume_stats = true,
                Type::ExpandVolume => self.node_expand = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///run/csi/csi.sock").ok(), Some(PathBuf::from("/run/csi/csi.sock")));
        assert_eq!(socket_path("/run/csi/csi.sock").ok(), Some(PathBuf::from("/run/csi/csi.sock")));
        assert_eq!(socket_path("csi.sock").ok(), Some(PathBuf::from("csi.sock")));
        for bad in ["unix://run/csi.sock", "tcp://127.0.0.1:10000", "", "unix://"] {
            assert!(matches!(socket_path(bad), Err(ClientError::InvalidEndpoint { .. })), "{bad:?} accepted");
        }
        let long = format!("/{}", "x".repeat(MAX_SOCKET_PATH));
        let message = socket_path(&long).map(|_| ()).map_err(|e| e.to_string());
        assert!(message.as_ref().is_err_and(|m| m.contains("107 bytes")), "{message:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        };
        let waits: Vec<_> = (1..=5).map(|attempt| policy.backoff(attempt).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(700));
    }

    #[test]
    fn timeouts_per_rpc() {
        let config = ClientConfig::default().with_timeout(Rpc::NodeStageVolume, Duration::from_secs(300));
        assert_eq!(config.timeout(Rpc::Probe), Duration::from_secs(10));
        assert_eq!(config.timeout(Rpc::CreateVolume), Duration::from_secs(120));
        assert_eq!(config.timeout(Rpc::NodeStageVolume), Duration::from_secs(300));
    }

    #[test]
    fn status_message_names_everything() {
        let error = ClientError::Status {
            socket: PathBuf::from("/run/csi.sock"),
            call: Call::about(Rpc::CreateVolume, &[("volume name", "db")]),
            code: Code::AlreadyExists,
            message: "size differs".to_owned(),
            attempts: 1,
        };
        assert_eq!(
            error.to_string(),
            "CSI plugin at /run/csi.sock: CreateVolume volume name \"db\": ALREADY_EXISTS: size differs \
             (a volume with this name exists with different parameters)"
        );
    }
}
