//! The Controller service: LUN + target + mapping per volume, snapshots,
//! expansion, capacity, validation and listing.
//!
//! CreateVolume runs three steps, each preceded by a look-up so that a
//! retry adopts what an earlier (crashed or timed-out) call made:
//! 1. the LUN named after the volume (created, cloned from a snapshot, or
//!    adopted if its size fits the capacity range; ALREADY_EXISTS if not);
//! 2. the target of the same name and IQN `baseiqn` + name (adopted if it
//!    maps nothing or only this LUN; ALREADY_EXISTS otherwise);
//! 3. the mapping of the LUN on the target (the LUN number is read back).
//!
//! The volume context carries what the node needs, as democratic-csi
//! names it: `node_attach_driver=iscsi`, `iqn`, `portal`, `portals`
//! (comma-separated), `interface`, `lun` (the LUN number on the target),
//! `auth_type` (`none`, `chap`, `mutual_chap`) and `provisioner_driver`.
//! CHAP secrets never go into the context: the node gets them as secrets.
//!
//! Sizes: DSM creates exactly the size asked, so Berth asks for the
//! required bytes rounded up to whole MiB (1 GiB when no range is given),
//! within `limit_bytes`.

use csi::v1::controller_server::Controller;
use csi::v1::controller_service_capability::rpc;
use csi::v1::validate_volume_capabilities_response::Confirmed;
use csi::v1::volume_capability::{access_mode, AccessType};
use csi::v1::volume_content_source::Type as SourceType;
use csi::v1::{
    list_snapshots_response, list_volumes_response, CapacityRange, ControllerExpandVolumeRequest,
    ControllerExpandVolumeResponse, ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    CreateSnapshotRequest, CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
    DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume, VolumeCapability,
    VolumeContentSource,
};
use tonic::{Code, Request, Response, Status};

use super::naming::{parse_snapshot_id, target_iqn};
use super::volumes::{being_deleted, is_vm_disk, BERTH_DESCRIPTION};
use super::{bytes_i64, dsm_status, reply, Inner, Provisioner};
use crate::dsm::{DsmError, Lun, LunCreate, Target, TargetCreate};

const MIB: u64 = 1 << 20;
const DEFAULT_CAPACITY: u64 = 1 << 30;

/// A checked capacity range; 0 means unset.
#[derive(Debug, Clone, Copy)]
struct Range {
    required: u64,
    limit: u64,
}

impl Range {
    fn of(range: Option<&CapacityRange>) -> Result<Self, Status> {
        let (required, limit) = csi::answers::capacity_bounds(range)?;
        Ok(Self { required, limit })
    }

    /// The size to ask DSM for: required rounded up to MiB, else 1 GiB, at most the limit.
    fn size(self) -> Result<u64, Status> {
        let wanted = if self.required > 0 { self.required.div_ceil(MIB) * MIB } else { DEFAULT_CAPACITY };
        match self.limit {
            0 => Ok(wanted),
            limit if wanted <= limit => Ok(wanted),
            limit if self.required == 0 => Ok(limit),
            limit => Err(Status::out_of_range(format!(
                "required_bytes {} rounded up to whole MiB ({wanted}) exceeds limit_bytes {limit}",
                self.required
            ))),
        }
    }

    fn admits(self, size: u64) -> bool {
        size >= self.required && (self.limit == 0 || size <= self.limit)
    }
}

/// INVALID_ARGUMENT unless every capability is one a single-node iSCSI
/// LUN serves: mount or block, single-node access modes.
fn check_capabilities(capabilities: &[VolumeCapability]) -> Result<(), String> {
    if capabilities.is_empty() {
        return Err("volume_capabilities is required".into());
    }
    for capability in capabilities {
        match &capability.access_type {
            None => return Err("a volume capability needs an access type (mount or block)".into()),
            Some(AccessType::Mount(m)) if !m.volume_mount_group.is_empty() => {
                return Err("volume_mount_group is not supported".into())
            }
            Some(_) => {}
        }
        let mode = capability.access_mode.map(|m| m.mode()).unwrap_or(access_mode::Mode::Unknown);
        match mode {
            access_mode::Mode::SingleNodeWriter
            | access_mode::Mode::SingleNodeReaderOnly
            | access_mode::Mode::SingleNodeSingleWriter
            | access_mode::Mode::SingleNodeMultiWriter => {}
            access_mode::Mode::Unknown => return Err("a volume capability needs an access mode".into()),
            other => {
                return Err(format!(
                    "access mode {} is not supported: an iSCSI LUN holds a single-node filesystem",
                    other.as_str_name()
                ))
            }
        }
    }
    Ok(())
}

