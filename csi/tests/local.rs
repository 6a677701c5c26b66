//! The built-in `berth.local` plugin served on a unix socket in a temporary
//! directory and driven with `CsiClient`, against the real kernel (root):
//! loop devices, ext4, bind mounts. Every mount and loop device under a
//! test's directory is removed when the test ends, panics included.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use csi::local::{self, LocalConfig, LocalError, LocalPlugin};
use csi::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi::v1::*;
use csi::{ClientConfig, ClientError, CsiClient, RetryPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

const MIB: i64 = 1 << 20;

/// Unmounts (lazily, deepest first) every mount under a directory and
/// detaches every loop device whose file is under it, when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut mounts: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(&self.0)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let out = Command::new("losetup").args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"]).output();
        for line in out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
            if let Some((device, file)) = line.trim().split_once(' ') {
                if Path::new(file.trim()).starts_with(&self.0) {
                    let _ = Command::new("losetup").arg("--detach").arg(device).status();
                }
            }
        }
    }
}

fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(m.replace("\\040", " "))).collect()
}

/// How many mounts are stacked at `path`.
fn mounts_at(path: &Path) -> usize {
    mount_points().iter().filter(|m| *m == path).count()
}

/// `losetup -j` for `file`: empty when no loop device has it.
fn loops_of(file: &Path) -> String {
    let out = Command::new("losetup").arg("-j").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A running plugin: how to stop it, and its task.
type Server = (oneshot::Sender<()>, JoinHandle<Result<(), LocalError>>);

/// A plugin serving `<dir>/state` on `<dir>/csi.sock`, and a client for it.
/// Fields drop in order: the client, then the mounts and loop devices, then
/// the directory.
struct Harness {
    client: CsiClient,
    server: Option<Server>,
    _cleanup: Cleanup,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("targets")).unwrap();
        let server = serve(&root).await;
        let client = connect(&root).await;
        Self { client, server: Some(server), _cleanup: Cleanup(root.clone()), root, _dir: dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// Stops the plugin and serves the same state directory again with a
    /// new plugin and a new client.
    async fn restart(&mut self) {
        let (stop, task) = self.server.take().unwrap();
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(!self.path("csi.sock").exists(), "the socket is removed on shutdown");
        // A socket file left behind (as after a crash) is replaced. Nothing
        // listens on it: a listener kept open here would take the new
        // client's connection before the plugin replaced the file.
        drop(std::os::unix::net::UnixListener::bind(self.path("csi.sock")).unwrap());
        self.server = Some(serve(&self.root).await);
        self.client = connect(&self.root).await;
    }
}

async fn serve(root: &Path) -> Server {
    let plugin =
        LocalPlugin::open(LocalConfig { state_dir: root.join("state"), node_id: "node-1".to_owned() }).unwrap();
    let endpoint = format!("unix://{}", root.join("csi.sock").display());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        local::serve(plugin, &endpoint, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

async fn connect(root: &Path) -> CsiClient {
    let endpoint = format!("unix://{}", root.join("csi.sock").display());
    for _ in 0..200 {
        if let Ok(client) =
            CsiClient::connect(&endpoint, ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() }).await
        {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the plugin did not come up on {endpoint}");
}

fn mount_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { mount_flags: vec!["noatime".into()], ..Default::default() })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn image() -> HashMap<String, String> {
    HashMap::from([("backing".to_owned(), "image".to_owned())])
}

fn create_request(name: &str, parameters: HashMap<String, String>, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
        parameters,
        ..Default::default()
    }
}

async fn create(client: &CsiClient, request: CreateVolumeRequest) -> Volume {
    client.create_volume(request).await.unwrap().volume.unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    result.unwrap_err().code().expect("a gRPC status")
}

fn stage(id: &str, staging: &Path, capability: VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(capability),
        ..Default::default()
    }
}

fn unstage(id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest { volume_id: id.to_owned(), staging_target_path: staging.display().to_string() }
}

fn publish(id: &str, staging: &Path, target: &Path, capability: VolumeCapability) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability),
        ..Default::default()
    }
}

fn unpublish(id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest { volume_id: id.to_owned(), target_path: target.display().to_string() }
}

fn stats(id: &str, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: id.to_owned(),
        volume_path: path.display().to_string(),
        ..Default::default()
    }
}

