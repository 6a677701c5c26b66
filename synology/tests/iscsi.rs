//! The data path as a node sees it, with real iSCSI: dsm-sim exports its
//! LUNs through its own tgtd, the provisioner creates the volume, and the
//! iSCSI Node service (userspace initiator: libiscsi in
//! qemu-storage-daemon, FUSE, loop) stages and publishes it. Checks that
//! data survives an unstage/stage (never reformatted), that CHAP is
//! required and passed, that `max_sessions` holds, and that nothing is left
//! behind: no daemon, loop device, session or export.
//!
//! Needs root, tgt and qemu-storage-daemon with its iscsi block driver
//! (installed by scripts/test.sh).

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{added_targets, sim_config, ACCOUNT, PASSWORD};
use csi::iscsi::{Deadline, HostRunner, Initiator, IscsiNode, Userspace};
use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi::v1::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, NodeExpandVolumeRequest, NodeGetVolumeStatsRequest,
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
    VolumeCapability,
};
use csi::{ClientConfig, CsiClient, RetryPolicy};
use synology::config::DriverConfig;
use synology::dsm::DsmClient;
use synology::provisioner::{serve, Provisioner};
use synology::sim::{tgt_control_port, Simulator};
use tokio::sync::oneshot;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn yaml(api_port: u16, portal: SocketAddr, chap: bool) -> String {
    let auth = if chap {
        "auth_type: 1\n    user: berth-node\n    password: \"chap-secret-123\"\n    max_sessions: 1"
    } else {
        "auth_type: 0\n    max_sessions: 1"
    };
    format!(
        r#"driver: synology-iscsi
httpConnection:
  protocol: http
  host: 127.0.0.1
  port: {api_port}
  username: {ACCOUNT}
  password: "{PASSWORD}"
synology:
  volume: /volume1
iscsi:
  targetPortal: "{portal}"
  baseiqn: "iqn.2000-01.com.synology:sim."
  namePrefix: "it-"
  lunTemplate:
    type: BLUN
  targetTemplate:
    {auth}
"#
    )
}

fn mount_writer() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

/// This test's userspace initiators: qemu-storage-daemons working in `dir`.
fn daemons(dir: &Path) -> usize {
    processes_with(&format!("qemu-storage-daemon\0--daemonize\0--pidfile\0{}", dir.display()))
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle)))
        .count()
}

