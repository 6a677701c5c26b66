//! Kernel-initiator benchmark: stage + publish (NodeStageVolume,
//! NodePublishVolume) of a 1 GiB volume, N times (20;
//! `BERTH_BENCH_VOLUMES`), with the kernel initiator (iscsid, iscsiadm,
//! udev) in the node VM (Debian's kernel under QEMU) versus the userspace
//! initiator (qemu-storage-daemon + FUSE + loop) on this host, both against
//! the same dsm-sim and tgtd, in the same run. Each median is split into
//! login, device wait, mkfs and mount (each done directly on a second LUN
//! in the same iteration: in the VM with iscsiadm by hand, on the host with
//! the userspace attacher) and berth's share; for the VM the round trip of
//! a CSI call between this host and the VM (the test's bridge, not berth)
//! is measured and listed apart. The VM's boot time is reported too.
//!
//! `cargo bench -p berth --bench kernel_iscsi`

#[path = "../tests/kernel_lab/mod.rs"]
mod kernel_lab;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use csi::iscsi::{HostRunner, IscsiNode, Userspace};
use csi::v1::{CapacityRange, CreateVolumeRequest, DeleteVolumeRequest};
use csi::{ClientConfig, CsiClient};
use kernel_lab::{mount_cap, portal, Lab, LabConfig, PASSWORD};
use support::first_mount::{direct_first_mount, stage_and_publish, unpublish_and_unstage, Breakdown};
use synology::config::DriverConfig;
use synology::dsm::DsmClient;
use synology::provisioner::{serve, Provisioner};

const GIB: i64 = 1 << 30;