fn snapshot(name: &str, volume: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest { name: name.to_owned(), source_volume_id: volume.to_owned(), ..Default::default() }
}

fn delete(id: &str) -> DeleteVolumeRequest {
    DeleteVolumeRequest { volume_id: id.to_owned(), ..Default::default() }
}

fn from_snapshot(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource { r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: id.to_owned() })) })
}

fn from_volume(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource { r#type: Some(SourceType::Volume(VolumeSource { volume_id: id.to_owned() })) })
}

fn bytes_total(response: &NodeGetVolumeStatsResponse) -> i64 {
    let bytes = response.usage.iter().find(|u| u.unit == volume_usage::Unit::Bytes as i32).unwrap();
    bytes.total
}

#[tokio::test]
async fn directory_volume_lifecycle() {
    let h = Harness::start().await;
    let c = &h.client;

    let volume = create(c, create_request("dir-a", HashMap::new(), 10 * MIB)).await;
    let id = volume.volume_id.clone();
    assert_eq!(volume.capacity_bytes, 10 * MIB);
    assert_eq!(volume.accessible_topology[0].segments.get("berth.local/node").map(String::as_str), Some("node-1"));
    assert_eq!(create(c, create_request("dir-a", HashMap::new(), 10 * MIB)).await, volume, "idempotent");
    assert_eq!(code(c.create_volume(create_request("dir-a", HashMap::new(), 20 * MIB)).await), Code::AlreadyExists);
    assert_eq!(code(c.create_volume(create_request("dir-a", image(), 10 * MIB)).await), Code::AlreadyExists);

    let validate = |capability| ValidateVolumeCapabilitiesRequest {
        volume_id: id.clone(),
        volume_capabilities: vec![capability],
        ..Default::default()
    };
    for mode in [Mode::SingleNodeWriter, Mode::SingleNodeReaderOnly, Mode::MultiNodeMultiWriter] {
        let confirmed = c.validate_volume_capabilities(validate(mount_capability(mode))).await.unwrap();
        assert_eq!(confirmed.confirmed.unwrap().volume_capabilities, [mount_capability(mode)]);
    }
    let refused = c.validate_volume_capabilities(validate(block_capability(Mode::SingleNodeWriter))).await.unwrap();
    assert!(refused.confirmed.is_none() && refused.message.contains("block"), "{refused:?}");
    let listed = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    let listed: Vec<Volume> = listed.entries.into_iter().map(|e| e.volume.unwrap()).collect();
    assert_eq!(listed, std::slice::from_ref(&volume));

    let staging = h.path("staging/dir-a");
    let capability = mount_capability(Mode::SingleNodeWriter);
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    assert_eq!(mounts_at(&staging), 1, "staged twice, mounted once");
    let reader = mount_capability(Mode::SingleNodeReaderOnly);
    assert_eq!(code(c.node_stage_volume(stage(&id, &staging, reader)).await), Code::AlreadyExists);

    let target = h.path("targets/dir-a-1");
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    assert_eq!(mounts_at(&target), 1);
    std::fs::write(target.join("hello"), b"from the workload").unwrap();
    let data = h.state().join("volumes").join(&id).join("data");
    assert_eq!(std::fs::read(data.join("hello")).unwrap(), b"from the workload");
    let other = h.path("targets/dir-a-2");
    let error = c.node_publish_volume(publish(&id, &staging, &other, capability.clone())).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition));
    assert!(error.to_string().contains(&target.display().to_string()), "{error}");
    assert!(!other.exists());

    let usage = c.node_get_volume_stats(stats(&id, &target)).await.unwrap();
    assert!(bytes_total(&usage) > 0 && usage.usage.len() == 2, "{usage:?}");
    assert_eq!(code(c.node_get_volume_stats(stats(&id, &h.path("elsewhere"))).await), Code::NotFound);

    // Snapshots, restores and clones copy the data.
    let snap = c.create_snapshot(snapshot("snap-a", &id)).await.unwrap().snapshot.unwrap();
    assert!(snap.ready_to_use && snap.source_volume_id == id && snap.size_bytes == 10 * MIB, "{snap:?}");
    assert_eq!(c.create_snapshot(snapshot("snap-a", &id)).await.unwrap().snapshot.unwrap(), snap);
    let restored = create(
        c,
        CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap.snapshot_id),
            ..create_request("dir-b", HashMap::new(), 0)
        },
    )
    .await;
    assert_eq!(restored.capacity_bytes, 10 * MIB, "a restore is as large as its snapshot");
    let clone = create(
        c,
        CreateVolumeRequest {
            volume_content_source: from_volume(&id),
            ..create_request("dir-c", HashMap::new(), 12 * MIB)
        },
    )
    .await;
    for copy in [&restored, &clone] {
        let copied = h.state().join("volumes").join(&copy.volume_id).join("data/hello");
        assert_eq!(std::fs::read(copied).unwrap(), b"from the workload");
    }
    assert_eq!(code(c.create_snapshot(snapshot("snap-a", &clone.volume_id)).await), Code::AlreadyExists);
    let by_source = ListSnapshotsRequest { source_volume_id: id.clone(), ..Default::default() };
    assert_eq!(c.list_snapshots(by_source).await.unwrap().entries.len(), 1);
    let by_id = ListSnapshotsRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() };
    assert_eq!(c.list_snapshots(by_id).await.unwrap().entries[0].snapshot.as_ref(), Some(&snap));

    assert_eq!(code(c.delete_volume(delete(&id)).await), Code::FailedPrecondition, "published");
    assert_eq!(code(c.node_unstage_volume(unstage(&id, &staging)).await), Code::FailedPrecondition, "published");
    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    assert!(!target.exists());
    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();
    assert_eq!(mounts_at(&staging), 0);
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();

    let delete_snapshot = DeleteSnapshotRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() };
    c.delete_snapshot(delete_snapshot.clone()).await.unwrap();
    c.delete_snapshot(delete_snapshot).await.unwrap();
    assert!(c.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().entries.is_empty());
    for volume in [&id, &restored.volume_id, &clone.volume_id] {
        c.delete_volume(delete(volume)).await.unwrap();
        assert!(!h.state().join("volumes").join(volume).exists());
    }
}

