//! `dsm-sim`: a simulated Synology DSM serving the subset of the Web API
//! that Berth's client uses, faithfully enough that democratic-csi- and
//! synology-csi-style clients work against it too.
//!
//! * `http`: endpoints, GET/POST forms, session carriers, the JSON envelope,
//!   the admin endpoints (`/sim/faults`, `/sim/stats`).
//! * `params`: DSM's lenient JSON decoding of parameter values.
//! * `auth`: sessions, idle timeout (106), unknown SID (119), CSRF (105).
//! * `san`: LUNs, targets, mappings, snapshots, clones and volume capacity.
//! * `store`: state persisted as JSON in the state dir, sparse backing files.
//! * `faults`: injected HTTP 500s, latency, DSM error codes, session expiry.
//!
//! * `export`: with [`SimConfig::export_iscsi`], each target and its LUNs
//!   exported through a tgtd of the simulator's own on the portal,
//!   `max_sessions` honoured.

mod auth;
mod error;
mod export;
mod faults;
mod http;
mod params;
mod san;
mod store;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use auth::AutoBlock;
pub use error::SimError;
pub use export::control_port as tgt_control_port;
pub use faults::{Faults, FaultsUpdate};
pub use san::{Dialect, Limits, FRESH_NAS_LUNS, FRESH_NAS_TARGETS};

use crate::dsm::Password;
use auth::Sessions;
use export::TgtExport;
use http::Shared;
use san::{Fs, San, SimVolume};
use store::Store;

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the state and the backing files live.
    pub state_dir: PathBuf,
    /// The one (administrator) account.
    pub account: String,
    /// Its password.
    pub password: Password,
    /// iSCSI portal reported in target listings (and served, with
    /// `export_iscsi`).
    pub portal: SocketAddr,
    /// Export the targets over iSCSI on `portal` through Debian's `tgtd`.
    pub export_iscsi: bool,
    /// Idle time after which a session answers 106.
    pub session_timeout: Duration,
    /// Require the SynoToken on every call (DSM's CSRF protection).
    pub csrf: bool,
    /// How long a deleted LUN stays listed (DSM deletes asynchronously).
    pub lun_delete_delay: Duration,
    /// Size of each simulated storage volume (`/volume1` btrfs, `/volume2` ext4).
    pub volume_size: u64,
    /// Faults in force from the start.
    pub faults: Faults,
    /// Give a new state dir what a NAS comes with: DSM's default target, a
    /// Virtual Machine Manager disk and another tool's LUN with a snapshot.
    pub fresh_nas: bool,
    /// DSM's Auto Block: refused logins from one IP that block it.
    pub auto_block: AutoBlock,
    /// The account has 2-factor authentication enforced: logins with the
    /// right password answer 403 (code required), as berth sends none.
    pub two_factor: bool,
    /// The account is not an administrator: SAN calls answer 105.
    pub non_admin: bool,
    /// Which DSM the simulator answers as.
    pub dialect: Dialect,
    /// How long a new clone stays `is_action_locked`: this…
    pub clone_lock: Duration,
    /// …plus this per GiB of data the source holds (DSM copies the data).
    pub clone_lock_per_gib: Duration,
    /// The model's LUN, target and snapshot limits.
    pub limits: Limits,
    /// Also serve HTTPS, with a self-signed certificate, on this address.
    pub https: Option<SocketAddr>,
    /// DSM's "redirect HTTP to HTTPS": every HTTP request is answered with
    /// a redirect to the HTTPS address.
    pub redirect_http: bool,
}

impl SimConfig {
    /// A configuration with DSM's defaults: 15-minute sessions, CSRF off,
    /// 1 s asynchronous LUN removal, two 1 TiB volumes, portal on port 3260,
    /// Auto Block at 10 refusals in 5 minutes, DSM 7's answers, clones
    /// locked 0.3 s plus 7 s per GiB of data, a fresh NAS's own objects,
    /// plain HTTP.
    pub fn new(
        listen: SocketAddr,
        state_dir: impl Into<PathBuf>,
        account: impl Into<String>,
        password: Password,
    ) -> Self {
        Self {
            listen,
            state_dir: state_dir.into(),
            account: account.into(),
            password,
            portal: SocketAddr::from(([127, 0, 0, 1], 3260)),
            export_iscsi: false,
            session_timeout: Duration::from_secs(15 * 60),
            csrf: false,
            lun_delete_delay: Duration::from_secs(1),
            volume_size: 1 << 40,
            faults: Faults::default(),
            fresh_nas: true,
            auto_block: AutoBlock::default(),
            two_factor: false,
            non_admin: false,
            dialect: Dialect::Dsm7,
            clone_lock: Duration::from_millis(300),
            clone_lock_per_gib: Duration::from_secs(7),
            limits: Limits::default(),
            https: None,
            redirect_http: false,
        }
    }
}

