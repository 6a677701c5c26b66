//! Synology benchmark, against dsm-sim exporting over real iSCSI (tgt) and
//! the userspace initiator (qemu-storage-daemon + FUSE + loop):
//!
//! 1. `volume create` + first mount (CreateVolume, NodeStage, NodePublish
//!    through the CSI client and the provisioner with its iSCSI node
//!    service) of a 1 GiB volume, N times (20; `BERTH_BENCH_VOLUMES`):
//!    the median, split into DSM calls (timed by the DSM client), iSCSI
//!    login, mkfs and mount (each done directly on a second LUN in the same
//!    iteration) and what is left: berth's own share.
//! 2. The dev agent's RSS with the built-in Synology plugin active (healthy,
//!    one volume created through the API) versus a dev agent without it.
//!
//! `cargo bench -p berth --bench synology`

mod support;

use support::rss_kib;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use csi::iscsi::{Attacher, Deadline, HostRunner, IscsiNode, IscsiTarget, Userspace};
use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi::v1::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, VolumeCapability,
};
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

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Samples {
    total: Vec<Duration>,
    dsm: Vec<Duration>,
    login: Vec<Duration>,
    mkfs: Vec<Duration>,
    mount: Vec<Duration>,
    berth: Vec<Duration>,
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut sim_config = SimConfig::new(api, dir.path().join("nas"), "admin", Password::new("bench-pw"));
    sim_config.portal = portal;
    sim_config.export_iscsi = true;
    sim_config.lun_delete_delay = Duration::from_millis(100);
    let sim = rt.block_on(Simulator::start(sim_config)).expect("dsm-sim with tgtd starts");
    let yaml_file = dir.path().join("synology-iscsi.yaml");
    std::fs::write(&yaml_file, yaml(api, portal)).unwrap();

    let driver = DriverConfig::from_yaml(&yaml(api, portal)).unwrap();
    let dsm = DsmClient::new(driver.dsm_config(|_| None).unwrap()).unwrap();
    let provisioner = Provisioner::new(&driver, dsm.clone());
    let node_dir = dir.path().join("node");
    let attacher = Box::new(Userspace::new(HostRunner::default(), node_dir.join("userspace")));
    let node = IscsiNode::new("bench", &node_dir, attacher).unwrap();
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    rt.spawn({
        let endpoint = endpoint.clone();
        async move { serve(provisioner, Some(node), &endpoint, std::future::pending()).await.unwrap() }
    });
    while !dir.path().join("csi.sock").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let csi = rt.block_on(CsiClient::connect(&endpoint, ClientConfig::default())).unwrap();
    let direct = Userspace::new(HostRunner::default(), dir.path().join("direct"));

    let create = |name: &str| CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
        volume_capabilities: vec![mount_writer()],
        ..Default::default()
    };
    let mut s = Samples::default();
    for i in 0..n {
        // Through berth: create, stage (login, mkfs, mount), publish.
        let staging = dir.path().join(format!("staging-{i}"));
        let target = dir.path().join(format!("target-{i}"));
        let dsm_before = dsm.time_in_calls();
        let started = Instant::now();
        let volume = rt.block_on(csi.create_volume(create(&format!("b{i}")))).unwrap().volume.unwrap();
        let dsm_time = dsm.time_in_calls() - dsm_before;
        rt.block_on(csi.node_stage_volume(NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(mount_writer()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        }))
        .unwrap();
        rt.block_on(csi.node_publish_volume(NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_writer()),
            ..Default::default()
        }))
        .unwrap();
        let total = started.elapsed();

        // The same external work done directly on a second LUN.
        let other = rt.block_on(csi.create_volume(create(&format!("d{i}")))).unwrap().volume.unwrap();
        let spec = IscsiTarget::from_context(&other.volume_context, &Default::default()).unwrap();
        let t = Instant::now();
        let attached = direct.attach(&format!("d{i}"), &spec, Deadline::after(Duration::from_secs(60))).unwrap();
        let login = t.elapsed();
        let device = attached.device.display().to_string();
        let t = Instant::now();
        run("mkfs.ext4", &["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", &device]);
        let mkfs = t.elapsed();
        let mountpoint = dir.path().join(format!("direct-{i}"));
        std::fs::create_dir_all(&mountpoint).unwrap();
        let t = Instant::now();
        run("mount", &["-t", "ext4", &device, &mountpoint.display().to_string()]);
        let mount = t.elapsed();

        s.berth.push(total.saturating_sub(dsm_time + login + mkfs + mount));
        s.total.push(total);
        s.dsm.push(dsm_time);
        s.login.push(login);
        s.mkfs.push(mkfs);
        s.mount.push(mount);

        // Clean up both, untimed.
        run("umount", &[&mountpoint.display().to_string()]);
        direct.detach(&attached, Deadline::after(Duration::from_secs(60))).unwrap();
        rt.block_on(csi.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
        }))
        .unwrap();
        rt.block_on(csi.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        }))
        .unwrap();
        for id in [volume.volume_id, other.volume_id] {
            rt.block_on(csi.delete_volume(DeleteVolumeRequest { volume_id: id, ..Default::default() })).unwrap();
        }
    }
    let total = median(s.total);
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    println!("synology: volume create + first mount of a 1 GiB volume, median of {n}: {:.1} ms", ms(total));
    for (what, d) in [
        ("DSM calls", median(s.dsm)),
        ("iSCSI login (userspace initiator + loop)", median(s.login)),
        ("mkfs.ext4 (lazy init, as berth runs it)", median(s.mkfs)),
        ("mount", median(s.mount)),
        ("berth (gRPC, records, checks, waits)", median(s.berth)),
    ] {
        println!("  {what:<42} {:>8.1} ms  {:>5.1} %", ms(d), share(d));
    }

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
    rt.block_on(sim.shutdown()).unwrap();
}
