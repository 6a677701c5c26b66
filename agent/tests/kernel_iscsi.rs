//! The kernel iSCSI path, for real: `berth csi-plugin synology
//! --initiator open-iscsi` in a node VM running Debian's own kernel,
//! iscsid and multipathd, against dsm-sim and its tgtd on the host.

mod kernel_lab;

use std::collections::HashMap;

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
    let topology = lab.sh(&format!("multipath -ll {map}"));
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
