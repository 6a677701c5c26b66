//! The Controller service of the local plugin: volumes and snapshots in the
//! state directory. CreateVolume makes an empty data directory or sparse
//! image (or copies a snapshot's or another volume's data), idempotent on
//! the name; snapshots are full copies; expansion grows the recorded
//! capacity and, for images, the file (the node grows the filesystem).
//! There is no controller publish: volumes are on this node's disk.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::backing::Backing;
use super::capability::Access;
use super::params::{Parameters, Range};
use super::store::{SnapshotRecord, Source, VolumeRecord};
use super::{
    blocking, bytes_i64, host, host_failed, io_failed, mount_failed, page, reply, require, Inner, LocalPlugin,
};
use super::{DEFAULT_FS_TYPE, TOPOLOGY_KEY};
use crate::mount;
use crate::v1::controller_server::Controller;
use crate::v1::controller_service_capability::rpc;
use crate::v1::validate_volume_capabilities_response::Confirmed;
use crate::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use crate::v1::{
    list_snapshots_response, list_volumes_response, ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse, ControllerPublishVolumeRequest,
    ControllerPublishVolumeResponse, ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
    CreateSnapshotRequest, CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
    DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse, Snapshot, Topology,
    TopologyRequirement, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume,
    VolumeContentSource,
};

/// A CreateVolume request, checked.
#[derive(Debug)]
struct NewVolume {
    name: String,
    accesses: Vec<Access>,
    parameters: Parameters,
    given_parameters: BTreeMap<String, String>,
    range: Range,
    source: Option<Source>,
}

/// The snapshot or volume a new volume's data is copied from.
#[derive(Debug)]
struct Origin {
    size: u64,
    backing: Backing,
    fs_type: Option<String>,
    path: PathBuf,
    /// A volume that may be in use (not a snapshot).
    live: bool,
}

fn content_source(source: &Source) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(match source {
            Source::Snapshot(id) => SourceType::Snapshot(SnapshotSource { snapshot_id: id.clone() }),
            Source::Volume(id) => SourceType::Volume(VolumeSource { volume_id: id.clone() }),
        }),
    }
}

fn timestamp(time: std::time::SystemTime) -> prost_types::Timestamp {
    time.into()
}

impl Inner {
    /// Whether this node is in `topology` (every segment given is ours).
    fn serves(&self, topology: &Topology) -> bool {
        topology.segments.iter().all(|(key, value)| key == TOPOLOGY_KEY && *value == self.node_id)
    }

    /// RESOURCE_EXHAUSTED if the requisite topologies exclude this node.
    fn check_topology(&self, requirement: Option<&TopologyRequirement>) -> Result<(), Status> {
        match requirement {
            Some(r) if !r.requisite.is_empty() && !r.requisite.iter().any(|t| self.serves(t)) => {
                Err(Status::resource_exhausted(format!(
                    "volumes of this plugin live on node {node} ({TOPOLOGY_KEY}={node}), which the requisite \
                     topology excludes",
                    node = self.node_id
                )))
            }
            _ => Ok(()),
        }
    }

    /// The CSI view of `record`.
    fn volume_message(&self, record: &VolumeRecord) -> Volume {
        let mut context = HashMap::from([("backing".to_owned(), record.backing.as_str().to_owned())]);
        if let Some(fs_type) = &record.fs_type {
            context.insert("fs_type".to_owned(), fs_type.clone());
        }
        Volume {
            capacity_bytes: bytes_i64(record.capacity_bytes),
            volume_id: record.id.clone(),
            volume_context: context,
            content_source: record.source.as_ref().map(content_source),
            accessible_topology: vec![self.topology()],
        }
    }

    fn snapshot_message(record: &SnapshotRecord) -> Snapshot {
        Snapshot {
            size_bytes: bytes_i64(record.size_bytes),
            snapshot_id: record.id.clone(),
            source_volume_id: record.source_volume_id.clone(),
            creation_time: Some(timestamp(record.creation_time)),
            ready_to_use: record.ready_to_use,
            group_snapshot_id: String::new(),
        }
    }

