//! One image volume's whole life through berth: CreateVolume, NodeStageVolume,
//! NodePublishVolume, NodeUnpublishVolume, NodeUnstageVolume, DeleteVolume
//! (16 MiB, `backing=image`, ext4, SINGLE_NODE_WRITER mount), sent by
//! `CsiClient` to the built-in `berth.local` plugin served in-process on a
//! unix socket, against the plugin's own work done directly, in the same run:
//!
//! * baseline: the same steps with the same helpers the plugin calls and no
//!   gRPC, state records or idempotency checks in between: a sparse file
//!   (`set_len`), loop attach as the plugin does it (`losetup --associated`,
//!   then `--find --show`), `csi::mount::format_if_blank` (blkid, mkfs.ext4),
//!   `mount_device` (e2fsck -p, mount), `bind`, `unmount` twice, loop detach
//!   as the plugin does it, file removed;
//! * raw tools: the bare minimum of that work, for the breakdown: `losetup
//!   --find --show`, mkfs.ext4 with the plugin's flags, mount(2), a bind
//!   mount, umount(2) twice, `losetup --detach`, with the same directories
//!   made and removed.
//!
//! The three sides run interleaved, one volume each in turn (the order
//! rotating), after three warm-up volumes each, all in one temporary
//! directory on the same filesystem. Berth's share is (berth median -
//! baseline median) / berth median: what the RPCs, the plugin's records and
//! its checks add to the work itself. Mounts and loop devices under the
//! directory are removed on the way out, panics included.
//!
//! Run with `cargo bench -p berth-csi --bench lifecycle` (root, loop devices,
//! mkfs.ext4). `BERTH_BENCH_VOLUMES` sets the number of volumes per side
//! (default 100).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use csi::local::{self, LocalConfig, LocalError, LocalPlugin};
use csi::mount;
use csi::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use csi::v1::*;
use csi::{ClientConfig, CsiClient};
use nix::mount::{MntFlags, MsFlags};
use tokio::sync::oneshot;

const SIZE: u64 = 16 << 20;
const FS_TYPE: &str = "ext4";
const WARM_UP: usize = 3;
const STEPS: [&str; 6] = ["create", "stage", "publish", "unpublish", "unstage", "delete"];

/// How long each step of one volume's life took.
type Steps = [Duration; 6];

/// Unmounts (lazily, deepest first) every mount under a directory and
/// detaches every loop device whose file is under it, when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut mounts = mounts_under(&self.0);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, MntFlags::MNT_DETACH);
        }
        for device in loops_under(&self.0) {
            let _ = Command::new("losetup").arg("--detach").arg(device).status();
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn loops_under(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup").args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(_, file)| Path::new(file.trim()).starts_with(dir))
        .map(|(device, _)| device.to_owned())
        .collect()
}

/// Runs `program` with `flags` then `paths`; its stdout, or a panic with
/// what it said.
fn run(program: &str, flags: &[&str], paths: &[&Path]) -> String {
    let args: Vec<&OsStr> = flags.iter().map(OsStr::new).chain(paths.iter().map(|p| p.as_os_str())).collect();
    let out = Command::new(program).args(&args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loop devices of `file`, as the plugin lists them (`host::loop_devices`).
fn loop_devices(file: &Path) -> Vec<PathBuf> {
    let out = run("losetup", &["--list", "--noheadings", "--output", "NAME", "--associated"], &[file]);
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from).collect()
}

/// `file`'s loop device, attached as the plugin does it (`host::attach`).
fn attach(file: &Path) -> PathBuf {
    if let Some(device) = loop_devices(file).into_iter().next() {
        return device;
    }
    PathBuf::from(run("losetup", &["--find", "--show"], &[file]).trim())
}

/// Detaches `file`'s loop devices as the plugin does it (`host::detach`).
fn detach(file: &Path) {
    for device in loop_devices(file) {
        run("losetup", &["--detach"], &[&device]);
    }
}

/// Times consecutive steps.
struct Laps {
    steps: Steps,
    next: usize,
    last: Instant,
}

impl Laps {
    fn start() -> Self {
        Self { steps: [Duration::ZERO; 6], next: 0, last: Instant::now() }
    }

    fn lap(&mut self) {
        let now = Instant::now();
        self.steps[self.next] = now - self.last;
        self.next += 1;
        self.last = now;
    }

    fn done(self) -> Steps {
        assert_eq!(self.next, STEPS.len());
        self.steps
    }
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

/// One volume's life through `CsiClient` and the plugin.
async fn berth(client: &CsiClient, root: &Path, name: &str) -> Steps {
    let staging = root.join("staging").join(name).display().to_string();
    let target = root.join("targets").join(name).display().to_string();
    let parameters = HashMap::from([("backing".to_owned(), "image".to_owned()), ("fs_type".into(), FS_TYPE.into())]);
    let mut laps = Laps::start();
    let created = client
        .create_volume(CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: SIZE as i64, limit_bytes: 0 }),
            volume_capabilities: vec![capability()],
            parameters,
            ..Default::default()
        })
        .await
        .unwrap();
    let id = created.volume.unwrap().volume_id;
    laps.lap();
    client
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .unwrap();
    laps.lap();
    client
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.clone(),
            target_path: target.clone(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .unwrap();
    laps.lap();
    client
        .node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: id.clone(), target_path: target })
        .await
        .unwrap();
    laps.lap();
    client
        .node_unstage_volume(NodeUnstageVolumeRequest { volume_id: id.clone(), staging_target_path: staging })
        .await
        .unwrap();
    laps.lap();
    client.delete_volume(DeleteVolumeRequest { volume_id: id, ..Default::default() }).await.unwrap();
    laps.lap();
    laps.done()
}

