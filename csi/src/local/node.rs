//! The Node service of the local plugin.
//!
//! * Stage: a directory volume's data directory is bind-mounted at the
//!   staging path; an image is attached to a loop device, formatted only if
//!   blank and mounted there with the capability's mount flags (for block
//!   access it is only attached). Mount flags other than `ro` do not apply
//!   to directory volumes (a bind mount of a directory on the state
//!   directory's filesystem).
//! * Publish: the staging path is bind-mounted at the target (read-only
//!   when asked or when the mode is a reader mode); for block access the
//!   loop device is bound onto a target file. In the modes with one writer
//!   on the node (SINGLE_NODE_WRITER, SINGLE_NODE_SINGLE_WRITER) a second
//!   target is refused (FAILED_PRECONDITION) unless both are read-only.
//! * Unpublish / unstage undo that, remove the target and detach the loop
//!   device. Stats report bytes and inodes of the filesystem at the path (for
//!   a directory volume: the filesystem holding the state directory; for
//!   block access: the capacity). Expansion grows the filesystem after the
//!   controller grew the image: online where allowed, otherwise (ext, no
//!   CAP_SYS_RESOURCE) offline, briefly unmounting the staging path and the
//!   targets, which is refused while anything else still has it mounted.
//!
//! Where a volume is staged and published is recorded per volume (see
//! `store`) before each mount is made, and the kernel's mount table decides
//! whether a recorded mount is in place, so repeated and resumed calls (also
//! after a plugin restart) answer idempotently without mounting twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::backing::Backing;
use super::capability::{Access, AccessKind};
use super::store::{NodeRecord, Published, Staged, VolumeRecord};
use super::{
    blocking, bytes_i64, host, host_failed, mount_failed, reply, require, Inner, LocalPlugin, DEFAULT_FS_TYPE,
};
use crate::mount;
use crate::rpc::{absolute, filesystem_usage, is_mounted};
use crate::v1::node_server::Node;
use crate::v1::node_service_capability::rpc;
use crate::v1::volume_usage::Unit;
use crate::v1::{
    CapacityRange, NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest,
    NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodePublishVolumeResponse, NodeStageVolumeRequest,
    NodeStageVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse, VolumeCapability, VolumeUsage,
};

fn access_of(capability: Option<&VolumeCapability>) -> Result<Access, Status> {
    let capability = capability.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    Access::parse(capability).map_err(Status::invalid_argument)
}

/// Whether this process may grow a mounted ext filesystem: ext4's online
/// resize needs CAP_SYS_RESOURCE, which some sandboxes drop.
fn may_resize_online() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// FAILED_PRECONDITION unless nothing, in any mount namespace, holds
/// `device` open exclusively (as a mounted filesystem does).
fn check_unused(id: &str, device: &Path) -> Result<(), Status> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_EXCL.bits()).open(device) {
        Ok(_) => Ok(()),
        Err(e) => Err(Status::failed_precondition(format!(
            "volume {id}: {} is still in use elsewhere ({e}); its filesystem cannot grow while mounted without \
             CAP_SYS_RESOURCE",
            device.display()
        ))),
    }
}

impl Inner {
    fn image(&self, volume: &VolumeRecord) -> PathBuf {
        self.store.volume_content(&volume.id, Backing::Image)
    }

    /// The loop device `volume`'s image is attached to, if any.
    fn loop_device(&self, volume: &VolumeRecord) -> Result<Option<PathBuf>, Status> {
        let devices =
            host::loop_devices(&self.image(volume)).map_err(|e| host_failed(&format!("volume {}", volume.id), e))?;
        Ok(devices.into_iter().next())
    }

    /// Whether `staged` is in place: its mount (or, for block access, the
    /// loop device) exists.
    fn is_staged(&self, volume: &VolumeRecord, staged: &Staged) -> Result<bool, Status> {
        Ok(match (volume.backing, &staged.access.kind) {
            (Backing::Directory, _) => is_mounted(&staged.path),
            (Backing::Image, AccessKind::Block) => self.loop_device(volume)?.is_some(),
            (Backing::Image, AccessKind::Mount { .. }) => match mount::mounted_source(&staged.path) {
                None => false,
                Some(source) => self.loop_device(volume)?.is_some_and(|d| d == Path::new(&source)),
            },
        })
    }

    /// What keeps `volume` from being deleted, if anything.
    pub(super) fn in_use(&self, volume: &VolumeRecord) -> Result<Option<String>, Status> {
        let node = self.store.node(&volume.id)?;
        if let Some(published) = node.published.iter().find(|p| is_mounted(&p.target)) {
            return Ok(Some(format!("published at {}", published.target.display())));
        }
        if let Some(staged) = &node.staged {
            if self.is_staged(volume, staged)? {
                return Ok(Some(format!("staged at {}", staged.path.display())));
            }
        }
        if volume.backing == Backing::Image {
            if let Some(device) = self.loop_device(volume)? {
                return Ok(Some(format!("its image is attached to {}", device.display())));
            }
        }
        Ok(None)
    }