#[tokio::test]
async fn image_volume_lifecycle_with_expansion_and_restore() {
    let h = Harness::start().await;
    let c = &h.client;
    let volume = create(c, create_request("img-a", image(), 64 * MIB)).await;
    let id = volume.volume_id.clone();
    assert_eq!(volume.capacity_bytes, 64 * MIB);
    assert_eq!(volume.volume_context.get("fs_type").map(String::as_str), Some("ext4"));
    let file = h.state().join("volumes").join(&id).join("image.img");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(meta.blocks() * 512 < 1 << 20, "sparse: {} blocks", meta.blocks());

    let staging = h.path("staging/img-a");
    let target = h.path("targets/img-a");
    let capability = mount_capability(Mode::SingleNodeWriter);
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    assert_eq!(mounts_at(&staging), 1);
    assert!(loops_of(&file).starts_with("/dev/loop"), "{}", loops_of(&file));
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    std::fs::write(target.join("kept"), b"survives unstage and expansion").unwrap();
    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    assert!(!target.exists());
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();
    assert_eq!(loops_of(&file), "", "detached");
    assert_eq!(mounts_at(&staging), 0);

    // Staged again: the filesystem is mounted, not made anew.
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"survives unstage and expansion");

    let before = bytes_total(&c.node_get_volume_stats(stats(&id, &target)).await.unwrap());
    let expand = ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: Some(CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
        ..Default::default()
    };
    let expanded = c.controller_expand_volume(expand).await.unwrap();
    assert_eq!((expanded.capacity_bytes, expanded.node_expansion_required), (128 * MIB, true));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 128 << 20);
    let node_expand = NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: target.display().to_string(),
        staging_target_path: staging.display().to_string(),
        ..Default::default()
    };
    assert_eq!(c.node_expand_volume(node_expand).await.unwrap().capacity_bytes, 128 * MIB);
    let after = csi::mount::usage(&target).unwrap().total_bytes as i64;
    assert!(after > before * 18 / 10, "{before} -> {after}");
    assert_eq!(bytes_total(&c.node_get_volume_stats(stats(&id, &target)).await.unwrap()), after);
    assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"survives unstage and expansion");
    assert_eq!((mounts_at(&staging), mounts_at(&target)), (1, 1));

    // A restore into a larger volume has the data and a filesystem grown to fit.
    let snap = c.create_snapshot(snapshot("img-a-snap", &id)).await.unwrap().snapshot.unwrap();
    assert_eq!(snap.size_bytes, 128 * MIB);
    let too_small = CreateVolumeRequest {
        volume_content_source: from_snapshot(&snap.snapshot_id),
        ..create_request("img-b", image(), 64 * MIB)
    };
    assert_eq!(
        code(
            c.create_volume(CreateVolumeRequest {
                capacity_range: Some(CapacityRange { required_bytes: 64 * MIB, limit_bytes: 64 * MIB }),
                ..too_small
            })
            .await
        ),
        Code::OutOfRange
    );
    let restored = create(
        c,
        CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap.snapshot_id),
            ..create_request("img-b", image(), 160 * MIB)
        },
    )
    .await;
    assert_eq!(restored.capacity_bytes, 160 * MIB);
    let restored_staging = h.path("staging/img-b");
    c.node_stage_volume(stage(&restored.volume_id, &restored_staging, capability.clone())).await.unwrap();
    assert_eq!(std::fs::read(restored_staging.join("kept")).unwrap(), b"survives unstage and expansion");
    let restored_size = csi::mount::usage(&restored_staging).unwrap().total_bytes as i64;
    assert!(restored_size > after * 12 / 10, "{after} -> {restored_size}");

    c.node_unstage_volume(unstage(&restored.volume_id, &restored_staging)).await.unwrap();
    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();
    assert_eq!(loops_of(&file), "");
    c.delete_snapshot(DeleteSnapshotRequest { snapshot_id: snap.snapshot_id, ..Default::default() }).await.unwrap();
    for volume in [&id, &restored.volume_id] {
        c.delete_volume(delete(volume)).await.unwrap();
        assert!(!h.state().join("volumes").join(volume).exists());
    }
}

