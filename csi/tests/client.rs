//! `CsiClient` against a scripted CSI plugin served by tonic on a unix socket
//! in a temporary directory. Each test tells the plugin how to misbehave
//! (fail N times with a code, answer late) and checks what the client made of
//! it: values round-tripped, attempts made, errors and their messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csi::v1::controller_server::{Controller, ControllerServer};
use csi::v1::identity_server::{Identity, IdentityServer};
use csi::v1::node_server::{Node, NodeServer};
use csi::v1::*;
use csi::{Capabilities, ClientConfig, ClientError, CsiClient, RetryPolicy, Rpc};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

/// How the plugin answers the first `failures` calls of one RPC: after
/// `delay`, with `code` and `message`. Later calls succeed at once.
#[derive(Clone)]
struct Plan {
    failures: u32,
    code: Code,
    message: &'static str,
    delay: Duration,
}

impl Plan {
    fn fail(failures: u32, code: Code, message: &'static str) -> Self {
        Self { failures, code, message, delay: Duration::ZERO }
    }

    fn slow(failures: u32, delay: Duration) -> Self {
        Self { failures, code: Code::Internal, message: "answered too late", delay }
    }
}

#[derive(Default)]
struct State {
    plans: HashMap<&'static str, Plan>,
    calls: HashMap<&'static str, u32>,
    ready: Option<bool>,
    staged: Vec<(String, String, usize)>,
}

/// The scripted plugin; clones share the script and the call counts.
#[derive(Clone, Default)]
struct Plugin {
    state: Arc<Mutex<State>>,
}

impl Plugin {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("plugin state lock")
    }

    /// Scripts `rpc` and restarts its call count.
    fn plan(&self, rpc: &'static str, plan: Plan) {
        let mut state = self.state();
        state.plans.insert(rpc, plan);
        state.calls.remove(rpc);
    }

    fn calls(&self, rpc: &str) -> u32 {
        self.state().calls.get(rpc).copied().unwrap_or(0)
    }

    /// Counts the call and plays the plan for it.
    async fn enter(&self, rpc: &'static str) -> Result<(), Status> {
        let failure = {
            let mut state = self.state();
            let count = state.calls.entry(rpc).or_default();
            *count += 1;
            let count = *count;
            state.plans.get(rpc).filter(|plan| count <= plan.failures).cloned()
        };
        match failure {
            None => Ok(()),
            Some(plan) => {
                tokio::time::sleep(plan.delay).await;
                Err(Status::new(plan.code, plan.message))
            }
        }
    }
}

fn rpc_capability(kind: controller_service_capability::rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(controller_service_capability::Rpc {
            r#type: kind as i32,
        })),
    }
}

fn node_capability(kind: node_service_capability::rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(node_service_capability::Rpc { r#type: kind as i32 })),
    }
}

#[tonic::async_trait]
impl Identity for Plugin {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        self.enter("GetPluginInfo").await?;
        Ok(Response::new(GetPluginInfoResponse {
            name: "csi.berth.test".to_owned(),
            vendor_version: "1.2.3".to_owned(),
            manifest: HashMap::from([("commit".to_owned(), "abc123".to_owned())]),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
        self.enter("GetPluginCapabilities").await?;
        let service =
            |kind: service::Type| PluginCapability { r#type: Some(Type::Service(Service { r#type: kind as i32 })) };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(service::Type::ControllerService),
                service(service::Type::VolumeAccessibilityConstraints),
                PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    })),
                },
            ],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        self.enter("Probe").await?;
        Ok(Response::new(ProbeResponse { ready: self.state().ready }))
    }
}

#[tonic::async_trait]
impl Controller for Plugin {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        self.enter("CreateVolume").await?;
        let request = request.into_inner();
        let capacity_bytes = request.capacity_range.map_or(0, |range| range.required_bytes);
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes,
                volume_id: format!("vol-{}", request.name),
                volume_context: request.parameters,
                ..Default::default()
            }),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        self.enter("ControllerGetCapabilities").await?;
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                rpc_capability(Type::CreateDeleteVolume),
                rpc_capability(Type::PublishUnpublishVolume),
                rpc_capability(Type::GetCapacity),
                rpc_capability(Type::ExpandVolume),
                rpc_capability(Type::CloneVolume),
            ],
        }))
    }
}

