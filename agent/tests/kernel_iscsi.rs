//! The kernel iSCSI path, for real: `berth csi-plugin synology
//! --initiator open-iscsi` in a node VM running Debian's own kernel,
//! iscsid and multipathd, against dsm-sim and its tgtd on the host.

mod kernel_lab;

use std::collections::HashMap;
use std::time::Duration;

use kernel_lab::{block_cap, mount_cap, staging, target, Lab, LabConfig};

const MIB: i64 = 1 << 20;

#[test]
fn filesystem_data_survives_restage_and_nothing_is_left() {
    let lab = Lab::start(LabConfig::new("fs-node"));
    let volume = lab.create("fs-data", 512 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish");
    let uuid = lab.sh(&format!("blkid -o value -s UUID $(findmnt -n -o SOURCE {})", staging(&id)));
    let sum = lab.sh(&format!(
        "dd if=/dev/urandom of={0}/data bs=1M count=64 status=none && sync && sha256sum {0}/data | cut -d' ' -f1",
        target(&id)
    ));
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    assert_eq!(lab.node_leftovers(), "", "after the first unstage");
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage again");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish again");
    assert_eq!(
        lab.sh(&format!("blkid -o value -s UUID $(findmnt -n -o SOURCE {})", staging(&id))),
        uuid,
        "reformatted"
    );
    assert_eq!(lab.sh(&format!("sha256sum {}/data | cut -d' ' -f1", target(&id))), sum);
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    lab.delete(&id).expect("DeleteVolume");
    assert_eq!(lab.node_leftovers(), "");
    assert_eq!(lab.nas_sessions(), 0);
}

#[test]
fn block_mode_publishes_the_raw_device() {
    let lab = Lab::start(LabConfig::new("block-node"));
    let volume = lab.create("raw-data", 256 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, block_cap(), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, block_cap()).expect("NodePublish");
    let device = target(&id);
    assert_eq!(lab.sh(&format!("test -b {device} && echo block")).trim(), "block");
    let sum = lab.sh(&format!(
        "dd if=/dev/urandom of=/tmp/data bs=1M count=64 status=none && dd if=/tmp/data of={device} bs=1M \
         oflag=direct status=none && sha256sum /tmp/data | cut -d' ' -f1"
    ));
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    assert_eq!(lab.node_leftovers(), "");
    lab.stage(&volume, block_cap(), &HashMap::new()).expect("NodeStage again");
    lab.publish(&volume, block_cap()).expect("NodePublish again");
    assert_eq!(lab.sh(&format!("head -c 64M {device} | sha256sum | cut -d' ' -f1")), sum);
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    lab.delete(&id).expect("DeleteVolume");
    assert_eq!(lab.node_leftovers(), "");
}

#[test]
fn online_expansion_grows_the_mounted_filesystem() {
    let lab = Lab::start(LabConfig::new("grow-node"));
    let volume = lab.create("grow", 256 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish");
    let size =
        |lab: &Lab| lab.sh(&format!("df -B1 --output=size {} | tail -n1", target(&id))).trim().parse::<i64>().unwrap();
    let before = size(&lab);
    lab.sh(&format!("echo before > {}/marker", target(&id)));
    lab.expand(&id, 512 * MIB).expect("ControllerExpandVolume");
    let capacity = lab.node_expand(&id, &target(&id)).expect("NodeExpandVolume");
    assert_eq!(capacity, 512 * MIB);
    let after = size(&lab);
    assert!(after > before + 200 * MIB, "filesystem {before} -> {after}");
    assert_eq!(lab.sh(&format!("cat {}/marker", target(&id))).trim(), "before");
    // Asked again, with the device already at the size: OK, nothing to do.
    assert_eq!(lab.node_expand(&id, &target(&id)).expect("NodeExpandVolume again"), 512 * MIB);
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    lab.delete(&id).expect("DeleteVolume");
    assert_eq!(lab.node_leftovers(), "");
}

#[test]
fn two_portals_make_one_map_that_survives_losing_a_path() {
    let mut config = LabConfig::new("mpath-node");
    config.portals = 2;
    // One session per path: the target must admit two (DSM counts sessions).
    config.target_template = "auth_type: 0\n    max_sessions: 0".to_owned();
    let lab = Lab::start(config);
    let volume = lab.create("mpath", 256 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish");
    let source = lab.sh(&format!("findmnt -n -o SOURCE {}", staging(&id)));
    let kind = lab.sh(&format!("lsblk -dno TYPE {source}"));
    assert_eq!(kind.trim(), "mpath", "mounted {source}, not the multipath map");
    let map = lab.sh(&format!("dmsetup info -c --noheadings -o name {source}")).trim().to_owned();
    let healthy = |topology: &str| topology.lines().filter(|l| l.contains("active ready")).count();
    // multipathd's checker marks a new path ready within its polling interval.
    let started = std::time::Instant::now();
    let mut topology = lab.sh(&format!("multipath -ll {map}"));
    while healthy(&topology) < 2 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        topology = lab.sh(&format!("multipath -ll {map}"));
    }
    assert_eq!(healthy(&topology), 2, "{topology}");

    // A writer runs while the second path goes away.
    lab.sh(&format!(
        "setsid sh -c 'dd if=/dev/urandom of={}/data bs=1M count=96 oflag=direct status=none; echo $? > /tmp/dd.rc' \
         >/dev/null 2>&1 &",
        target(&id)
    ));
    std::thread::sleep(std::time::Duration::from_secs(2));
    lab.paths[1].set(nodevm::ProxyMode::Refuse);
    let rc = lab.sh("for i in $(seq 600); do [ -f /tmp/dd.rc ] && cat /tmp/dd.rc && exit 0; sleep 0.5; done; exit 1");
    assert_eq!(rc.trim(), "0", "the writer failed");
    let topology = lab.sh(&format!("multipath -ll {map}"));
    assert_eq!(healthy(&topology), 1, "{topology}");
    assert_eq!(lab.sh(&format!("stat -c %s {}/data", target(&id))).trim(), (96 * MIB).to_string());

    // Detach with one path still down: the map is flushed, both sessions end.
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    assert_eq!(lab.node_leftovers(), "");
    lab.paths[1].set(nodevm::ProxyMode::Pass);
    lab.delete(&id).expect("DeleteVolume");
}

fn chap_secrets(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (format!("node-db.node.session.auth.{k}"), (*v).to_owned())).collect()
}

