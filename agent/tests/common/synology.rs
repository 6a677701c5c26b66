//! The Synology side of the agent tests: a simulated NAS (dsm-sim in
//! process, exporting through its own tgtd), dev agents with the built-in
//! Synology plugin, and cleanup of what such a test leaves on the node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, pids_with, wait_for, Agent};
use synology::dsm::{DsmClient, DsmConfig, Password};
use synology::sim::{tgt_control_port, FaultsUpdate, SimConfig, Simulator, FRESH_NAS_LUNS, FRESH_NAS_TARGETS};

pub const PASSWORD: &str = "nas-pw-for-tests";

pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The simulated NAS, its tgtd, and a client to look at it.
pub struct Nas {
    pub rt: tokio::runtime::Runtime,
    sim: Option<Simulator>,
    pub config: SimConfig,
}

impl Nas {
    pub fn start(dir: &Path) -> Nas {
        Self::start_with(dir, |_| {})
    }

    /// A NAS with `tune` applied to the simulator's configuration.
    pub fn start_with(dir: &Path, tune: impl FnOnce(&mut SimConfig)) -> Nas {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut config = SimConfig::new(
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir.join("nas"),
            "admin",
            Password::new(PASSWORD),
        );
        config.portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        config.export_iscsi = true;
        config.lun_delete_delay = Duration::from_millis(300);
        tune(&mut config);
        let mut nas = Nas { rt, sim: None, config };
        nas.up();
        nas
    }

    pub fn up(&mut self) {
        let config = self.config.clone();
        self.sim = Some(self.rt.block_on(Simulator::start(config)).expect("dsm-sim starts"));
    }

    pub fn down(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown()).unwrap();
        }
    }

    pub fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("the NAS is up")
    }

    pub fn client(&self) -> DsmClient {
        let mut config = DsmConfig::new(format!("http://{}", self.config.listen), "admin", Password::new(PASSWORD));
        config.call_timeout = Duration::from_secs(5);
        DsmClient::new(config).unwrap()
    }

    /// (LUNs, targets) on the NAS besides those it came with.
    pub fn counts(&self) -> (usize, usize) {
        let client = self.client();
        self.rt.block_on(async {
            let luns = client.list_luns().await.unwrap();
            let targets = client.list_targets().await.unwrap();
            (
                luns.iter().filter(|l| !FRESH_NAS_LUNS.contains(&l.name.as_str())).count(),
                targets.iter().filter(|t| !FRESH_NAS_TARGETS.contains(&t.name.as_str())).count(),
            )
        })
    }

    pub fn inject(&self, update: FaultsUpdate) {
        self.sim().inject(&update);
    }

    /// iSCSI sessions logged in to the NAS's tgtd.
    pub fn sessions(&self) -> usize {
        let control = tgt_control_port(self.config.portal).to_string();
        sh(&format!("tgtadm -C {control} --lld iscsi --mode target --op show | grep -c 'I_T nexus: ' || true"))
            .parse()
            .unwrap_or(0)
    }

    /// democratic-csi's synology-iscsi YAML for this NAS.
    pub fn yaml(&self, password: &str) -> String {
        format!(
            "driver: synology-iscsi\nhttpConnection:\n  protocol: http\n  host: 127.0.0.1\n  port: {}\n  \
             username: admin\n  password: \"{password}\"\n  allowInsecure: true\n  session: democratic-csi\n  \
             serialize: true\nsynology:\n  volume: /volume1\niscsi:\n  targetPortal: \"{}\"\n  targetPortals: []\n  \
             baseiqn: \"iqn.2000-01.com.synology:berth-sim.\"\n  namePrefix: \"\"\n  nameSuffix: \"\"\n  \
             lunTemplate:\n    type: \"BLUN\"\n  lunSnapshotTemplate:\n    is_locked: true\n  targetTemplate:\n    \
             auth_type: 0\n    max_sessions: 1\n",
            self.config.listen.port(),
            self.config.portal
        )
    }
}

impl Drop for Nas {
    fn drop(&mut self) {
        self.down();
    }
}

/// Removes what a test (even a failed one) leaves: containers, mounts under
/// its directory, loop devices on its exports, userspace initiators.
pub struct Leftovers(pub PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let dir = self.0.display().to_string();
        for alloc in sh(&format!("ls {dir}/*/alloc 2>/dev/null")).split_whitespace() {
            sh(&format!("docker ps -aq --filter name={alloc} | xargs -r docker rm -f"));
        }
        sh(&format!("grep -o ' {dir}[^ ]*' /proc/self/mounts | grep -v '/export$' | sort -r | xargs -r -n1 umount -l"));
        for export in sh(&format!("grep -o ' {dir}[^ ]*/export' /proc/self/mounts")).split_whitespace() {
            sh(&format!("losetup -j {export} -O NAME -n | xargs -r -n1 losetup -d"));
        }
        for pid in pids_with(&dir) {
            if sh(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline")).starts_with("qemu-storage-daemon") {
                sh(&format!("kill -9 {pid}"));
            }
        }
        sh(&format!("grep -o ' {dir}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l"));
    }
}

/// A dev agent with the built-in Synology plugin reading `yaml`.
pub fn synology_agent(root: &Path, name: &str, yaml: &str, probe: &str) -> Agent {
    let file = root.join(format!("{name}-synology-iscsi.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let extra = format!(
        "client {{\n  csi_plugin_probe_interval = \"{probe}\"\n}}\nplugin \"synology\" {{\n  config {{\n    \
         driver_config_file = \"{}\"\n    initiator = \"userspace\"\n  }}\n}}\n",
        file.display()
    );
    Agent::dev_with(root, name, &extra)
}

pub fn run_ok(agent: &Agent, args: &[&str]) -> String {
    let r = agent.cli(args);
    assert_eq!(r.code, 0, "berth {args:?}: {r:?}");
    r.stdout
}

pub fn wait_plugin(agent: &Agent) {
    wait_for("the synology plugin to be healthy", Duration::from_secs(30), || {
        (agent.get("/v1/plugin/csi/synology")["NodesHealthy"].as_u64() == Some(1)).then_some(())
    });
}

pub fn running_alloc(agent: &Agent, job: &str) -> String {
    wait_for(&format!("job {job} running"), Duration::from_secs(120), || agent.alloc_ids(job, "running").pop())
}

/// Userspace initiators of this test still running.
pub fn initiators(root: &Path) -> usize {
    pids_with(&root.display().to_string())
        .into_iter()
        .filter(|pid| sh(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline")).starts_with("qemu-storage-daemon"))
        .count()
}
