//! `berth.synology`, the provisioner's controller side: CSI Identity and
//! Controller services that make iSCSI LUNs and targets on a Synology NAS
//! through [`crate::dsm::DsmClient`], configured by democratic-csi's
//! `synology-iscsi` YAML ([`crate::config::DriverConfig`]).
//!
//! * `naming`: CSI name → LUN name, target IQN, snapshot ids.
//! * `volumes`: which LUNs are volumes, look-ups, listings, import.
//! * `snapshots`: snapshot create and list.
//! * `controller`: the Controller RPCs.
//! * here: [`Provisioner`], the Identity service, DSM errors → gRPC codes,
//!   and [`serve`] on a unix socket.
//!
//! State lives only on DSM: `volume_id` is the LUN name, the target has the
//! same name, so every RPC re-reads DSM and a retry after a crash finds (and
//! adopts) what the interrupted call made. Mutating RPCs run one at a time
//! (DSM serialises SAN work anyway), so two retries of one CreateVolume
//! never race each other into duplicates.
//!
//! The node side (iSCSI login, format, mount) is `csi::iscsi::IscsiNode`,
//! served beside these by [`serve`] when asked.

mod controller;
mod naming;
mod snapshots;
mod volumes;

pub use volumes::ExistingVolume;

use std::future::Future;
use std::sync::Arc;

use csi::iscsi::IscsiNode;
use csi::serve::serve_unix;
use csi::v1::controller_server::ControllerServer;
use csi::v1::identity_server::{Identity, IdentityServer};
use csi::v1::node_server::NodeServer;
use csi::v1::plugin_capability::service;
use csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    ProbeRequest, ProbeResponse,
};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

use crate::config::{ConfigError, DriverConfig};
use crate::dsm::{DevAttrib, DsmClient, DsmError, LunType, TargetAuth};

/// The plugin's name, as `GetPluginInfo` reports it.
pub const PLUGIN_NAME: &str = "berth.synology";

/// Why the provisioner could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    /// The driver configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The DSM client could not be built.
    #[error(transparent)]
    Dsm(#[from] DsmError),
    /// The socket could not be served.
    #[error(transparent)]
    Serve(#[from] csi::serve::ServeError),
}

/// What the controller applies, taken from the driver configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub location: String,
    pub base_iqn: String,
    pub name_prefix: String,
    pub name_suffix: String,
    pub lun_type: LunType,
    pub dev_attribs: Vec<DevAttrib>,
    pub max_sessions: u32,
    pub auth: TargetAuth,
    pub snapshot_locked: bool,
    pub snapshot_app_consistent: bool,
    pub portal: String,
    pub portals: Vec<String>,
    pub interface: String,
    pub instance_id: Option<String>,
}

impl Settings {
    fn from_config(config: &DriverConfig) -> Self {
        let iscsi = &config.iscsi;
        let template = &iscsi.target_template;
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let secret =
            |value: &Option<crate::dsm::Password>| value.clone().unwrap_or_else(|| crate::dsm::Password::new(""));
        let auth = match template.auth_type {
            1 => TargetAuth::Chap { user: text(&template.user), password: secret(&template.password) },
            2 => TargetAuth::MutualChap {
                user: text(&template.user),
                password: secret(&template.password),
                mutual_user: text(&template.mutual_user),
                mutual_password: secret(&template.mutual_password),
            },
            _ => TargetAuth::None,
        };
        Self {
            location: config.volume_path(),
            base_iqn: iscsi.baseiqn.clone(),
            name_prefix: iscsi.name_prefix.clone(),
            name_suffix: iscsi.name_suffix.clone(),
            lun_type: iscsi.lun_template.lun_type.unwrap_or(LunType::Blun),
            dev_attribs: iscsi.lun_template.dev_attribs.clone(),
            max_sessions: template.max_sessions,
            auth,
            snapshot_locked: iscsi.lun_snapshot_template.is_locked,
            snapshot_app_consistent: iscsi.lun_snapshot_template.is_app_consistent,
            portal: iscsi.target_portal.clone(),
            portals: iscsi.target_portals.clone(),
            interface: iscsi.interface.clone(),
            instance_id: config.instance_id.clone(),
        }
    }
}

/// The provisioner; cheap to clone, clones share the DSM session.
#[derive(Debug, Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub dsm: DsmClient,
    pub settings: Settings,
    /// Held by every mutating RPC for its whole run.
    pub mutations: tokio::sync::Mutex<()>,
}