fn tgt_sessions(portal: SocketAddr) -> usize {
    let out = std::process::Command::new("tgtadm")
        .args(["-C", &tgt_control_port(portal).to_string(), "--lld", "iscsi", "--mode", "target", "--op", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).matches("I_T nexus: ").count()
}

fn tgt_targets(portal: SocketAddr) -> usize {
    let out = std::process::Command::new("tgtadm")
        .args(["-C", &tgt_control_port(portal).to_string(), "--lld", "iscsi", "--mode", "target", "--op", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("Target ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_attached_over_real_iscsi_keeps_its_data_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.portal = portal;
    config.export_iscsi = true;
    std::fs::create_dir_all(dir.path().join("sim")).unwrap();
    config.state_dir = dir.path().join("sim");
    let sim = Simulator::start(config).await.expect("simulator with tgtd starts");

    let driver = DriverConfig::from_yaml(&yaml(sim.addr().port(), portal, true)).unwrap();
    let provisioner = Provisioner::from_config(&driver).unwrap();
    let node_dir = dir.path().join("node");
    let attacher = Box::new(Userspace::new(HostRunner::default(), node_dir.join("userspace")));
    let node = IscsiNode::new("test-node", &node_dir, attacher).unwrap();
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            serve(provisioner, Some(node), &endpoint, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
        }
    });
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let csi = CsiClient::connect(&endpoint, ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() })
        .await
        .unwrap();

    let volume = csi
        .create_volume(CreateVolumeRequest {
            name: "data".into(),
            capacity_range: Some(CapacityRange { required_bytes: 256 << 20, limit_bytes: 0 }),
            volume_capabilities: vec![mount_writer()],
            ..Default::default()
        })
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(volume.volume_context["lun"], "1");
    assert_eq!(tgt_targets(portal), 2, "the target is exported (beside the NAS's default target)");

    let chap: HashMap<String, String> = [
        ("node-db.node.session.auth.username".to_owned(), "berth-node".to_owned()),
        ("node-db.node.session.auth.password".to_owned(), "chap-secret-123".to_owned()),
    ]
    .into();
    let staging = dir.path().join("staging");
    let target = dir.path().join("publish");
    let stage = |secrets: HashMap<String, String>| NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_writer()),
        volume_context: volume.volume_context.clone(),
        secrets,
        ..Default::default()
    };

    // Without the CHAP secret the login is refused and nothing is left.
    let refused = csi.node_stage_volume(stage(HashMap::new())).await.unwrap_err();
    assert!(refused.to_string().contains("volume data"), "{refused}");
    assert_eq!((daemons(dir.path()), tgt_sessions(portal)), (0, 0));

    for round in 0..2 {
        csi.node_stage_volume(stage(chap.clone())).await.unwrap();
        csi.node_stage_volume(stage(chap.clone())).await.unwrap(); // idempotent
        assert_eq!((tgt_sessions(portal), daemons(dir.path())), (1, 1));
        csi.node_publish_volume(NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_writer()),
            ..Default::default()
        })
        .await
        .unwrap();
        if round == 0 {
            // Node-side conformance: a path the volume is not at is NOT_FOUND
            // (also a relative one); expanding to the size it has is OK.
            for path in ["/nonexistent/path", "some/path"] {
                let stats = csi
                    .node_get_volume_stats(NodeGetVolumeStatsRequest {
                        volume_id: volume.volume_id.clone(),
                        volume_path: path.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(stats.code(), Some(tonic::Code::NotFound), "{path}: {stats}");
                let expand = csi
                    .node_expand_volume(NodeExpandVolumeRequest {
                        volume_id: volume.volume_id.clone(),
                        volume_path: path.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(expand.code(), Some(tonic::Code::NotFound), "{path}: {expand}");
            }
            let same_size = NodeExpandVolumeRequest {
                volume_id: volume.volume_id.clone(),
                volume_path: target.display().to_string(),
                capacity_range: Some(CapacityRange { required_bytes: volume.capacity_bytes, limit_bytes: 0 }),
                ..Default::default()
            };
            let answer = csi.node_expand_volume(same_size.clone()).await.unwrap();
            assert!(answer.capacity_bytes >= volume.capacity_bytes, "{answer:?}");
            csi.node_expand_volume(same_size).await.unwrap();
        }
        let file = target.join("rows.txt");
        if round == 0 {
            std::fs::write(&file, "kept across restage").unwrap();
        } else {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept across restage", "reformatted?");
        }
        csi.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
        csi.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap();
        assert_eq!(daemons(dir.path()), 0, "daemon stopped");
        assert!(!Path::new(&target).exists() && !staging.exists());
        let started = Instant::now();
        while tgt_sessions(portal) > 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "session not logged out");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // max_sessions = 1: once one initiator holds the session, another is
    // refused at login, as DSM refuses it.
    let second = Userspace::new(HostRunner::default(), dir.path().join("second")).named("iqn.2026-12.dev.berth:second");
    let first = Userspace::new(HostRunner::default(), dir.path().join("first"));
    let target_spec = csi::iscsi::IscsiTarget::from_context(&volume.volume_context, &chap).unwrap();
    use csi::iscsi::Attacher;
    let a = tokio::task::spawn_blocking({
        let t = target_spec.clone();
        move || first.attach("first", &t, Deadline::after(Duration::from_secs(60))).map(|a| (first, a))
    })
    .await
    .unwrap()
    .unwrap();
    // The simulator closes the target to others within its half-second watch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = tokio::task::spawn_blocking({
        let t = target_spec.clone();
        move || second.attach("second", &t, Deadline::after(Duration::from_secs(60))).map(|b| (second, b))
    })
    .await
    .unwrap();
    assert!(b.is_err(), "a second initiator logged in to a max_sessions = 1 target");
    assert_eq!(tgt_sessions(portal), 1);
    tokio::task::spawn_blocking(move || {
        let (first, a) = a;
        first.detach(&a, Deadline::after(Duration::from_secs(60))).unwrap();
    })
    .await
    .unwrap();

    csi.delete_volume(DeleteVolumeRequest { volume_id: volume.volume_id.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(tgt_targets(portal), 1, "the export is gone with the volume (the NAS's default target stays)");
    let dsm = DsmClient::new(driver.dsm_config(|_| None).unwrap()).unwrap();
    assert!(added_targets(&dsm).await.is_empty());

    let _ = stop.send(());
    served.await.unwrap();
    sim.shutdown().await.unwrap();
    assert_eq!(processes_with(&format!("portal={portal}")), 0, "the simulator's tgtd stopped");
    let _ = Initiator::Auto;
}
