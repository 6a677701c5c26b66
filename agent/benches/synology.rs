//! Synology benchmark, against dsm-sim exporting over real iSCSI (tgt) and
//! the userspace initiator (qemu-storage-daemon + FUSE + loop):
//!
//! 1. `volume create` + first mount (CreateVolume, NodeStage, NodePublish
//!    through the CSI client and the provisioner with its iSCSI node
//!    service) of a 1 GiB volume, N times (20; `BERTH_BENCH_VOLUMES`):
//!    the median, split into DSM calls (timed by the DSM client), iSCSI
//!    login, mkfs and mount (each done directly on a second LUN in the same
//!    iteration) and what is left: berth's own share; first against a kind
//!    dsm-sim (no locks, instant deletes, an empty NAS), then against one
//!    behaving like DSM, and the ratio of the two medians.
//! 2. The dev agent's RSS with the built-in Synology plugin active (healthy,
//!    one volume created through the API) versus a dev agent without it.
//!
//! `cargo bench -p berth --bench synology`

mod support;

use support::first_mount::{direct_first_mount, stage_and_publish, unpublish_and_unstage, Breakdown};
use support::rss_kib;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use csi::iscsi::{HostRunner, IscsiNode, Userspace};
use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi::v1::{CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, VolumeCapability};
use csi::{ClientConfig, CsiClient};
use synology::config::DriverConfig;
use synology::dsm::{DsmClient, Password};
use synology::provisioner::{serve, Provisioner};
use synology::sim::{SimConfig, Simulator};

const GIB: i64 = 1 << 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn yaml(api: SocketAddr, portal: SocketAddr) -> String {
    format!(
        "driver: synology-iscsi\nhttpConnection:\n  protocol: http\n  host: 127.0.0.1\n  port: {}\n  username: admin\n  \
         password: bench-pw\nsynology:\n  volume: /volume1\niscsi:\n  targetPortal: \"{portal}\"\n  \
         baseiqn: \"iqn.2000-01.com.synology:bench.\"\n  lunTemplate:\n    type: BLUN\n  targetTemplate:\n    \
         auth_type: 0\n    max_sessions: 0\n",
        api.port()
    )
}

fn mount_writer() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

/// A dsm-sim exporting over tgt and a provisioner with its node service
/// serving it on a socket under `dir`.
struct Stand {
    sim: Simulator,
    dsm: DsmClient,
    csi: CsiClient,
    direct: Userspace<HostRunner>,
    yaml_file: std::path::PathBuf,
}

