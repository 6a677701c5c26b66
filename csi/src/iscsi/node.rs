//! [`IscsiNode`]: the CSI Node service for iSCSI volumes.
//!
//! * Stage: the LUN named by the volume context is attached (see
//!   [`Attacher`]), then, for mount access, formatted only if blank (a
//!   device holding a filesystem is never formatted over) and mounted at the
//!   staging path; for block access only attached.
//! * Publish: the staging path is bind-mounted at the target (read-only
//!   when asked); for block access the device is bound onto a target file.
//!   Single-writer modes refuse a second writable target on the node.
//! * Unpublish / unstage undo that; unstage detaches the LUN (logout,
//!   records removed).
//! * Expand: the device is rescanned and the filesystem grown.
//!
//! Each staged volume has a record (`staged/<volume>.json` in the state
//! dir) written right after the attach and before any mount: it says what
//! to undo, so a restarted plugin unstages what an earlier run staged, and
//! repeated calls answer idempotently (the mount table decides whether a
//! recorded mount is in place).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::{file_name, Attacher, Attachment, Deadline, IscsiError, IscsiTarget, LoginFailure};
use crate::local::capability::{Access, AccessKind};
use crate::locks::KeyLocks;
use crate::mount;
use crate::rpc::{absolute, blocking, bytes_i64, caller_timeout, filesystem_usage, is_mounted, reply, require};
use crate::v1::node_server::Node;
use crate::v1::node_service_capability::rpc;
use crate::v1::volume_usage::Unit;
use crate::v1::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse,
    NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
    VolumeCapability, VolumeUsage,
};

/// The filesystem a mount capability without `fs_type` gets.
const DEFAULT_FS_TYPE: &str = "ext4";
/// How long an attach or detach may take when the caller sets no deadline.
const DEFAULT_ATTACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Taken off the caller's deadline, so the answer reaches it in time.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// One target path the volume is published at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Published {
    target: PathBuf,
    readonly: bool,
}

/// What is staged for one volume.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StageRecord {
    staging: PathBuf,
    access: Access,
    attachment: Attachment,
    published: Vec<Published>,
}

/// The CSI Node service for iSCSI volumes; cheap to clone.
#[derive(Clone, Debug)]
pub struct IscsiNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    records: PathBuf,
    attacher: Box<dyn Attacher>,
    locks: KeyLocks,
    /// The longest an attach or detach may take (the caller's own
    /// deadline, when it sends one, may be shorter).
    attach_timeout: std::time::Duration,
}

fn internal(id: &str, doing: &str, error: impl std::fmt::Display) -> Status {
    Status::internal(format!("volume {id}: {doing}: {error}"))
}

fn attach_status(id: &str, error: IscsiError) -> Status {
    match error {
        IscsiError::Context(_) => Status::invalid_argument(format!("volume {id}: {error}")),
        IscsiError::NotOffered { .. } => Status::not_found(format!("volume {id}: {error}")),
        IscsiError::Login { reason: LoginFailure::Chap, .. } => {
            Status::permission_denied(format!("volume {id}: attaching the iSCSI LUN: {error}"))
        }
        IscsiError::Login { reason: LoginFailure::NoTransport, .. } => {
            Status::failed_precondition(format!("volume {id}: attaching the iSCSI LUN: {error}"))
        }
        _ => Status::unavailable(format!("volume {id}: attaching the iSCSI LUN: {error}")),
    }
}

/// The deadline for this request's attach or detach work.
fn deadline<T>(request: &Request<T>, most: std::time::Duration) -> Deadline {
    let wanted = caller_timeout(request).map_or(most, |t| t.saturating_sub(ANSWER_MARGIN).min(most));
    Deadline::after(wanted)
}

fn access_of(capability: Option<&VolumeCapability>) -> Result<Access, Status> {
    let capability = capability.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    Access::parse(capability).map_err(Status::invalid_argument)
}

/// The size of a block device.
fn device_size(device: &Path) -> std::io::Result<u64> {
    std::fs::File::open(device)?.seek(SeekFrom::End(0))
}

impl IscsiNode {
    /// The service for node `node_id`, attaching through `attacher` and
    /// keeping its records under `state_dir`.
    pub fn new(node_id: impl Into<String>, state_dir: &Path, attacher: Box<dyn Attacher>) -> Result<Self, IscsiError> {
        Self::with_attach_timeout(node_id, state_dir, attacher, DEFAULT_ATTACH_TIMEOUT)
    }

