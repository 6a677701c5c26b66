//! `SYNO.Core.ISCSI.LUN` create, get, list, set, delete and map_target.

use serde_json::{json, Value};

use super::{now_ms, wants, ApiError, ApiResult, Fs, San, LUN_BUSY};
use crate::sim::params::ApiParams;
use crate::sim::store::{LunRec, Mapping, Store};

/// The device attributes every LUN reports.
const DEV_ATTRIBS: &[&str] = &[
    "emulate_tpws",
    "emulate_caw",
    "emulate_3pc",
    "emulate_tpu",
    "emulate_fua_write",
    "emulate_sync_cache",
    "can_snapshot",
];

/// DSM's numeric type code and the filesystems `create` takes the type on
/// (THIN's code is not recorded, see the module doc; DSM 7.3 takes THIN
/// on btrfs too). `VDISK_BLUN` (Virtual Machine Manager's disks) is
/// listed but cannot be created through this API.
fn type_info(type_str: &str) -> Option<(u64, &'static [Fs])> {
    match type_str {
        "BLUN" => Some((263, &[Fs::Btrfs])),
        "BLUN_THICK" => Some((259, &[Fs::Btrfs])),
        "THIN" => Some((16, &[Fs::Ext4, Fs::Btrfs])),
        "ADV" => Some((15, &[Fs::Ext4])),
        "FILE" => Some((3, &[Fs::Ext4])),
        "VDISK_BLUN" => Some((295, &[])),
        _ => None,
    }
}

/// Device attributes a new LUN of `type_str` has when `create` does not
/// set them: thin btrfs LUNs (BLUN, and VM disks) can be snapshotted
/// (synology-csi and democratic-csi rely on that), the others cannot.
pub(super) fn default_dev_attribs(type_str: &str) -> Vec<(String, u8)> {
    let snapshottable = matches!(type_str, "BLUN" | "VDISK_BLUN");
    DEV_ATTRIBS.iter().map(|a| ((*a).to_owned(), u8::from(*a == "can_snapshot" && snapshottable))).collect()
}

pub(super) fn is_thick(type_str: &str) -> bool {
    matches!(type_str, "BLUN_THICK" | "FILE")
}

/// LUN names: letters, digits, `.`, `:` and `-`, at most 254 characters.
pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let legal = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-'));
    if name.is_empty() || name.len() > 254 || !legal {
        return Err(ApiError::Code(18990503));
    }
    Ok(())
}

impl San {
    pub(super) fn lun_create(&mut self, params: &ApiParams) -> ApiResult {
        let name = params.string("name").ok_or(ApiError::Code(18990508))?;
        let location = params.string("location").ok_or(ApiError::Code(18990508))?;
        let size = params.number("size").filter(|s| *s > 0).ok_or(ApiError::Code(18990508))?;
        let description = match params.value("description") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(_) => return Err(ApiError::Code(18990403)),
        };
        check_name(&name)?;
        let volume = self.volume(&location).ok_or(ApiError::Code(117))?.clone();
        let type_str = params.string("type").unwrap_or_else(|| {
            let default = if volume.fs == Fs::Btrfs { "BLUN" } else { "ADV" };
            default.to_owned()
        });
        let (_, filesystems) = type_info(&type_str).filter(|(_, fs)| !fs.is_empty()).ok_or(ApiError::Code(18990500))?;
        if !filesystems.contains(&volume.fs) {
            return Err(ApiError::Code(18990318));
        }
        let dev_attribs = parse_dev_attribs(params.value("dev_attribs"), &type_str)?;
        if self.store.state.luns.iter().any(|l| l.name == name) {
            return Err(ApiError::Code(18990538));
        }
        if self.store.state.luns.len() >= self.limits.luns {
            return Err(ApiError::Code(18990541));
        }
        if is_thick(&type_str) && size > self.volume_free(&volume) {
            return Err(ApiError::Code(18990002));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        Store::set_file_size(&self.store.lun_file(&uuid), size)?;
        self.store.state.last_lun_id += 1;
        let lun_id = self.store.state.last_lun_id;
        self.store.state.luns.push(LunRec {
            uuid: uuid.clone(),
            name,
            lun_id,
            size,
            location,
            type_str,
            description,
            dev_attribs,
            deleting_until_ms: None,
            locked_until_ms: None,
        });
        self.store.save()?;
        Ok(json!({"uuid": uuid, "lun_id": lun_id}))
    }