#[tonic::async_trait]
impl Node for Plugin {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        self.enter("NodeStageVolume").await?;
        let request = request.into_inner();
        self.state().staged.push((request.volume_id, request.staging_target_path, request.secrets.len()));
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        self.enter("NodeExpandVolume").await?;
        Ok(Response::new(NodeExpandVolumeResponse { capacity_bytes: 2 << 30 }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type;
        self.enter("NodeGetCapabilities").await?;
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![node_capability(Type::StageUnstageVolume), node_capability(Type::GetVolumeStats)],
        }))
    }

    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> Result<Response<NodeGetInfoResponse>, Status> {
        self.enter("NodeGetInfo").await?;
        Ok(Response::new(NodeGetInfoResponse {
            node_id: "node-1".to_owned(),
            max_volumes_per_node: 8,
            accessible_topology: Some(Topology {
                segments: HashMap::from([("topology.berth.io/zone".to_owned(), "lab".to_owned())]),
            }),
        }))
    }
}

/// A plugin serving on `<tempdir>/csi.sock` until the test's runtime ends.
struct Harness {
    dir: tempfile::TempDir,
    plugin: Plugin,
}

impl Harness {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("csi.sock")
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    async fn client(&self, config: ClientConfig) -> CsiClient {
        CsiClient::connect(&self.endpoint(), config).await.expect("connect to the test plugin")
    }
}

/// Serves `plugin` on `socket`: Identity and Controller, and Node if `node`.
fn serve(socket: &Path, plugin: &Plugin, node: bool) {
    let listener = UnixListener::bind(socket).expect("bind the plugin socket");
    let incoming = UnixListenerStream::new(listener);
    let router = Server::builder()
        .add_service(IdentityServer::new(plugin.clone()))
        .add_service(ControllerServer::new(plugin.clone()));
    let router = if node { router.add_service(NodeServer::new(plugin.clone())) } else { router };
    tokio::spawn(router.serve_with_incoming(incoming));
}

fn start_with(node: bool) -> Harness {
    let harness = Harness { dir: tempfile::tempdir().expect("tempdir"), plugin: Plugin::default() };
    serve(&harness.socket(), &harness.plugin, node);
    harness
}

fn start() -> Harness {
    start_with(true)
}

/// Short waits so retry tests run fast.
fn quick_retries(max_attempts: u32) -> ClientConfig {
    ClientConfig {
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        },
        ..ClientConfig::default()
    }
}