    fn create_volume(&self, new: NewVolume) -> Result<Volume, Status> {
        if let Some(existing) = self.store.volumes()?.into_iter().find(|v| v.name == new.name) {
            self.check_same(&existing, &new)?;
            return Ok(self.volume_message(&existing));
        }
        let origin = new.source.as_ref().map(|source| self.origin(source)).transpose()?;
        let source_backing = origin.as_ref().map(|o| o.backing);
        let source_fs = origin.as_ref().and_then(|o| o.fs_type.clone());
        let backing = new.parameters.backing.or(source_backing).unwrap_or(Backing::Directory);
        if source_backing.is_some_and(|b| b != backing) {
            return Err(Status::invalid_argument(format!(
                "the content source is {} data; a {} volume cannot be made from it",
                source_backing.map_or("", Backing::as_str),
                backing.as_str()
            )));
        }
        let fs_type = match backing {
            Backing::Directory if new.parameters.fs_type.is_some() => {
                return Err(Status::invalid_argument(
                    "parameter fs_type: only image volumes (backing=image) have a filesystem of their own",
                ))
            }
            Backing::Directory => None,
            Backing::Image => {
                if let (Some(have), Some(asked)) = (&source_fs, &new.parameters.fs_type) {
                    if have != asked {
                        return Err(Status::invalid_argument(format!(
                            "parameter fs_type: {asked:?} was asked for but the content source holds {have:?}"
                        )));
                    }
                }
                let from_capability = new.accesses.iter().find_map(Access::fs_type).map(str::to_owned);
                Some(source_fs.or(new.parameters.fs_type).or(from_capability).unwrap_or_else(|| DEFAULT_FS_TYPE.into()))
            }
        };
        for access in &new.accesses {
            access.supported_by(backing, fs_type.as_deref()).map_err(Status::invalid_argument)?;
        }
        let capacity = new.range.capacity(backing, origin.as_ref().map_or(0, |o| o.size))?;

        let (id, dir) = self.store.new_volume_dir()?;
        let record = VolumeRecord {
            id: id.clone(),
            name: new.name,
            capacity_bytes: capacity,
            backing,
            fs_type,
            parameters: new.given_parameters,
            source: new.source,
            created: std::time::SystemTime::now(),
        };
        let content = self.store.volume_content(&id, backing);
        let filled = match &origin {
            None => self.fill_empty(&record, &content),
            Some(origin) => self.fill_from(&record, origin, &content),
        };
        if let Err(status) = filled.and_then(|()| self.store.save_volume(&record).map_err(Status::from)) {
            if let Err(e) = self.store.discard(&dir) {
                tracing::warn!(volume = %id, error = %e, "could not remove a volume whose creation failed");
            }
            return Err(status);
        }
        tracing::debug!(volume = %id, name = %record.name, backing = record.backing.as_str(), capacity, "created");
        Ok(self.volume_message(&record))
    }

