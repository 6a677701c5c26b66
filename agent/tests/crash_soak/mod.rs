//! The crash soak: N volume lifecycles through two agents' built-in
//! Synology plugins (create, stage, publish, a checksummed file written,
//! unpublish, unstage, snapshot, restore, expand, the restored volume
//! staged on the other node and its file checked, deletes), while the
//! agents are killed with SIGKILL at random moments, in the middle of
//! calls, and restarted, and DSM faults are injected at random (session
//! expiry, HTTP 500, latency, a stalled method, a login refused as Auto
//! Block refuses it). Every step is retried the way a CO retries. Also a
//! single-node-writer volume held by a job that moves between the two
//! nodes while they are killed, watched so that it is never mounted on
//! both at once.
//!
//! At the end nothing may be orphaned: no LUN, target or snapshot on the
//! NAS that no volume owns, no session, qemu-storage-daemon, loop device,
//! mount or stage record on the node.
//!
//! Used by `tests/soak.rs` (CI size) and `benches/soak.rs` (full size);
//! the seed is printed so a failure can be replayed (`BERTH_SOAK_SEED`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi::v1::volume_content_source::{SnapshotSource, Type as SourceType};
use csi::v1::{
    CapacityRange, ControllerExpandVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    DeleteVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, Volume, VolumeCapability, VolumeContentSource,
};
use csi::{ClientConfig, ClientError, CsiClient, RetryPolicy};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use synology::sim::FaultsUpdate;

use crate::common::synology::{sh, Leftovers, Nas, PASSWORD};
use crate::common::{free_port, job_file, pids_with, wait_for, Agent};

const MIB: i64 = 1 << 20;
/// The SAN methods a stall may hold.
const STALLABLE: [&str; 6] = [
    "SYNO.Core.ISCSI.LUN.create",
    "SYNO.Core.ISCSI.Target.create",
    "SYNO.Core.ISCSI.LUN.map_target",
    "SYNO.Core.ISCSI.LUN.delete",
    "SYNO.Core.ISCSI.LUN.take_snapshot",
    "SYNO.Core.ISCSI.LUN.clone_snapshot",
];

/// What a soak did.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub lifecycles: usize,
    pub steps: usize,
    pub retries: usize,
    pub kills: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub checksums_verified: usize,
    pub second_attaches_refused: usize,
    pub job_rounds: usize,
    pub seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "soak (seed {}): {} lifecycles, {} steps, {} retries, {} agent kills, faults {:?}, {} checksums \
             verified, {} second attaches refused, {} job rounds, {:.0} s; nothing orphaned",
            self.seed,
            self.lifecycles,
            self.steps,
            self.retries,
            self.kills,
            self.faults,
            self.checksums_verified,
            self.second_attaches_refused,
            self.job_rounds,
            self.seconds
        )
    }
}

/// The seed: `BERTH_SOAK_SEED`, else from the clock.
pub fn seed() -> u64 {
    std::env::var("BERTH_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}

fn writer() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

/// One agent with its built-in plugin.
struct Node {
    agent: Agent,
    socket: PathBuf,
}

impl Node {
    fn path(&self, kind: &str, volume: &str) -> String {
        self.agent.dir.join("soak").join(kind).join(volume).display().to_string()
    }

    /// Whether the agent process is alive (not gone, not a zombie).
    fn running(&mut self) -> bool {
        self.agent.pid().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        })
    }

    /// Restarts a killed agent and waits for its plugin's socket.
    fn revive(&mut self) {
        if !self.running() {
            self.agent.kill();
            self.agent.start();
        }
        wait_for("the plugin socket", Duration::from_secs(60), || self.socket.exists().then_some(()));
    }
}

struct Soak {
    rt: tokio::runtime::Runtime,
    rng: StdRng,
    nas: Nas,
    nodes: Vec<Node>,
    report: Report,
}

/// The `client` block (with `client_extra` lines) and the built-in
/// plugin's block for agent `name`.
fn plugin_block(root: &Path, name: &str, yaml: &str, client_extra: &str) -> String {
    let file = root.join(format!("{name}-synology-iscsi.yaml"));
    std::fs::write(&file, yaml).unwrap();
    format!(
        "client {{\n  csi_plugin_probe_interval = \"2s\"\n{client_extra}}}\nplugin \"synology\" {{\n  config {{\n    \
         driver_config_file = \"{}\"\n    initiator = \"userspace\"\n    initiator_name = \"iqn.2026-12.dev.berth:{name}\"\n    \
         login_backoff = \"1s\"\n  }}\n}}\n",
        file.display()
    )
}