#[tokio::test]
async fn image_volume_as_a_raw_block_device() {
    let h = Harness::start().await;
    let c = &h.client;
    let block = CreateVolumeRequest {
        volume_capabilities: vec![block_capability(Mode::SingleNodeWriter)],
        ..create_request("raw", image(), 32 * MIB)
    };
    let directory = CreateVolumeRequest { name: "raw-dir".to_owned(), parameters: HashMap::new(), ..block.clone() };
    assert_eq!(code(c.create_volume(directory).await), Code::InvalidArgument);
    let id = create(c, block).await.volume_id;
    let file = h.state().join("volumes").join(&id).join("image.img");

    let staging = h.path("staging/raw");
    let target = h.path("targets/raw");
    let capability = block_capability(Mode::SingleNodeWriter);
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    assert!(!loops_of(&file).is_empty());
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    assert!(std::fs::metadata(&target).unwrap().file_type().is_block_device());
    let mut device = std::fs::OpenOptions::new().read(true).write(true).open(&target).unwrap();
    assert_eq!(device.seek(SeekFrom::End(0)).unwrap(), 32 << 20);
    device.seek(SeekFrom::Start(0)).unwrap();
    device.write_all(b"raw bytes").unwrap();
    device.sync_all().unwrap();
    drop(device);
    let mut written = [0; 9];
    std::fs::File::open(&file).unwrap().read_exact(&mut written).unwrap();
    assert_eq!(&written, b"raw bytes");
    assert_eq!(bytes_total(&c.node_get_volume_stats(stats(&id, &target)).await.unwrap()), 32 * MIB);

    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    assert!(!target.exists());
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();
    assert_eq!(loops_of(&file), "");
    c.delete_volume(delete(&id)).await.unwrap();
}

