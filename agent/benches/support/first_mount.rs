//! Shared pieces of the iSCSI first-mount benchmarks (`synology`,
//! `kernel_iscsi`): stage + publish of a volume through a CSI client and
//! back, the baseline (login, mkfs and mount done directly on a second LUN
//! with an attacher), and the split of a median into named parts plus
//! berth's remainder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use csi::iscsi::{Attacher, Deadline, IscsiTarget};
use csi::v1::{
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Volume,
    VolumeCapability,
};
use csi::CsiClient;
use tokio::runtime::Runtime;

/// Runs a program and fails the bench if it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The median of `values` (not empty).
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Totals and their named parts, one sample an iteration; what the parts
/// do not account for is berth's own share.
pub struct Breakdown {
    total: Vec<Duration>,
    parts: Vec<(&'static str, Vec<Duration>)>,
    berth: Vec<Duration>,
}

impl Breakdown {
    /// A breakdown into the parts named `labels`, in this order.
    pub fn new(labels: &[&'static str]) -> Breakdown {
        Breakdown { total: Vec::new(), parts: labels.iter().map(|l| (*l, Vec::new())).collect(), berth: Vec::new() }
    }

    /// One iteration: its total and its parts, in the order of the labels.
    pub fn push(&mut self, total: Duration, parts: &[Duration]) {
        assert_eq!(parts.len(), self.parts.len(), "one duration per label");
        self.berth.push(total.saturating_sub(parts.iter().sum()));
        self.total.push(total);
        for ((_, samples), part) in self.parts.iter_mut().zip(parts) {
            samples.push(*part);
        }
    }

    /// Prints `title` with the median total, then each part's median and
    /// share; returns the median total.
    pub fn report(self, title: &str) -> Duration {
        let n = self.total.len();
        let total = median(self.total);
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
        println!("{title}, median of {n}: {:.1} ms", ms(total));
        let berth = ("berth (gRPC, records, checks, waits)", self.berth);
        for (what, samples) in self.parts.into_iter().chain([berth]) {
            let d = median(samples);
            println!("  {what:<44} {:>8.1} ms  {:>5.1} %", ms(d), share(d));
        }
        total
    }
}

/// The paths a volume is staged and published at.
pub struct Mounted {
    pub staging: PathBuf,
    pub target: PathBuf,
}

/// NodeStageVolume + NodePublishVolume of `volume` under `dir` (paths named
/// by `index`).
pub fn stage_and_publish(
    rt: &Runtime,
    csi: &CsiClient,
    volume: &Volume,
    capability: &VolumeCapability,
    dir: &Path,
    index: usize,
) -> Mounted {
    let mounted =
        Mounted { staging: dir.join(format!("staging-{index}")), target: dir.join(format!("target-{index}")) };
    rt.block_on(csi.node_stage_volume(NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: mounted.staging.display().to_string(),
        volume_capability: Some(capability.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }))
    .unwrap();
    rt.block_on(csi.node_publish_volume(NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: mounted.staging.display().to_string(),
        target_path: mounted.target.display().to_string(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    }))
    .unwrap();
    mounted
}

/// NodeUnpublishVolume + NodeUnstageVolume of what [`stage_and_publish`] did.
pub fn unpublish_and_unstage(rt: &Runtime, csi: &CsiClient, volume_id: &str, mounted: &Mounted) {
    rt.block_on(csi.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_owned(),
        target_path: mounted.target.display().to_string(),
    }))
    .unwrap();
    rt.block_on(csi.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: volume_id.to_owned(),
        staging_target_path: mounted.staging.display().to_string(),
    }))
    .unwrap();
}

/// The baseline: attaches the LUN `volume` describes with `direct`, runs
/// mkfs.ext4 as berth runs it and mounts it under `dir`, timing each; then
/// undoes it untimed. Returns [login, mkfs, mount].
pub fn direct_first_mount(direct: &dyn Attacher, volume: &Volume, dir: &Path, index: usize) -> [Duration; 3] {
    let spec = IscsiTarget::from_context(&volume.volume_context, &Default::default()).unwrap();
    let name = format!("direct-{index}");
    let t = Instant::now();
    let attached = direct.attach(&name, &spec, Deadline::after(Duration::from_secs(60))).unwrap();
    let login = t.elapsed();
    let device = attached.device.display().to_string();
    let t = Instant::now();
    run("mkfs.ext4", &["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", &device]);
    let mkfs = t.elapsed();
    let mountpoint = dir.join(name).display().to_string();
    std::fs::create_dir_all(&mountpoint).unwrap();
    let t = Instant::now();
    run("mount", &["-t", "ext4", &device, &mountpoint]);
    let mount = t.elapsed();
    run("umount", &[&mountpoint]);
    direct.detach(&attached, Deadline::after(Duration::from_secs(60))).unwrap();
    [login, mkfs, mount]
}