impl Stand {
    /// `realistic`: DSM's clone locks, background deletes (100 ms) and a
    /// fresh NAS's own objects; otherwise the kind simulator berth was
    /// first measured against (none of them).
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, realistic: bool) -> Stand {
        std::fs::create_dir_all(dir).unwrap();
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut sim_config = SimConfig::new(api, dir.join("nas"), "admin", Password::new("bench-pw"));
        sim_config.portal = portal;
        sim_config.export_iscsi = true;
        if realistic {
            sim_config.lun_delete_delay = Duration::from_millis(100);
        } else {
            sim_config.lun_delete_delay = Duration::ZERO;
            sim_config.clone_lock = Duration::ZERO;
            sim_config.clone_lock_per_gib = Duration::ZERO;
            sim_config.fresh_nas = false;
        }
        let sim = rt.block_on(Simulator::start(sim_config)).expect("dsm-sim with tgtd starts");
        let yaml_file = dir.join("synology-iscsi.yaml");
        std::fs::write(&yaml_file, yaml(api, portal)).unwrap();
        let driver = DriverConfig::from_yaml(&yaml(api, portal)).unwrap();
        let dsm = DsmClient::new(driver.dsm_config(|_| None).unwrap()).unwrap();
        let provisioner = Provisioner::new(&driver, dsm.clone());
        let node_dir = dir.join("node");
        let attacher = Box::new(Userspace::new(HostRunner::default(), node_dir.join("userspace")));
        let node = IscsiNode::new("bench", &node_dir, attacher).unwrap();
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        rt.spawn({
            let endpoint = endpoint.clone();
            async move { serve(provisioner, Some(node), &endpoint, std::future::pending()).await.unwrap() }
        });
        while !socket.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let csi = rt.block_on(CsiClient::connect(&endpoint, ClientConfig::default())).unwrap();
        let direct = Userspace::new(HostRunner::default(), dir.join("direct"));
        Stand { sim, dsm, csi, direct, yaml_file }
    }

    /// `n` volume creates + first mounts, each beside the same external
    /// work done directly on a second LUN; prints the split, returns the
    /// median.
    fn first_mounts(&self, rt: &tokio::runtime::Runtime, dir: &Path, n: usize, title: &str) -> Duration {
        let create = |name: &str| CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
            volume_capabilities: vec![mount_writer()],
            ..Default::default()
        };
        let mut s = Breakdown::new(&[
            "DSM calls",
            "iSCSI login (userspace initiator + loop)",
            "mkfs.ext4 (lazy init, as berth runs it)",
            "mount",
        ]);
        for i in 0..n {
            // Through berth: create, stage (login, mkfs, mount), publish.
            let dsm_before = self.dsm.time_in_calls();
            let started = Instant::now();
            let volume = rt.block_on(self.csi.create_volume(create(&format!("b{i}")))).unwrap().volume.unwrap();
            let dsm_time = self.dsm.time_in_calls() - dsm_before;
            let mounted = stage_and_publish(rt, &self.csi, &volume, &mount_writer(), dir, i);
            let total = started.elapsed();

            // The same external work done directly on a second LUN.
            let other = rt.block_on(self.csi.create_volume(create(&format!("d{i}")))).unwrap().volume.unwrap();
            let [login, mkfs, mount] = direct_first_mount(&self.direct, &other, dir, i);
            s.push(total, &[dsm_time, login, mkfs, mount]);

            // Clean up both, untimed.
            unpublish_and_unstage(rt, &self.csi, &volume.volume_id, &mounted);
            for id in [volume.volume_id, other.volume_id] {
                let delete = DeleteVolumeRequest { volume_id: id, ..Default::default() };
                rt.block_on(self.csi.delete_volume(delete)).unwrap();
            }
        }
        s.report(title)
    }
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let kind_dir = dir.path().join("kind");
    let kind = Stand::start(&rt, &kind_dir, false);
    let baseline =
        kind.first_mounts(&rt, &kind_dir, n, "synology (kind dsm-sim: no locks, instant deletes, empty NAS)");
    rt.block_on(kind.sim.shutdown()).unwrap();
    let real_dir = dir.path().join("realistic");
    let stand = Stand::start(&rt, &real_dir, true);
    let realistic = stand.first_mounts(&rt, &real_dir, n, "synology: volume create + first mount of a 1 GiB volume");
    println!(
        "synology: with DSM's locks, background deletes and a fresh NAS's objects {:.1} ms vs {:.1} ms without: \
         {:.2}x (target < 1.5x)",
        realistic.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        realistic.as_secs_f64() / baseline.as_secs_f64()
    );
    let yaml_file = &stand.yaml_file;

    // RSS: a dev agent with the built-in plugin active vs without.
    let plain = support::DevAgent::start();
    std::thread::sleep(Duration::from_secs(3));
    let plain_rss = rss_kib(plain.pid());
    drop(plain);
    let config = format!(
        "plugin \"synology\" {{\n  config {{\n    driver_config_file = \"{}\"\n    initiator = \"userspace\"\n  }}\n}}\n",
        yaml_file.display()
    );
    let with = support::DevAgent::start_with(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let plugin: serde_json::Value =
            with.http.get(format!("{}/v1/plugin/csi/synology", with.base)).send().unwrap().json().unwrap_or_default();
        if plugin["NodesHealthy"].as_u64() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the built-in plugin did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = serde_json::json!({"Volumes": [{
        "ID": "rss", "Name": "rss", "PluginID": "synology", "CapacityMin": GIB,
        "RequestedCapabilities": [{"AccessMode": "single-node-writer", "AttachmentMode": "file-system"}]
    }]});
    let created = with.http.put(format!("{}/v1/volume/csi/rss/create", with.base)).json(&body).send().unwrap();
    assert!(created.status().is_success(), "volume create: {}", created.text().unwrap_or_default());
    std::thread::sleep(Duration::from_secs(3));
    let with_rss = rss_kib(with.pid());
    drop(with);
    let added = with_rss.saturating_sub(plain_rss);
    println!(
        "synology: dev agent RSS {:.1} MiB with the built-in plugin active vs {:.1} MiB without: +{:.1} MiB \
         (target < 10 MiB); {:.2}x",
        with_rss as f64 / 1024.0,
        plain_rss as f64 / 1024.0,
        added as f64 / 1024.0,
        with_rss as f64 / plain_rss.max(1) as f64
    );
    rt.block_on(stand.sim.shutdown()).unwrap();
}