/// One page of `items` from offset `token`, at most `max` (0: all).
fn page<T>(items: Vec<T>, token: &str, max: i32) -> Result<(Vec<T>, String), Status> {
    let max = usize::try_from(max).map_err(|_| Status::invalid_argument("max_entries must not be negative"))?;
    let start = match token {
        "" => 0,
        token => token
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| Status::aborted(format!("invalid starting_token {token:?}")))?,
    };
    let end = if max == 0 { items.len() } else { items.len().min(start + max) };
    let next = if end < items.len() { end.to_string() } else { String::new() };
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

impl Inner {
    /// The volume's LUN: adopted, cloned from a snapshot or a volume, or
    /// created.
    async fn ensure_lun(&self, name: &str, range: Range, source: Option<&SourceType>) -> Result<Lun, Status> {
        if let Some(lun) = self.lun(name).await? {
            if being_deleted(&lun) {
                return Err(Status::unavailable(format!(
                    "LUN {name} is still being deleted by DSM; create the volume again in a moment"
                )));
            }
            let mut lun = self.unlocked(lun).await?;
            if source.is_some() && lun.size < range.required {
                // A clone whose growth an interrupted call did not get to.
                let size = range.size()?;
                self.dsm
                    .expand_lun(&lun.uuid, size)
                    .await
                    .map_err(|e| dsm_status(&format!("growing clone {name}"), e))?;
                lun.size = size;
            }
            if !range.admits(lun.size) {
                return Err(Status::already_exists(format!(
                    "volume {name} already exists with {} bytes, outside the requested range (required {}, limit {})",
                    lun.size, range.required, range.limit
                )));
            }
            return Ok(lun);
        }
        let size = range.size()?;
        let created = match source {
            Some(SourceType::Snapshot(source)) => self.clone_from_snapshot(name, &source.snapshot_id, range).await,
            Some(SourceType::Volume(source)) => self.clone_from_volume(name, &source.volume_id, range).await,
            None => {
                let s = &self.settings;
                let create = LunCreate {
                    name: name.to_owned(),
                    location: s.location.clone(),
                    size,
                    lun_type: s.lun_type,
                    description: Some(format!("{BERTH_DESCRIPTION}{name}")),
                    dev_attribs: s.dev_attribs.clone(),
                };
                match self.dsm.create_lun(&create).await {
                    Ok(_) => Ok(()),
                    // Created by a racing or interrupted call: adopt it below.
                    Err(DsmError::Api { code: 18990538, .. }) => Ok(()),
                    Err(e) => Err(dsm_status(&format!("creating LUN {name} on {}", s.location), e)),
                }
            }
        };
        created?;
        let lun =
            self.lun(name).await?.ok_or_else(|| Status::internal(format!("LUN {name} vanished after creation")))?;
        let lun = self.unlocked(lun).await?;
        if !range.admits(lun.size) {
            return Err(Status::already_exists(format!("volume {name} exists with {} bytes", lun.size)));
        }
        Ok(lun)
    }