    /// [`IscsiNode::new`] whose attaches and detaches take at most
    /// `attach_timeout` (2 minutes by default; a caller's `grpc-timeout`
    /// shortens it).
    pub fn with_attach_timeout(
        node_id: impl Into<String>,
        state_dir: &Path,
        attacher: Box<dyn Attacher>,
        attach_timeout: std::time::Duration,
    ) -> Result<Self, IscsiError> {
        let records = state_dir.join("staged");
        std::fs::create_dir_all(&records).map_err(|e| IscsiError::io(&records, e))?;
        let inner = Inner { node_id: node_id.into(), records, attacher, locks: KeyLocks::default(), attach_timeout };
        inner.count_sessions();
        Ok(Self { inner: Arc::new(inner) })
    }
}

impl Inner {
    fn record_path(&self, id: &str) -> PathBuf {
        self.records.join(format!("{}.json", file_name(id)))
    }

    fn record(&self, id: &str) -> Result<Option<StageRecord>, Status> {
        let path = self.record_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| internal(id, &format!("reading {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal(id, &format!("reading {}", path.display()), e)),
        }
    }

    /// Sets `berth.iscsi.sessions` to the LUNs this node has staged (its
    /// records, each one attachment).
    fn count_sessions(&self) {
        let staged = std::fs::read_dir(&self.records)
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
            .unwrap_or(0);
        metrics::gauge!("berth.iscsi.sessions").set(staged as f64);
    }

    /// Writes the record atomically (temporary file, fsync, rename).
    fn save(&self, id: &str, record: &StageRecord) -> Result<(), Status> {
        let path = self.record_path(id);
        let temporary = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let file = std::fs::File::create(&temporary)?;
            serde_json::to_writer_pretty(&file, record)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|e| internal(id, &format!("writing {}", path.display()), e))
    }

