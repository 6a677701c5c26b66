//! The SAN side of the simulator: the `SYNO.Core.ISCSI.LUN`,
//! `SYNO.Core.ISCSI.Target` and `SYNO.Core.Storage.Volume` methods Berth's
//! client uses, with DSM's validations and error codes, over the [`Store`].
//!
//! * `lun`: create, get, list, set (grow), delete (asynchronous), map_target.
//! * `snapshot`: take_snapshot, list_snapshot, delete_snapshot, clone_snapshot.
//! * `target`: create, get, list, delete.
//! * here: the storage volumes (`/volume1` btrfs, `/volume2` ext4) and
//!   Storage.Volume get.
//!
//! * `fresh`: what a NAS holds before berth comes (default target, a VM
//!   disk, another tool's LUN and snapshot).
//!
//! Choices where the reference records no DSM behaviour: shrinking a LUN
//! answers 101; a snapshot of a LUN without `can_snapshot` answers 18990004;
//! creating on a volume that does not exist answers 117; THIN's numeric
//! type is 16; a LUN busy with a clone answers [`LUN_BUSY`]; a second
//! delete of a LUN being deleted succeeds. Clones are copied at once but
//! report `is_action_locked` for as long as DSM would copy them.

mod fresh;

pub use fresh::{FRESH_NAS_LUNS, FRESH_NAS_TARGETS};
mod lun;
mod snapshot;
mod target;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::error::SimError;
use super::export::{ExportedTarget, TgtExport};
use super::params::ApiParams;
use super::store::Store;

/// The SAN APIs served and their methods (everything else answers 102/103).
pub(crate) const APIS: &[(&str, &[&str])] = &[
    (
        "SYNO.Core.ISCSI.LUN",
        &[
            "create",
            "get",
            "list",
            "set",
            "delete",
            "map_target",
            "clone",
            "take_snapshot",
            "list_snapshot",
            "delete_snapshot",
            "clone_snapshot",
        ],
    ),
    ("SYNO.Core.ISCSI.Target", &["create", "get", "list", "delete"]),
    ("SYNO.Core.Storage.Volume", &["get"]),
];

/// What `set`, `map_target` and `delete` answer for a LUN DSM is still
/// busy with (a clone being copied). No client records the code real DSM
/// uses; this one is the simulator's choice, and berth never depends on
/// it: it waits for `is_action_locked` to clear first.
pub(crate) const LUN_BUSY: i64 = 18990512;

/// A NAS model's limits (`SYNO.Core.System info type=define`:
/// `max_iscsiluns`, `max_iscsitrgs`, `max_snapshot_per_lun`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// LUNs on the NAS (18990541 beyond).
    pub luns: usize,
    /// Targets on the NAS (18990542 beyond).
    pub targets: usize,
    /// Snapshots of one LUN (18990543 beyond).
    pub snapshots_per_lun: usize,
}

impl Default for Limits {
    /// A DS918+'s limits.
    fn default() -> Self {
        Self { luns: 256, targets: 128, snapshots_per_lun: 256 }
    }
}

/// Which DSM the simulator answers as, where versions differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// DSM 6.2: `SYNO.API.Auth` up to version 6 on `auth.cgi`; volume byte
    /// counts as JSON numbers.
    Dsm62,
    /// DSM 7.x: `SYNO.API.Auth` up to version 7 on `entry.cgi` (`auth.cgi`
    /// still answers); volume byte counts as strings.
    #[default]
    Dsm7,
}

impl Dialect {
    pub(crate) fn auth_max_version(self) -> u64 {
        match self {
            Self::Dsm62 => 6,
            Self::Dsm7 => 7,
        }
    }