/// Counters for tests and operators (`GET /sim/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Successful logins.
    pub logins: u64,
    /// Refused logins.
    pub failed_logins: u64,
    /// Logins refused because the source IP was blocked (407).
    #[serde(default)]
    pub blocked_logins: u64,
    /// SAN calls refused because the LUN was locked or being deleted.
    #[serde(default)]
    pub busy_refusals: u64,
    /// SAN calls that passed the session check and reached the SAN layer.
    pub api_calls: u64,
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    sessions_guard: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Loads the state dir, binds and starts serving in the background.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let store = Store::open(&config.state_dir)?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| SimError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: config.listen, source })?;
        let san = San {
            store,
            volumes: vec![
                SimVolume { path: "/volume1", fs: Fs::Btrfs, size: config.volume_size },
                SimVolume { path: "/volume2", fs: Fs::Ext4, size: config.volume_size },
            ],
            lun_delete_delay: config.lun_delete_delay,
            portal_port: config.portal.port(),
            export: None,
            dialect: config.dialect,
            limits: config.limits,
            clone_lock: (config.clone_lock, config.clone_lock_per_gib),
        };
        let mut san = san;
        if config.fresh_nas {
            san.seed_fresh_nas()?;
        }
        if config.export_iscsi {
            let (portal, log) = (config.portal, config.state_dir.join("tgtd.log"));
            let export = tokio::task::spawn_blocking(move || TgtExport::start(portal, &log))
                .await
                .map_err(|e| SimError::Tgt(e.to_string()))??;
            san.export = Some(export);
            san.sync_export()?;
        }
        let https = match config.https {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| SimError::Bind { addr, source })?),
            None => None,
        };
        let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared {
            san: Arc::new(Mutex::new(san)),
            sessions: Mutex::new(Sessions::new(config.session_timeout, config.csrf)),
            blocks: Mutex::new(auth::Blocks::default()),
            faults: Mutex::new(config.faults),
            stats: Mutex::new(Stats::default()),
            account: config.account,
            password: config.password,
            auto_block: config.auto_block,
            two_factor: config.two_factor,
            non_admin: config.non_admin,
            dialect: config.dialect,
            redirect_to: https_addr.filter(|_| config.redirect_http),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(Arc::clone(&shared));
        if let Some(listener) = https {
            tokio::spawn(tls::serve(listener, app.clone()));
        }
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let sessions_guard = config.export_iscsi.then(|| tokio::spawn(guard_sessions(Arc::clone(&shared.san))));
        info!(%addr, state_dir = %config.state_dir.display(), "DSM simulator listening");
        Ok(Self { addr, https_addr, shared, stop, server, sessions_guard })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL a DSM client takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTPS address, when [`SimConfig::https`] asked for one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock()
    }

    /// Changes the faults in force, as `POST /sim/faults` does.
    pub fn inject(&self, update: &FaultsUpdate) {
        http::apply(&self.shared, update);
    }

    /// Stops serving (in-flight requests finish) and waits for the server.
    pub async fn shutdown(self) -> Result<(), SimError> {
        let _ = self.stop.send(());
        let served = match self.server.await {
            Ok(result) => result.map_err(SimError::Serve),
            Err(join) => Err(SimError::Serve(std::io::Error::other(join))),
        };
        if let Some(guard) = self.sessions_guard {
            guard.abort();
        }
        // Dropping the export stops the simulator's tgtd.
        let export = self.shared.san.lock().export.take();
        drop(export);
        served
    }
}

/// Every half second, closes sessions beyond the targets' `max_sessions`.
async fn guard_sessions(san: Arc<Mutex<San>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let san = Arc::clone(&san);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || san.lock().enforce_max_sessions()).await {
            tracing::warn!(error = %e, "could not check max_sessions");
        }
    }
}