    async fn clone_from_volume(&self, name: &str, id: &str, range: Range) -> Result<(), Status> {
        let source = self
            .volume_lun(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("source volume {id} does not exist")))?;
        if range.limit > 0 && source.size > range.limit {
            return Err(Status::out_of_range(format!(
                "source volume {id} holds {} bytes, more than limit_bytes {}",
                source.size, range.limit
            )));
        }
        match self.dsm.clone_lun(&source.uuid, name, &self.settings.location).await {
            Ok(_) | Err(DsmError::Api { code: 18990538, .. }) => {}
            Err(e) => return Err(dsm_status(&format!("cloning volume {id} into LUN {name}"), e)),
        }
        self.grow_clone(name, source.size, range).await
    }

    /// Grows a fresh clone of `source_size` bytes to the requested size,
    /// once DSM has finished copying it.
    async fn grow_clone(&self, name: &str, source_size: u64, range: Range) -> Result<(), Status> {
        if range.required > source_size {
            let lun = self.lun(name).await?.ok_or_else(|| Status::internal(format!("clone {name} vanished")))?;
            let lun = self.unlocked(lun).await?;
            self.dsm
                .expand_lun(&lun.uuid, range.size()?)
                .await
                .map_err(|e| dsm_status(&format!("growing clone {name}"), e))?;
        }
        Ok(())
    }

    async fn clone_from_snapshot(&self, name: &str, id: &str, range: Range) -> Result<(), Status> {
        let (lun_uuid, snapshot_uuid) =
            parse_snapshot_id(id).ok_or_else(|| Status::not_found(format!("snapshot {id} does not exist")))?;
        let snapshots = match self.dsm.list_snapshots(lun_uuid).await {
            Ok(list) => list,
            Err(e) if e.code().is_some_and(|c| matches!(c, 18990531 | 18990505)) => Vec::new(),
            Err(e) => return Err(dsm_status(&format!("listing the snapshots of LUN {lun_uuid}"), e)),
        };
        let snapshot = snapshots
            .into_iter()
            .find(|s| s.uuid == snapshot_uuid)
            .ok_or_else(|| Status::not_found(format!("snapshot {id} does not exist")))?;
        if range.limit > 0 && snapshot.total_size > range.limit {
            return Err(Status::out_of_range(format!(
                "snapshot {id} holds {} bytes, more than limit_bytes {}",
                snapshot.total_size, range.limit
            )));
        }
        match self.dsm.clone_snapshot(lun_uuid, snapshot_uuid, name).await {
            Ok(_) | Err(DsmError::Api { code: 18990538, .. }) => {}
            Err(e) => return Err(dsm_status(&format!("cloning snapshot {id} into LUN {name}"), e)),
        }
        self.grow_clone(name, snapshot.total_size, range).await
    }

    /// The target named `name` with IQN `iqn`, if any; ALREADY_EXISTS when
    /// only one of the two matches.
    async fn find_target(&self, name: &str, iqn: &str) -> Result<Option<Target>, Status> {
        let targets = self.dsm.list_targets().await.map_err(|e| dsm_status("listing targets", e))?;
        match targets.into_iter().find(|t| t.name == name || t.iqn == iqn) {
            Some(t) if t.name != name || t.iqn != iqn => Err(Status::already_exists(format!(
                "target {:?} (IQN {}) is in the way of volume {name} (IQN {iqn})",
                t.name, t.iqn
            ))),
            found => Ok(found),
        }
    }

    /// The volume's target (`found`, looked up before the LUN step, or
    /// created) with the LUN mapped; returns the LUN number on it.
    async fn ensure_target(&self, name: &str, lun: &Lun, found: Option<Target>) -> Result<(Target, u32), Status> {
        let iqn = target_iqn(&self.settings.base_iqn, name)?;
        let target = match found {
            Some(target) => target,
            None => {
                let create = TargetCreate {
                    name: name.to_owned(),
                    iqn: iqn.clone(),
                    max_sessions: self.settings.max_sessions,
                    auth: self.settings.auth.clone(),
                };
                match self.dsm.create_target(&create).await {
                    Ok(_) | Err(DsmError::Api { code: 18990744, .. }) => {}
                    Err(e) => return Err(dsm_status(&format!("creating target {iqn}"), e)),
                }
                self.find_target(name, iqn.as_str())
                    .await?
                    .ok_or_else(|| Status::internal(format!("target {iqn} vanished after creation")))?
            }
        };
        if let Some(other) = target.mapped_luns.iter().find(|m| m.lun_uuid != lun.uuid) {
            return Err(Status::already_exists(format!(
                "target {iqn} of volume {name} maps another LUN ({})",
                other.lun_uuid
            )));
        }
        if let Some(mapped) = target.mapped_luns.iter().find(|m| m.lun_uuid == lun.uuid) {
            let index = mapped.mapping_index;
            return Ok((target, index));
        }
        self.dsm
            .map_lun_to_target(&lun.uuid, target.target_id)
            .await
            .map_err(|e| dsm_status(&format!("mapping LUN {name} to target {iqn}"), e))?;
        let target = self
            .dsm
            .get_target(target.target_id)
            .await
            .map_err(|e| dsm_status(&format!("reading target {iqn}"), e))?
            .ok_or_else(|| Status::internal(format!("target {iqn} vanished after mapping")))?;
        let index = target
            .mapped_luns
            .iter()
            .find(|m| m.lun_uuid == lun.uuid)
            .map(|m| m.mapping_index)
            .ok_or_else(|| Status::internal(format!("LUN {name} not mapped on target {iqn} after mapping")))?;
        Ok((target, index))
    }

    async fn create_volume(&self, request: CreateVolumeRequest) -> Result<Volume, Status> {
        let s = &self.settings;
        let name = self.lun_name_of(&request.name)?;
        check_capabilities(&request.volume_capabilities).map_err(Status::invalid_argument)?;
        let range = Range::of(request.capacity_range.as_ref())?;
        let source = request.volume_content_source.as_ref().and_then(|c| c.r#type.as_ref());
        let _serial = self.mutations.lock().await;
        // A target in the way is refused before anything is made.
        let iqn = target_iqn(&s.base_iqn, &name)?;
        let found = self.find_target(&name, iqn.as_str()).await?;
        let lun = self.ensure_lun(&name, range, source).await?;
        let (target, lun_number) = match self.ensure_target(&name, &lun, found).await {
            Ok(exposed) => exposed,
            Err(status) if status.code() == Code::ResourceExhausted => {
                self.remove_unexposed_lun(lun).await;
                return Err(status);
            }
            Err(status) => return Err(status),
        };
        tracing::info!(volume = %name, lun = %lun.uuid, iqn = %target.iqn, lun_number, "volume ready");
        Ok(Volume {
            capacity_bytes: bytes_i64(lun.size),
            volume_id: request.name,
            volume_context: self.context(&target, lun_number),
            content_source: source.map(|s| VolumeContentSource { r#type: Some(s.clone()) }),
            accessible_topology: Vec::new(),
        })
    }

    /// Removes the LUN of a volume DSM will not expose (no room for its
    /// target): the CO never deletes a volume it did not get, so the LUN
    /// would be orphaned. Best effort; a failure is logged.
    async fn remove_unexposed_lun(&self, lun: Lun) {
        let name = lun.name.clone();
        let removed = match self.unlocked(lun).await {
            Ok(lun) => self.dsm.delete_lun(&lun.uuid).await.map_err(|e| dsm_status(&format!("deleting LUN {name}"), e)),
            Err(status) => Err(status),
        };
        match removed {
            Ok(()) => tracing::info!(volume = %name, "LUN of a volume DSM could not expose removed"),
            Err(status) => {
                tracing::warn!(volume = %name, error = status.message(), "LUN of a volume DSM could not expose left")
            }
        }
    }

    /// Deletes volume `id`: its target (found by name, so a changed
    /// baseiqn leaves no orphan), then its LUN, waiting out DSM's
    /// asynchronous removal. A VM disk, or a LUN another target maps (a
    /// LUN the volume does not own alone), is refused and left as it is.
    async fn delete_volume(&self, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let _serial = self.mutations.lock().await;
        let lun = self.volume_lun(id).await?;
        let name = match &lun {
            Some(lun) => lun.name.clone(),
            None => self.lun_name_of(id)?,
        };
        if let Some(lun) = lun.as_ref().filter(|l| is_vm_disk(l)) {
            return Err(Status::failed_precondition(format!(
                "LUN {} of volume {id} is a {} (a Virtual Machine Manager disk); not deleting it",
                lun.name, lun.type_str
            )));
        }
        let targets = self.dsm.list_targets().await.map_err(|e| dsm_status("listing targets", e))?;
        if let Some(lun) = &lun {
            if let Some(foreign) =
                targets.iter().find(|t| t.name != name && t.mapped_luns.iter().any(|m| m.lun_uuid == lun.uuid))
            {
                return Err(Status::failed_precondition(format!(
                    "LUN {name} of volume {id} is also mapped to target {} ({}), which is not the volume's; not \
                     deleting it",
                    foreign.name, foreign.iqn
                )));
            }
        }
        for target in targets.iter().filter(|t| t.name == name) {
            if let Some(other) = target.mapped_luns.iter().find(|m| lun.as_ref().is_none_or(|l| l.uuid != m.lun_uuid)) {
                return Err(Status::failed_precondition(format!(
                    "target {} of volume {id} maps LUN {} that is not the volume's; not deleting it",
                    target.iqn, other.lun_uuid
                )));
            }
            self.dsm
                .delete_target(target.target_id)
                .await
                .map_err(|e| dsm_status(&format!("deleting target {}", target.iqn), e))?;
        }
        if let Some(lun) = lun {
            // A LUN still copying a clone cannot be deleted yet.
            let lun = self.unlocked(lun).await?;
            self.dsm.delete_lun(&lun.uuid).await.map_err(|e| dsm_status(&format!("deleting LUN {name}"), e))?;
        }
        tracing::info!(volume = id, "volume deleted");
        Ok(())
    }

    async fn expand(&self, request: ControllerExpandVolumeRequest) -> Result<ControllerExpandVolumeResponse, Status> {
        let id = &request.volume_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let range = Range::of(request.capacity_range.as_ref())?;
        if range.required == 0 && range.limit == 0 {
            return Err(Status::invalid_argument("capacity_range is required"));
        }
        let _serial = self.mutations.lock().await;
        let lun = self.volume_lun(id).await?.ok_or_else(|| Status::not_found(format!("volume {id} does not exist")))?;
        let lun = self.unlocked(lun).await?;
        let size = if lun.size >= range.required { lun.size } else { range.size()? };
        if range.limit > 0 && size > range.limit {
            return Err(Status::out_of_range(format!(
                "volume {id} is {} bytes, over limit_bytes {}",
                lun.size, range.limit
            )));
        }
        if size > lun.size {
            self.dsm
                .expand_lun(&lun.uuid, size)
                .await
                .map_err(|e| dsm_status(&format!("growing LUN {}", lun.name), e))?;
        }
        Ok(ControllerExpandVolumeResponse { capacity_bytes: bytes_i64(size), node_expansion_required: true })
    }
}

#[tonic::async_trait]
impl Controller for Provisioner {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        let result = self.inner.create_volume(request).await.map(|v| CreateVolumeResponse { volume: Some(v) });
        reply("CreateVolume", &name, result)
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        reply("DeleteVolume", &id, self.inner.delete_volume(&id).await.map(|()| DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        let result = async {
            if id.is_empty() {
                return Err(Status::invalid_argument("volume_id is required"));
            }
            if request.volume_capabilities.is_empty() {
                return Err(Status::invalid_argument("volume_capabilities is required"));
            }
            self.inner
                .volume_lun(&id)
                .await?
                .ok_or_else(|| Status::not_found(format!("volume {id} does not exist")))?;
            Ok(match check_capabilities(&request.volume_capabilities) {
                Ok(()) => ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(Confirmed {
                        volume_context: request.volume_context,
                        volume_capabilities: request.volume_capabilities,
                        parameters: request.parameters,
                        mutable_parameters: request.mutable_parameters,
                    }),
                    message: String::new(),
                },
                Err(message) => ValidateVolumeCapabilitiesResponse { confirmed: None, message },
            })
        }
        .await;
        reply("ValidateVolumeCapabilities", &id, result)
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let volumes = self.inner.list_volumes().await?;
            let (volumes, next_token) = page(volumes, &request.starting_token, request.max_entries)?;
            let entries =
                volumes.into_iter().map(|v| list_volumes_response::Entry { volume: Some(v), status: None }).collect();
            Ok(ListVolumesResponse { entries, next_token })
        }
        .await;
        reply("ListVolumes", "", result)
    }

    async fn get_capacity(&self, _: Request<GetCapacityRequest>) -> Result<Response<GetCapacityResponse>, Status> {
        let location = &self.inner.settings.location;
        let result = self
            .inner
            .dsm
            .volume_capacity(location)
            .await
            .map(|c| GetCapacityResponse {
                available_capacity: bytes_i64(c.free),
                maximum_volume_size: None,
                minimum_volume_size: None,
            })
            .map_err(|e| dsm_status(&format!("reading the capacity of {location}"), e));
        reply("GetCapacity", location, result)
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::answers::controller_capabilities(&[
            rpc::Type::CreateDeleteVolume,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::CloneVolume,
            rpc::Type::ListSnapshots,
            rpc::Type::ListVolumes,
            rpc::Type::GetCapacity,
            rpc::Type::ExpandVolume,
        ])))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        let result = self.inner.create_snapshot(request).await.map(|s| CreateSnapshotResponse { snapshot: Some(s) });
        reply("CreateSnapshot", &name, result)
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        let result = async {
            if id.is_empty() {
                return Err(Status::invalid_argument("snapshot_id is required"));
            }
            // A malformed id names no snapshot of ours: nothing to delete.
            let Some((_, snapshot_uuid)) = parse_snapshot_id(&id) else { return Ok(DeleteSnapshotResponse {}) };
            let _serial = self.inner.mutations.lock().await;
            self.inner
                .dsm
                .delete_snapshot(snapshot_uuid)
                .await
                .map_err(|e| dsm_status(&format!("deleting snapshot {id}"), e))?;
            Ok(DeleteSnapshotResponse {})
        }
        .await;
        reply("DeleteSnapshot", &id, result)
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let snapshots = self.inner.list_snapshots(&request).await?;
            let (snapshots, next_token) = page(snapshots, &request.starting_token, request.max_entries)?;
            let entries = snapshots.into_iter().map(|s| list_snapshots_response::Entry { snapshot: Some(s) }).collect();
            Ok(ListSnapshotsResponse { entries, next_token })
        }
        .await;
        reply("ListSnapshots", &request.snapshot_id, result)
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.clone();
        reply("ControllerExpandVolume", &id, self.inner.expand(request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(access: AccessType, mode: access_mode::Mode) -> VolumeCapability {
        VolumeCapability { access_type: Some(access), access_mode: Some(AccessMode { mode: mode as i32 }) }
    }

    #[test]
    fn sizes_round_to_mib_within_the_limit() {
        let range = |required, limit| Range::of(Some(&CapacityRange { required_bytes: required, limit_bytes: limit }));
        assert_eq!(range(0, 0).unwrap().size().unwrap(), DEFAULT_CAPACITY);
        assert_eq!(range(1, 0).unwrap().size().unwrap(), MIB);
        assert_eq!(range(3 << 30, 5 << 30).unwrap().size().unwrap(), 3 << 30);
        assert_eq!(range(0, 512 << 20).unwrap().size().unwrap(), 512 << 20);
        assert_eq!(range(MIB as i64 + 1, MIB as i64 + 2).unwrap().size().unwrap_err().code(), tonic::Code::OutOfRange);
        assert_eq!(range(2, 1).unwrap_err().code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn single_node_modes_only() {
        let mount = AccessType::Mount(MountVolume::default());
        assert!(check_capabilities(&[cap(mount.clone(), access_mode::Mode::SingleNodeWriter)]).is_ok());
        assert!(check_capabilities(&[cap(AccessType::Block(BlockVolume {}), access_mode::Mode::SingleNodeReaderOnly)])
            .is_ok());
        let err = check_capabilities(&[cap(mount, access_mode::Mode::MultiNodeMultiWriter)]).unwrap_err();
        assert!(err.contains("MULTI_NODE_MULTI_WRITER"), "{err}");
        assert!(check_capabilities(&[]).is_err());
    }
}