    pub(crate) fn auth_path(self) -> &'static str {
        match self {
            Self::Dsm62 => "auth.cgi",
            Self::Dsm7 => "entry.cgi",
        }
    }

    /// A byte count as this DSM writes it.
    fn bytes(self, value: u64) -> Value {
        match self {
            Self::Dsm62 => json!(value),
            Self::Dsm7 => json!(value.to_string()),
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "6.2" | "6" => Ok(Self::Dsm62),
            "7" | "7.x" => Ok(Self::Dsm7),
            other => Err(format!("DSM version {other:?} is neither 6.2 nor 7")),
        }
    }
}

/// Why a SAN call failed: a DSM error code (`Busy` for a LUN still locked
/// or being deleted), or the simulator's own storage failing (answered as
/// 100, unknown error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("DSM error {0}")]
    Code(i64),
    #[error("DSM error {0} (the LUN is busy)")]
    Busy(i64),
    #[error(transparent)]
    Sim(#[from] SimError),
}

type ApiResult = Result<Value, ApiError>;

/// Filesystem of a storage volume: decides which LUN types it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fs {
    Btrfs,
    Ext4,
}

/// A storage volume LUNs can be created on.
#[derive(Clone, Debug)]
pub(crate) struct SimVolume {
    pub path: &'static str,
    pub fs: Fs,
    pub size: u64,
}

/// The SAN state machine.
pub(crate) struct San {
    pub store: Store,
    pub volumes: Vec<SimVolume>,
    pub lun_delete_delay: Duration,
    pub portal_port: u16,
    /// The iSCSI export of the targets, when the simulator serves one.
    pub export: Option<TgtExport>,
    pub dialect: Dialect,
    pub limits: Limits,
    /// How long a clone stays locked: base, and per GiB of source data.
    pub clone_lock: (Duration, Duration),
}

impl San {
    /// Runs one SAN method; `api`/`method` are known to be in [`APIS`].
    pub fn dispatch(&mut self, api: &str, method: &str, params: &ApiParams) -> ApiResult {
        self.purge_deleted()?;
        let result = self.call(api, method, params);
        self.sync_export()?;
        result
    }

    /// What the iSCSI export should hold: every target with its mapped
    /// LUNs that are not being deleted.
    fn wanted_export(&self) -> BTreeMap<u32, ExportedTarget> {
        let state = &self.store.state;
        state
            .targets
            .iter()
            .map(|t| {
                let luns = t
                    .mapped
                    .iter()
                    .filter_map(|m| {
                        let lun = state.luns.iter().find(|l| l.uuid == m.lun_uuid && l.deleting_until_ms.is_none())?;
                        Some((m.mapping_index, (self.store.lun_file(&lun.uuid), lun.size)))
                    })
                    .collect();
                let chap = (t.auth_type != 0).then(|| (t.user.clone(), t.password.clone()));
                let mutual = (t.auth_type == 2).then(|| (t.mutual_user.clone(), t.mutual_password.clone()));
                (t.target_id, ExportedTarget { iqn: t.iqn.clone(), luns, chap, mutual })
            })
            .collect()
    }

    /// Brings the iSCSI export in line with the state.
    pub fn sync_export(&mut self) -> Result<(), SimError> {
        let wanted = self.wanted_export();
        match &mut self.export {
            Some(export) => export.sync(wanted),
            None => Ok(()),
        }
    }

    /// Closes sessions beyond the targets' `max_sessions`.
    pub fn enforce_max_sessions(&mut self) -> Result<usize, SimError> {
        let Some(export) = &mut self.export else { return Ok(0) };
        let limits = self.store.state.targets.iter().map(|t| (t.target_id, t.max_sessions)).collect();
        export.enforce_max_sessions(&limits)
    }