/// The plugin's work for one volume, with the helpers it uses.
fn baseline(dir: &Path, name: &str) -> Steps {
    let file = dir.join(format!("{name}.img"));
    let staging = dir.join("staging").join(name);
    let target = dir.join("targets").join(name);
    let mut laps = Laps::start();
    File::create_new(&file).and_then(|f| f.set_len(SIZE)).unwrap();
    laps.lap();
    let device = attach(&file);
    let fs_type = mount::format_if_blank(&device, FS_TYPE).unwrap();
    mount::mount_device(&device, &staging, &fs_type, &[], false).unwrap();
    laps.lap();
    mount::bind(&staging, &target, false).unwrap();
    laps.lap();
    mount::unmount(&target).unwrap();
    laps.lap();
    mount::unmount(&staging).unwrap();
    detach(&file);
    laps.lap();
    std::fs::remove_file(&file).unwrap();
    laps.lap();
    laps.done()
}

/// The bare tool work for one volume: no signature check, no fsck, no
/// mount-table lookups.
fn raw(dir: &Path, name: &str) -> Steps {
    let file = dir.join(format!("{name}.img"));
    let staging = dir.join("staging").join(name);
    let target = dir.join("targets").join(name);
    let none = None::<&str>;
    let mut laps = Laps::start();
    File::create_new(&file).and_then(|f| f.set_len(SIZE)).unwrap();
    laps.lap();
    let device = PathBuf::from(run("losetup", &["--find", "--show"], &[&file]).trim());
    run("mkfs.ext4", &["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"], &[&device]);
    std::fs::create_dir_all(&staging).unwrap();
    nix::mount::mount(Some(&device), &staging, Some(FS_TYPE), MsFlags::empty(), none).unwrap();
    laps.lap();
    std::fs::create_dir_all(&target).unwrap();
    nix::mount::mount(Some(&staging), &target, none, MsFlags::MS_BIND, none).unwrap();
    laps.lap();
    nix::mount::umount2(&target, MntFlags::empty()).unwrap();
    std::fs::remove_dir(&target).unwrap();
    laps.lap();
    nix::mount::umount2(&staging, MntFlags::empty()).unwrap();
    std::fs::remove_dir(&staging).unwrap();
    run("losetup", &["--detach"], &[&device]);
    laps.lap();
    std::fs::remove_file(&file).unwrap();
    laps.lap();
    laps.done()
}