    fn forget(&self, id: &str) -> Result<(), Status> {
        let path = self.record_path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(internal(id, &format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Whether the record's stage is in place: the device exists and, for
    /// mount access, is what is mounted at the staging path.
    fn in_place(record: &StageRecord) -> bool {
        let device = &record.attachment.device;
        let Ok(device) = device.canonicalize() else { return false };
        match record.access.kind {
            AccessKind::Block => true,
            AccessKind::Mount { .. } => mount::mounted_source(&record.staging)
                .and_then(|source| Path::new(&source).canonicalize().ok())
                .is_some_and(|source| source == device),
        }
    }

    fn stage(
        &self,
        id: &str,
        staging: &Path,
        access: Access,
        context: &HashMap<String, String>,
        secrets: &HashMap<String, String>,
        deadline: Deadline,
    ) -> Result<(), Status> {
        if let Some(record) = self.record(id)? {
            if Self::in_place(&record) {
                if record.staging != staging {
                    return Err(Status::failed_precondition(format!(
                        "volume {id} is already staged at {}",
                        record.staging.display()
                    )));
                }
                if record.access != access {
                    return Err(Status::already_exists(format!(
                        "volume {id} is already staged at {} with a different capability",
                        staging.display()
                    )));
                }
                tracing::debug!(volume = %id, staging = %staging.display(), "already staged");
                return Ok(());
            }
            // Left by a run that did not finish (or by a reboot): undo it first.
            tracing::info!(volume = %id, "clearing an earlier, incomplete stage");
            if is_mounted(&record.staging) {
                mount::unmount(&record.staging).map_err(|e| internal(id, "unmounting", e))?;
            }
            self.attacher.detach(&record.attachment, deadline).map_err(|e| internal(id, "detaching", e))?;
            self.forget(id)?;
        }
        let target = IscsiTarget::from_context(context, secrets).map_err(|e| attach_status(id, e))?;
        // What the attach may leave is recorded first: if this process dies
        // midway, the next stage or unstage undoes it.
        let planned = StageRecord {
            staging: staging.to_path_buf(),
            access: access.clone(),
            attachment: self.attacher.plan(id, &target),
            published: Vec::new(),
        };
        self.save(id, &planned)?;
        let started = std::time::Instant::now();
        let attached = self.attacher.attach(id, &target, deadline);
        metrics::histogram!("berth.iscsi.attach").record(started.elapsed().as_secs_f64() * 1e3);
        let attachment = match attached {
            Ok(attachment) => attachment,
            Err(e) => {
                metrics::counter!("berth.iscsi.attach.errors").increment(1);
                self.forget(id)?;
                return Err(attach_status(id, e));
            }
        };
        self.count_sessions();
        let record = StageRecord { attachment, ..planned };
        let mounted = self.save(id, &record).and_then(|()| self.mount_staging(id, &record));
        if let Err(status) = mounted {
            if let Err(e) = self.attacher.detach(&record.attachment, Deadline::after(self.attach_timeout)) {
                tracing::warn!(volume = %id, error = %e, "could not detach after a failed stage");
            }
            self.forget(id)?;
            return Err(status);
        }
        Ok(())
    }

    fn mount_staging(&self, id: &str, record: &StageRecord) -> Result<(), Status> {
        let AccessKind::Mount { flags, .. } = &record.access.kind else {
            return Ok(());
        };
        let device = &record.attachment.device;
        let wanted = record.access.fs_type().unwrap_or(DEFAULT_FS_TYPE);
        let fs_type = mount::format_if_blank(device, wanted).map_err(|e| internal(id, "formatting", e))?;
        if fs_type != wanted && record.access.fs_type().is_some() {
            tracing::warn!(volume = %id, found = %fs_type, asked = %wanted, "the device keeps the filesystem it has");
        }
        mount::mount_device(device, &record.staging, &fs_type, flags, record.access.read_only())
            .map_err(|e| internal(id, "mounting", e))
    }

    fn unstage(&self, id: &str, staging: &Path, deadline: Deadline) -> Result<(), Status> {
        let Some(record) = self.record(id)?.filter(|r| r.staging == staging) else {
            tracing::debug!(volume = %id, staging = %staging.display(), "not staged there");
            return Ok(());
        };
        let busy: Vec<String> =
            record.published.iter().filter(|p| is_mounted(&p.target)).map(|p| p.target.display().to_string()).collect();
        if !busy.is_empty() {
            return Err(Status::failed_precondition(format!("volume {id} is still published at {}", busy.join(", "))));
        }
        self.attacher.release_vanished(&record.attachment, deadline);
        if is_mounted(staging) {
            mount::unmount(staging).map_err(|e| internal(id, "unmounting", e))?;
        }
        let started = std::time::Instant::now();
        let detached = self.attacher.detach(&record.attachment, deadline);
        metrics::histogram!("berth.iscsi.detach").record(started.elapsed().as_secs_f64() * 1e3);
        if detached.is_err() {
            metrics::counter!("berth.iscsi.detach.errors").increment(1);
        }
        detached.map_err(|e| internal(id, "detaching the iSCSI LUN", e))?;
        self.forget(id)?;
        self.count_sessions();
        Ok(())
    }

    fn publish(&self, id: &str, staging: &Path, target: &Path, access: Access, readonly: bool) -> Result<(), Status> {
        let mut record = match self.record(id)? {
            Some(record) if record.staging == staging && Self::in_place(&record) => record,
            _ => {
                return Err(Status::failed_precondition(format!("volume {id} is not staged at {}", staging.display())))
            }
        };
        if !record.access.same_kind(&access) {
            return Err(Status::failed_precondition(format!("volume {id} is staged for another access type")));
        }
        let wanted = Published { target: target.to_path_buf(), readonly };
        if record.published.iter().any(|p| p.target == target) && is_mounted(target) {
            return if record.published.contains(&wanted) {
                Ok(())
            } else {
                Err(Status::already_exists(format!("volume {id} is already published at {}", target.display())))
            };
        }
        if access.mode.single_writer_on_node() {
            let other = record
                .published
                .iter()
                .find(|p| p.target != target && !(readonly && p.readonly) && is_mounted(&p.target));
            if let Some(other) = other {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is already published at {} and its access mode allows one writer on the node",
                    other.target.display()
                )));
            }
        }
        let read_only = readonly || access.read_only();
        let bound = match access.kind {
            AccessKind::Block => mount::bind_device(&record.attachment.device, target, read_only),
            AccessKind::Mount { .. } => mount::bind(staging, target, read_only),
        };
        bound.map_err(|e| internal(id, "publishing", e))?;
        record.published.retain(|p| p.target != target);
        record.published.push(wanted);
        self.save(id, &record)
    }

    fn unpublish(&self, id: &str, target: &Path) -> Result<(), Status> {
        mount::unmount(target).map_err(|e| internal(id, "unpublishing", e))?;
        if let Some(mut record) = self.record(id)? {
            record.published.retain(|p| p.target != target);
            self.save(id, &record)?;
        }
        Ok(())
    }

