//! LUN operations of `SYNO.Core.ISCSI.LUN`: create, get, list, expand,
//! delete (waiting out DSM's asynchronous removal), map to targets and clone
//! from a snapshot; plus the [`Lun`] shape DSM answers with.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::{sleep, Instant};
use tracing::debug;

use super::client::DsmClient;
use super::codes;
use super::error::DsmError;
use super::params::Params;

const LUN_API: &str = "SYNO.Core.ISCSI.LUN";

/// The LUN types `create` takes. BLUN and BLUN_THICK live on btrfs volumes;
/// THIN, ADV and FILE on ext4 volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LunType {
    /// Thin block LUN on btrfs.
    Blun,
    /// Thick block LUN on btrfs.
    BlunThick,
    /// Thin file LUN on ext4.
    Thin,
    /// Legacy "advanced" thin file LUN on ext4.
    Adv,
    /// Thick file LUN on ext4.
    File,
}

impl LunType {
    /// DSM's name for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blun => "BLUN",
            Self::BlunThick => "BLUN_THICK",
            Self::Thin => "THIN",
            Self::Adv => "ADV",
            Self::File => "FILE",
        }
    }
}

/// One device attribute switch, e.g. `{"dev_attrib":"can_snapshot","enable":1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevAttrib {
    /// Attribute name (`emulate_tpu`, `can_snapshot`, …).
    pub dev_attrib: String,
    /// 1 on, 0 off.
    pub enable: u8,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct LunCreate {
    /// LUN name: letters, digits, `.`, `:` and `-`.
    pub name: String,
    /// Volume path, e.g. `/volume1`.
    pub location: String,
    /// Size in bytes; DSM creates it exactly.
    pub size: u64,
    /// LUN type.
    pub lun_type: LunType,
    /// Free-text description.
    pub description: Option<String>,
    /// Device attributes; those not given default to off (so a thin LUN
    /// needs `can_snapshot` on to be snapshotted).
    pub dev_attribs: Vec<DevAttrib>,
}

/// A LUN as DSM lists it (the fields clients rely on).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Lun {
    /// DSM's identifier (also the SCSI unit serial).
    pub uuid: String,
    /// Name, unique on the NAS.
    pub name: String,
    /// DSM's numeric id (not the LUN number on a target).
    #[serde(deserialize_with = "super::lenient::u64")]
    pub lun_id: u64,
    /// Size in bytes.
    #[serde(deserialize_with = "super::lenient::u64")]
    pub size: u64,
    /// Volume path.
    pub location: String,
    /// Type name (`BLUN`, …); types outside [`LunType`] (e.g. `VDISK_BLUN`) appear too.
    #[serde(default)]
    pub type_str: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `normal` when usable; `deleting` while DSM removes it.
    #[serde(default)]
    pub status: String,
    /// True while DSM is still working on it (clone copy, resize).
    #[serde(default)]
    pub is_action_locked: bool,
    /// Device attributes.
    #[serde(default)]
    pub dev_attribs: Vec<DevAttrib>,
}

#[derive(Deserialize)]
struct Created {
    uuid: String,
}

#[derive(Deserialize)]
struct LunData {
    lun: Lun,
}

#[derive(Deserialize)]
struct LunList {
    #[serde(default)]
    luns: Vec<Lun>,
}

#[derive(Deserialize)]
struct Cloned {
    cloned_lun_uuid: String,
}

/// `clone`'s answer.
#[derive(Deserialize)]
struct ClonedLun {
    dst_lun_uuid: String,
}

impl DsmClient {
    /// Creates a LUN and returns its uuid. A duplicate name answers 18990538.
    pub async fn create_lun(&self, lun: &LunCreate) -> Result<String, DsmError> {
        let mut params = Params::new()
            .string("name", &lun.name)
            .string("location", &lun.location)
            .number("size", lun.size)
            .string("type", lun.lun_type.as_str())
            .json("dev_attribs", &json!(lun.dev_attribs));
        if let Some(description) = &lun.description {
            params = params.string("description", description);
        }
        let created: Created = self.call_as(LUN_API, "create", params).await?;
        debug!(name = %lun.name, uuid = %created.uuid, "LUN created");
        Ok(created.uuid)
    }