    /// A LUN by uuid or name (how DSM resolves `uuid`).
    pub(super) fn find_lun(&self, params: &ApiParams, key: &str) -> Result<&LunRec, ApiError> {
        match params.value(key) {
            None => Err(ApiError::Code(18990508)),
            Some(Value::String(id)) => {
                self.store.state.luns.iter().find(|l| l.uuid == id || l.name == id).ok_or(ApiError::Code(18990531))
            }
            Some(_) => Err(ApiError::Code(18990505)),
        }
    }

    pub(super) fn lun_get(&self, params: &ApiParams) -> ApiResult {
        let lun = self.find_lun(params, "uuid")?;
        Ok(json!({"lun": self.lun_json(lun, params)}))
    }

    pub(super) fn lun_list(&self, params: &ApiParams) -> Value {
        let location = params.string("location");
        let luns: Vec<Value> = self
            .store
            .state
            .luns
            .iter()
            .filter(|l| location.as_ref().is_none_or(|loc| &l.location == loc))
            .map(|l| self.lun_json(l, params))
            .collect();
        json!({"luns": luns})
    }

    /// Refuses work on a LUN DSM is still copying (a clone) or deleting.
    fn ensure_idle(lun: &LunRec) -> Result<(), ApiError> {
        let now = now_ms();
        if lun.locked_until_ms.is_some_and(|until| until > now) || lun.deleting_until_ms.is_some() {
            return Err(ApiError::Busy(LUN_BUSY));
        }
        Ok(())
    }

    pub(super) fn lun_set(&mut self, params: &ApiParams) -> ApiResult {
        let lun = self.find_lun(params, "uuid")?.clone();
        Self::ensure_idle(&lun)?;
        if let Some(new_size) = params.number("new_size") {
            if new_size < lun.size {
                return Err(ApiError::Code(101));
            }
            let volume = self.volume(&lun.location).ok_or(ApiError::Code(117))?.clone();
            if is_thick(&lun.type_str) && new_size - lun.size > self.volume_free(&volume) {
                return Err(ApiError::Code(18990002));
            }
            Store::set_file_size(&self.store.lun_file(&lun.uuid), new_size)?;
            if let Some(rec) = self.store.state.luns.iter_mut().find(|l| l.uuid == lun.uuid) {
                rec.size = new_size;
            }
        } else if params.has("new_size") {
            return Err(ApiError::Code(101));
        }
        self.store.save()?;
        Ok(Value::Null)
    }