#[test]
fn one_way_and_mutual_chap_log_in_and_a_wrong_secret_fails_fast_naming_chap() {
    let one_way = "auth_type: 1\n    user: berth-node\n    password: \"chap-secret-123\"\n    max_sessions: 1";
    let mut config = LabConfig::new("chap-node");
    config.target_template = one_way.to_owned();
    let mut lab = Lab::start(config);
    let initiator = [("username", "berth-node"), ("password", "chap-secret-123")];

    // One-way CHAP.
    let volume = lab.create("chap-one", 128 * MIB).expect("CreateVolume");
    assert_eq!(volume.volume_context.get("auth_type").map(String::as_str), Some("chap"));
    let started = std::time::Instant::now();
    let error = lab
        .stage(&volume, mount_cap("ext4"), &chap_secrets(&[("username", "berth-node"), ("password", "wrong-secret-9")]))
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(error.code(), Some(csi::Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("CHAP authentication failed"), "{error}");
    assert!(!error.to_string().contains("wrong-secret-9"), "the secret is shown: {error}");
    assert_eq!(lab.node_leftovers(), "", "after the refused login");
    lab.stage(&volume, mount_cap("ext4"), &chap_secrets(&initiator)).expect("NodeStage with CHAP");
    lab.unstage(&volume.volume_id).expect("NodeUnstage");
    lab.delete(&volume.volume_id).expect("DeleteVolume");

    // Mutual CHAP: the node checks the target's secret too.
    lab.reconfigure(
        "auth_type: 2\n    user: berth-node\n    password: \"chap-secret-123\"\n    mutual_user: nas-target\n    \
         mutual_password: \"nas-secret-4567\"\n    max_sessions: 1",
    );
    let volume =
        lab.create("chap-mutual", 128 * MIB).unwrap_or_else(|e| panic!("CreateVolume: {e}\n{}", lab.plugin_log()));
    assert_eq!(volume.volume_context.get("auth_type").map(String::as_str), Some("mutual_chap"));
    let mut mutual = initiator.to_vec();
    mutual.extend([("username_in", "nas-target"), ("password_in", "not-the-nas-secret")]);
    let error = lab.stage(&volume, mount_cap("ext4"), &chap_secrets(&mutual)).unwrap_err();
    assert!(error.to_string().contains("CHAP"), "a target with the wrong secret was accepted: {error}");
    assert_eq!(lab.node_leftovers(), "");
    mutual[3] = ("password_in", "nas-secret-4567");
    lab.stage(&volume, mount_cap("ext4"), &chap_secrets(&mutual)).expect("NodeStage with mutual CHAP");
    assert!(lab.sh("iscsiadm -m session -P 2").contains("username_in: nas-target"));
    lab.unstage(&volume.volume_id).expect("NodeUnstage");
    lab.delete(&volume.volume_id).expect("DeleteVolume");
    assert_eq!(lab.node_leftovers(), "");
}

#[test]
fn a_target_the_nas_deleted_first_still_unstages_and_nothing_logs_in_again() {
    let lab = Lab::start(LabConfig::new("gone-node"));
    let volume = lab.create("gone", 128 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish");
    lab.sh(&format!("echo written > {}/file && sync", target(&id)));
    lab.nas_deletes_target(&id);
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).unwrap_or_else(|e| panic!("NodeUnstage after the target is gone: {e}\n{}", lab.plugin_log()));
    assert_eq!(lab.node_leftovers(), "");
    // Nothing keeps trying the portal: no re-login storm.
    let tries = lab.paths[0].connections();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(lab.paths[0].connections(), tries, "the node kept connecting to the portal");
    lab.delete(&id).expect("DeleteVolume");
}

#[test]
fn iscsid_restarts_and_node_reboots_need_no_manual_step() {
    let mut lab = Lab::start(LabConfig::new("restart-node"));
    let volume = lab.create("kept", 128 * MIB).expect("CreateVolume");
    let other = lab.create("dropped", 128 * MIB).expect("CreateVolume");
    let id = volume.volume_id.clone();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish");
    lab.stage(&other, mount_cap("ext4"), &HashMap::new()).expect("NodeStage");
    let write = |lab: &Lab, name: &str| lab.sh(&format!("echo {name} > {}/{name} && sync", target(&id)));
    write(&lab, "before");

    // iscsid killed: the kernel's session carries I/O; a new iscsid takes
    // over and recovers the connection after it drops.
    lab.sh("pkill -9 -x iscsid; sleep 0.5; ! pidof iscsid");
    write(&lab, "without-iscsid");
    lab.sh("iscsid && sleep 1 && pidof iscsid");
    lab.paths[0].set(nodevm::ProxyMode::Refuse);
    std::thread::sleep(Duration::from_secs(2));
    lab.paths[0].set(nodevm::ProxyMode::Pass);
    write(&lab, "after-reconnect");
    assert_eq!(
        lab.sh(&format!("cat {0}/before {0}/without-iscsid {0}/after-reconnect", target(&id))),
        "before\nwithout-iscsid\nafter-reconnect\n"
    );

    // The node loses power with both volumes staged and comes back: the CO
    // stages the first again and unstages the second; no manual step.
    lab.vm_reboot();
    lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).expect("NodeStage after the reboot");
    lab.publish(&volume, mount_cap("ext4")).expect("NodePublish after the reboot");
    assert_eq!(lab.sh(&format!("cat {}/after-reconnect", target(&id))).trim(), "after-reconnect");
    lab.unstage(&other.volume_id).expect("NodeUnstage after the reboot");
    assert_eq!(lab.sh("iscsiadm -m session 2>/dev/null | grep -c dropped || true").trim(), "0");
    lab.unpublish(&id).expect("NodeUnpublish");
    lab.unstage(&id).expect("NodeUnstage");
    assert_eq!(lab.node_leftovers(), "");
    lab.delete(&id).expect("DeleteVolume");
    lab.delete(&other.volume_id).expect("DeleteVolume");
}