    fn staged_at(&self, id: &str, path: &Path) -> Result<StageRecord, Status> {
        self.record(id)?
            .filter(|r| r.staging == path || r.published.iter().any(|p| p.target == path))
            .ok_or_else(|| Status::not_found(format!("volume {id} is not staged or published at {}", path.display())))
    }

    fn stats(&self, id: &str, path: &Path) -> Result<NodeGetVolumeStatsResponse, Status> {
        let record = self.staged_at(id, path)?;
        let usage = match record.access.kind {
            AccessKind::Block => {
                let size = device_size(&record.attachment.device).map_err(|e| internal(id, "reading its size", e))?;
                vec![VolumeUsage { total: bytes_i64(size), unit: Unit::Bytes as i32, ..Default::default() }]
            }
            AccessKind::Mount { .. } => {
                let u = mount::usage(path).map_err(|e| internal(id, "reading usage", e))?;
                filesystem_usage(&u)
            }
        };
        Ok(NodeGetVolumeStatsResponse { usage, volume_condition: None })
    }

    /// Grows the device and its filesystem to the LUN's new size. Asked
    /// again once that is done (the device already holds `required`
    /// bytes), it answers the size without doing anything.
    fn expand(
        &self,
        id: &str,
        path: &Path,
        required: u64,
        deadline: Deadline,
    ) -> Result<NodeExpandVolumeResponse, Status> {
        let record = self.staged_at(id, path)?;
        let device = &record.attachment.device;
        let size = device_size(device).map_err(|e| internal(id, "reading its size", e))?;
        if required == 0 || size < required {
            self.attacher.rescan(&record.attachment, deadline).map_err(|e| match e {
                IscsiError::Context(message) => Status::failed_precondition(format!("volume {id}: {message}")),
                other => internal(id, "rescanning", other),
            })?;
            while device_size(device).map_err(|e| internal(id, "reading its size", e))? < required {
                if deadline.passed() {
                    return Err(Status::unavailable(format!(
                        "volume {id}: the device does not show {required} bytes after a rescan; try again"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        if let AccessKind::Mount { .. } = record.access.kind {
            mount::grow(device, &record.staging).map_err(|e| internal(id, "growing the filesystem", e))?;
        }
        let size = device_size(device).map_err(|e| internal(id, "reading its size", e))?;
        Ok(NodeExpandVolumeResponse { capacity_bytes: bytes_i64(size) })
    }
}

#[tonic::async_trait]
impl Node for IscsiNode {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let deadline = deadline(&request, self.inner.attach_timeout);
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeStageVolume", volume = %id, staging = %request.staging_target_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let staging = absolute("staging_target_path", &request.staging_target_path)?;
            let access = access_of(request.volume_capability.as_ref())?;
            let guard = self.inner.locks.lock(id.clone()).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            let (context, secrets) = (request.volume_context, request.secrets);
            blocking(vec![guard], move || inner.stage(&id, &staging, access, &context, &secrets, deadline)).await
        };
        reply("NodeStageVolume", &id, result.await.map(|()| NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let deadline = deadline(&request, self.inner.attach_timeout);
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeUnstageVolume", volume = %id, staging = %request.staging_target_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let staging = absolute("staging_target_path", &request.staging_target_path)?;
            let guard = self.inner.locks.lock(id.clone()).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.unstage(&id, &staging, deadline)).await
        };
        reply("NodeUnstageVolume", &id, result.await.map(|()| NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodePublishVolume", volume = %id, target = %request.target_path, "CSI call");
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
            let guard = self.inner.locks.lock(id.clone()).await;
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
            let guard = self.inner.locks.lock(id.clone()).await;
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
        let result = async {
            require("volume_id", &id)?;
            require("volume_path", &request.volume_path)?;
            // Any path the volume is not staged or published at is NOT_FOUND.
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
        let deadline = deadline(&request, self.inner.attach_timeout);
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"NodeExpandVolume", volume = %id, path = %request.volume_path, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            require("volume_path", &request.volume_path)?;
            let path = PathBuf::from(&request.volume_path);
            let required = request.capacity_range.map_or(0, |r| u64::try_from(r.required_bytes).unwrap_or(0));
            let guard = self.inner.locks.lock(id.clone()).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.expand(&id, &path, required, deadline)).await
        };
        reply("NodeExpandVolume", &id, result.await)
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(crate::answers::node_capabilities(&[
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
        ])))
    }

    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.inner.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
