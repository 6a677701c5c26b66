//! Shared setup: a simulator on a free 127.0.0.1 port with a temporary
//! state dir, and a client pointed at it with test-sized waits.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use csi::{ClientConfig, CsiClient, RetryPolicy};
use synology::config::DriverConfig;
use synology::dsm::{DevAttrib, DsmClient, DsmConfig, Lun, LunCreate, LunType, Password, Target};
use synology::provisioner::{serve, Provisioner};
use synology::sim::{SimConfig, Simulator, FRESH_NAS_LUNS, FRESH_NAS_TARGETS};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const ACCOUNT: &str = "admin";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Harness {
    pub sim: Simulator,
    pub dir: TempDir,
}

pub fn sim_config(dir: &TempDir, listen: SocketAddr) -> SimConfig {
    let mut config = SimConfig::new(listen, dir.path(), ACCOUNT, Password::new(PASSWORD));
    config.lun_delete_delay = Duration::from_millis(300);
    config
}

/// A simulated NAS as it comes, with DSM's default target and objects
/// of other tools.
pub async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = Simulator::start(sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)))).await.expect("sim starts");
    Harness { sim, dir }
}

/// A simulated NAS as it comes, with `tune` applied to its configuration.
pub async fn start_with(tune: impl FnOnce(&mut SimConfig)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    tune(&mut config);
    let sim = Simulator::start(config).await.expect("sim starts");
    Harness { sim, dir }
}

/// The provisioner (Identity + Controller) on a unix socket, configured by
/// `yaml`, its DSM client with test-sized waits (then `tune`d), and a CSI
/// client connected to it.
pub struct Plugin {
    pub csi: CsiClient,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Plugin {
    pub async fn start(yaml: &str, tune: impl FnOnce(&mut DsmConfig)) -> Plugin {
        let config = DriverConfig::from_yaml(yaml).unwrap();
        let mut dsm_config = config.dsm_config(|_| None).unwrap();
        dsm_config.call_timeout = Duration::from_secs(5);
        dsm_config.delete_wait = Duration::from_secs(5);
        dsm_config.delete_poll_interval = Duration::from_millis(50);
        tune(&mut dsm_config);
        let provisioner = Provisioner::new(&config, DsmClient::new(dsm_config).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                serve(provisioner, None, &endpoint, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            })
        };
        let started = std::time::Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(5), "socket never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let config = ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() };
        let csi = CsiClient::connect(&endpoint, config).await.unwrap();
        Plugin { csi, stop, served, _dir: dir }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap();
    }
}

/// A simulated NAS holding nothing at all (for wire-level checks that read
/// ids and whole listings).
pub async fn start_empty() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.fresh_nas = false;
    let sim = Simulator::start(config).await.expect("sim starts");
    Harness { sim, dir }
}

pub fn client_config(base_url: &str, password: &str) -> DsmConfig {
    let mut config = DsmConfig::new(base_url, ACCOUNT, Password::new(password));
    config.call_timeout = Duration::from_secs(5);
    config.delete_wait = Duration::from_secs(5);
    config.delete_poll_interval = Duration::from_millis(50);
    config
}

pub fn client(sim: &Simulator) -> DsmClient {
    DsmClient::new(client_config(&sim.base_url(), PASSWORD)).expect("client builds")
}

pub fn thin_lun(name: &str, size: u64) -> LunCreate {
    LunCreate {
        name: name.to_owned(),
        location: "/volume1".to_owned(),
        size,
        lun_type: LunType::Blun,
        description: Some("made by berth tests".to_owned()),
        dev_attribs: vec![DevAttrib { dev_attrib: "can_snapshot".to_owned(), enable: 1 }],
    }
}

/// The LUNs on the NAS that it did not come with.
pub async fn added_luns(dsm: &DsmClient) -> Vec<Lun> {
    dsm.list_luns().await.unwrap().into_iter().filter(|l| !FRESH_NAS_LUNS.contains(&l.name.as_str())).collect()
}

/// The targets on the NAS that it did not come with.
pub async fn added_targets(dsm: &DsmClient) -> Vec<Target> {
    dsm.list_targets().await.unwrap().into_iter().filter(|t| !FRESH_NAS_TARGETS.contains(&t.name.as_str())).collect()
}