#[test]
fn faults_fail_within_the_deadline_naming_portal_target_and_step_and_leave_nothing() {
    let mut lab = Lab::start(LabConfig::new("fault-node"));
    lab.connect(Duration::from_secs(15));
    let volume = lab.create("faulty", 128 * MIB).expect("CreateVolume");
    let iqn = volume.volume_context["iqn"].clone();
    let stage_fails = |lab: &Lab, what: &str, expected: &str| {
        let started = std::time::Instant::now();
        let error = lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).unwrap_err().to_string();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}: {error}");
        assert!(error.contains(&iqn) && error.contains(expected), "{what}: {error}");
        assert_eq!(lab.node_leftovers(), "", "{what}: {error}\n--- plugin log ---\n{}", lab.plugin_log());
    };

    // A portal that accepts connections but never answers.
    lab.paths[0].set(nodevm::ProxyMode::Blackhole);
    stage_fails(&lab, "silent portal", "10.0.2.100:3260");
    // A portal that refuses connections.
    lab.paths[0].set(nodevm::ProxyMode::Refuse);
    stage_fails(&lab, "refusing portal", "did not accept a login");
    lab.paths[0].set(nodevm::ProxyMode::Pass);

    // A target whose ACL does not admit this initiator.
    let tid = lab.tgt_tid(&iqn);
    lab.tgtadm(&format!("--mode target --op unbind --tid {tid} --initiator-address ALL"));
    stage_fails(&lab, "initiator not admitted", "does not admit this initiator");
    lab.tgtadm(&format!("--mode target --op bind --tid {tid} --initiator-address ALL"));

    // The LUN is gone from the target (deleted on the NAS) before the stage.
    let dsm = lab.dsm();
    let lun = lab.rt.block_on(dsm.get_lun(&volume.volume_id)).unwrap().expect("the LUN");
    lab.rt.block_on(dsm.delete_lun(&lun.uuid)).unwrap();
    stage_fails(&lab, "LUN gone", "LUN 1 of");
    lab.delete(&volume.volume_id).expect("DeleteVolume");
}
