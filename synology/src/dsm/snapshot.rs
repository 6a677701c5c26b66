//! Snapshot operations of `SYNO.Core.ISCSI.LUN`: take, list and delete, and
//! the [`Snapshot`] shape DSM answers with.

use serde::Deserialize;
use tracing::debug;

use super::client::DsmClient;
use super::error::DsmError;
use super::params::Params;

const LUN_API: &str = "SYNO.Core.ISCSI.LUN";
/// Code for a snapshot DSM does not know.
const NO_SUCH_SNAPSHOT: i64 = 18990532;

/// What to record with a new snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotCreate {
    /// Snapshot name; DSM makes one up (`SnapShot-N`) when `None`.
    pub name: Option<String>,
    /// Description (democratic-csi keeps its lookup key here).
    pub description: String,
    /// Who took it, shown in DSM's UI.
    pub taken_by: String,
    /// Protect it from DSM's retention policy.
    pub is_locked: bool,
    /// Ask for an application-consistent snapshot (needs Synology's host agent).
    pub is_app_consistent: bool,
}

/// A snapshot as `list_snapshot` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    /// DSM's identifier.
    pub uuid: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// uuid of the LUN it was taken of.
    pub parent_uuid: String,
    /// The LUN's size when taken, in bytes.
    #[serde(deserialize_with = "super::lenient::u64")]
    pub total_size: u64,
    /// Creation time, seconds since the epoch.
    #[serde(default, deserialize_with = "super::lenient::u64")]
    pub create_time: u64,
    /// `Healthy` when usable.
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct Taken {
    snapshot_uuid: String,
}

#[derive(Deserialize)]
struct SnapshotList {
    #[serde(default)]
    snapshots: Vec<Snapshot>,
}

impl DsmClient {
    /// Takes a snapshot of a LUN and returns the snapshot's uuid.
    pub async fn take_snapshot(&self, src_lun_uuid: &str, snapshot: &SnapshotCreate) -> Result<String, DsmError> {
        let mut params = Params::new()
            .string("src_lun_uuid", src_lun_uuid)
            .string("description", &snapshot.description)
            .string("taken_by", &snapshot.taken_by)
            .boolean("is_locked", snapshot.is_locked)
            .boolean("is_app_consistent", snapshot.is_app_consistent);
        if let Some(name) = &snapshot.name {
            params = params.string("snapshot_name", name);
        }
        let taken: Taken = self.call_as(LUN_API, "take_snapshot", params).await?;
        debug!(src_lun_uuid, snapshot_uuid = %taken.snapshot_uuid, "snapshot taken");
        Ok(taken.snapshot_uuid)
    }

    /// The snapshots of one LUN.
    pub async fn list_snapshots(&self, src_lun_uuid: &str) -> Result<Vec<Snapshot>, DsmError> {
        let params = Params::new().string("src_lun_uuid", src_lun_uuid);
        Ok(self.call_as::<SnapshotList>(LUN_API, "list_snapshot", params).await?.snapshots)
    }

    /// Deletes a snapshot; one that is already gone counts as deleted.
    pub async fn delete_snapshot(&self, snapshot_uuid: &str) -> Result<(), DsmError> {
        match self.call(LUN_API, "delete_snapshot", Params::new().string("snapshot_uuid", snapshot_uuid)).await {
            Ok(_) => {
                debug!(snapshot_uuid, "snapshot deleted");
                Ok(())
            }
            Err(DsmError::Api { code: NO_SUCH_SNAPSHOT, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