    /// ALREADY_EXISTS unless `existing` (same name) is what `new` asks for.
    fn check_same(&self, existing: &VolumeRecord, new: &NewVolume) -> Result<(), Status> {
        let mut differences = Vec::new();
        if !new.range.allows(existing.capacity_bytes) {
            differences.push(format!("capacity ({} bytes, outside the requested range)", existing.capacity_bytes));
        }
        if existing.parameters != new.given_parameters {
            differences.push(format!("parameters ({:?})", existing.parameters));
        }
        if existing.source != new.source {
            differences.push("content source".to_owned());
        }
        for access in &new.accesses {
            if let Err(e) = access.supported_by(existing.backing, existing.fs_type.as_deref()) {
                differences.push(format!("capabilities ({e})"));
            }
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(Status::already_exists(format!(
            "volume {} named {:?} exists with a different {}",
            existing.id,
            existing.name,
            differences.join(", ")
        )))
    }

    /// An empty data directory, or a sparse image of the capacity.
    fn fill_empty(&self, record: &VolumeRecord, content: &Path) -> Result<(), Status> {
        let subject = format!("volume {}", record.id);
        match record.backing {
            Backing::Directory => std::fs::create_dir(content).map_err(|e| io_failed(&subject, "creating", content, e)),
            Backing::Image => std::fs::File::create_new(content)
                .and_then(|file| file.set_len(record.capacity_bytes))
                .map_err(|e| io_failed(&subject, "creating the sparse image", content, e)),
        }
    }

    /// What a new volume's data is copied from, or NOT_FOUND.
    fn origin(&self, source: &Source) -> Result<Origin, Status> {
        Ok(match source {
            Source::Snapshot(id) => {
                let snapshot = self
                    .store
                    .snapshot(id)?
                    .ok_or_else(|| Status::not_found(format!("source snapshot {id} does not exist")))?;
                Origin {
                    size: snapshot.size_bytes,
                    backing: snapshot.backing,
                    path: self.store.snapshot_content(id, snapshot.backing),
                    fs_type: snapshot.fs_type,
                    live: false,
                }
            }
            Source::Volume(id) => {
                let volume = self
                    .store
                    .volume(id)?
                    .ok_or_else(|| Status::not_found(format!("source volume {id} does not exist")))?;
                Origin {
                    size: volume.capacity_bytes,
                    backing: volume.backing,
                    path: self.store.volume_content(id, volume.backing),
                    fs_type: volume.fs_type,
                    live: true,
                }
            }
        })
    }

    /// A copy of `origin`'s data; an image is then grown to the new
    /// volume's capacity, its ext filesystem with it.
    fn fill_from(&self, record: &VolumeRecord, origin: &Origin, content: &Path) -> Result<(), Status> {
        let subject = format!("volume {}", record.id);
        host::copy_data(record.backing, &origin.path, content, origin.live).map_err(|e| host_failed(&subject, e))?;
        if record.backing == Backing::Directory {
            return Ok(());
        }
        let file =
            OpenOptions::new().write(true).open(content).map_err(|e| io_failed(&subject, "opening", content, e))?;
        let len = file.metadata().map_err(|e| io_failed(&subject, "reading the size of", content, e))?.len();
        if len >= record.capacity_bytes {
            return Ok(());
        }
        file.set_len(record.capacity_bytes).map_err(|e| io_failed(&subject, "growing", content, e))?;
        drop(file);
        match mount::signature(content).map_err(|e| mount_failed(&record.id, e))? {
            None => Ok(()),
            Some(fs) if fs.starts_with("ext") => mount::grow_offline(content).map_err(|e| mount_failed(&record.id, e)),
            Some(fs) => Err(Status::out_of_range(format!(
                "{subject}: a copy holding {fs} cannot be larger than its source ({len} bytes)"
            ))),
        }
    }

    fn delete_volume(&self, id: &str) -> Result<(), Status> {
        let Some(volume) = self.store.volume(id)? else { return Ok(()) };
        if let Some(usage) = self.in_use(&volume)? {
            return Err(Status::failed_precondition(format!("volume {id} is in use: {usage}")));
        }
        self.store.remove_volume(id)?;
        Ok(())
    }

    fn create_snapshot(&self, name: &str, source_volume_id: &str) -> Result<Snapshot, Status> {
        if let Some(existing) = self.store.snapshots()?.into_iter().find(|s| s.name == name) {
            if existing.source_volume_id != source_volume_id {
                return Err(Status::already_exists(format!(
                    "snapshot {} named {name:?} is of volume {}, not {source_volume_id}",
                    existing.id, existing.source_volume_id
                )));
            }
            return Ok(Self::snapshot_message(&existing));
        }
        let volume = self.volume(source_volume_id)?;
        let (id, dir) = self.store.new_snapshot_dir()?;
        let record = SnapshotRecord {
            id: id.clone(),
            name: name.to_owned(),
            source_volume_id: volume.id.clone(),
            size_bytes: volume.capacity_bytes,
            backing: volume.backing,
            fs_type: volume.fs_type.clone(),
            creation_time: std::time::SystemTime::now(),
            ready_to_use: true,
        };
        let from = self.store.volume_content(&volume.id, volume.backing);
        let to = self.store.snapshot_content(&id, volume.backing);
        let made = host::copy_data(volume.backing, &from, &to, true)
            .map_err(|e| host_failed(&format!("snapshot {id} of volume {}", volume.id), e))
            .and_then(|()| self.store.save_snapshot(&record).map_err(Status::from));
        if let Err(status) = made {
            if let Err(e) = self.store.discard(&dir) {
                tracing::warn!(snapshot = %id, error = %e, "could not remove a snapshot whose creation failed");
            }
            return Err(status);
        }
        Ok(Self::snapshot_message(&record))
    }

    fn expand_volume(
        &self,
        id: &str,
        range: Range,
        access: Option<Access>,
    ) -> Result<ControllerExpandVolumeResponse, Status> {
        let mut volume = self.volume(id)?;
        if let Some(access) = access {
            access
                .supported_by(volume.backing, volume.fs_type.as_deref())
                .map_err(|e| Status::invalid_argument(format!("volume {id}: {e}")))?;
        }
        let wanted = range.capacity(volume.backing, 0)?;
        if wanted > volume.capacity_bytes {
            if volume.backing == Backing::Image {
                let image = self.store.volume_content(id, Backing::Image);
                let subject = format!("volume {id}");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&image)
                    .map_err(|e| io_failed(&subject, "opening", &image, e))?;
                let len = file.metadata().map_err(|e| io_failed(&subject, "reading the size of", &image, e))?.len();
                // Never shrink (a file may be ahead of its record after a crash).
                if len < wanted {
                    file.set_len(wanted).map_err(|e| io_failed(&subject, "growing", &image, e))?;
                }
                host::refresh(&image).map_err(|e| host_failed(&subject, e))?;
            }
            volume.capacity_bytes = wanted;
            self.store.save_volume(&volume)?;
        }
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: bytes_i64(volume.capacity_bytes),
            node_expansion_required: volume.backing == Backing::Image,
        })
    }
}

