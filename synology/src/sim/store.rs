//! The simulator's durable state: LUNs, targets with their LUN mappings, and
//! snapshots, saved as `state.json` in the state dir (write to a temporary
//! file, fsync, rename, fsync the dir) after every change and loaded at
//! start; plus each LUN's sparse backing file (`luns/<uuid>.img`) and each
//! snapshot's sparse copy (`snapshots/<uuid>.img`).
//!
//! Sessions are not stored: after a restart old SIDs answer 119, as they do
//! after a NAS reboot.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::error::SimError;

/// A LUN record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LunRec {
    pub uuid: String,
    pub name: String,
    pub lun_id: u64,
    pub size: u64,
    pub location: String,
    pub type_str: String,
    pub description: String,
    pub dev_attribs: Vec<(String, u8)>,
    /// Set when a delete was accepted: the LUN stays listed until this time
    /// (ms since the epoch), as DSM removes LUNs asynchronously.
    pub deleting_until_ms: Option<u64>,
    /// A clone stays `is_action_locked` until this time (ms since the epoch).
    #[serde(default)]
    pub locked_until_ms: Option<u64>,
}

/// A LUN mapped on a target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Mapping {
    pub lun_uuid: String,
    pub mapping_index: u32,
}

/// A target record. `password` is the CHAP secret DSM keeps too; it is never
/// answered back (DSM returns it empty).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TargetRec {
    pub target_id: u32,
    pub name: String,
    pub iqn: String,
    pub max_sessions: u64,
    pub auth_type: u64,
    pub user: String,
    pub password: String,
    /// Mutual CHAP: the target's own credentials, which the initiator checks.
    #[serde(default)]
    pub mutual_user: String,
    #[serde(default)]
    pub mutual_password: String,
    pub mapped: Vec<Mapping>,
    /// DSM's own "Synology iSCSI Target".
    #[serde(default)]
    pub is_default: bool,
}

/// A snapshot record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapRec {
    pub uuid: String,
    pub snapshot_id: u64,
    pub name: String,
    pub description: String,
    pub taken_by: String,
    pub parent_uuid: String,
    pub parent_lun_id: u64,
    pub root_path: String,
    pub create_time: u64,
    pub total_size: u64,
    pub is_user_locked: bool,
    pub is_app_consistent: bool,
}

/// Everything `state.json` holds.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub luns: Vec<LunRec>,
    pub targets: Vec<TargetRec>,
    pub snapshots: Vec<SnapRec>,
    pub last_lun_id: u64,
    pub last_target_id: u32,
    pub last_snapshot_id: u64,
    /// Whether the objects a NAS comes with were made (once per state dir).
    #[serde(default)]
    pub seeded: bool,
}

/// The state plus the directory it lives in.
pub(crate) struct Store {
    dir: PathBuf,
    pub state: State,
}

impl Store {
    /// Opens (creating when needed) the state dir and loads `state.json`.
    pub fn open(dir: &Path) -> Result<Self, SimError> {
        for sub in ["luns", "snapshots"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(SimError::io("create", path))?;
        }
        let path = dir.join("state.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SimError::CorruptState { path, source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(SimError::io("read", path)(e)),
        };
        Ok(Self { dir: dir.to_owned(), state })
    }

    /// Writes `state.json` atomically.
    pub fn save(&self) -> Result<(), SimError> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|source| SimError::CorruptState { path: path.clone(), source })?;
        let mut file = File::create(&tmp).map_err(SimError::io("create", &tmp))?;
        file.write_all(&bytes).map_err(SimError::io("write", &tmp))?;
        file.sync_all().map_err(SimError::io("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(SimError::io("rename", &path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(SimError::io("fsync", &self.dir))
    }

    pub fn lun_file(&self, uuid: &str) -> PathBuf {
        self.dir.join("luns").join(format!("{uuid}.img"))
    }

    pub fn snapshot_file(&self, uuid: &str) -> PathBuf {
        self.dir.join("snapshots").join(format!("{uuid}.img"))
    }

    /// Creates or resizes a sparse backing file to `size` bytes.
    pub fn set_file_size(path: &Path, size: u64) -> Result<(), SimError> {
        let file = OpenOptions::new().create(true).write(true).truncate(false).open(path);
        file.and_then(|f| f.set_len(size)).map_err(SimError::io("size", path))
    }

    /// Bytes a backing file really occupies on disk.
    pub fn allocated(path: &Path) -> u64 {
        fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
    }

    /// Removes a backing file; one already gone is fine.
    pub fn remove_file(path: &Path) -> Result<(), SimError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SimError::io("remove", path)(e)),
            _ => Ok(()),
        }
    }

    /// Copies a backing file keeping holes (`cp --sparse=always`).
    pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), SimError> {
        let output = Command::new("cp")
            .arg("--sparse=always")
            .arg(from)
            .arg(to)
            .output()
            .map_err(SimError::io("run cp for", from))?;
        if output.status.success() {
            return Ok(());
        }
        Err(SimError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}