#[tokio::test]
async fn identity_and_error_codes() {
    let h = Harness::start().await;
    let c = &h.client;

    let info = c.get_plugin_info(GetPluginInfoRequest {}).await.unwrap();
    assert_eq!((info.name.as_str(), info.vendor_version.as_str()), ("berth.local", env!("CARGO_PKG_VERSION")));
    let capabilities = c.capabilities().await.unwrap();
    assert!(capabilities.controller_service && capabilities.volume_accessibility_constraints);
    assert!(capabilities.create_delete_volume && capabilities.list_volumes && capabilities.get_capacity);
    assert!(capabilities.snapshots && capabilities.expand && !capabilities.publish_unpublish);
    assert!(capabilities.stage_unstage && capabilities.node_get_volume_stats && capabilities.node_expand);
    let node = c.node_get_info(NodeGetInfoRequest {}).await.unwrap();
    assert_eq!(node.node_id, "node-1");
    assert_eq!(
        node.accessible_topology.unwrap().segments,
        HashMap::from([("berth.local/node".into(), "node-1".into())])
    );
    assert!(c.get_capacity(GetCapacityRequest::default()).await.unwrap().available_capacity > 0);
    assert!(c.probe_ready().await.unwrap());

    // Missing or invalid fields.
    let unnamed = create_request("", HashMap::new(), MIB);
    assert_eq!(code(c.create_volume(unnamed).await), Code::InvalidArgument);
    let no_capabilities =
        CreateVolumeRequest { volume_capabilities: vec![], ..create_request("x", HashMap::new(), MIB) };
    assert_eq!(code(c.create_volume(no_capabilities).await), Code::InvalidArgument);
    let unknown_key = HashMap::from([("colour".to_owned(), "blue".to_owned())]);
    let error = c.create_volume(create_request("x", unknown_key, MIB)).await.unwrap_err();
    assert!(error.code() == Some(Code::InvalidArgument) && error.to_string().contains("colour"), "{error}");
    let bad_backing = HashMap::from([("backing".to_owned(), "zfs".to_owned())]);
    assert_eq!(code(c.create_volume(create_request("x", bad_backing, MIB)).await), Code::InvalidArgument);
    assert_eq!(code(c.delete_volume(delete("")).await), Code::InvalidArgument);
    let no_id = ValidateVolumeCapabilitiesRequest {
        volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    assert_eq!(code(c.validate_volume_capabilities(no_id).await), Code::InvalidArgument);
    let staging = h.path("staging/x");
    assert_eq!(
        code(c.node_stage_volume(stage("", &staging, mount_capability(Mode::SingleNodeWriter))).await),
        Code::InvalidArgument
    );
    let no_capability = NodeStageVolumeRequest {
        volume_capability: None,
        ..stage("vol-x", &staging, mount_capability(Mode::SingleNodeWriter))
    };
    assert_eq!(code(c.node_stage_volume(no_capability).await), Code::InvalidArgument);
    assert_eq!(code(c.node_unpublish_volume(unpublish("vol-x", Path::new(""))).await), Code::InvalidArgument);
    assert_eq!(code(c.node_get_volume_stats(stats("vol-x", Path::new(""))).await), Code::InvalidArgument);
    let no_range = ControllerExpandVolumeRequest { volume_id: "vol-x".into(), ..Default::default() };
    assert_eq!(code(c.controller_expand_volume(no_range).await), Code::InvalidArgument);
    assert_eq!(code(c.create_snapshot(snapshot("", "vol-x")).await), Code::InvalidArgument);

    // Unknown volumes and snapshots.
    let unknown = "vol-0123456789abcdef0123456789abcdef";
    let validate = ValidateVolumeCapabilitiesRequest {
        volume_id: unknown.into(),
        volume_capabilities: vec![mount_capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    assert_eq!(code(c.validate_volume_capabilities(validate).await), Code::NotFound);
    assert_eq!(
        code(c.node_stage_volume(stage(unknown, &staging, mount_capability(Mode::SingleNodeWriter))).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.node_stage_volume(stage("../../etc", &staging, mount_capability(Mode::SingleNodeWriter))).await),
        Code::NotFound
    );
    assert_eq!(code(c.node_get_volume_stats(stats(unknown, &staging)).await), Code::NotFound);
    let expand = ControllerExpandVolumeRequest {
        volume_id: unknown.into(),
        capacity_range: Some(CapacityRange { required_bytes: MIB, limit_bytes: 0 }),
        ..Default::default()
    };
    assert_eq!(code(c.controller_expand_volume(expand).await), Code::NotFound);
    assert_eq!(code(c.create_snapshot(snapshot("s", unknown)).await), Code::NotFound);
    let restore = CreateVolumeRequest {
        volume_content_source: from_snapshot("snap-none"),
        ..create_request("r", HashMap::new(), MIB)
    };
    assert_eq!(code(c.create_volume(restore).await), Code::NotFound);
    let clone =
        CreateVolumeRequest { volume_content_source: from_volume(unknown), ..create_request("r", HashMap::new(), MIB) };
    assert_eq!(code(c.create_volume(clone).await), Code::NotFound);
    c.delete_volume(delete(unknown)).await.unwrap();
    c.delete_snapshot(DeleteSnapshotRequest { snapshot_id: "snap-none".into(), ..Default::default() }).await.unwrap();
    let listed = c.list_snapshots(ListSnapshotsRequest { snapshot_id: "snap-none".into(), ..Default::default() });
    assert!(listed.await.unwrap().entries.is_empty());
    let publish_without_staging = NodePublishVolumeRequest {
        staging_target_path: String::new(),
        ..publish(unknown, &staging, &h.path("targets/x"), mount_capability(Mode::SingleNodeWriter))
    };
    assert_eq!(code(c.node_publish_volume(publish_without_staging).await), Code::FailedPrecondition);
    let attach =
        ControllerPublishVolumeRequest { volume_id: unknown.into(), node_id: "node-1".into(), ..Default::default() };
    assert_eq!(code(c.controller_publish_volume(attach).await), Code::Unimplemented);
    let elsewhere = CreateVolumeRequest {
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![Topology { segments: HashMap::from([("berth.local/node".into(), "node-2".into())]) }],
            preferred: vec![],
        }),
        ..create_request("elsewhere", HashMap::new(), MIB)
    };
    assert_eq!(code(c.create_volume(elsewhere).await), Code::ResourceExhausted);

    // Pages.
    let mut ids = Vec::new();
    for name in ["p1", "p2", "p3"] {
        ids.push(create(c, create_request(name, HashMap::new(), MIB)).await.volume_id);
    }
    let first = c.list_volumes(ListVolumesRequest { max_entries: 2, starting_token: String::new() }).await.unwrap();
    assert_eq!(first.entries.len(), 2);
    let rest = c.list_volumes(ListVolumesRequest { max_entries: 2, starting_token: first.next_token }).await.unwrap();
    assert_eq!((rest.entries.len(), rest.next_token.as_str()), (1, ""));
    let bad = ListVolumesRequest { max_entries: 0, starting_token: "invalid-token".into() };
    assert_eq!(code(c.list_volumes(bad).await), Code::Aborted);
    for id in ids {
        c.delete_volume(delete(&id)).await.unwrap();
    }
}

/// Log lines written by the plugin while a test runs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_restarted_plugin_knows_its_volumes_and_what_is_staged() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let mut h = Harness::start().await;
    let volume = create(&h.client, create_request("kept", image(), 32 * MIB)).await;
    let id = volume.volume_id.clone();
    let (staging, target) = (h.path("staging/kept"), h.path("targets/kept"));
    let capability = mount_capability(Mode::SingleNodeWriter);
    h.client.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    h.client.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();

    h.restart().await;
    let c = &h.client;
    let listed = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert_eq!(listed.entries[0].volume.as_ref(), Some(&volume));
    c.node_stage_volume(stage(&id, &staging, capability.clone())).await.unwrap();
    c.node_publish_volume(publish(&id, &staging, &target, capability.clone())).await.unwrap();
    assert_eq!((mounts_at(&staging), mounts_at(&target)), (1, 1), "nothing mounted twice");
    let error = c.delete_volume(delete(&id)).await.unwrap_err();
    assert!(error.code() == Some(Code::FailedPrecondition) && error.to_string().contains("published at"), "{error}");

    c.node_unpublish_volume(unpublish(&id, &target)).await.unwrap();
    c.node_unstage_volume(unstage(&id, &staging)).await.unwrap();
    c.delete_volume(delete(&id)).await.unwrap();

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The log subscriber is shared by the tests running beside this one:
    // count this volume's lines only.
    let stages: Vec<&str> =
        logs.lines().filter(|l| l.contains("rpc=NodeStageVolume") && l.contains(&format!("volume={id}"))).collect();
    assert_eq!(stages.len(), 2, "one line per NodeStageVolume call:\n{logs}");
    assert!(stages[0].contains(&format!("volume={id}")), "{}", stages[0]);
}