    /// How `volume` is used at `path`: where it is staged or published (and
    /// that is in place), or NOT_FOUND.
    fn access_at(&self, volume: &VolumeRecord, node: &NodeRecord, path: &Path) -> Result<Access, Status> {
        if let Some(staged) = node.staged.as_ref().filter(|s| s.path == path) {
            if self.is_staged(volume, staged)? {
                return Ok(staged.access.clone());
            }
        }
        if let Some(published) = node.published.iter().find(|p| p.target == path && is_mounted(path)) {
            return Ok(published.access.clone());
        }
        Err(Status::not_found(format!("volume {} is not staged or published at {}", volume.id, path.display())))
    }

    fn stage(&self, id: &str, staging: &Path, access: Access) -> Result<(), Status> {
        let volume = self.volume(id)?;
        access
            .supported_by(volume.backing, volume.fs_type.as_deref())
            .map_err(|e| Status::failed_precondition(format!("volume {id}: {e}")))?;
        let mut node = self.store.node(id)?;
        if let Some(staged) = &node.staged {
            if self.is_staged(&volume, staged)? {
                if staged.path != staging {
                    return Err(Status::failed_precondition(format!(
                        "volume {id} is already staged at {}",
                        staged.path.display()
                    )));
                }
                if staged.access != access {
                    return Err(Status::already_exists(format!(
                        "volume {id} is already staged at {} with a different capability",
                        staging.display()
                    )));
                }
                tracing::debug!(volume = %id, staging = %staging.display(), "already staged");
                return Ok(());
            }
        }
        node.staged = Some(Staged { path: staging.to_path_buf(), access: access.clone() });
        self.store.save_node(id, &node)?;
        let staged = self.mount_staging(&volume, staging, &access);
        if staged.is_err() {
            node.staged = None;
            if let Err(e) = self.store.save_node(id, &node) {
                tracing::warn!(volume = %id, error = %e, "could not record a failed stage");
            }
            if volume.backing == Backing::Image {
                if let Err(e) = host::detach(&self.image(&volume)) {
                    tracing::warn!(volume = %id, error = %e, "could not detach after a failed stage");
                }
            }
        }
        staged
    }

    fn mount_staging(&self, volume: &VolumeRecord, staging: &Path, access: &Access) -> Result<(), Status> {
        let id = &volume.id;
        match (volume.backing, &access.kind) {
            (Backing::Directory, _) => {
                let data = self.store.volume_content(id, Backing::Directory);
                mount::bind(&data, staging, access.read_only()).map_err(|e| mount_failed(id, e))
            }
            (Backing::Image, kind) => {
                let device = host::attach(&self.image(volume)).map_err(|e| host_failed(&format!("volume {id}"), e))?;
                if let AccessKind::Mount { flags, .. } = kind {
                    let fs_type = volume.fs_type.as_deref().unwrap_or(DEFAULT_FS_TYPE);
                    let fs_type = mount::format_if_blank(&device, fs_type).map_err(|e| mount_failed(id, e))?;
                    mount::mount_device(&device, staging, &fs_type, flags, access.read_only())
                        .map_err(|e| mount_failed(id, e))?;
                }
                Ok(())
            }
        }
    }

    fn unstage(&self, id: &str, staging: &Path) -> Result<(), Status> {
        let volume = self.volume(id)?;
        let mut node = self.store.node(id)?;
        let Some(staged) = node.staged.clone().filter(|s| s.path == staging) else {
            tracing::debug!(volume = %id, staging = %staging.display(), "not staged there");
            return Ok(());
        };
        let busy: Vec<String> =
            node.published.iter().filter(|p| is_mounted(&p.target)).map(|p| p.target.display().to_string()).collect();
        if !busy.is_empty() {
            return Err(Status::failed_precondition(format!("volume {id} is still published at {}", busy.join(", "))));
        }
        node.published.clear();
        if let AccessKind::Mount { .. } = staged.access.kind {
            mount::unmount(staging).map_err(|e| mount_failed(id, e))?;
        }
        if volume.backing == Backing::Image {
            host::detach(&self.image(&volume)).map_err(|e| host_failed(&format!("volume {id}"), e))?;
        }
        node.staged = None;
        Ok(self.store.save_node(id, &node)?)
    }

