//! Shared setup: a simulator on a free 127.0.0.1 port with a temporary
//! state dir, and a client pointed at it with test-sized waits.

use std::net::SocketAddr;
use std::time::Duration;

use synology::dsm::{DevAttrib, DsmClient, DsmConfig, LunCreate, LunType, Password};
use synology::sim::{SimConfig, Simulator};
use tempfile::TempDir;

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

pub async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = Simulator::start(sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)))).await.expect("sim starts");
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