#[tonic::async_trait]
impl Controller for LocalPlugin {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        tracing::info!(rpc = %"CreateVolume", name = %name, "CSI call");
        let result = self.create(request).await.map(|volume| CreateVolumeResponse { volume: Some(volume) });
        reply("CreateVolume", &name, result)
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        tracing::info!(rpc = %"DeleteVolume", volume = %id, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.delete_volume(&id)).await
        };
        reply("DeleteVolume", &id, result.await.map(|()| DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        tracing::info!(rpc = %"ControllerPublishVolume", volume = %id, "CSI call");
        Err(Status::unimplemented("berth.local volumes are on the node's own disk: there is nothing to attach"))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        tracing::info!(rpc = %"ControllerUnpublishVolume", volume = %id, "CSI call");
        Err(Status::unimplemented("berth.local volumes are on the node's own disk: there is nothing to detach"))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"ValidateVolumeCapabilities", volume = %id, "CSI call");
        reply("ValidateVolumeCapabilities", &id, self.validate(request))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let request = request.into_inner();
        tracing::info!(rpc = %"ListVolumes", starting_token = %request.starting_token, "CSI call");
        let result = self.inner.store.volumes().map_err(Status::from).and_then(|volumes| {
            let (volumes, next_token) = page(volumes, &request.starting_token, request.max_entries)?;
            let entries = volumes
                .iter()
                .map(|v| list_volumes_response::Entry { volume: Some(self.inner.volume_message(v)), status: None })
                .collect();
            Ok(ListVolumesResponse { entries, next_token })
        });
        reply("ListVolumes", "", result)
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        tracing::info!(rpc = %"GetCapacity", "CSI call");
        reply("GetCapacity", "", self.capacity(request.into_inner()))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        tracing::info!(rpc = %"ControllerGetCapabilities", "CSI call");
        Ok(Response::new(crate::answers::controller_capabilities(&[
            rpc::Type::CreateDeleteVolume,
            rpc::Type::ListVolumes,
            rpc::Type::GetCapacity,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::ListSnapshots,
            rpc::Type::CloneVolume,
            rpc::Type::ExpandVolume,
        ])))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        let (name, volume) = (request.name.clone(), request.source_volume_id.clone());
        tracing::info!(rpc = %"CreateSnapshot", volume = %volume, name = %name, "CSI call");
        let result = async {
            require("name", &name)?;
            require("source_volume_id", &volume)?;
            if let Some(key) = request.parameters.keys().min() {
                return Err(Status::invalid_argument(format!("unknown parameter {key:?} (snapshots take none)")));
            }
            let guards = vec![
                self.inner.locks.lock(format!("snapshot-name/{name}")).await,
                self.inner.lock_volume(&volume).await,
            ];
            let (inner, name, volume) = (Arc::clone(&self.inner), name.clone(), volume.clone());
            blocking(guards, move || inner.create_snapshot(&name, &volume)).await
        };
        let result = result.await.map(|snapshot| CreateSnapshotResponse { snapshot: Some(snapshot) });
        reply("CreateSnapshot", &volume, result)
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        tracing::info!(rpc = %"DeleteSnapshot", snapshot = %id, "CSI call");
        let result = async {
            require("snapshot_id", &id)?;
            let guard = self.inner.locks.lock(format!("snapshot/{id}")).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || match inner.store.snapshot(&id)? {
                Some(_) => Ok(inner.store.remove_snapshot(&id)?),
                None => Ok(()),
            })
            .await
        };
        reply("DeleteSnapshot", &id, result.await.map(|()| DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        tracing::info!(
            rpc = %"ListSnapshots",
            snapshot = %request.snapshot_id,
            volume = %request.source_volume_id,
            starting_token = %request.starting_token,
            "CSI call"
        );
        let store = &self.inner.store;
        let snapshots = if request.snapshot_id.is_empty() {
            store.snapshots()
        } else {
            store.snapshot(&request.snapshot_id).map(|s| s.into_iter().collect())
        };
        let result = snapshots.map_err(Status::from).and_then(|snapshots| {
            let snapshots: Vec<_> = snapshots
                .into_iter()
                .filter(|s| request.source_volume_id.is_empty() || s.source_volume_id == request.source_volume_id)
                .collect();
            let (snapshots, next_token) = page(snapshots, &request.starting_token, request.max_entries)?;
            let entries = snapshots
                .iter()
                .map(|s| list_snapshots_response::Entry { snapshot: Some(Inner::snapshot_message(s)) })
                .collect();
            Ok(ListSnapshotsResponse { entries, next_token })
        });
        reply("ListSnapshots", &request.snapshot_id, result)
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        tracing::info!(rpc = %"ControllerExpandVolume", volume = %id, "CSI call");
        let result = async {
            require("volume_id", &id)?;
            let range = request.capacity_range.ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
            let range = Range::of(Some(range))?;
            if range.is_unset() {
                return Err(Status::invalid_argument("capacity_range needs required_bytes or limit_bytes"));
            }
            let access =
                request.volume_capability.as_ref().map(Access::parse).transpose().map_err(Status::invalid_argument)?;
            let guard = self.inner.lock_volume(&id).await;
            let (inner, id) = (Arc::clone(&self.inner), id.clone());
            blocking(vec![guard], move || inner.expand_volume(&id, range, access)).await
        };
        reply("ControllerExpandVolume", &id, result.await)
    }
}

