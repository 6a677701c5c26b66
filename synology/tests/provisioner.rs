//! The provisioner (`berth.synology`) served on a unix socket, driven with
//! `csi::CsiClient` against the in-process simulator: idempotent creates,
//! adoption after a crash between steps, a session expiry in the middle of
//! a create, expansion, snapshots, clones, deletion, and DSM down or
//! refusing the password.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{added_luns, added_targets, client, start, thin_lun, Harness, Plugin, PASSWORD};
use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi::v1::{
    CapacityRange, ControllerExpandVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    DeleteVolumeRequest, GetCapacityRequest, GetPluginInfoRequest, ListSnapshotsRequest, ListVolumesRequest,
    ProbeRequest, ValidateVolumeCapabilitiesRequest, VolumeCapability, VolumeContentSource,
};
use synology::dsm::{DsmClient, Iqn, TargetAuth, TargetCreate};
use synology::provisioner::PLUGIN_NAME;
use synology::sim::FaultsUpdate;
use tonic::Code;

const GIB: i64 = 1 << 30;
const BASE_IQN: &str = "iqn.2000-01.com.synology:csi.";

fn yaml(port: u16, password: &str) -> String {
    format!(
        r#"driver: synology-iscsi
httpConnection:
  protocol: http
  host: 127.0.0.1
  port: {port}
  username: admin
  password: "{password}"
  session: berth-tests
synology:
  volume: volume1
iscsi:
  targetPortal: "127.0.0.1:3260"
  targetPortals: ["127.0.0.1:3260", "127.0.0.2:3260"]
  interface: ""
  baseiqn: "{BASE_IQN}"
  namePrefix: "b-"
  nameSuffix: ""
  lunTemplate:
    type: BLUN
    dev_attribs:
    - dev_attrib: can_snapshot
      enable: 1
  lunSnapshotTemplate:
    is_locked: true
    is_app_consistent: false
  targetTemplate:
    auth_type: 0
    max_sessions: 0
"#
    )
}

async fn plugin(port: u16, password: &str) -> Plugin {
    Plugin::start(&yaml(port, password), |_| {}).await
}

fn mount_writer() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

fn create(name: &str, required: i64, limit: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange { required_bytes: required, limit_bytes: limit }),
        volume_capabilities: vec![mount_writer()],
        ..Default::default()
    }
}

/// (LUNs, targets) on the NAS besides those it came with.
async fn counts(dsm: &DsmClient) -> (usize, usize) {
    (added_luns(dsm).await.len(), added_targets(dsm).await.len())
}