    /// The LUN with this uuid or name; `None` when DSM knows neither.
    pub async fn get_lun(&self, uuid_or_name: &str) -> Result<Option<Lun>, DsmError> {
        let params =
            Params::new().string("uuid", uuid_or_name).json("additional", &json!(["status", "is_action_locked"]));
        match self.call_as::<LunData>(LUN_API, "get", params).await {
            // DSM resolves names too; only trust an exact match (jt-pve's rule).
            Ok(data) if data.lun.uuid == uuid_or_name || data.lun.name == uuid_or_name => Ok(Some(data.lun)),
            Ok(_) => Ok(None),
            Err(DsmError::Api { code, .. }) if codes::is_no_such_lun(code) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The LUN `name` once DSM no longer holds its action lock (a clone or
    /// a restore being copied), polled with a growing pause up to
    /// [`super::DsmConfig::lock_wait`]; `None` when DSM knows no such LUN.
    pub async fn wait_unlocked(&self, name: &str) -> Result<Option<Lun>, DsmError> {
        let started = Instant::now();
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            let Some(lun) = self.get_lun(name).await? else { return Ok(None) };
            if !lun.is_action_locked {
                if !started.elapsed().is_zero() {
                    debug!(name, waited = ?started.elapsed(), "LUN unlocked");
                }
                return Ok(Some(lun));
            }
            if started.elapsed() >= self.config().lock_wait {
                return Err(DsmError::Locked { name: name.to_owned(), waited: started.elapsed() });
            }
            sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(2));
        }
    }

    /// Every LUN on the NAS (DSM ignores paging and returns all).
    pub async fn list_luns(&self) -> Result<Vec<Lun>, DsmError> {
        let params = Params::new().json("additional", &json!(["status", "is_action_locked"]));
        Ok(self.call_as::<LunList>(LUN_API, "list", params).await?.luns)
    }

    /// Grows a LUN to `new_size` bytes.
    pub async fn expand_lun(&self, uuid: &str, new_size: u64) -> Result<(), DsmError> {
        let params = Params::new().string("uuid", uuid).number("new_size", new_size);
        self.call(LUN_API, "set", params).await?;
        debug!(uuid, new_size, "LUN expanded");
        Ok(())
    }

    /// Deletes a LUN (with its snapshots and mappings) and waits until DSM no
    /// longer lists it, up to [`super::DsmConfig::delete_wait`]. A LUN that is
    /// already gone counts as deleted.
    pub async fn delete_lun(&self, uuid: &str) -> Result<(), DsmError> {
        match self.call(LUN_API, "delete", Params::new().string("uuid", uuid)).await {
            Ok(_) => {}
            Err(DsmError::Api { code, .. }) if codes::is_no_such_lun(code) => return Ok(()),
            Err(e) => return Err(e),
        }
        let config = self.config();
        let started = Instant::now();
        loop {
            if self.get_lun(uuid).await?.is_none() {
                debug!(uuid, waited = ?started.elapsed(), "LUN deleted");
                return Ok(());
            }
            if started.elapsed() >= config.delete_wait {
                return Err(DsmError::DeletionTimedOut { uuid: uuid.to_owned(), waited: started.elapsed() });
            }
            sleep(config.delete_poll_interval).await;
        }
    }

    /// Maps a LUN to a target; DSM gives it the lowest free LUN number there.
    pub async fn map_lun_to_target(&self, lun_uuid: &str, target_id: u32) -> Result<(), DsmError> {
        let params = Params::new().string("uuid", lun_uuid).json("target_ids", &json!([target_id]));
        self.call(LUN_API, "map_target", params).await?;
        debug!(lun_uuid, target_id, "LUN mapped");
        Ok(())
    }

    /// Creates LUN `name` on `location` as a copy of LUN `src_lun_uuid`
    /// (DSM's `clone`, reflinked on btrfs) and returns the new LUN's uuid.
    pub async fn clone_lun(&self, src_lun_uuid: &str, name: &str, location: &str) -> Result<String, DsmError> {
        let params = Params::new()
            .string("src_lun_uuid", src_lun_uuid)
            .string("dst_lun_name", name)
            .string("dst_location", location)
            .boolean("is_same_pool", true)
            .string("clone_type", "berth");
        let cloned: ClonedLun = self.call_as(LUN_API, "clone", params).await?;
        debug!(src_lun_uuid, uuid = %cloned.dst_lun_uuid, "LUN cloned");
        Ok(cloned.dst_lun_uuid)
    }

    /// Creates LUN `name` from a snapshot of `src_lun_uuid`, on the same
    /// volume, and returns the new LUN's uuid.
    pub async fn clone_snapshot(
        &self,
        src_lun_uuid: &str,
        snapshot_uuid: &str,
        name: &str,
    ) -> Result<String, DsmError> {
        let params = Params::new()
            .string("src_lun_uuid", src_lun_uuid)
            .string("snapshot_uuid", snapshot_uuid)
            .string("cloned_lun_name", name);
        let cloned: Cloned = self.call_as(LUN_API, "clone_snapshot", params).await?;
        debug!(src_lun_uuid, snapshot_uuid, uuid = %cloned.cloned_lun_uuid, "LUN cloned from snapshot");
        Ok(cloned.cloned_lun_uuid)
    }
}