/// Median and p99 (nearest rank).
fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (p(0.5), p(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn total(steps: &Steps) -> Duration {
    steps.iter().sum()
}

/// Median of one step over all volumes.
fn step_median(all: &[Steps], step: usize) -> Duration {
    stats(all.iter().map(|s| s[step]).collect()).0
}

#[derive(Clone, Copy)]
enum Side {
    Berth,
    Baseline,
    Raw,
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    assert!(n > 0, "BERTH_BENCH_VOLUMES must be at least 1");
    // Fields drop in reverse order: the runtime (plugin, client), then the
    // mounts and loop devices, then the directory.
    let dir = tempfile::Builder::new().prefix("berth-csi-bench-").tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let _cleanup = Cleanup(root.clone());
    let (baseline_dir, raw_dir) = (root.join("baseline"), root.join("raw"));
    for d in [root.join("targets"), baseline_dir.join("targets"), raw_dir.join("targets")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let plugin =
        LocalPlugin::open(LocalConfig { state_dir: root.join("state"), node_id: "bench-node".to_owned() }).unwrap();
    let endpoint = format!("unix://{}", root.join("csi.sock").display());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = {
        let endpoint = endpoint.clone();
        rt.spawn(async move {
            local::serve(plugin, &endpoint, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let client = rt.block_on(async {
        for _ in 0..500 {
            if let Ok(client) = CsiClient::connect(&endpoint, ClientConfig::default()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the plugin did not come up on {endpoint}");
    });

    let mut results: [Vec<Steps>; 3] = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
    let started = Instant::now();
    for i in 0..WARM_UP + n {
        let name = if i < WARM_UP { format!("warm-{i}") } else { format!("vol-{}", i - WARM_UP) };
        let mut order = [Side::Berth, Side::Baseline, Side::Raw];
        order.rotate_left(i % 3);
        for side in order {
            let (slot, steps) = match side {
                Side::Berth => (0, rt.block_on(berth(&client, &root, &name))),
                Side::Baseline => (1, baseline(&baseline_dir, &name)),
                Side::Raw => (2, raw(&raw_dir, &name)),
            };
            if i >= WARM_UP {
                results[slot].push(steps);
            }
        }
    }
    let elapsed = started.elapsed();

    drop(client);
    let _ = stop.send(());
    rt.block_on(served).unwrap().unwrap_or_else(|e: LocalError| panic!("the plugin failed: {e}"));
    let (left_mounts, left_loops) = (mounts_under(&root).len(), loops_under(&root).len());
    assert_eq!((left_mounts, left_loops), (0, 0), "mounts and loop devices left behind under {}", root.display());

    let [berth_steps, baseline_steps, raw_steps] = results;
    let (bm, bp) = stats(berth_steps.iter().map(total).collect());
    let (lm, lp) = stats(baseline_steps.iter().map(total).collect());
    let (rm, rp) = stats(raw_steps.iter().map(total).collect());
    let share = |of: Duration, minus: Duration| (of.as_secs_f64() - minus.as_secs_f64()) / of.as_secs_f64() * 100.0;
    println!(
        "volumes, each side:                      {n} (+{WARM_UP} warm-up), 16 MiB image, {FS_TYPE}, interleaved; \
         {:.1} s in all",
        elapsed.as_secs_f64()
    );
    println!("berth (CsiClient -> berth.local):  median {:7.2} ms   p99 {:7.2} ms", ms(bm), ms(bp));
    println!("baseline (plugin's work, no RPC):  median {:7.2} ms   p99 {:7.2} ms", ms(lm), ms(lp));
    println!("raw tools (no checks):             median {:7.2} ms   p99 {:7.2} ms", ms(rm), ms(rp));
    println!(
        "ratio berth / baseline:            median {:6.2}x   p99 {:6.2}x",
        bm.as_secs_f64() / lm.as_secs_f64(),
        bp.as_secs_f64() / lp.as_secs_f64()
    );
    println!(
        "berth's share (berth - baseline) / berth, medians:  {:5.1} %   plugin's own work: {:5.1} %",
        share(bm, lm),
        100.0 - share(bm, lm)
    );
    println!(
        "  of the plugin's work, the helpers' checks (blkid, e2fsck, mount table, loop lookups): {:5.1} % of berth",
        (lm.as_secs_f64() - rm.as_secs_f64()) / bm.as_secs_f64() * 100.0
    );
    println!("per step, median (ms):     berth  baseline       raw   berth - baseline");
    for (k, step) in STEPS.iter().enumerate() {
        let (b, l, r) = (step_median(&berth_steps, k), step_median(&baseline_steps, k), step_median(&raw_steps, k));
        println!("  {step:<10}            {:8.2}  {:8.2}  {:8.2}  {:+8.2}", ms(b), ms(l), ms(r), ms(b) - ms(l));
    }
}
