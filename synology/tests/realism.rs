//! What a real DSM does that a kind simulator would not, each shown by
//! dsm-sim and answered by berth's client and provisioner: clones locked
//! while DSM copies them, LUNs removed in the background, Auto Block after
//! refused logins, a NAS full of other tools' objects, duplicate snapshot
//! names, LUNs that cannot be snapshotted, a missing storage volume, HTTPS
//! with a self-signed certificate and "redirect HTTP to HTTPS", DSM 6.2's
//! answers, 2FA and non-administrator accounts, and the model's limits.

mod common;

use std::time::{Duration, Instant};

use common::{added_luns, client, start, start_with, Harness, Plugin, PASSWORD};
use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi::v1::{
    CapacityRange, CreateSnapshotRequest, CreateVolumeRequest, DeleteVolumeRequest, GetCapacityRequest,
    ListSnapshotsRequest, ListVolumesRequest, ProbeRequest, VolumeCapability, VolumeContentSource,
};
use csi::Code;
use synology::dsm::{DsmClient, SnapshotCreate};
use synology::sim::{AutoBlock, Dialect, FaultsUpdate, Limits, Simulator, FRESH_NAS_LUNS, FRESH_NAS_TARGETS};

const GIB: i64 = 1 << 30;

/// democratic-csi's YAML for the simulator; `extra_lun` goes into
/// `lunTemplate` (indented four spaces), `connection` replaces protocol and port.
fn yaml(connection: &str, volume: &str, extra_lun: &str) -> String {
    format!(
        "driver: synology-iscsi\nhttpConnection:\n  {connection}\n  host: 127.0.0.1\n  username: admin\n  \
         password: \"{PASSWORD}\"\nsynology:\n  volume: {volume}\niscsi:\n  targetPortal: \"127.0.0.1:3260\"\n  \
         baseiqn: \"iqn.2000-01.com.synology:real.\"\n  namePrefix: \"\"\n  nameSuffix: \"\"\n  lunTemplate:\n    \
         type: BLUN\n{extra_lun}  targetTemplate:\n    auth_type: 0\n    max_sessions: 0\n"
    )
}

fn http(sim: &Simulator) -> String {
    format!("protocol: http\n  port: {}", sim.addr().port())
}

async fn plugin(sim: &Simulator) -> Plugin {
    Plugin::start(&yaml(&http(sim), "/volume1", ""), |_| {}).await
}

fn writer() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

fn create(name: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![writer()],
        ..Default::default()
    }
}