    fn publish(&self, id: &str, staging: &Path, target: &Path, access: Access, readonly: bool) -> Result<(), Status> {
        let volume = self.volume(id)?;
        access
            .supported_by(volume.backing, volume.fs_type.as_deref())
            .map_err(|e| Status::failed_precondition(format!("volume {id}: {e}")))?;
        let mut node = self.store.node(id)?;
        let staged = match &node.staged {
            Some(staged) if staged.path == staging && self.is_staged(&volume, staged)? => staged.clone(),
            _ => {
                return Err(Status::failed_precondition(format!("volume {id} is not staged at {}", staging.display())))
            }
        };
        if !staged.access.same_kind(&access) {
            return Err(Status::failed_precondition(format!(
                "volume {id} is staged for {} access",
                if let AccessKind::Block = staged.access.kind { "block" } else { "mount" }
            )));
        }
        let wanted = Published { target: target.to_path_buf(), access, readonly };
        if let Some(existing) = node.published.iter().find(|p| p.target == target) {
            if is_mounted(target) {
                if *existing == wanted {
                    tracing::debug!(volume = %id, target = %target.display(), "already published");
                    return Ok(());
                }
                return Err(Status::already_exists(format!(
                    "volume {id} is already published at {} with a different capability or readonly flag",
                    target.display()
                )));
            }
        }
        if wanted.access.mode.single_writer_on_node() {
            let other = node
                .published
                .iter()
                .find(|p| p.target != target && !(readonly && p.readonly) && is_mounted(&p.target));
            if let Some(other) = other {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is already published at {} and its access mode {:?} allows one writer on the node",
                    other.target.display(),
                    wanted.access.mode
                )));
            }
        }
        let read_only = readonly || wanted.access.read_only();
        let block = matches!(wanted.access.kind, AccessKind::Block);
        node.published.retain(|p| p.target != target);
        node.published.push(wanted);
        self.store.save_node(id, &node)?;
        let published = if block {
            self.loop_device(&volume)?
                .ok_or_else(|| Status::failed_precondition(format!("volume {id}: its image is not attached; stage it")))
                .and_then(|device| mount::bind_device(&device, target, read_only).map_err(|e| mount_failed(id, e)))
        } else {
            mount::bind(staging, target, read_only).map_err(|e| mount_failed(id, e))
        };
        if published.is_err() {
            node.published.retain(|p| p.target != target);
            if let Err(e) = self.store.save_node(id, &node) {
                tracing::warn!(volume = %id, error = %e, "could not record a failed publish");
            }
        }
        published
    }

    fn unpublish(&self, id: &str, target: &Path) -> Result<(), Status> {
        self.volume(id)?;
        let mut node = self.store.node(id)?;
        if !node.published.iter().any(|p| p.target == target) {
            tracing::debug!(volume = %id, target = %target.display(), "not published there");
            return Ok(());
        }
        mount::unmount(target).map_err(|e| mount_failed(id, e))?;
        node.published.retain(|p| p.target != target);
        Ok(self.store.save_node(id, &node)?)
    }

    fn stats(&self, id: &str, path: &Path) -> Result<NodeGetVolumeStatsResponse, Status> {
        let volume = self.volume(id)?;
        let node = self.store.node(id)?;
        let usage = match self.access_at(&volume, &node, path)?.kind {
            AccessKind::Block => vec![VolumeUsage {
                total: bytes_i64(volume.capacity_bytes),
                unit: Unit::Bytes as i32,
                ..Default::default()
            }],
            AccessKind::Mount { .. } => {
                let u = mount::usage(path).map_err(|e| mount_failed(id, e))?;
                filesystem_usage(&u)
            }
        };
        Ok(NodeGetVolumeStatsResponse { usage, volume_condition: None })
    }

    fn expand(&self, id: &str, path: &Path, range: Option<CapacityRange>) -> Result<NodeExpandVolumeResponse, Status> {
        let volume = self.volume(id)?;
        let node = self.store.node(id)?;
        let access = self.access_at(&volume, &node, path)?;
        let required = range.map_or(0, |r| r.required_bytes);
        if required > bytes_i64(volume.capacity_bytes) {
            return Err(Status::out_of_range(format!(
                "volume {id} has {} bytes, fewer than the {required} asked for: expand it with \
                 ControllerExpandVolume first",
                volume.capacity_bytes
            )));
        }
        if volume.backing == Backing::Image {
            host::refresh(&self.image(&volume)).map_err(|e| host_failed(&format!("volume {id}"), e))?;
            if let (AccessKind::Mount { .. }, Some(staged)) = (&access.kind, &node.staged) {
                let device = self
                    .loop_device(&volume)?
                    .ok_or_else(|| Status::failed_precondition(format!("volume {id}: its image is not attached")))?;
                self.grow(&volume, &node, staged, &device)?;
            }
        }
        Ok(NodeExpandVolumeResponse { capacity_bytes: bytes_i64(volume.capacity_bytes) })
    }

    /// Grows the filesystem on `device` (staged at `staged`): online, or,
    /// for ext where this process may not resize online, offline: every
    /// mount of it is taken down, the filesystem checked and grown, and the
    /// mounts made again.
    fn grow(&self, volume: &VolumeRecord, node: &NodeRecord, staged: &Staged, device: &Path) -> Result<(), Status> {
        let id = &volume.id;
        let fs_type = volume.fs_type.as_deref().unwrap_or(DEFAULT_FS_TYPE);
        let online = match mount::grow(device, &staged.path) {
            Ok(()) => return Ok(()),
            Err(e) if fs_type.starts_with("ext") && !may_resize_online() => e,
            Err(e) => return Err(mount_failed(id, e)),
        };
        tracing::info!(volume = %id, error = %online, "growing the filesystem offline: online resize is not permitted");
        let targets: Vec<&Published> = node.published.iter().filter(|p| is_mounted(&p.target)).collect();
        for published in &targets {
            mount::unmount(&published.target).map_err(|e| mount_failed(id, e))?;
        }
        mount::unmount(&staged.path).map_err(|e| mount_failed(id, e))?;
        let grown =
            check_unused(id, device).and_then(|()| mount::grow_offline(device).map_err(|e| mount_failed(id, e)));
        // Mounted again whether or not growing worked.
        let remounted =
            mount::mount_device(device, &staged.path, fs_type, staged.access.flags(), staged.access.read_only())
                .and_then(|()| {
                    targets
                        .iter()
                        .try_for_each(|p| mount::bind(&staged.path, &p.target, p.readonly || p.access.read_only()))
                })
                .map_err(|e| mount_failed(id, e));
        grown.and(remounted)
    }
}