    /// Accepts the deletion: mappings and snapshots go at once, the LUN
    /// itself stays listed (status `deleting`) for the configured delay. A
    /// LUN already being deleted is accepted again; one still copying a
    /// clone is refused.
    pub(super) fn lun_delete(&mut self, params: &ApiParams) -> ApiResult {
        let uuids: Vec<String> = match params.value("uuids") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(ApiError::Code(18990505)))
                .collect::<Result<_, _>>()?,
            _ => vec![self.find_lun(params, "uuid")?.uuid.clone()],
        };
        let deadline = now_ms() + self.lun_delete_delay.as_millis() as u64;
        for uuid in &uuids {
            let lun = self.store.state.luns.iter_mut().find(|l| &l.uuid == uuid).ok_or(ApiError::Code(18990531))?;
            if lun.locked_until_ms.is_some_and(|until| until > now_ms()) && lun.deleting_until_ms.is_none() {
                return Err(ApiError::Busy(LUN_BUSY));
            }
            lun.deleting_until_ms.get_or_insert(deadline);
            for target in &mut self.store.state.targets {
                target.mapped.retain(|m| &m.lun_uuid != uuid);
            }
            let (gone, kept): (Vec<_>, Vec<_>) =
                self.store.state.snapshots.drain(..).partition(|s| &s.parent_uuid == uuid);
            self.store.state.snapshots = kept;
            for snapshot in gone {
                Store::remove_file(&self.store.snapshot_file(&snapshot.uuid))?;
            }
        }
        self.store.save()?;
        Ok(Value::Null)
    }

    /// Adds the LUN to each target at the lowest free LUN number from 1.
    pub(super) fn lun_map_target(&mut self, params: &ApiParams) -> ApiResult {
        let lun = self.find_lun(params, "uuid")?;
        Self::ensure_idle(lun)?;
        let lun_uuid = lun.uuid.clone();
        let Some(Value::Array(ids)) = params.value("target_ids") else {
            return Err(ApiError::Code(18990508));
        };
        let mut target_ids = Vec::new();
        for id in ids {
            let id = match &id {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            let id = id.and_then(|i| u32::try_from(i).ok()).ok_or(ApiError::Code(18990710))?;
            if !self.store.state.targets.iter().any(|t| t.target_id == id) {
                return Err(ApiError::Code(18990710));
            }
            target_ids.push(id);
        }
        for target in self.store.state.targets.iter_mut().filter(|t| target_ids.contains(&t.target_id)) {
            if target.mapped.iter().any(|m| m.lun_uuid == lun_uuid) {
                continue;
            }
            let mapping_index = (1..).find(|i| !target.mapped.iter().any(|m| m.mapping_index == *i)).unwrap_or(1);
            target.mapped.push(Mapping { lun_uuid: lun_uuid.clone(), mapping_index });
        }
        self.store.save()?;
        Ok(Value::Null)
    }

    fn lun_json(&self, lun: &LunRec, params: &ApiParams) -> Value {
        let type_code = type_info(&lun.type_str).map_or(0, |(code, _)| code);
        let dev_attribs: Vec<Value> =
            lun.dev_attribs.iter().map(|(name, enable)| json!({"dev_attrib": name, "enable": enable})).collect();
        let mut value = json!({
            "uuid": lun.uuid,
            "vpd_unit_sn": lun.uuid,
            "name": lun.name,
            "lun_id": lun.lun_id,
            "description": lun.description,
            "location": lun.location,
            "size": lun.size,
            "type": type_code,
            "type_str": lun.type_str,
            "status": if lun.deleting_until_ms.is_some() { "deleting" } else { "normal" },
            "is_action_locked": lun.locked_until_ms.is_some_and(|until| until > now_ms()),
            "block_size": 512,
            "create_from": "",
            "restored_time": 0,
            "direct_io_pattern": 0,
            "extent_size": 0,
            "flashcache_status": "no_cache",
            "flashcache_id": -1,
            "dev_attribs": dev_attribs,
        });
        if wants(params, "allocated_size") {
            value["allocated_size"] = json!(Store::allocated(&self.store.lun_file(&lun.uuid)));
        }
        if wants(params, "is_mapped") {
            value["is_mapped"] =
                json!(self.store.state.targets.iter().any(|t| t.mapped.iter().any(|m| m.lun_uuid == lun.uuid)));
        }
        value
    }
}

/// `dev_attribs=[{"dev_attrib":…,"enable":0|1}]` over the type's defaults.
fn parse_dev_attribs(value: Option<Value>, type_str: &str) -> Result<Vec<(String, u8)>, ApiError> {
    let mut attribs = default_dev_attribs(type_str);
    let items = match value {
        None => return Ok(attribs),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::Code(101)),
    };
    for item in items {
        let name = item.get("dev_attrib").and_then(Value::as_str).ok_or(ApiError::Code(101))?;
        let enable = item.get("enable").and_then(Value::as_u64).ok_or(ApiError::Code(101))?;
        let slot = attribs.iter_mut().find(|(a, _)| a == name).ok_or(ApiError::Code(101))?;
        slot.1 = u8::from(enable != 0);
    }
    Ok(attribs)
}
