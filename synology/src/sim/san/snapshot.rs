//! `SYNO.Core.ISCSI.LUN` take_snapshot, list_snapshot, delete_snapshot and
//! clone_snapshot. A snapshot is a sparse copy of the LUN's backing file; a
//! clone is a sparse copy of the snapshot's.

use serde_json::{json, Value};

use super::lun::check_name;
use super::{now_ms, ApiError, ApiResult, San};
use crate::sim::params::ApiParams;
use crate::sim::store::{LunRec, SnapRec, Store};

impl San {
    pub(super) fn snapshot_take(&mut self, params: &ApiParams) -> ApiResult {
        let lun = self.find_lun(params, "src_lun_uuid")?.clone();
        if !lun.dev_attribs.iter().any(|(name, enable)| name == "can_snapshot" && *enable == 1) {
            return Err(ApiError::Code(18990004));
        }
        let taken = self.store.state.snapshots.iter().filter(|s| s.parent_uuid == lun.uuid).count();
        if taken >= self.limits.snapshots_per_lun {
            return Err(ApiError::Code(18990543));
        }
        let name = params.string("snapshot_name");
        if let Some(name) = &name {
            if self.store.state.snapshots.iter().any(|s| s.parent_uuid == lun.uuid && &s.name == name) {
                return Err(ApiError::Code(18990513));
            }
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        Store::copy_sparse(&self.store.lun_file(&lun.uuid), &self.store.snapshot_file(&uuid))?;
        self.store.state.last_snapshot_id += 1;
        let snapshot_id = self.store.state.last_snapshot_id;
        let now = now_ms() / 1000;
        let taken_by = params.string("taken_by").filter(|t| !t.is_empty()).unwrap_or_else(|| "webapi".to_owned());
        self.store.state.snapshots.push(SnapRec {
            uuid: uuid.clone(),
            snapshot_id,
            name: name.unwrap_or_else(|| format!("SnapShot-{snapshot_id}")),
            description: params.string("description").unwrap_or_default(),
            taken_by,
            parent_uuid: lun.uuid,
            parent_lun_id: lun.lun_id,
            root_path: lun.location,
            create_time: now,
            total_size: lun.size,
            is_user_locked: params.boolean("is_locked").unwrap_or(false),
            is_app_consistent: params.boolean("is_app_consistent").unwrap_or(false),
        });
        self.store.save()?;
        Ok(json!({"snapshot_uuid": uuid, "snapshot_id": snapshot_id}))
    }

    pub(super) fn snapshot_list(&self, params: &ApiParams) -> ApiResult {
        let lun = self.find_lun(params, "src_lun_uuid")?;
        if lun.deleting_until_ms.is_some() {
            return Err(ApiError::Code(18990531));
        }
        let snapshots: Vec<Value> = self
            .store
            .state
            .snapshots
            .iter()
            .filter(|s| s.parent_uuid == lun.uuid)
            .map(|s| {
                json!({
                    "uuid": s.uuid,
                    "version": s.uuid,
                    "snapshot_id": s.snapshot_id,
                    "name": s.name,
                    "description": s.description,
                    "taken_by": s.taken_by,
                    "parent_uuid": s.parent_uuid,
                    "parent_lun_id": s.parent_lun_id,
                    "root_path": s.root_path,
                    "create_time": s.create_time,
                    "snapshot_time": s.create_time,
                    "time": s.create_time,
                    "total_size": s.total_size,
                    "mapped_size": 0,
                    "type": 2,
                    "status": "Healthy",
                    "is_user_locked": s.is_user_locked,
                    "is_app_consistent": s.is_app_consistent,
                    "is_worm_locked": false,
                })
            })
            .collect();
        Ok(json!({"count": snapshots.len(), "snapshots": snapshots}))
    }

    /// `snapshot_uuid` deletes one (missing → 18990532); `snapshot_uuids`
    /// deletes several and lists the missing ones as 18990540 in `data`.
    pub(super) fn snapshot_delete(&mut self, params: &ApiParams) -> ApiResult {
        if let Some(Value::Array(items)) = params.value("snapshot_uuids") {
            let mut failures = Vec::new();
            for uuid in items.iter().filter_map(Value::as_str) {
                if !self.remove_snapshot(uuid)? {
                    failures.push(json!({ uuid: 18990540 }));
                }
            }
            self.store.save()?;
            return Ok(Value::Array(failures));
        }
        let uuid = params.string("snapshot_uuid").ok_or(ApiError::Code(18990508))?;
        if !self.remove_snapshot(&uuid)? {
            return Err(ApiError::Code(18990532));
        }
        self.store.save()?;
        Ok(Value::Null)
    }

    fn remove_snapshot(&mut self, uuid: &str) -> Result<bool, ApiError> {
        let Some(at) = self.store.state.snapshots.iter().position(|s| s.uuid == uuid) else {
            return Ok(false);
        };
        self.store.state.snapshots.remove(at);
        Store::remove_file(&self.store.snapshot_file(uuid))?;
        Ok(true)
    }

    /// A new LUN with the snapshot's content, on the parent's volume, with
    /// the parent's type and device attributes.
    pub(super) fn snapshot_clone(&mut self, params: &ApiParams) -> ApiResult {
        let parent = self.find_lun(params, "src_lun_uuid")?.clone();
        let snapshot_uuid = params.string("snapshot_uuid").ok_or(ApiError::Code(18990508))?;
        let snapshot = self
            .store
            .state
            .snapshots
            .iter()
            .find(|s| s.uuid == snapshot_uuid && s.parent_uuid == parent.uuid)
            .ok_or(ApiError::Code(18990532))?
            .clone();
        let name = params.string("cloned_lun_name").ok_or(ApiError::Code(18990508))?;
        check_name(&name)?;
        if self.store.state.luns.iter().any(|l| l.name == name) {
            return Err(ApiError::Code(18990538));
        }
        if self.store.state.luns.len() >= self.limits.luns {
            return Err(ApiError::Code(18990541));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        Store::copy_sparse(&self.store.snapshot_file(&snapshot.uuid), &self.store.lun_file(&uuid))?;
        let locked_until = self.clone_lock_until(&self.store.snapshot_file(&snapshot.uuid));
        self.store.state.last_lun_id += 1;
        self.store.state.luns.push(LunRec {
            uuid: uuid.clone(),
            name,
            lun_id: self.store.state.last_lun_id,
            size: snapshot.total_size,
            location: parent.location,
            type_str: parent.type_str,
            description: params.string("description").unwrap_or_default(),
            dev_attribs: parent.dev_attribs,
            deleting_until_ms: None,
            locked_until_ms: Some(locked_until),
        });
        self.store.save()?;
        Ok(json!({"cloned_lun_uuid": uuid}))
    }

    /// Until when a clone of the data in `source` stays locked: DSM copies
    /// the data, so the lock grows with what the source holds.
    fn clone_lock_until(&self, source: &std::path::Path) -> u64 {
        let (base, per_gib) = self.clone_lock;
        let gib = Store::allocated(source) as f64 / (1u64 << 30) as f64;
        now_ms() + (base + per_gib.mul_f64(gib)).as_millis() as u64
    }

    /// `clone`: a new LUN holding a copy of a LUN (on `dst_location`, else
    /// the source's volume).
    pub(super) fn lun_clone(&mut self, params: &ApiParams) -> ApiResult {
        let source = self.find_lun(params, "src_lun_uuid")?.clone();
        let name = params.string("dst_lun_name").ok_or(ApiError::Code(18990508))?;
        check_name(&name)?;
        let location = params.string("dst_location").unwrap_or_else(|| source.location.clone());
        if self.volume(&location).is_none() {
            return Err(ApiError::Code(117));
        }
        if self.store.state.luns.iter().any(|l| l.name == name) {
            return Err(ApiError::Code(18990538));
        }
        if self.store.state.luns.len() >= self.limits.luns {
            return Err(ApiError::Code(18990541));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        Store::copy_sparse(&self.store.lun_file(&source.uuid), &self.store.lun_file(&uuid))?;
        let locked_until = self.clone_lock_until(&self.store.lun_file(&source.uuid));
        self.store.state.last_lun_id += 1;
        self.store.state.luns.push(LunRec {
            uuid: uuid.clone(),
            name,
            lun_id: self.store.state.last_lun_id,
            size: source.size,
            location,
            type_str: source.type_str,
            description: params.string("description").unwrap_or_default(),
            dev_attribs: source.dev_attribs,
            deleting_until_ms: None,
            locked_until_ms: Some(locked_until),
        });
        self.store.save()?;
        Ok(json!({"dst_lun_uuid": uuid}))
    }
}