#[tonic::async_trait]
impl Node for LocalPlugin {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeStageVolume", volume = %id, staging = %request.staging_target_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let staging = absolute("staging_target_path", &request.staging_target_path)?;
            let access = access_of(request.volume_capability.as_ref())?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.stage(&id, &staging, access)).await
        };
        reply("NodeStageVolume", &id, result.await.map(|()| NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeUnstageVolume", volume = %id, staging = %request.staging_target_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let staging = absolute("staging_target_path", &request.staging_target_path)?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.unstage(&id, &staging)).await
        };
        reply("NodeUnstageVolume", &id, result.await.map(|()| NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(
            rpc = %"NodePublishVolume",
            volume = %id,
            target = %request.target_path,
            readonly = request.readonly,
            "CSI call"
        );
        let result = async {
            require("volume_id", &id)?;
            let target = absolute("target_path", &request.target_path)?;
            let access = access_of(request.volume_capability.as_ref())?;
            if request.staging_target_path.is_empty() {
                return Err(Status::failed_precondition(
                    "staging_target_path is required: the plugin has STAGE_UNSTAGE_VOLUME",
                ));
            }
            let staging = absolute("staging_target_path", &request.staging_target_path)?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id, readonly) = (Arc::clone(&self.inner), id.clone(), request.readonly);
            blocking(vec![guard], move || inner.publish(&id, &staging, &target, access, readonly)).await
        };
        reply("NodePublishVolume", &id, result.await.map(|()| NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeUnpublishVolume", volume = %id, target = %request.target_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let target = absolute("target_path", &request.target_path)?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.unpublish(&id, &target)).await
        };
        reply("NodeUnpublishVolume", &id, result.await.map(|()| NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeGetVolumeStats", volume = %id, path = %request.volume_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            require("volume_path", &request.volume_path)?;
            let path = PathBuf::from(&request.volume_path);
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(Vec::new(), move || inner.stats(&id, &path)).await
        };
        reply("NodeGetVolumeStats", &id, result.await)
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeExpandVolume", volume = %id, path = %request.volume_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            require("volume_path", &request.volume_path)?;
            if let Some(capability) = &request.volume_capability {
                Access::parse(capability).map_err(Status::invalid_argument)?;
            }
            let path = PathBuf::from(&request.volume_path);
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id, range) = (Arc::clone(&self.inner), id.clone(), request.capacity_range);
            blocking(vec![guard], move || inner.expand(&id, &path, range)).await
        };
        reply("NodeExpandVolume", &id, result.await)
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        tracing::info!(rpc = %"NodeGetCapabilities", "CSI call");
        Ok(Response::new(crate::answers::node_capabilities(&[
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
        ])))
    }

    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> Result<Response<NodeGetInfoResponse>, Status> {
        tracing::info!(rpc = %"NodeGetInfo", "CSI call");
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.inner.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(self.inner.topology()),
        }))
    }
}