    fn call(&mut self, api: &str, method: &str, params: &ApiParams) -> ApiResult {
        match (api, method) {
            ("SYNO.Core.ISCSI.LUN", "create") => self.lun_create(params),
            ("SYNO.Core.ISCSI.LUN", "get") => self.lun_get(params),
            ("SYNO.Core.ISCSI.LUN", "list") => Ok(self.lun_list(params)),
            ("SYNO.Core.ISCSI.LUN", "set") => self.lun_set(params),
            ("SYNO.Core.ISCSI.LUN", "delete") => self.lun_delete(params),
            ("SYNO.Core.ISCSI.LUN", "map_target") => self.lun_map_target(params),
            ("SYNO.Core.ISCSI.LUN", "clone") => self.lun_clone(params),
            ("SYNO.Core.ISCSI.LUN", "take_snapshot") => self.snapshot_take(params),
            ("SYNO.Core.ISCSI.LUN", "list_snapshot") => self.snapshot_list(params),
            ("SYNO.Core.ISCSI.LUN", "delete_snapshot") => self.snapshot_delete(params),
            ("SYNO.Core.ISCSI.LUN", "clone_snapshot") => self.snapshot_clone(params),
            ("SYNO.Core.ISCSI.Target", "create") => self.target_create(params),
            ("SYNO.Core.ISCSI.Target", "get") => self.target_get(params),
            ("SYNO.Core.ISCSI.Target", "list") => Ok(self.target_list(params)),
            ("SYNO.Core.ISCSI.Target", "delete") => self.target_delete(params),
            ("SYNO.Core.Storage.Volume", "get") => self.volume_get(params),
            _ => Err(ApiError::Code(103)),
        }
    }

    /// Finishes the asynchronous removals whose time has come.
    fn purge_deleted(&mut self) -> Result<(), SimError> {
        let now = now_ms();
        let (gone, kept): (Vec<_>, Vec<_>) =
            self.store.state.luns.drain(..).partition(|l| l.deleting_until_ms.is_some_and(|t| t <= now));
        self.store.state.luns = kept;
        if gone.is_empty() {
            return Ok(());
        }
        for lun in &gone {
            Store::remove_file(&self.store.lun_file(&lun.uuid))?;
        }
        self.store.save()
    }

    fn volume(&self, path: &str) -> Option<&SimVolume> {
        self.volumes.iter().find(|v| v.path == path)
    }

    /// Free bytes of a volume: thick LUNs reserve their whole size, thin
    /// ones what their backing file really occupies, snapshots their copy.
    fn volume_free(&self, volume: &SimVolume) -> u64 {
        let used: u64 = self
            .store
            .state
            .luns
            .iter()
            .filter(|l| l.location == volume.path)
            .map(|l| if lun::is_thick(&l.type_str) { l.size } else { Store::allocated(&self.store.lun_file(&l.uuid)) })
            .sum::<u64>()
            + self
                .store
                .state
                .snapshots
                .iter()
                .filter(|s| s.root_path == volume.path)
                .map(|s| Store::allocated(&self.store.snapshot_file(&s.uuid)))
                .sum::<u64>();
        volume.size.saturating_sub(used)
    }

    fn volume_get(&self, params: &ApiParams) -> ApiResult {
        let path = params.string("volume_path").ok_or(ApiError::Code(18990508))?;
        let Some(volume) = self.volume(&path) else {
            let volume_shaped = path.strip_prefix("/volume").is_some_and(|n| n.parse::<u32>().is_ok());
            return if volume_shaped { Err(ApiError::Code(117)) } else { Ok(json!({})) };
        };
        let number = volume.path.trim_start_matches("/volume");
        Ok(json!({"volume": {
            "volume_path": volume.path,
            "display_name": format!("Volume {number}"),
            "fs_type": match volume.fs { Fs::Btrfs => "btrfs", Fs::Ext4 => "ext4" },
            "status": "normal",
            "container": "internal",
            "location": "sata",
            "readonly": false,
            "size_free_byte": self.dialect.bytes(self.volume_free(volume)),
            "size_total_byte": self.dialect.bytes(volume.size),
        }}))
    }
}

/// Milliseconds since the epoch (persisted deadlines survive restarts).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether the `additional` list asks for `field`.
fn wants(params: &ApiParams, field: &str) -> bool {
    match params.value("additional") {
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(field)),
        _ => false,
    }
}