fn stage_request() -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: "vol-1".to_owned(),
        staging_target_path: "/var/lib/berth/csi/staging/vol-1".to_owned(),
        secrets: HashMap::from([("password".to_owned(), "hunter2".to_owned())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn plugin_info_and_probe_round_trip() {
    let harness = start();
    let client = harness.client(ClientConfig::default()).await;

    let info = client.get_plugin_info(GetPluginInfoRequest {}).await.expect("GetPluginInfo");
    assert_eq!(info.name, "csi.berth.test");
    assert_eq!(info.vendor_version, "1.2.3");
    assert_eq!(info.manifest.get("commit").map(String::as_str), Some("abc123"));

    assert!(client.probe_ready().await.expect("Probe"), "an unset ready means ready");
    harness.plugin.state().ready = Some(false);
    assert!(!client.probe_ready().await.expect("Probe"));
    harness.plugin.state().ready = Some(true);
    assert!(client.probe_ready().await.expect("Probe"));
    assert_eq!(harness.plugin.calls("Probe"), 3);
}

#[tokio::test]
async fn capabilities_round_trip() {
    let harness = start();
    let client = harness.client(ClientConfig::default()).await;
    let capabilities = client.capabilities().await.expect("capabilities");
    assert_eq!(
        capabilities,
        Capabilities {
            controller_service: true,
            volume_accessibility_constraints: true,
            create_delete_volume: true,
            publish_unpublish: true,
            list_volumes: false,
            get_capacity: true,
            snapshots: false,
            expand: true,
            node_service: true,
            stage_unstage: true,
            node_get_volume_stats: true,
            node_expand: false,
        }
    );
}

#[tokio::test]
async fn capabilities_of_a_controller_only_plugin() {
    let harness = start_with(false);
    let client = harness.client(ClientConfig::default()).await;
    let capabilities = client.capabilities().await.expect("capabilities");
    assert!(capabilities.controller_service && capabilities.create_delete_volume);
    assert!(!capabilities.node_service && !capabilities.stage_unstage && !capabilities.node_get_volume_stats);

    let error = client.node_stage_volume(stage_request()).await.expect_err("no Node service");
    assert_eq!(error.code(), Some(Code::Unimplemented));
    assert_eq!(error.attempts(), 1);
    assert!(error.to_string().contains("the plugin does not offer this RPC"), "{error}");
}

#[tokio::test]
async fn requests_and_responses_cross_the_socket() {
    let harness = start();
    let client = harness.client(ClientConfig::default()).await;

    let info = client.node_get_info(NodeGetInfoRequest {}).await.expect("NodeGetInfo");
    assert_eq!(info.node_id, "node-1");
    assert_eq!(info.max_volumes_per_node, 8);
    let zone = info.accessible_topology.and_then(|t| t.segments.get("topology.berth.io/zone").cloned());
    assert_eq!(zone.as_deref(), Some("lab"));

    client.node_stage_volume(stage_request()).await.expect("NodeStageVolume");
    assert_eq!(harness.plugin.state().staged, [("vol-1".to_owned(), "/var/lib/berth/csi/staging/vol-1".to_owned(), 1)]);

    let created = client
        .create_volume(CreateVolumeRequest {
            name: "db".to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
            parameters: HashMap::from([("pool".to_owned(), "ssd".to_owned())]),
            ..Default::default()
        })
        .await
        .expect("CreateVolume");
    let volume = created.volume.expect("a volume");
    assert_eq!(volume.volume_id, "vol-db");
    assert_eq!(volume.capacity_bytes, 1 << 30);
    assert_eq!(volume.volume_context.get("pool").map(String::as_str), Some("ssd"));
}

#[tokio::test]
async fn retryable_codes_are_retried_until_success() {
    for code in [Code::Unavailable, Code::Aborted, Code::ResourceExhausted] {
        let harness = start();
        harness.plugin.plan("NodeStageVolume", Plan::fail(2, code, "try again"));
        let client = harness.client(quick_retries(5)).await;
        client.node_stage_volume(stage_request()).await.unwrap_or_else(|e| panic!("{code:?}: {e}"));
        assert_eq!(harness.plugin.calls("NodeStageVolume"), 3, "{code:?}");
        assert_eq!(harness.plugin.state().staged.len(), 1);
    }
}

#[tokio::test]
async fn retries_back_off_exponentially() {
    let harness = start();
    harness.plugin.plan("NodeStageVolume", Plan::fail(3, Code::Unavailable, "starting"));
    let config = ClientConfig {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(150),
        },
        ..ClientConfig::default()
    };
    let client = harness.client(config).await;
    let started = Instant::now();
    client.node_stage_volume(stage_request()).await.expect("fourth attempt succeeds");
    let elapsed = started.elapsed();
    // Waits of 100 ms, 200 ms capped to 150 ms, and 150 ms.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(harness.plugin.calls("NodeStageVolume"), 4);
}

#[tokio::test]
async fn retries_stop_after_the_bound() {
    let harness = start();
    harness.plugin.plan("NodeStageVolume", Plan::fail(u32::MAX, Code::Unavailable, "iscsid is not running"));
    let client = harness.client(quick_retries(3)).await;
    let error = client.node_stage_volume(stage_request()).await.expect_err("always unavailable");
    assert_eq!(harness.plugin.calls("NodeStageVolume"), 3);
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(error.attempts(), 3);
    assert_eq!(
        error.to_string(),
        format!(
            "CSI plugin at {}: NodeStageVolume volume \"vol-1\": UNAVAILABLE: iscsid is not running (the plugin, \
             or the storage behind it, cannot be reached); gave up after 3 attempts",
            harness.socket().display()
        )
    );
    assert!(!error.to_string().contains("hunter2"));
}

#[tokio::test]
async fn other_codes_are_not_retried() {
    let cases = [
        (Code::NotFound, "the volume does not exist on the storage"),
        (Code::FailedPrecondition, "the plugin does not support the requested volume capability"),
        (Code::InvalidArgument, "a field is missing, invalid or unsupported"),
        (Code::AlreadyExists, "already staged at this path with a different capability"),
        (Code::Unauthenticated, "the secrets are missing or wrong"),
        (Code::Internal, "INTERNAL"),
    ];
    for (code, expected) in cases {
        let harness = start();
        harness.plugin.plan("NodeStageVolume", Plan::fail(u32::MAX, code, "plugin says no"));
        let client = harness.client(quick_retries(5)).await;
        let error = client.node_stage_volume(stage_request()).await.expect_err("fails");
        assert_eq!(harness.plugin.calls("NodeStageVolume"), 1, "{code:?} was retried");
        assert_eq!(error.code(), Some(code));
        assert_eq!(error.attempts(), 1);
        let message = error.to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("plugin says no"), "{message}");
        assert!(!message.contains("attempts"), "{message}");
    }
}