impl Provisioner {
    /// A provisioner for `config`, talking to DSM through `dsm` (built from
    /// [`DriverConfig::dsm_config`], possibly with test-sized timeouts).
    /// Nothing is sent to DSM until the first RPC.
    pub fn new(config: &DriverConfig, dsm: DsmClient) -> Self {
        let ignored = config.ignored_template_keys();
        if !ignored.is_empty() {
            tracing::warn!(keys = ?ignored, "driver config: template keys Berth does not apply are ignored");
        }
        Self {
            inner: Arc::new(Inner {
                dsm,
                settings: Settings::from_config(config),
                mutations: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A provisioner from the configuration alone, the DSM client built from
    /// it (password from the file, the password file or the environment).
    pub fn from_config(config: &DriverConfig) -> Result<Self, ProvisionerError> {
        let dsm = DsmClient::new(config.dsm_config(|key| std::env::var(key).ok())?)?;
        Ok(Self::new(config, dsm))
    }
}

/// A DSM failure as a gRPC status naming what was being done, DSM's code
/// and its meaning:
/// unreachable, slow or busy DSM, an unrecoverable session and a LUN still
/// locked by DSM → UNAVAILABLE; no permission after a fresh login (105, a
/// non-administrator) → PERMISSION_DENIED; refused login (400–411, also while its
/// back-off runs) → UNAUTHENTICATED, with what to fix; a missing storage
/// volume or a redirect to HTTPS → FAILED_PRECONDITION (configuration);
/// out of space or a model limit → RESOURCE_EXHAUSTED; duplicates →
/// ALREADY_EXISTS; unknown objects → NOT_FOUND; refused parameters →
/// INVALID_ARGUMENT; the rest INTERNAL.
pub(crate) fn dsm_status(doing: &str, error: DsmError) -> Status {
    let message = format!("{doing}: {error}");
    let code = match &error {
        DsmError::Connect { .. } | DsmError::Timeout { .. } | DsmError::Transport { .. } => Code::Unavailable,
        DsmError::HttpStatus { status, .. } if *status >= 500 => Code::Unavailable,
        DsmError::DeletionTimedOut { .. } | DsmError::Locked { .. } => Code::Unavailable,
        DsmError::LoginLatched { .. } => Code::Unauthenticated,
        DsmError::Redirected { .. } | DsmError::NoVolume { .. } | DsmError::Certificate { .. } => {
            Code::FailedPrecondition
        }
        DsmError::Api { code, .. } => match code {
            // Still refused after a fresh login: the account lacks the right.
            105 => {
                return Status::permission_denied(format!(
                    "{message}; the account has no permission for DSM's SAN APIs: it must be in DSM's \
                     administrators group"
                ))
            }
            106 | 107 | 119 => Code::Unavailable,
            117 => {
                return Status::failed_precondition(format!(
                    "{message}; check synology.volume (the storage volume, e.g. /volume1, must exist)"
                ))
            }
            400..=411 => {
                return Status::unauthenticated(format!("{message}{}", crate::dsm::login_hint(*code)));
            }
            18990002 | 18990541 | 18990542 | 18990543 => Code::ResourceExhausted,
            18990513 | 18990538 | 18990744 => Code::AlreadyExists,
            18990004 | 18990505 | 18990531 | 18990532 | 18990710 => Code::NotFound,
            101 | 18990068 | 18990318 | 18990403 | 18990500 | 18990503 | 18990508 | 18990635 | 18990708 => {
                Code::InvalidArgument
            }
            _ => Code::Internal,
        },
        DsmError::IqnTooLong { .. } => Code::InvalidArgument,
        DsmError::Config(_) => Code::FailedPrecondition,
        DsmError::HttpStatus { .. } | DsmError::Malformed { .. } => Code::Internal,
    };
    Status::new(code, message)
}

/// Bytes as the protocol's `int64`.
pub(crate) fn bytes_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The RPC's answer; a failure is logged once, here.
pub(crate) fn reply<T>(rpc: &'static str, subject: &str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(status) => {
            tracing::warn!(rpc, subject, code = ?status.code(), error = %status.message(), "CSI call failed");
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl Identity for Provisioner {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::answers::plugin_info(PLUGIN_NAME)))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::answers::plugin_capabilities(&[service::Type::ControllerService], true)))
    }

    /// Ready when DSM answers for the configured storage volume.
    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let location = &self.inner.settings.location;
        let result = self
            .inner
            .dsm
            .volume_capacity(location)
            .await
            .map(|_| ProbeResponse { ready: Some(true) })
            .map_err(|e| dsm_status(&format!("probing storage volume {location}"), e));
        reply("Probe", "", result)
    }
}

impl Provisioner {
    /// The volumes this configuration manages that the NAS already holds
    /// (made by democratic-csi or berth), to register them.
    pub async fn existing_volumes(&self) -> Result<Vec<ExistingVolume>, Status> {
        self.inner.existing_volumes().await
    }
}

/// Serves Identity and Controller for `provisioner`, and the iSCSI Node
/// service when `node` is given, on the unix socket at `endpoint`
/// (`unix:///path/csi.sock` or a path) until `shutdown` resolves. A stale
/// socket file is replaced; the socket is removed on the way out.
pub async fn serve(
    provisioner: Provisioner,
    node: Option<IscsiNode>,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProvisionerError> {
    let mut routes =
        Routes::new(IdentityServer::new(provisioner.clone())).add_service(ControllerServer::new(provisioner));
    if let Some(node) = node {
        routes = routes.add_service(NodeServer::new(node));
    }
    Ok(serve_unix(routes, endpoint, PLUGIN_NAME, shutdown).await?)
}