impl Soak {
    fn start(root: &Path, seed: u64) -> Soak {
        let nas = Nas::start_with(root, |c| {
            c.lun_delete_delay = Duration::from_millis(200);
            c.clone_lock = Duration::from_millis(200);
        });
        let yaml = nas.yaml(PASSWORD);
        let server = Agent::dev_with(root, "soak-a", &plugin_block(root, "soak-a", &yaml, ""));
        let http = free_port();
        let joined = format!("  enabled = true\n  servers = [\"127.0.0.1:{}\"]\n", server.rpc);
        let client = format!(
            "name = \"soak-b\"\nbind_addr = \"127.0.0.1\"\nports {{\n  http = {http}\n}}\n{}",
            plugin_block(root, "soak-b", &yaml, &joined)
        );
        let client = Agent::with_config(root, "soak-b", http, 0, &client, &[]);
        let nodes = [server, client]
            .into_iter()
            .map(|agent| {
                let socket = agent.dir.join("client/csi/builtin/synology/csi.sock");
                Node { agent, socket }
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Soak { rt, rng: StdRng::seed_from_u64(seed), nas, nodes, report: Report { seed, ..Report::default() } }
    }

    /// Injects a random DSM fault before a try (probability `p`); returns
    /// the fault to clear after the try.
    fn maybe_fault(&mut self, p: f64) -> Option<FaultsUpdate> {
        if !self.rng.random_bool(p) {
            return None;
        }
        let (name, update, clear): (&'static str, FaultsUpdate, Option<FaultsUpdate>) =
            match self.rng.random_range(0..5) {
                0 => ("session expiry", FaultsUpdate { expire_sessions_now: true, ..Default::default() }, None),
                1 => ("HTTP 500", FaultsUpdate { http_500_next: Some(1), ..Default::default() }, None),
                2 => (
                    "latency",
                    FaultsUpdate { latency_ms: Some(150), ..Default::default() },
                    Some(FaultsUpdate { latency_ms: Some(0), ..Default::default() }),
                ),
                3 => {
                    let method = STALLABLE[self.rng.random_range(0..STALLABLE.len())];
                    (
                        "stalled method",
                        FaultsUpdate { stall_method: Some(method.into()), stall_ms: Some(1200), ..Default::default() },
                        Some(FaultsUpdate { stall_method: Some(String::new()), ..Default::default() }),
                    )
                }
                _ => (
                    "Auto Block (407)",
                    FaultsUpdate { expire_sessions_now: true, login_error_next: Some(407), ..Default::default() },
                    None,
                ),
            };
        *self.report.faults.entry(name).or_default() += 1;
        self.nas.inject(update);
        clear
    }

    /// Runs `call` against node `n`'s plugin until it succeeds, the way a
    /// CO retries: each try may meet a fault, or the agent being killed in
    /// the middle of it (then restarted).
    fn step<T, F, Fut>(&mut self, what: &str, n: usize, call: F) -> T
    where
        F: Fn(CsiClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
        T: Send + 'static,
    {
        self.report.steps += 1;
        let mut last = String::new();
        for attempt in 0..40 {
            if attempt > 0 {
                self.report.retries += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            self.nodes[n].revive();
            let endpoint = format!("unix://{}", self.nodes[n].socket.display());
            let config = ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() };
            let _runtime = self.rt.enter();
            let client = match CsiClient::lazy(&endpoint, config) {
                Ok(client) => client,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let clear = self.maybe_fault(0.15);
            let kill_after = self.rng.random_bool(0.12).then(|| Duration::from_millis(self.rng.random_range(0..400)));
            let task = self.rt.spawn(call(client));
            if let Some(delay) = kill_after {
                std::thread::sleep(delay);
                self.nodes[n].agent.kill();
                self.report.kills += 1;
            }
            let outcome = self.rt.block_on(task).expect("the call's task");
            if let Some(clear) = clear {
                self.nas.inject(clear);
            }
            match outcome {
                Ok(value) => return value,
                Err(e) => last = e.to_string(),
            }
        }
        panic!("{what}: no success in 40 tries; last: {last}");
    }

    fn create(&mut self, n: usize, name: &str, bytes: i64, source: Option<SourceType>) -> Volume {
        let request = CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            volume_capabilities: vec![writer()],
            volume_content_source: source.map(|s| VolumeContentSource { r#type: Some(s) }),
            ..Default::default()
        };
        self.step(&format!("create {name}"), n, move |c| {
            let request = request.clone();
            async move { c.create_volume(request).await.map(|r| r.volume.expect("a volume")) }
        })
    }

    fn stage_request(&self, n: usize, volume: &Volume) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: self.nodes[n].path("stage", &volume.volume_id),
            volume_capability: Some(writer()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        }
    }

    fn mount(&mut self, n: usize, volume: &Volume) -> String {
        let stage = self.stage_request(n, volume);
        self.step(&format!("stage {}", volume.volume_id), n, move |c| {
            let stage = stage.clone();
            async move { c.node_stage_volume(stage).await.map(|_| ()) }
        });
        let target = self.nodes[n].path("publish", &volume.volume_id);
        std::fs::create_dir_all(Path::new(&target).parent().unwrap()).unwrap();
        let publish = NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: self.nodes[n].path("stage", &volume.volume_id),
            target_path: target.clone(),
            volume_capability: Some(writer()),
            ..Default::default()
        };
        self.step(&format!("publish {}", volume.volume_id), n, move |c| {
            let publish = publish.clone();
            async move { c.node_publish_volume(publish).await.map(|_| ()) }
        });
        target
    }

    fn unmount(&mut self, n: usize, id: &str) {
        let unpublish =
            NodeUnpublishVolumeRequest { volume_id: id.to_owned(), target_path: self.nodes[n].path("publish", id) };
        self.step(&format!("unpublish {id}"), n, move |c| {
            let unpublish = unpublish.clone();
            async move { c.node_unpublish_volume(unpublish).await.map(|_| ()) }
        });
        let unstage =
            NodeUnstageVolumeRequest { volume_id: id.to_owned(), staging_target_path: self.nodes[n].path("stage", id) };
        self.step(&format!("unstage {id}"), n, move |c| {
            let unstage = unstage.clone();
            async move { c.node_unstage_volume(unstage).await.map(|_| ()) }
        });
    }

    fn delete(&mut self, n: usize, id: &str) {
        let request = DeleteVolumeRequest { volume_id: id.to_owned(), ..Default::default() };
        self.step(&format!("delete {id}"), n, move |c| {
            let request = request.clone();
            async move { c.delete_volume(request).await.map(|_| ()) }
        });
    }

    /// One volume's life across both nodes.
    fn lifecycle(&mut self, i: usize) {
        let x = self.rng.random_range(0..2);
        let y = 1 - x;
        let name = format!("soak-{i}");
        let volume = self.create(x, &name, 64 * MIB, None);
        let target = self.mount(x, &volume);
        let mut data = vec![0u8; 1 << 20];
        self.rng.fill(&mut data[..]);
        let file = Path::new(&target).join("data");
        std::fs::write(&file, &data).unwrap();
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        self.unmount(x, &name);

        let snapshot_name = format!("{name}-snap");
        let request =
            CreateSnapshotRequest { source_volume_id: name.clone(), name: snapshot_name, ..Default::default() };
        let snapshot = self.step("snapshot", x, move |c| {
            let request = request.clone();
            async move { c.create_snapshot(request).await.map(|r| r.snapshot.expect("a snapshot")) }
        });
        let restored_name = format!("{name}-restored");
        let source = SourceType::Snapshot(SnapshotSource { snapshot_id: snapshot.snapshot_id.clone() });
        let restored = self.create(x, &restored_name, 64 * MIB, Some(source));
        let expand = ControllerExpandVolumeRequest {
            volume_id: name.clone(),
            capacity_range: Some(CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
            ..Default::default()
        };
        self.step("expand", x, move |c| {
            let expand = expand.clone();
            async move { c.controller_expand_volume(expand).await.map(|_| ()) }
        });

        // The restored copy on the other node: the checksummed file is intact.
        let target = self.mount(y, &restored);
        assert!(std::fs::read(Path::new(&target).join("data")).unwrap() == data, "{restored_name}: data differs");
        self.report.checksums_verified += 1;
        // A second node may not attach it while the first holds its only
        // session (max_sessions = 1): refused at login, nothing mounted.
        std::thread::sleep(Duration::from_millis(1100));
        self.nodes[x].revive();
        let second = self.stage_request(x, &restored);
        let endpoint = format!("unix://{}", self.nodes[x].socket.display());
        let refused = self.rt.block_on(async move {
            let client =
                CsiClient::connect(&endpoint, ClientConfig { retry: RetryPolicy::never(), ..Default::default() })
                    .await
                    .expect("plugin socket");
            client.node_stage_volume(second).await
        });
        assert!(refused.is_err(), "{restored_name} was attached on both nodes");
        self.report.second_attaches_refused += 1;
        self.unmount(y, &restored_name);

        let delete_snapshot = DeleteSnapshotRequest { snapshot_id: snapshot.snapshot_id, ..Default::default() };
        self.step("delete snapshot", x, move |c| {
            let request = delete_snapshot.clone();
            async move { c.delete_snapshot(request).await.map(|_| ()) }
        });
        self.delete(x, &restored_name);
        self.delete(x, &name);
        self.report.lifecycles += 1;
    }

    /// A single-node-writer volume held by a job moving between the nodes
    /// while they are killed; a watcher checks it is never mounted on both.
    fn job_rounds(&mut self, rounds: usize, root: &Path) {
        // The last step may have killed either node after its call had
        // already succeeded (nothing revives it then): both must run, and
        // the server have a healthy controller, before the create.
        for node in &mut self.nodes {
            node.revive();
        }
        let server = &self.nodes[0].agent;
        let waiting = Instant::now();
        while server.get("/v1/plugin/csi/synology")["ControllersHealthy"].as_u64() < Some(1) {
            if waiting.elapsed() > Duration::from_secs(60) {
                let plugin = server.cli(&["plugin", "status", "synology"]).stdout;
                let logs: String = self.nodes.iter().map(|n| log_tail(&n.agent, 60)).collect();
                panic!("no healthy synology controller on the server within 60 s:\n{plugin}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let spec = "id = \"shared\"\nname = \"shared\"\ntype = \"csi\"\nplugin_id = \"synology\"\ncapacity_min = \
                    \"64MiB\"\ncapability {\n  access_mode = \"single-node-writer\"\n  attachment_mode = \
                    \"file-system\"\n}\n";
        let created = server.cli(&["volume", "create", &job_file(root, "shared.hcl", spec)]);
        assert_eq!(created.code, 0, "{created:?}");
        let job = "job \"holder\" {\n  group \"g\" {\n    volume \"data\" {\n      type = \"csi\"\n      source = \
                   \"shared\"\n      access_mode = \"single-node-writer\"\n      attachment_mode = \"file-system\"\n    \
                   }\n    task \"t\" {\n      driver = \"docker\"\n      config {\n        image = \
                   \"berth-test/tiny:latest\"\n        command = \"sleep\"\n        args = [\"3600\"]\n      }\n      \
                   volume_mount {\n        volume = \"data\"\n        destination = \"/data\"\n      }\n    }\n  }\n}\n";
        let job = job_file(root, "holder.nomad", job);
        let dirs: Vec<String> = self.nodes.iter().map(|n| n.agent.dir.display().to_string()).collect();
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let watching = Arc::clone(&watching);
            std::thread::spawn(move || {
                let mut samples = 0;
                while watching.load(Ordering::Relaxed) {
                    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
                    let holders = dirs
                        .iter()
                        .filter(|dir| {
                            mounts.lines().any(|l| {
                                l.contains(dir.as_str()) && l.contains("/per-alloc/") && l.contains("/shared/")
                            })
                        })
                        .count();
                    assert!(holders <= 1, "the single-node-writer volume is mounted on both nodes");
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                samples
            })
        };
        for _ in 0..rounds {
            let run = self.nodes[0].agent.cli(&["job", "run", "-detach", &job]);
            assert_eq!(run.code, 0, "{run:?}");
            // One node is killed while the holder starts, the other once it runs.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(0..3000)));
            let starting = self.rng.random_range(0..2);
            self.nodes[starting].agent.kill();
            self.report.kills += 1;
            self.nodes[starting].revive();
            let started = Instant::now();
            while self.nodes[0].agent.alloc_ids("holder", "running").is_empty() {
                if started.elapsed() > Duration::from_secs(300) {
                    let server = &self.nodes[0].agent;
                    let allocs = server.cli(&["job", "status", "holder"]).stdout;
                    let volume = server.cli(&["volume", "status", "shared"]).stdout;
                    let last = server
                        .alloc_ids("holder", "pending")
                        .into_iter()
                        .chain(server.alloc_ids("holder", "failed"))
                        .next();
                    let events = last.map(|a| server.cli(&["alloc", "status", &a]).stdout).unwrap_or_default();
                    let logs: String = self.nodes.iter().map(|n| log_tail(&n.agent, 120)).collect();
                    panic!("the holder never ran:\n{allocs}\n{volume}\n{events}\n{logs}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let victim = self.rng.random_range(0..2);
            self.nodes[victim].agent.kill();
            self.report.kills += 1;
            std::thread::sleep(Duration::from_millis(self.rng.random_range(0..1500)));
            self.nodes[victim].revive();
            let stop = self.nodes[0].agent.cli(&["job", "stop", "-purge", "holder"]);
            assert_eq!(stop.code, 0, "{stop:?}");
            wait_for("the shared volume's claims to end", Duration::from_secs(120), || {
                let volume = self.nodes[0].agent.get("/v1/volume/csi/shared");
                (volume["Allocations"].as_array().is_none_or(|a| a.is_empty())).then_some(())
            });
            self.report.job_rounds += 1;
        }
        watching.store(false, Ordering::Relaxed);
        assert!(watcher.join().expect("the watcher") > 0);
        // The last holder's node may still be unpublishing it: retried, as a CO does.
        wait_for("the shared volume to be deleted", Duration::from_secs(120), || {
            (self.nodes[0].agent.cli(&["volume", "delete", "shared"]).code == 0).then_some(())
        });
    }

    /// Nothing orphaned on the NAS or the node.
    fn check_leftovers(&mut self, root: &Path) {
        assert_eq!(self.nas.counts(), (0, 0), "LUNs or targets no volume owns are left on the NAS");
        let dsm = self.nas.client();
        let snapshots: usize = self.rt.block_on(async {
            let mut total = 0;
            for lun in dsm.list_luns().await.unwrap() {
                total += dsm.list_snapshots(&lun.uuid).await.unwrap().len();
            }
            total
        });
        assert_eq!(snapshots, 1, "snapshots other than the NAS's own are left");
        wait_for("the NAS's sessions to end", Duration::from_secs(10), || (self.nas.sessions() == 0).then_some(()));
        let dir = root.display().to_string();
        let daemons = pids_with(&dir)
            .into_iter()
            .filter(|pid| sh(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline")).starts_with("qemu-storage-daemon"))
            .count();
        assert_eq!(daemons, 0, "qemu-storage-daemons left");
        let mounts = sh(&format!("grep -c ' {dir}' /proc/self/mounts || true"));
        assert_eq!(mounts, "0", "mounts left under {dir}");
        let loops = sh(&format!("losetup --list --noheadings --output BACK-FILE | grep -c '{dir}' || true"));
        assert_eq!(loops, "0", "loop devices left");
        for node in &self.nodes {
            let records = node.agent.dir.join("client/csi/builtin/synology/node/staged");
            let left: Vec<_> =
                std::fs::read_dir(&records).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "stage records left on {}: {left:?}", node.agent.name);
        }
    }
}

/// The last `lines` lines of an agent's log about allocations, volumes,
/// warnings and errors, headed by its name.
fn log_tail(agent: &Agent, lines: usize) -> String {
    let log = agent.log();
    let relevant: Vec<&str> = log
        .lines()
        .filter(|l| ["alloc", "volume", "shared", "plugin", "WARN", "ERROR", "starting"].iter().any(|w| l.contains(w)))
        .collect();
    let tail = relevant[relevant.len().saturating_sub(lines)..].join("\n");
    format!("--- {} log (last {lines} relevant lines)\n{tail}\n", agent.name)
}

/// Runs `lifecycles` lifecycles and `rounds` job rounds with `seed`;
/// panics on anything orphaned or lost.
pub fn run(lifecycles: usize, rounds: usize, seed: u64) -> Report {
    let started = Instant::now();
    eprintln!("soak: seed {seed} (BERTH_SOAK_SEED={seed} replays it)");
    let root = tempfile::tempdir().unwrap();
    let mut soak = Soak::start(root.path(), seed);
    // Declared after the NAS, so dropped before it: what is left is
    // unmounted while the NAS still answers (a flush to a vanished NAS hangs).
    let _leftovers = Leftovers(root.path().to_path_buf());
    wait_for("two ready nodes", Duration::from_secs(60), || {
        let nodes = soak.nodes[0].agent.get("/v1/nodes");
        (nodes.as_array().map(|n| n.iter().filter(|n| n["Status"] == "ready").count()) == Some(2)).then_some(())
    });
    for i in 0..lifecycles {
        let began = Instant::now();
        soak.lifecycle(i);
        eprintln!(
            "soak: lifecycle {i} in {:.1} s ({} kills, {} retries so far)",
            began.elapsed().as_secs_f64(),
            soak.report.kills,
            soak.report.retries
        );
    }
    soak.job_rounds(rounds, root.path());
    soak.check_leftovers(root.path());
    soak.report.seconds = started.elapsed().as_secs_f64();
    std::mem::take(&mut soak.report)
}