#[tokio::test]
async fn error_message_names_socket_rpc_volume_and_code() {
    let harness = start();
    harness.plugin.plan("NodeStageVolume", Plan::fail(1, Code::FailedPrecondition, "device /dev/sdb is busy"));
    let client = harness.client(ClientConfig::default()).await;
    let error = client.node_stage_volume(stage_request()).await.expect_err("fails");
    assert_eq!(
        error.to_string(),
        format!(
            "CSI plugin at {}: NodeStageVolume volume \"vol-1\": FAILED_PRECONDITION: device /dev/sdb is busy \
             (the plugin does not support the requested volume capability)",
            harness.socket().display()
        )
    );
    let call = error.call().expect("a call");
    assert_eq!(call.rpc(), Rpc::NodeStageVolume);
    assert_eq!(call.subject(), "volume \"vol-1\"");

    harness.plugin.plan("CreateVolume", Plan::fail(1, Code::AlreadyExists, ""));
    let error = client
        .create_volume(CreateVolumeRequest { name: "db".to_owned(), ..Default::default() })
        .await
        .expect_err("fails");
    assert_eq!(
        error.to_string(),
        format!(
            "CSI plugin at {}: CreateVolume volume name \"db\": ALREADY_EXISTS: (the plugin gave no message) \
             (a volume with this name exists with different parameters)",
            harness.socket().display()
        )
    );
}

#[tokio::test]
async fn timeouts_fire() {
    let harness = start();
    harness.plugin.plan("NodeStageVolume", Plan::slow(u32::MAX, Duration::from_secs(5)));
    let config = ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() }
        .with_timeout(Rpc::NodeStageVolume, Duration::from_millis(200));
    let client = harness.client(config).await;
    let started = Instant::now();
    let error = client.node_stage_volume(stage_request()).await.expect_err("times out");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(matches!(error, ClientError::Timeout { attempts: 1, .. }), "{error:?}");
    assert_eq!(error.code(), Some(Code::DeadlineExceeded));
    assert_eq!(
        error.to_string(),
        format!(
            "CSI plugin at {}: NodeStageVolume volume \"vol-1\": DEADLINE_EXCEEDED: no answer within 200ms \
             (the plugin is stuck or the operation takes longer than allowed)",
            harness.socket().display()
        )
    );
    // Other RPCs keep their own (default) timeout.
    assert!(client.probe_ready().await.expect("Probe"));
}