/// Times iscsiadm login, the by-path link, mkfs and mount in the VM, done
/// by hand on the volume `context` describes; undoes it untimed.
fn by_hand_in_vm(lab: &Lab, context: &HashMap<String, String>, index: usize) -> [Duration; 4] {
    let (iqn, lun) = (&context["iqn"], &context["lun"]);
    let p = portal(0);
    let script = format!(
        "set -e; now() {{ date +%s%N; }}; n=\"iscsiadm -m node -T {iqn} -p {p}\"; \
         $n -o new >/dev/null; $n -o update -n node.startup -v manual; \
         t0=$(now); $n --login >/dev/null; t1=$(now); \
         link=/dev/disk/by-path/ip-{p}-iscsi-{iqn}-lun-{lun}; while [ ! -e $link ]; do sleep 0.005; done; t2=$(now); \
         dev=$(readlink -f $link); mkfs.ext4 -F -q -E lazy_itable_init=1,lazy_journal_init=1 $dev; t3=$(now); \
         mkdir -p /mnt/d{index}; mount -t ext4 $dev /mnt/d{index}; t4=$(now); \
         echo $((t1-t0)) $((t2-t1)) $((t3-t2)) $((t4-t3)); \
         umount /mnt/d{index}; $n --logout >/dev/null; $n -o delete"
    );
    let out = lab.sh(&script);
    let nanos: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    [0, 1, 2, 3].map(|i| Duration::from_nanos(nanos[i]))
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);

    // The kernel initiator in the VM.
    let lab = Lab::start(LabConfig::new("bench-node"));
    println!(
        "kernel_iscsi: node VM boot to a ready agent: {:.1} s ({:?})",
        lab.vm.boot_time().as_secs_f64(),
        lab.vm.accel()
    );
    let mut vm = Breakdown::new(&[
        "iSCSI login",
        "device wait",
        "mkfs.ext4 (lazy init, as berth runs it)",
        "mount",
        "host <-> VM call round trips (test bridge)",
    ]);
    for i in 0..n {
        let volume = lab.create(&format!("k{i}"), GIB).unwrap();
        let started = Instant::now();
        lab.stage(&volume, mount_cap("ext4"), &HashMap::new()).unwrap();
        lab.publish(&volume, mount_cap("ext4")).unwrap();
        let total = started.elapsed();
        let t = Instant::now();
        lab.capabilities();
        lab.capabilities();
        let bridge = t.elapsed();
        let other = lab.create(&format!("kd{i}"), GIB).unwrap();
        let [login, device, mkfs, mount] = by_hand_in_vm(&lab, &other.volume_context, i);
        vm.push(total, &[login, device, mkfs, mount, bridge]);
        lab.unpublish(&volume.volume_id).unwrap();
        lab.unstage(&volume.volume_id).unwrap();
        lab.delete(&volume.volume_id).unwrap();
        lab.delete(&other.volume_id).unwrap();
    }
    let vm_total = vm.report("kernel_iscsi: kernel initiator in the node VM (TCG): stage + publish of a 1 GiB volume");

    // The userspace initiator on this host, same NAS.
    let rt = &lab.rt;
    let dir = tempfile::tempdir().unwrap();
    let (api, nas_portal): (SocketAddr, SocketAddr) = (lab.sim_config.listen, lab.sim_config.portal);
    let yaml = format!(
        "driver: synology-iscsi\nhttpConnection:\n  protocol: http\n  host: 127.0.0.1\n  port: {}\n  username: admin\n  \
         password: \"{PASSWORD}\"\nsynology:\n  volume: /volume1\niscsi:\n  targetPortal: \"{nas_portal}\"\n  \
         baseiqn: \"iqn.2000-01.com.synology:hostbench.\"\n  namePrefix: \"h-\"\n  lunTemplate:\n    type: BLUN\n  \
         targetTemplate:\n    auth_type: 0\n    max_sessions: 0\n",
        api.port()
    );
    let driver = DriverConfig::from_yaml(&yaml).unwrap();
    let provisioner = Provisioner::new(&driver, DsmClient::new(driver.dsm_config(|_| None).unwrap()).unwrap());
    let node_dir = dir.path().join("node");
    let node =
        IscsiNode::new("host", &node_dir, Box::new(Userspace::new(HostRunner::default(), node_dir.join("u")))).unwrap();
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    rt.spawn({
        let endpoint = endpoint.clone();
        async move { serve(provisioner, Some(node), &endpoint, std::future::pending()).await.unwrap() }
    });
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let csi = rt.block_on(CsiClient::connect(&endpoint, ClientConfig::default())).unwrap();
    let direct = Userspace::new(HostRunner::default(), dir.path().join("direct"));
    let create = |name: String| CreateVolumeRequest {
        name,
        capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap("ext4")],
        ..Default::default()
    };
    let mut host = Breakdown::new(&[
        "iSCSI login (userspace initiator + loop)",
        "mkfs.ext4 (lazy init, as berth runs it)",
        "mount",
    ]);
    for i in 0..n {
        let volume = rt.block_on(csi.create_volume(create(format!("u{i}")))).unwrap().volume.unwrap();
        let started = Instant::now();
        let mounted = stage_and_publish(rt, &csi, &volume, &mount_cap("ext4"), dir.path(), i);
        let total = started.elapsed();
        let other = rt.block_on(csi.create_volume(create(format!("ud{i}")))).unwrap().volume.unwrap();
        host.push(total, &direct_first_mount(&direct, &other, dir.path(), i));
        unpublish_and_unstage(rt, &csi, &volume.volume_id, &mounted);
        for id in [volume.volume_id, other.volume_id] {
            rt.block_on(csi.delete_volume(DeleteVolumeRequest { volume_id: id, ..Default::default() })).unwrap();
        }
    }
    let host_total = host.report("kernel_iscsi: userspace initiator on this host: stage + publish of a 1 GiB volume");
    println!(
        "kernel_iscsi: kernel initiator in the VM / userspace initiator on the host: {:.2}x (the VM runs under \
         software emulation)",
        vm_total.as_secs_f64() / host_total.as_secs_f64()
    );
}