impl LocalPlugin {
    async fn create(&self, request: CreateVolumeRequest) -> Result<Volume, Status> {
        require("name", &request.name)?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let accesses = request
            .volume_capabilities
            .iter()
            .map(Access::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        if !request.mutable_parameters.is_empty() {
            return Err(Status::invalid_argument("mutable_parameters are not supported (no MODIFY_VOLUME)"));
        }
        let parameters = Parameters::parse(&request.parameters)?;
        let range = Range::of(request.capacity_range)?;
        self.inner.check_topology(request.accessibility_requirements.as_ref())?;
        let source = match request.volume_content_source.map(|s| s.r#type) {
            None => None,
            Some(None) => return Err(Status::invalid_argument("volume_content_source names no snapshot or volume")),
            Some(Some(SourceType::Snapshot(s))) => {
                require("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
                Some(Source::Snapshot(s.snapshot_id))
            }
            Some(Some(SourceType::Volume(v))) => {
                require("volume_content_source.volume.volume_id", &v.volume_id)?;
                Some(Source::Volume(v.volume_id))
            }
        };
        let mut guards = vec![self.inner.locks.lock(format!("volume-name/{}", request.name)).await];
        match &source {
            Some(Source::Snapshot(id)) => guards.push(self.inner.locks.lock(format!("snapshot/{id}")).await),
            Some(Source::Volume(id)) => guards.push(self.inner.lock_volume(id).await),
            None => {}
        }
        let new = NewVolume {
            name: request.name,
            accesses,
            parameters,
            given_parameters: request.parameters.into_iter().collect(),
            range,
            source,
        };
        let inner = Arc::clone(&self.inner);
        blocking(guards, move || inner.create_volume(new)).await
    }

    fn validate(
        &self,
        request: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
        let id = &request.volume_id;
        require("volume_id", id)?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let volume = self.inner.volume(id)?;
        let mut problems: Vec<String> = request
            .volume_capabilities
            .iter()
            .filter_map(|c| {
                Access::parse(c).and_then(|a| a.supported_by(volume.backing, volume.fs_type.as_deref())).err()
            })
            .collect();
        let parameters: BTreeMap<_, _> = request.parameters.clone().into_iter().collect();
        if !parameters.is_empty() && parameters != volume.parameters {
            problems.push(format!("the volume was created with parameters {:?}", volume.parameters));
        }
        if !request.mutable_parameters.is_empty() {
            problems.push("mutable parameters are not supported".to_owned());
        }
        if !problems.is_empty() {
            return Ok(ValidateVolumeCapabilitiesResponse { confirmed: None, message: problems.join("; ") });
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: request.volume_context,
                volume_capabilities: request.volume_capabilities,
                parameters: request.parameters,
                mutable_parameters: HashMap::new(),
            }),
            message: String::new(),
        })
    }

    /// Free bytes of the state directory's filesystem; 0 for a topology
    /// without this node or capabilities the parameters' backing lacks.
    fn capacity(&self, request: GetCapacityRequest) -> Result<GetCapacityResponse, Status> {
        let parameters = Parameters::parse(&request.parameters)?;
        let accesses = request
            .volume_capabilities
            .iter()
            .map(Access::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let backing = parameters.backing.unwrap_or(Backing::Directory);
        let fs_type = (backing == Backing::Image).then(|| parameters.fs_type.as_deref().unwrap_or(DEFAULT_FS_TYPE));
        let fits = request.accessible_topology.as_ref().is_none_or(|t| self.inner.serves(t))
            && accesses.iter().all(|a| a.supported_by(backing, fs_type).is_ok());
        let available = if fits {
            let root = self.inner.store.root();
            mount::usage(root).map_err(|e| Status::internal(format!("state directory: {e}")))?.available_bytes
        } else {
            0
        };
        Ok(GetCapacityResponse {
            available_capacity: bytes_i64(available),
            maximum_volume_size: None,
            minimum_volume_size: None,
        })
    }
}