#[tokio::test]
async fn timed_out_idempotent_calls_are_retried() {
    let harness = start();
    harness.plugin.plan("NodeStageVolume", Plan::slow(2, Duration::from_secs(5)));
    let client = harness.client(quick_retries(5).with_timeout(Rpc::NodeStageVolume, Duration::from_millis(150))).await;
    client.node_stage_volume(stage_request()).await.expect("third attempt answers in time");
    assert_eq!(harness.plugin.calls("NodeStageVolume"), 3);

    harness.plugin.plan("Probe", Plan::slow(u32::MAX, Duration::from_secs(5)));
    let client = harness.client(quick_retries(2).with_timeout(Rpc::Probe, Duration::from_millis(100))).await;
    let error = client.probe_ready().await.expect_err("always too slow");
    assert!(matches!(error, ClientError::Timeout { attempts: 2, .. }), "{error:?}");
    assert!(error.to_string().ends_with("; gave up after 2 attempts"), "{error}");
    assert_eq!(harness.plugin.calls("Probe"), 2);
}

#[tokio::test]
async fn timed_out_expansion_is_not_repeated() {
    let harness = start();
    harness.plugin.plan("NodeExpandVolume", Plan::slow(1, Duration::from_secs(5)));
    let client = harness.client(quick_retries(5).with_timeout(Rpc::NodeExpandVolume, Duration::from_millis(150))).await;
    let request = NodeExpandVolumeRequest {
        volume_id: "vol-1".to_owned(),
        volume_path: "/mnt/vol-1".to_owned(),
        ..Default::default()
    };
    let error = client.node_expand_volume(request.clone()).await.expect_err("times out");
    assert!(matches!(error, ClientError::Timeout { attempts: 1, .. }), "{error:?}");
    assert_eq!(harness.plugin.calls("NodeExpandVolume"), 1);
    // A plain UNAVAILABLE is still retried for it.
    harness.plugin.plan("NodeExpandVolume", Plan::fail(2, Code::Unavailable, "restarting"));
    let response = client.node_expand_volume(request).await.expect("third attempt");
    assert_eq!(response.capacity_bytes, 2 << 30);
    assert_eq!(harness.plugin.calls("NodeExpandVolume"), 3);
}

#[tokio::test]
async fn missing_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let endpoint = socket.display().to_string();

    let error = CsiClient::connect(&endpoint, ClientConfig::default()).await.expect_err("no socket");
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with(&format!("CSI plugin at {}: cannot connect: ", socket.display())), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");

    let client = CsiClient::lazy(&endpoint, quick_retries(2)).expect("lazy client");
    let error = client.probe_ready().await.expect_err("no socket");
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(error.attempts(), 2);
    let message = error.to_string();
    assert!(message.starts_with(&format!("CSI plugin at {}: Probe: UNAVAILABLE: ", socket.display())), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

#[tokio::test]
async fn lazy_client_waits_for_a_starting_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("csi.sock");
    let config = ClientConfig {
        retry: RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        },
        ..ClientConfig::default()
    };
    let client = CsiClient::lazy(&format!("unix://{}", socket.display()), config).expect("lazy client");
    assert_eq!(client.socket(), socket);

    let plugin = Plugin::default();
    let starting = {
        let (socket, plugin) = (socket.clone(), plugin.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            serve(&socket, &plugin, true);
        })
    };
    assert!(client.probe_ready().await.expect("plugin came up"));
    starting.await.expect("server task");
    assert_eq!(plugin.calls("Probe"), 1);
}

#[tokio::test]
async fn invalid_endpoints_are_rejected() {
    let error = CsiClient::connect("tcp://127.0.0.1:9000", ClientConfig::default()).await.expect_err("tcp");
    assert_eq!(
        error.to_string(),
        "invalid CSI endpoint \"tcp://127.0.0.1:9000\": only unix sockets are supported: \
         unix:///path/to/csi.sock or a plain path"
    );
    assert!(CsiClient::lazy("unix://relative.sock", ClientConfig::default()).is_err());
}