#[tokio::test]
async fn volume_lifecycle_create_expand_snapshot_clone_delete() {
    let Harness { sim, dir: _dir } = start().await;
    let dsm = client(&sim);
    let p = plugin(sim.addr().port(), PASSWORD).await;

    assert_eq!(p.csi.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().name, PLUGIN_NAME);
    assert_eq!(p.csi.probe(ProbeRequest {}).await.unwrap().ready, Some(true));

    let volume = p.csi.create_volume(create("vol-1", 3 * GIB, 5 * GIB)).await.unwrap().volume.unwrap();
    // democratic-csi's volume ids: the name, without namePrefix; the LUN and target carry it.
    assert_eq!((volume.volume_id.as_str(), volume.capacity_bytes), ("vol-1", 3 * GIB));
    let context = &volume.volume_context;
    assert_eq!(context["iqn"], format!("{BASE_IQN}b-vol-1"));
    assert_eq!(context["lun"], "1");
    assert_eq!(context["portal"], "127.0.0.1:3260");
    assert_eq!(context["portals"], "127.0.0.1:3260,127.0.0.2:3260");
    assert_eq!((context["node_attach_driver"].as_str(), context["auth_type"].as_str()), ("iscsi", "none"));

    let lun = dsm.get_lun("b-vol-1").await.unwrap().expect("LUN exists on DSM");
    assert_eq!((lun.size, lun.type_str.as_str(), lun.location.as_str()), (3 << 30, "BLUN", "/volume1"));
    let targets = added_targets(&dsm).await;
    assert_eq!(targets.len(), 1);
    assert_eq!((targets[0].iqn.as_str(), targets[0].max_sessions), (context["iqn"].as_str(), 0));
    assert_eq!(targets[0].mapped_luns[0].lun_uuid, lun.uuid);

    let again = p.csi.create_volume(create("vol-1", 3 * GIB, 5 * GIB)).await.unwrap().volume.unwrap();
    assert_eq!(again, volume, "a repeated create answers the same volume");
    assert_eq!(counts(&dsm).await, (1, 1));
    let err = p.csi.create_volume(create("vol-1", 6 * GIB, 8 * GIB)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    assert!(err.to_string().contains("b-vol-1"), "{err}");

    let block_multi = VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: access_mode::Mode::MultiNodeMultiWriter as i32 }),
    };
    let validate = |caps| ValidateVolumeCapabilitiesRequest {
        volume_id: "vol-1".into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    assert!(p.csi.validate_volume_capabilities(validate(vec![mount_writer()])).await.unwrap().confirmed.is_some());
    let refused = p.csi.validate_volume_capabilities(validate(vec![block_multi])).await.unwrap();
    assert!(refused.confirmed.is_none() && refused.message.contains("MULTI_NODE_MULTI_WRITER"), "{refused:?}");

    let expanded = p
        .csi
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "vol-1".into(),
            capacity_range: Some(CapacityRange { required_bytes: 4 * GIB, limit_bytes: 0 }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((expanded.capacity_bytes, expanded.node_expansion_required), (4 * GIB, true));
    assert_eq!(dsm.get_lun("b-vol-1").await.unwrap().unwrap().size, 4 << 30);

    let snap_request =
        CreateSnapshotRequest { source_volume_id: "vol-1".into(), name: "snap-1".into(), ..Default::default() };
    let snapshot = p.csi.create_snapshot(snap_request.clone()).await.unwrap().snapshot.unwrap();
    assert_eq!((snapshot.source_volume_id.as_str(), snapshot.size_bytes), ("vol-1", 4 * GIB));
    assert!(snapshot.ready_to_use && snapshot.snapshot_id.starts_with(&format!("/lun/{}/", lun.uuid)));
    assert_eq!(p.csi.create_snapshot(snap_request).await.unwrap().snapshot.unwrap(), snapshot, "idempotent");
    let listed = p.csi.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().entries;
    assert_eq!(listed.len(), 1);
    let by_id = ListSnapshotsRequest { snapshot_id: snapshot.snapshot_id.clone(), ..Default::default() };
    assert_eq!(p.csi.list_snapshots(by_id).await.unwrap().entries[0].snapshot.as_ref(), Some(&snapshot));

    let from_snapshot = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: snapshot.snapshot_id.clone() })),
        }),
        ..create("vol-2", 4 * GIB, 0)
    };
    let clone = p.csi.create_volume(from_snapshot.clone()).await.unwrap().volume.unwrap();
    assert_eq!((clone.volume_id.as_str(), clone.capacity_bytes), ("vol-2", 4 * GIB));
    assert_eq!(clone.volume_context["lun"], "1");
    assert!(clone.content_source.is_some());
    assert_eq!(p.csi.create_volume(from_snapshot.clone()).await.unwrap().volume.unwrap(), clone);
    let bigger = CreateVolumeRequest { name: "vol-4".into(), ..from_snapshot };
    let bigger = CreateVolumeRequest {
        capacity_range: Some(CapacityRange { required_bytes: 5 * GIB, limit_bytes: 0 }),
        ..bigger
    };
    assert_eq!(p.csi.create_volume(bigger).await.unwrap().volume.unwrap().capacity_bytes, 5 * GIB, "clone grown");
    assert_eq!(dsm.get_lun("b-vol-4").await.unwrap().unwrap().size, 5 << 30);
    assert_eq!(counts(&dsm).await, (3, 3));
    let missing = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: format!("/lun/{}/nope", lun.uuid) })),
        }),
        ..create("vol-3", GIB, 0)
    };
    assert_eq!(p.csi.create_volume(missing).await.unwrap_err().code(), Some(Code::NotFound));

    // A volume cloned from a volume (DSM's LUN clone), grown on the way; idempotent.
    let from_volume = |source: &str| CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(SourceType::Volume(VolumeSource { volume_id: source.into() })),
        }),
        ..create("vol-5", 6 * GIB, 0)
    };
    let copy = p.csi.create_volume(from_volume("vol-1")).await.unwrap().volume.unwrap();
    assert_eq!((copy.volume_id.as_str(), copy.capacity_bytes), ("vol-5", 6 * GIB));
    assert_eq!(p.csi.create_volume(from_volume("vol-1")).await.unwrap().volume.unwrap(), copy);
    let gone = CreateVolumeRequest { name: "vol-6".into(), ..from_volume("nope") };
    assert_eq!(p.csi.create_volume(gone).await.unwrap_err().code(), Some(Code::NotFound));
    let too_small = CreateVolumeRequest {
        capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 2 * GIB }),
        name: "vol-7".into(),
        ..from_volume("vol-1")
    };
    assert_eq!(p.csi.create_volume(too_small).await.unwrap_err().code(), Some(Code::OutOfRange));
    p.csi.delete_volume(DeleteVolumeRequest { volume_id: "vol-5".into(), ..Default::default() }).await.unwrap();

    let volumes = p.csi.list_volumes(ListVolumesRequest::default()).await.unwrap().entries;
    let ids: Vec<_> = volumes.iter().map(|e| e.volume.as_ref().unwrap().volume_id.as_str()).collect();
    assert_eq!(ids, ["vol-1", "vol-2", "vol-4"]);
    let capacity = p.csi.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert!(capacity.available_capacity > 0);

    let delete_snapshot = DeleteSnapshotRequest { snapshot_id: snapshot.snapshot_id.clone(), ..Default::default() };
    p.csi.delete_snapshot(delete_snapshot.clone()).await.unwrap();
    p.csi.delete_snapshot(delete_snapshot).await.unwrap();
    assert!(p.csi.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().entries.is_empty());

    // "b-vol-4" is the id berth gave before it left the prefix out: still found.
    for id in ["vol-1", "vol-2", "b-vol-4", "vol-1", "unknown", "b-unknown"] {
        p.csi.delete_volume(DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }).await.unwrap();
    }
    assert_eq!(counts(&dsm).await, (0, 0), "LUNs and targets gone");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_expiry_in_the_middle_of_a_create_relogs_once_and_creates_once() {
    let Harness { sim, dir: _dir } = start().await;
    let p = plugin(sim.addr().port(), PASSWORD).await;
    p.csi.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert_eq!(sim.stats().logins, 1);
    // Target list, LUN get, LUN create; then the session times out between the
    // LUN and the target steps, and the next call answers 106.
    sim.inject(&FaultsUpdate { expire_sessions_after_calls: Some(3), ..FaultsUpdate::default() });
    let volume = p.csi.create_volume(create("expiring", GIB, 0)).await.unwrap().volume.unwrap();
    assert_eq!(volume.volume_context["lun"], "1");
    assert_eq!(sim.stats().logins, 2, "exactly one re-login");
    let dsm = client(&sim);
    assert_eq!(counts(&dsm).await, (1, 1));
    assert_eq!(added_targets(&dsm).await[0].mapped_luns.len(), 1);
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crash_between_steps_is_finished_by_the_retry() {
    let Harness { sim, dir: _dir } = start().await;
    let dsm = client(&sim);
    // Crash after the LUN create: only the LUN exists.
    let uuid = dsm.create_lun(&thin_lun("b-crash-1", 1 << 30)).await.unwrap();
    // Crash after the target create: LUN and target exist, unmapped.
    let uuid2 = dsm.create_lun(&thin_lun("b-crash-2", 1 << 30)).await.unwrap();
    let iqn = Iqn::new(format!("{BASE_IQN}b-crash-2")).unwrap();
    dsm.create_target(&TargetCreate { name: "b-crash-2".into(), iqn, max_sessions: 0, auth: TargetAuth::None })
        .await
        .unwrap();

    let p = plugin(sim.addr().port(), PASSWORD).await;
    for name in ["crash-1", "crash-2"] {
        let volume = p.csi.create_volume(create(name, GIB, 0)).await.unwrap().volume.unwrap();
        assert_eq!(volume.volume_context["lun"], "1", "{name}");
    }
    assert_eq!(counts(&dsm).await, (2, 2), "exactly one LUN and one target per volume");
    for target in added_targets(&dsm).await {
        let expected = if target.name == "b-crash-1" { &uuid } else { &uuid2 };
        assert_eq!(&target.mapped_luns[0].lun_uuid, expected, "the existing LUN was adopted");
    }
    // A target with the volume's name but another IQN is in the way: refused before any LUN is made.
    let iqn = Iqn::new("iqn.2000-01.com.example:other").unwrap();
    dsm.create_target(&TargetCreate { name: "b-clash".into(), iqn, max_sessions: 0, auth: TargetAuth::None })
        .await
        .unwrap();
    let err = p.csi.create_volume(create("clash", GIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    assert!(err.to_string().contains("is in the way"), "{err}");
    assert_eq!(counts(&dsm).await, (2, 3), "no LUN made for the refused volume");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn dsm_down_is_unavailable_fast_with_a_clear_message() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = plugin(port, PASSWORD).await;
    let started = Instant::now();
    let err = p.csi.create_volume(create("never", GIB, 0)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("cannot connect to DSM at http://127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
    p.stop().await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_and_creates_nothing() {
    let Harness { sim, dir: _dir } = start().await;
    let p = plugin(sim.addr().port(), "not-the-password").await;
    let err = p.csi.create_volume(create("refused", GIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    let message = err.to_string();
    assert!(message.contains("DSM error 400 (no such account or incorrect password)"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert_eq!(sim.stats().failed_logins, 1);
    assert_eq!(counts(&client(&sim)).await, (0, 0), "nothing created");
    p.stop().await;
    sim.shutdown().await.unwrap();
}
