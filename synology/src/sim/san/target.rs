//! `SYNO.Core.ISCSI.Target` create, get, list and delete. `target_id` must
//! arrive as a JSON string (a numeric id or the target's name); a bare
//! number answers 18990710, as on real DSM.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{wants, ApiError, ApiResult, San};
use crate::sim::export::Session;
use crate::sim::params::ApiParams;
use crate::sim::store::TargetRec;

impl San {
    pub(super) fn target_create(&mut self, params: &ApiParams) -> ApiResult {
        let name = params.string("name").ok_or(ApiError::Code(18990508))?;
        let iqn = params.string("iqn").ok_or(ApiError::Code(18990508))?;
        let max_sessions = params.number("max_sessions").unwrap_or(1);
        let auth_type = params.number("auth_type").unwrap_or(0);
        // CHAP needs a user and a secret (empty ones are refused, as DSM's
        // form does); mutual CHAP the target's pair too.
        let pair = |user: &str, password: &str| match (params.string(user), params.string(password)) {
            (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => Ok((user, password)),
            _ => Err(ApiError::Code(18990708)),
        };
        let ((user, password), (mutual_user, mutual_password)) = match auth_type {
            0 => Default::default(),
            1 => (pair("user", "password")?, Default::default()),
            2 => (pair("user", "password")?, pair("mutual_user", "mutual_password")?),
            _ => return Err(ApiError::Code(18990708)),
        };
        let targets = &self.store.state.targets;
        if targets.iter().any(|t| t.name == name || t.iqn == iqn) {
            return Err(ApiError::Code(18990744));
        }
        if targets.len() >= self.limits.targets {
            return Err(ApiError::Code(18990542));
        }
        self.store.state.last_target_id += 1;
        let target_id = self.store.state.last_target_id;
        self.store.state.targets.push(TargetRec {
            target_id,
            name,
            iqn,
            max_sessions,
            auth_type,
            user,
            password,
            mutual_user,
            mutual_password,
            mapped: Vec::new(),
            is_default: false,
        });
        self.store.save()?;
        Ok(json!({ "target_id": target_id }))
    }

    fn find_target(&self, params: &ApiParams) -> Result<&TargetRec, ApiError> {
        let id = params.string("target_id").ok_or(ApiError::Code(18990710))?;
        let by_id = id.parse::<u32>().ok();
        self.store
            .state
            .targets
            .iter()
            .find(|t| Some(t.target_id) == by_id || t.name == id)
            .ok_or(ApiError::Code(18990710))
    }

    pub(super) fn target_get(&self, params: &ApiParams) -> ApiResult {
        let sessions = self.sessions(params);
        Ok(json!({"target": self.target_json(self.find_target(params)?, params, &sessions)}))
    }

    pub(super) fn target_list(&self, params: &ApiParams) -> Value {
        let sessions = self.sessions(params);
        let targets: Vec<Value> =
            self.store.state.targets.iter().map(|t| self.target_json(t, params, &sessions)).collect();
        json!({ "targets": targets })
    }

    /// The export's sessions per target, read once per call and only when
    /// `connected_sessions` is asked for.
    fn sessions(&self, params: &ApiParams) -> BTreeMap<u32, Vec<Session>> {
        if !wants(params, "connected_sessions") {
            return BTreeMap::new();
        }
        self.export.as_ref().and_then(|e| e.sessions().ok()).unwrap_or_default()
    }

    /// Removes the target and its LUN mappings; the LUNs stay.
    pub(super) fn target_delete(&mut self, params: &ApiParams) -> ApiResult {
        let target_id = self.find_target(params)?.target_id;
        self.store.state.targets.retain(|t| t.target_id != target_id);
        self.store.save()?;
        Ok(Value::Null)
    }

    fn target_json(&self, target: &TargetRec, params: &ApiParams, sessions: &BTreeMap<u32, Vec<Session>>) -> Value {
        let mut value = json!({
            "target_id": target.target_id,
            "name": target.name,
            "iqn": target.iqn,
            "is_enabled": true,
            "is_default_target": target.is_default,
            "auth_type": target.auth_type,
            "user": target.user,
            "password": "",
            "mutual_user": target.mutual_user,
            "mutual_password": "",
            "max_sessions": target.max_sessions,
            "has_header_checksum": false,
            "has_data_checksum": false,
            "max_recv_seg_bytes": 262144,
            "max_send_seg_bytes": 262144,
            "mapping_index": -1,
            "network_portals": [{"interface_name": "all", "ip": "", "port": self.portal_port}],
        });
        if wants(params, "mapped_lun") {
            let mapped: Vec<Value> = target
                .mapped
                .iter()
                .map(|m| json!({"lun_uuid": m.lun_uuid, "mapping_index": m.mapping_index}))
                .collect();
            value["mapped_luns"] = Value::Array(mapped);
        }
        if wants(params, "status") {
            value["status"] = json!("online");
        }
        if wants(params, "connected_sessions") {
            let connected: Vec<Value> = sessions
                .get(&target.target_id)
                .into_iter()
                .flatten()
                .map(|s| json!({"iqn": s.initiator, "ip": s.ip}))
                .collect();
            value["connected_sessions"] = Value::Array(connected);
        }
        if wants(params, "acls") {
            value["acls"] = json!([]);
        }
        value
    }
}
