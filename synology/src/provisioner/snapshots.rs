//! Snapshots of volumes: taken with democratic-csi's ids
//! (`/lun/<lun uuid>/<snapshot uuid>`) and lookup key (the description),
//! unique across the provisioner's volumes, refused with the setting to
//! change for a LUN DSM cannot snapshot.

use csi::v1::{CreateSnapshotRequest, ListSnapshotsRequest, Snapshot};
use tonic::Status;

use super::naming::{parse_snapshot_id, snapshot_id};
use super::volumes::{being_deleted, is_vm_disk};
use super::{bytes_i64, dsm_status, Inner};
use crate::dsm::{Lun, SnapshotCreate};

/// Who DSM records as having taken a snapshot.
const TAKEN_BY: &str = "berth";

pub(super) fn snapshot_message(volume_id: &str, snapshot: &crate::dsm::Snapshot) -> Snapshot {
    Snapshot {
        size_bytes: bytes_i64(snapshot.total_size),
        snapshot_id: snapshot_id(&snapshot.parent_uuid, &snapshot.uuid),
        source_volume_id: volume_id.to_owned(),
        creation_time: Some(prost_types::Timestamp {
            seconds: i64::try_from(snapshot.create_time).unwrap_or(0),
            nanos: 0,
        }),
        ready_to_use: snapshot.status.is_empty() || snapshot.status == "Healthy",
        group_snapshot_id: String::new(),
    }
}

impl Inner {
    pub(super) async fn snapshots_of(&self, lun: &Lun) -> Result<Vec<crate::dsm::Snapshot>, Status> {
        self.dsm
            .list_snapshots(&lun.uuid)
            .await
            .map_err(|e| dsm_status(&format!("listing snapshots of {}", lun.name), e))
    }

    /// Takes snapshot `name` of a volume's LUN. Names are unique across the
    /// provisioner's volumes (CSI's rule), so berth's other LUNs are looked
    /// at too, never other tools' LUNs. A LUN DSM cannot snapshot is
    /// refused naming the setting.
    pub(super) async fn create_snapshot(&self, request: CreateSnapshotRequest) -> Result<Snapshot, Status> {
        let (source, name) = (&request.source_volume_id, &request.name);
        if source.is_empty() || name.is_empty() {
            return Err(Status::invalid_argument("source_volume_id and name are required"));
        }
        let _serial = self.mutations.lock().await;
        let lun = self
            .volume_lun(source)
            .await?
            .ok_or_else(|| Status::not_found(format!("volume {source} does not exist")))?;
        if let Some(existing) = self.snapshots_of(&lun).await?.into_iter().find(|s| &s.description == name) {
            return Ok(snapshot_message(source, &existing));
        }
        for other in self.our_luns().await?.iter().filter(|l| l.uuid != lun.uuid) {
            if self.snapshots_of(other).await?.iter().any(|s| &s.description == name) {
                return Err(Status::already_exists(format!(
                    "snapshot {name} exists for another volume ({})",
                    self.volume_id_of(&other.name)
                )));
            }
        }
        let snapshottable =
            lun.dev_attribs.iter().find(|a| a.dev_attrib == "can_snapshot").is_none_or(|a| a.enable == 1);
        if !snapshottable {
            return Err(Status::failed_precondition(format!(
                "LUN {} of volume {source} cannot be snapshotted: its can_snapshot device attribute is off (DSM sets \
                 it when the LUN is made: add {{dev_attrib: can_snapshot, enable: 1}} to iscsi.lunTemplate.dev_attribs \
                 for new volumes, and use a thin LUN type such as BLUN)",
                lun.name
            )));
        }
        let create = SnapshotCreate {
            name: Some(name.clone()),
            description: name.clone(),
            taken_by: TAKEN_BY.to_owned(),
            is_locked: self.settings.snapshot_locked,
            is_app_consistent: self.settings.snapshot_app_consistent,
        };
        let uuid = self
            .dsm
            .take_snapshot(&lun.uuid, &create)
            .await
            .map_err(|e| dsm_status(&format!("taking snapshot {name} of {source}"), e))?;
        let taken = self
            .snapshots_of(&lun)
            .await?
            .into_iter()
            .find(|s| s.uuid == uuid)
            .ok_or_else(|| Status::internal(format!("snapshot {name} vanished after creation")))?;
        Ok(snapshot_message(source, &taken))
    }

    pub(super) async fn list_snapshots(&self, request: &ListSnapshotsRequest) -> Result<Vec<Snapshot>, Status> {
        let luns = if !request.snapshot_id.is_empty() {
            let Some((lun_uuid, _)) = parse_snapshot_id(&request.snapshot_id) else { return Ok(Vec::new()) };
            self.lun(lun_uuid).await?.into_iter().collect()
        } else if !request.source_volume_id.is_empty() {
            self.volume_lun(&request.source_volume_id).await?.into_iter().collect()
        } else {
            self.our_luns().await?
        };
        let mut all = Vec::new();
        for lun in luns.iter().filter(|l| !is_vm_disk(l) && !being_deleted(l)) {
            for snapshot in self.snapshots_of(lun).await? {
                let message = snapshot_message(&self.volume_id_of(&lun.name), &snapshot);
                if request.snapshot_id.is_empty() || message.snapshot_id == request.snapshot_id {
                    all.push(message);
                }
            }
        }
        Ok(all)
    }
}
