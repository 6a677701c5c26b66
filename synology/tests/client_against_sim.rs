//! The DSM client driven against the simulator: the whole LUN / target /
//! snapshot / clone lifecycle, session expiry and re-login, refused logins,
//! an unreachable DSM, simulator restarts and injected faults.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{added_luns, added_targets, client, client_config, sim_config, start, thin_lun, PASSWORD};
use synology::dsm::{DsmClient, DsmError, Iqn, LunCreate, LunType, SnapshotCreate, TargetAuth, TargetCreate};
use synology::sim::{FaultsUpdate, Simulator};

const GIB: u64 = 1 << 30;

fn target(name: &str) -> TargetCreate {
    TargetCreate {
        name: name.to_owned(),
        iqn: Iqn::new(format!("iqn.2000-01.com.synology:berth.{name}")).unwrap(),
        max_sessions: 0,
        auth: TargetAuth::None,
    }
}

fn snapshot(description: &str) -> SnapshotCreate {
    SnapshotCreate {
        name: None,
        description: description.to_owned(),
        taken_by: "berth".to_owned(),
        is_locked: true,
        is_app_consistent: false,
    }
}

#[tokio::test]
async fn lun_target_snapshot_clone_lifecycle() {
    let h = start().await;
    let dsm = client(&h.sim);

    let before = dsm.volume_capacity("/volume1").await.unwrap();
    assert_eq!(before.total, 1 << 40);

    let uuid = dsm.create_lun(&thin_lun("pvc-1", GIB)).await.unwrap();
    let backing = h.dir.path().join("luns").join(format!("{uuid}.img"));
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), GIB, "sparse backing file has the LUN size");
    let target_id = dsm.create_target(&target("pvc-1")).await.unwrap();
    dsm.map_lun_to_target(&uuid, target_id).await.unwrap();

    let lun = dsm.get_lun(&uuid).await.unwrap().expect("LUN by uuid");
    assert_eq!((lun.name.as_str(), lun.size, lun.type_str.as_str()), ("pvc-1", GIB, "BLUN"));
    assert_eq!(dsm.get_lun("pvc-1").await.unwrap().map(|l| l.uuid), Some(uuid.clone()), "LUN by name");
    assert_eq!(added_luns(&dsm).await.len(), 1);
    let got = dsm.get_target(target_id).await.unwrap().expect("target");
    assert_eq!(got.mapped_luns.len(), 1);
    assert_eq!((got.mapped_luns[0].lun_uuid.as_str(), got.mapped_luns[0].mapping_index), (uuid.as_str(), 1));
    assert_eq!(added_targets(&dsm).await, vec![got]);

    dsm.expand_lun(&uuid, 2 * GIB).await.unwrap();
    assert_eq!(dsm.get_lun(&uuid).await.unwrap().unwrap().size, 2 * GIB);
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), 2 * GIB);

    let snap = dsm.take_snapshot(&uuid, &snapshot("snap-a")).await.unwrap();
    let snaps = dsm.list_snapshots(&uuid).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].uuid.as_str(), snaps[0].description.as_str()), (snap.as_str(), "snap-a"));
    assert_eq!((snaps[0].parent_uuid.as_str(), snaps[0].total_size), (uuid.as_str(), 2 * GIB));

    let clone = dsm.clone_snapshot(&uuid, &snap, "pvc-2").await.unwrap();
    let cloned = dsm.get_lun(&clone).await.unwrap().expect("clone");
    assert_eq!((cloned.name.as_str(), cloned.size), ("pvc-2", 2 * GIB));

    dsm.delete_snapshot(&snap).await.unwrap();
    assert!(dsm.list_snapshots(&uuid).await.unwrap().is_empty());
    dsm.delete_snapshot(&snap).await.unwrap();

    let started = Instant::now();
    dsm.delete_lun(&uuid).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "waited for the asynchronous removal");
    assert_eq!(dsm.get_lun(&uuid).await.unwrap(), None);
    assert!(!backing.exists());
    assert!(dsm.get_target(target_id).await.unwrap().unwrap().mapped_luns.is_empty());
    dsm.delete_lun(&clone).await.unwrap();
    dsm.delete_target(target_id).await.unwrap();
    assert_eq!(dsm.get_target(target_id).await.unwrap(), None);
    assert!(added_luns(&dsm).await.is_empty());
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_lun_type_lands_on_its_filesystem() {
    let h = start().await;
    let dsm = client(&h.sim);
    let cases = [
        (LunType::Blun, "/volume1"),
        (LunType::BlunThick, "/volume1"),
        (LunType::Thin, "/volume2"),
        (LunType::Adv, "/volume2"),
        (LunType::File, "/volume2"),
    ];
    for (i, (lun_type, location)) in cases.into_iter().enumerate() {
        let lun = LunCreate { location: location.to_owned(), lun_type, ..thin_lun(&format!("lun-{i}"), GIB) };
        let uuid = dsm.create_lun(&lun).await.unwrap();
        assert_eq!(dsm.get_lun(&uuid).await.unwrap().unwrap().type_str, lun_type.as_str());
    }
    let free = dsm.volume_capacity("/volume2").await.unwrap();
    assert_eq!(free.total - free.free, GIB, "only the thick FILE LUN reserves its size");
    let wrong_fs = LunCreate { location: "/volume2".to_owned(), ..thin_lun("wrong-fs", GIB) };
    assert_eq!(dsm.create_lun(&wrong_fs).await.unwrap_err().code(), Some(18990318));
    let err = dsm.create_lun(&thin_lun("lun-0", GIB)).await.unwrap_err();
    assert_eq!(err.code(), Some(18990538), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // 117 for a volume path the NAS does not have, nothing for a path that is no volume's.
    for path in ["/volume9", "/nonsense"] {
        let err = dsm.volume_capacity(path).await.unwrap_err();
        assert!(matches!(&err, DsmError::NoVolume { path: p } if p == path), "{err}");
        assert!(err.to_string().contains("check synology.volume"), "{err}");
    }
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_expiry_mid_sequence_relogs_once_and_creates_once() {
    let h = start().await;
    let dsm = client(&h.sim);
    let first = dsm.create_lun(&thin_lun("before-expiry", GIB)).await.unwrap();
    assert_eq!(h.sim.stats().logins, 1);

    h.sim.inject(&FaultsUpdate { expire_sessions_now: true, ..FaultsUpdate::default() });
    let second = dsm.create_lun(&thin_lun("after-expiry", GIB)).await.unwrap();

    assert_eq!(h.sim.stats().logins, 2, "exactly one re-login");
    let luns = added_luns(&dsm).await;
    let names: Vec<&str> = luns.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["before-expiry", "after-expiry"], "no duplicate LUN");
    assert_ne!(first, second);

    // Calls racing on the same expired session share one re-login.
    h.sim.inject(&FaultsUpdate { expire_sessions_now: true, ..FaultsUpdate::default() });
    let racing: Vec<_> = (0..4)
        .map(|_| {
            let dsm = dsm.clone();
            tokio::spawn(async move { dsm.list_luns().await })
        })
        .collect();
    for handle in racing {
        assert_eq!(handle.await.unwrap().unwrap().len(), 2 + synology::sim::FRESH_NAS_LUNS.len());
    }
    assert_eq!(h.sim.stats().logins, 3);
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_session_times_out_and_the_client_logs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.session_timeout = Duration::from_millis(200);
    let sim = Simulator::start(config).await.unwrap();
    let dsm = client(&sim);
    dsm.list_luns().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    dsm.list_luns().await.unwrap();
    assert_eq!(sim.stats().logins, 2);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_password_names_code_400_and_its_meaning() {
    let h = start().await;
    let dsm = DsmClient::new(client_config(&h.sim.base_url(), "not-the-password")).unwrap();
    let err = dsm.list_luns().await.unwrap_err();
    assert_eq!(err.code(), Some(400));
    assert_eq!(err.to_string(), "SYNO.API.Auth login: DSM error 400 (no such account or incorrect password)");
    assert!(!format!("{err:?}").contains("not-the-password"));
    assert_eq!(h.sim.stats().failed_logins, 1, "a refused login is not retried");
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn dsm_down_fails_fast_with_a_clear_message() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base_url = format!("http://127.0.0.1:{port}");
    let dsm = DsmClient::new(client_config(&base_url, PASSWORD)).unwrap();
    let started = Instant::now();
    let err = dsm.create_lun(&thin_lun("never", GIB)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(err, DsmError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("SYNO.Core.ISCSI.LUN create: cannot connect to DSM at {base_url}")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn restart_keeps_state_and_stale_sessions_relogin() {
    let h = start().await;
    let addr = h.sim.addr();
    let dsm = client(&h.sim);
    let uuid = dsm.create_lun(&thin_lun("survivor", GIB)).await.unwrap();
    let target_id = dsm.create_target(&target("survivor")).await.unwrap();
    dsm.map_lun_to_target(&uuid, target_id).await.unwrap();
    let snap = dsm.take_snapshot(&uuid, &snapshot("kept")).await.unwrap();
    h.sim.shutdown().await.unwrap();

    let sim = Simulator::start(sim_config(&h.dir, addr)).await.unwrap();
    let lun = dsm.get_lun(&uuid).await.unwrap().expect("LUN survives the restart");
    assert_eq!(lun.name, "survivor");
    assert_eq!(sim.stats().logins, 1, "the old SID answered 119 and the client logged in again");
    let mapped = dsm.get_target(target_id).await.unwrap().unwrap().mapped_luns;
    assert_eq!(mapped.len(), 1);
    assert_eq!(dsm.list_snapshots(&uuid).await.unwrap()[0].uuid, snap);
    let next = dsm.create_target(&target("after-restart")).await.unwrap();
    assert!(next > target_id, "ids keep counting after a restart");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_faults_surface_as_mapped_errors() {
    let h = start().await;
    let dsm = client(&h.sim);
    h.sim.inject(&FaultsUpdate { error_code_next: Some(18990541), ..FaultsUpdate::default() });
    let err = dsm.create_lun(&thin_lun("limited", GIB)).await.unwrap_err();
    assert_eq!(err.code(), Some(18990541));
    assert_eq!(err.to_string(), "SYNO.Core.ISCSI.LUN create: DSM error 18990541 (maximum number of LUNs reached)");
    assert!(added_luns(&dsm).await.is_empty(), "the refused create made nothing");

    h.sim.inject(&FaultsUpdate { http_500_next: Some(1), ..FaultsUpdate::default() });
    let err = dsm.list_luns().await.unwrap_err();
    assert!(matches!(err, DsmError::HttpStatus { status: 500, .. }), "{err:?}");
    dsm.list_luns().await.unwrap();

    h.sim.inject(&FaultsUpdate { latency_ms: Some(300), ..FaultsUpdate::default() });
    let mut slow = client_config(&h.sim.base_url(), PASSWORD);
    slow.call_timeout = Duration::from_millis(100);
    let err = DsmClient::new(slow).unwrap().list_luns().await.unwrap_err();
    assert!(matches!(err, DsmError::Timeout { .. }), "{err:?}");
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn iqn_over_223_bytes_is_refused_before_any_call() {
    let err = Iqn::new(format!("iqn.2000-01.com.synology:{}", "x".repeat(200))).unwrap_err();
    assert!(matches!(err, DsmError::IqnTooLong { len: 225, .. }), "{err:?}");
}

#[tokio::test]
async fn concurrency_is_bounded_by_max_concurrency() {
    let h = start().await;
    let mut config = client_config(&h.sim.base_url(), PASSWORD);
    config.max_concurrency = 1;
    let dsm = DsmClient::new(config).unwrap();
    dsm.list_luns().await.unwrap();
    h.sim.inject(&FaultsUpdate { latency_ms: Some(150), ..FaultsUpdate::default() });
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let dsm = dsm.clone();
            tokio::spawn(async move { dsm.list_luns().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(450), "calls overlapped: {:?}", started.elapsed());
    h.sim.shutdown().await.unwrap();
}