fn from(source: SourceType, name: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource { r#type: Some(source) }),
        ..create(name, bytes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_are_grown_and_mapped_only_once_dsm_unlocks_them() {
    let Harness { sim, dir: _dir } = start_with(|c| c.clone_lock = Duration::from_millis(1500)).await;
    let p = plugin(&sim).await;
    p.csi.create_volume(create("source", GIB)).await.unwrap();
    let snapshot = CreateSnapshotRequest { source_volume_id: "source".into(), name: "s1".into(), ..Default::default() };
    let snapshot = p.csi.create_snapshot(snapshot).await.unwrap().snapshot.unwrap();
    for request in [
        from(SourceType::Snapshot(SnapshotSource { snapshot_id: snapshot.snapshot_id.clone() }), "restored", 2 * GIB),
        from(SourceType::Volume(VolumeSource { volume_id: "source".into() }), "copy", 2 * GIB),
    ] {
        let started = Instant::now();
        let volume = p.csi.create_volume(request).await.unwrap().volume.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1400), "did not wait: {:?}", started.elapsed());
        assert_eq!((volume.capacity_bytes, volume.volume_context["lun"].as_str()), (2 * GIB, "1"));
    }
    assert_eq!(sim.stats().busy_refusals, 0, "berth acted on a locked LUN");

    // A lock outlasting the wait: UNAVAILABLE naming it; the retry adopts the clone.
    p.stop().await;
    sim.shutdown().await.unwrap();
    let Harness { sim, dir: _dir } = start_with(|c| c.clone_lock = Duration::from_secs(3)).await;
    let p = Plugin::start(&yaml(&http(&sim), "/volume1", ""), |c| c.lock_wait = Duration::from_secs(1)).await;
    p.csi.create_volume(create("source", GIB)).await.unwrap();
    let request = from(SourceType::Volume(VolumeSource { volume_id: "source".into() }), "slow", 2 * GIB);
    let error = p.csi.create_volume(request.clone()).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("still locked by DSM"), "{error}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.csi.create_volume(request).await.unwrap().volume.unwrap().capacity_bytes, 2 * GIB);
    assert_eq!(added_luns(&client(&sim)).await.len(), 2, "one clone, not two");
    assert_eq!(sim.stats().busy_refusals, 0);
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lun_dsm_is_still_deleting_is_waited_for_and_not_adopted() {
    let Harness { sim, dir: _dir } = start_with(|c| c.lun_delete_delay = Duration::from_millis(1500)).await;
    let dsm = client(&sim);
    let p = plugin(&sim).await;
    p.csi.create_volume(create("going", GIB)).await.unwrap();
    let started = Instant::now();
    p.csi.delete_volume(DeleteVolumeRequest { volume_id: "going".into(), ..Default::default() }).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400), "DeleteVolume did not wait for the removal");
    assert!(dsm.get_lun("going").await.unwrap().is_none());

    // Deleted behind berth's back: listed as deleting; a second delete is accepted;
    // a new volume of that name waits for the removal instead of adopting it.
    p.csi.create_volume(create("again", GIB)).await.unwrap();
    let lun = dsm.get_lun("again").await.unwrap().unwrap();
    dsm.delete_lun(&lun.uuid).await.ok();
    let mut config = common::client_config(&sim.base_url(), PASSWORD);
    config.delete_wait = Duration::ZERO;
    let impatient = DsmClient::new(config).unwrap();
    p.csi.create_volume(create("other", GIB)).await.unwrap();
    let other = dsm.get_lun("other").await.unwrap().unwrap();
    assert!(impatient.delete_lun(&other.uuid).await.is_err(), "the removal takes time");
    assert_eq!(dsm.get_lun("other").await.unwrap().unwrap().status, "deleting");
    assert!(impatient.delete_lun(&other.uuid).await.is_err(), "a second delete is accepted (and waits again)");
    let error = p.csi.create_volume(create("other", GIB)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("still being deleted"), "{error}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    p.csi.create_volume(create("other", GIB)).await.unwrap();
    assert_eq!(sim.stats().busy_refusals, 0);
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_never_trips_auto_block_and_a_block_is_explained() {
    let Harness { sim, dir: _dir } = start().await;
    let wrong = yaml(&http(&sim), "/volume1", "").replace(PASSWORD, "not-the-password");
    let p = Plugin::start(&wrong, |c| c.login_backoff = Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut errors = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let probe = p.csi.probe(ProbeRequest {}).await.unwrap_err();
        let create = p.csi.create_volume(create("never", GIB)).await.unwrap_err();
        errors.extend([probe, create]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(errors.len() > 40, "{} calls", errors.len());
    // Tries at 0, 2 and 6 s: at most two in these five seconds, far below DSM's 10.
    assert!(sim.stats().failed_logins <= 3, "{} logins tried", sim.stats().failed_logins);
    for error in &errors {
        assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
        assert!(error.to_string().contains("DSM error 400"), "{error}");
        assert!(!error.to_string().contains("not-the-password"), "{error}");
    }
    assert!(errors.iter().any(|e| e.to_string().contains("logs in again in")), "the cached reason is named");
    p.stop().await;

    // A client that does not hold back trips Auto Block; then even the right
    // password is refused with 407, which berth explains.
    sim.inject(&FaultsUpdate { clear_auto_block: true, ..Default::default() });
    let careless = yaml(&http(&sim), "/volume1", "").replace(PASSWORD, "not-the-password");
    let naive = Plugin::start(&careless, |c| c.login_backoff = Duration::ZERO).await;
    for _ in 0..AutoBlock::default().attempts {
        naive.csi.probe(ProbeRequest {}).await.unwrap_err();
    }
    naive.stop().await;
    let p = plugin(&sim).await;
    let error = p.csi.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    let message = error.to_string();
    assert!(message.contains("407") && message.contains("Auto Block") && message.contains("Block List"), "{message}");
    assert!(sim.stats().blocked_logins >= 1);
    p.stop().await;
    sim.inject(&FaultsUpdate { clear_auto_block: true, ..Default::default() });
    let p = plugin(&sim).await;
    assert_eq!(p.csi.probe(ProbeRequest {}).await.unwrap().ready, Some(true), "unblocked, it works again");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tools_objects_are_never_listed_or_touched() {
    let Harness { sim, dir: _dir } = start().await;
    let dsm = client(&sim);
    let p = plugin(&sim).await;
    p.csi.create_volume(create("mine", GIB)).await.unwrap();
    let snapshot =
        CreateSnapshotRequest { source_volume_id: "mine".into(), name: "nightly".into(), ..Default::default() };
    // The backup LUN already has a snapshot described "nightly": not ours, no clash.
    p.csi.create_snapshot(snapshot).await.unwrap();
    let volumes = p.csi.list_volumes(ListVolumesRequest::default()).await.unwrap().entries;
    let ids: Vec<_> = volumes.iter().map(|e| e.volume.as_ref().unwrap().volume_id.as_str()).collect();
    assert_eq!(ids, ["mine"]);
    let snapshots = p.csi.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().entries;
    assert_eq!(snapshots.len(), 1);
    for foreign in FRESH_NAS_LUNS {
        let error = p.csi.delete_volume(DeleteVolumeRequest { volume_id: foreign.into(), ..Default::default() }).await;
        let error = error.unwrap_err();
        assert_eq!(error.code(), Some(Code::FailedPrecondition), "{foreign}: {error}");
        assert!(dsm.get_lun(foreign).await.unwrap().is_some(), "{foreign} was deleted");
    }
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_names_and_luns_without_snapshots_are_explained() {
    let Harness { sim, dir: _dir } = start().await;
    let dsm = client(&sim);
    let p = plugin(&sim).await;
    p.csi.create_volume(create("data", GIB)).await.unwrap();
    let lun = dsm.get_lun("data").await.unwrap().unwrap();
    let by_hand = SnapshotCreate {
        name: Some("weekly".into()),
        description: "taken in DSM's UI".into(),
        taken_by: "admin".into(),
        is_locked: false,
        is_app_consistent: false,
    };
    dsm.take_snapshot(&lun.uuid, &by_hand).await.unwrap();
    let weekly = CreateSnapshotRequest { source_volume_id: "data".into(), name: "weekly".into(), ..Default::default() };
    let error = p.csi.create_snapshot(weekly).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::AlreadyExists), "{error}");
    assert!(error.to_string().contains("18990513"), "{error}");
    p.stop().await;

    let no_snapshots = "    dev_attribs:\n    - dev_attrib: can_snapshot\n      enable: 0\n";
    let p = Plugin::start(&yaml(&http(&sim), "/volume1", no_snapshots), |_| {}).await;
    p.csi.create_volume(create("plain", GIB)).await.unwrap();
    let request = CreateSnapshotRequest { source_volume_id: "plain".into(), name: "s".into(), ..Default::default() };
    let error = p.csi.create_snapshot(request).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    assert!(error.to_string().contains("can_snapshot") && error.to_string().contains("lunTemplate"), "{error}");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_name_what_to_set() {
    let Harness { sim, dir: _dir } =
        start_with(|c| c.https = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let https = sim.https_addr().unwrap().port();

    // A storage volume the NAS does not have.
    let p = Plugin::start(&yaml(&http(&sim), "/volume9", ""), |_| {}).await;
    let error = p.csi.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    assert!(error.to_string().contains("/volume9") && error.to_string().contains("synology.volume"), "{error}");
    p.stop().await;

    // DSM's self-signed certificate: refused until allowInsecure.
    let tls = format!("protocol: https\n  port: {https}");
    let p = Plugin::start(&yaml(&tls, "/volume1", ""), |_| {}).await;
    let error = p.csi.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    assert!(error.to_string().contains("allowInsecure: true"), "{error}");
    p.stop().await;
    let p = Plugin::start(&yaml(&format!("{tls}\n  allowInsecure: true"), "/volume1", ""), |_| {}).await;
    assert_eq!(p.csi.probe(ProbeRequest {}).await.unwrap().ready, Some(true));
    p.csi.create_volume(create("over-tls", GIB)).await.unwrap();
    p.stop().await;
    sim.shutdown().await.unwrap();

    // "Redirect HTTP to HTTPS": the login is never sent on as a bodyless GET.
    let Harness { sim, dir: _dir } = start_with(|c| {
        c.https = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        c.redirect_http = true;
    })
    .await;
    let p = plugin(&sim).await;
    let error = p.csi.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    let message = error.to_string();
    assert!(message.contains("redirected") && message.contains("protocol: https"), "{message}");
    assert_eq!(sim.stats().logins + sim.stats().failed_logins, 0, "nothing reached the login");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsm_6_2_answers_and_accounts_that_cannot_provision() {
    let Harness { sim, dir: _dir } = start_with(|c| c.dialect = Dialect::Dsm62).await;
    let p = plugin(&sim).await;
    let capacity = p.csi.get_capacity(GetCapacityRequest::default()).await.unwrap();
    assert!(capacity.available_capacity > 0, "byte counts as numbers are read");
    p.csi.create_volume(create("old-dsm", GIB)).await.unwrap();
    p.stop().await;
    sim.shutdown().await.unwrap();

    let Harness { sim, dir: _dir } = start_with(|c| c.two_factor = true).await;
    let p = plugin(&sim).await;
    let error = p.csi.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    assert!(error.to_string().contains("2-factor"), "{error}");
    p.stop().await;
    sim.shutdown().await.unwrap();

    let Harness { sim, dir: _dir } = start_with(|c| c.non_admin = true).await;
    let p = plugin(&sim).await;
    let error = p.csi.create_volume(create("denied", GIB)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("administrators group"), "{error}");
    p.stop().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_limits_and_a_full_volume_are_resource_exhausted() {
    let limits = Limits { luns: FRESH_NAS_LUNS.len() + 1, targets: 3, snapshots_per_lun: 1 };
    let Harness { sim, dir: _dir } = start_with(|c| c.limits = limits).await;
    let p = plugin(&sim).await;
    p.csi.create_volume(create("one", GIB)).await.unwrap();
    let error = p.csi.create_volume(create("two", GIB)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    assert!(error.to_string().contains("maximum number of LUNs"), "{error}");
    let snapshot =
        |name: &str| CreateSnapshotRequest { source_volume_id: "one".into(), name: name.into(), ..Default::default() };
    p.csi.create_snapshot(snapshot("a")).await.unwrap();
    let error = p.csi.create_snapshot(snapshot("b")).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    p.stop().await;
    sim.shutdown().await.unwrap();

    // Room for LUNs but one target only: the second volume's LUN is made,
    // its target refused (18990542), and the LUN removed again.
    let limits = Limits { luns: 16, targets: FRESH_NAS_TARGETS.len() + 1, snapshots_per_lun: 8 };
    let Harness { sim, dir: _dir } = start_with(|c| c.limits = limits).await;
    let dsm = client(&sim);
    let p = plugin(&sim).await;
    p.csi.create_volume(create("one", GIB)).await.unwrap();
    let luns = dsm.list_luns().await.unwrap().len();
    let error = p.csi.create_volume(create("two", GIB)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    assert!(error.to_string().contains("maximum number of iSCSI targets"), "{error}");
    assert_eq!(dsm.list_luns().await.unwrap().len(), luns, "the refused volume's LUN was left on the NAS");
    p.stop().await;
    sim.shutdown().await.unwrap();

    let Harness { sim, dir: _dir } = start_with(|c| c.volume_size = 3 * (1 << 30)).await;
    let thick = yaml(&http(&sim), "/volume1", "").replace("type: BLUN", "type: BLUN_THICK");
    let p = Plugin::start(&thick, |_| {}).await;
    p.csi.create_volume(create("fits", 2 * GIB)).await.unwrap();
    let error = p.csi.create_volume(create("too-big", 2 * GIB)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    assert!(error.to_string().contains("out of free space"), "{error}");
    p.stop().await;
    sim.shutdown().await.unwrap();
}
