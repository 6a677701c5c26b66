//! The local plugin's state directory and the records in it:
//!
//! ```text
//! <state_dir>/volumes/<id>/volume.json     what the controller created
//! <state_dir>/volumes/<id>/data/           a directory volume's files
//! <state_dir>/volumes/<id>/image.img       an image volume's sparse file
//! <state_dir>/snapshots/<id>/snapshot.json a snapshot and its full copy
//! <state_dir>/snapshots/<id>/{data/,image.img}
//! <state_dir>/node/<volume id>.json        where the node staged/published it
//! ```
//!
//! Records are JSON written atomically (temporary file, fsync, rename,
//! fsync of the directory). A volume or snapshot directory is complete once
//! its record exists: one without (a creation cut short) is removed when the
//! store is opened. IDs from requests are checked against the ID format
//! before they become paths, so a request cannot reach outside the store.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backing::Backing;
use super::capability::Access;

/// Failures reading or writing the state directory, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A record could not be read or written as JSON.
    #[error("record {}: {source}", path.display())]
    Json {
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Where a volume's initial content came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    Snapshot(String),
    Volume(String),
}

/// A volume the controller created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VolumeRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) capacity_bytes: u64,
    pub(crate) backing: Backing,
    /// The filesystem of an image volume (`None` for directories).
    pub(crate) fs_type: Option<String>,
    /// The CreateVolume parameters as given (compared on a repeated create).
    pub(crate) parameters: BTreeMap<String, String>,
    pub(crate) source: Option<Source>,
    pub(crate) created: SystemTime,
}

/// A snapshot: a full copy of a volume's data at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) source_volume_id: String,
    /// The source volume's capacity when the snapshot was cut.
    pub(crate) size_bytes: u64,
    pub(crate) backing: Backing,
    pub(crate) fs_type: Option<String>,
    pub(crate) creation_time: SystemTime,
    /// Copies are complete when the record is written, so always true.
    pub(crate) ready_to_use: bool,
}

/// Where the node has a volume staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Staged {
    pub(crate) path: PathBuf,
    pub(crate) access: Access,
}

/// One publish target of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub(crate) target: PathBuf,
    pub(crate) access: Access,
    pub(crate) readonly: bool,
}

/// The node-side state of one volume. Entries are written before the mount
/// they describe is made, so every mount the plugin made is recorded; the
/// kernel's mount table says whether a recorded one is actually in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub(crate) staged: Option<Staged>,
    pub(crate) published: Vec<Published>,
}

const VOLUME_PREFIX: &str = "vol-";
const SNAPSHOT_PREFIX: &str = "snap-";

/// A new random ID: `prefix` + 32 hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` has the form [`new_id`] makes.
fn valid_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The state directory.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the state directory at `root` and removes what
    /// interrupted creations left behind.
    pub(crate) fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io_error("creating", root))?;
        let root = root.canonicalize().map_err(io_error("resolving", root))?;
        let store = Self { root };
        for dir in [store.volumes_dir(), store.snapshots_dir(), store.node_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        store.remove_unfinished(&store.volumes_dir(), "volume.json")?;
        store.remove_unfinished(&store.snapshots_dir(), "snapshot.json")?;
        Ok(store)
    }

    /// Removes the entries of `dir` that lack their `record`.
    fn remove_unfinished(&self, dir: &Path, record: &str) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let path = entry.map_err(io_error("listing", dir))?.path();
            if !path.join(record).exists() {
                tracing::info!(path = %path.display(), "removing an unfinished volume or snapshot");
                remove_all(&path)?;
            }
        }
        Ok(())
    }

    /// The state directory (canonical).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn node_dir(&self) -> PathBuf {
        self.root.join("node")
    }

    /// A fresh volume ID and its (new, empty) directory.
    pub(crate) fn new_volume_dir(&self) -> Result<(String, PathBuf)> {
        let id = new_id(VOLUME_PREFIX);
        let dir = self.volumes_dir().join(&id);
        std::fs::create_dir(&dir).map_err(io_error("creating", &dir))?;
        Ok((id, dir))
    }

    /// A fresh snapshot ID and its (new, empty) directory.
    pub(crate) fn new_snapshot_dir(&self) -> Result<(String, PathBuf)> {
        let id = new_id(SNAPSHOT_PREFIX);
        let dir = self.snapshots_dir().join(&id);
        std::fs::create_dir(&dir).map_err(io_error("creating", &dir))?;
        Ok((id, dir))
    }

    /// The data of volume `id`: its `data` directory or `image.img`.
    pub(crate) fn volume_content(&self, id: &str, backing: Backing) -> PathBuf {
        self.volumes_dir().join(id).join(backing.content_name())
    }

    /// The data of snapshot `id`.
    pub(crate) fn snapshot_content(&self, id: &str, backing: Backing) -> PathBuf {
        self.snapshots_dir().join(id).join(backing.content_name())
    }

    /// Volume `id`, if it exists (an ID of the wrong form never does).
    pub(crate) fn volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        if !valid_id(VOLUME_PREFIX, id) {
            return Ok(None);
        }
        read_record(&self.volumes_dir().join(id).join("volume.json"))
    }

    /// Every volume, ordered by ID.
    pub(crate) fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        self.list(&self.volumes_dir(), VOLUME_PREFIX, |id| self.volume(id))
    }

    /// Records volume `record` (its directory must exist).
    pub(crate) fn save_volume(&self, record: &VolumeRecord) -> Result<()> {
        write_record(&self.volumes_dir().join(&record.id).join("volume.json"), record)
    }

    /// Removes volume `id`'s directory (record, data) and node record.
    pub(crate) fn remove_volume(&self, id: &str) -> Result<()> {
        self.save_node(id, &NodeRecord::default())?;
        remove_all(&self.volumes_dir().join(id))
    }

    /// Removes a volume or snapshot directory whose creation failed.
    pub(crate) fn discard(&self, dir: &Path) -> Result<()> {
        remove_all(dir)
    }

    /// Snapshot `id`, if it exists.
    pub(crate) fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        if !valid_id(SNAPSHOT_PREFIX, id) {
            return Ok(None);
        }
        read_record(&self.snapshots_dir().join(id).join("snapshot.json"))
    }

    /// Every snapshot, ordered by ID.
    pub(crate) fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.list(&self.snapshots_dir(), SNAPSHOT_PREFIX, |id| self.snapshot(id))
    }

    /// Records snapshot `record` (its directory must exist).
    pub(crate) fn save_snapshot(&self, record: &SnapshotRecord) -> Result<()> {
        write_record(&self.snapshots_dir().join(&record.id).join("snapshot.json"), record)
    }

    /// Removes snapshot `id` and its data.
    pub(crate) fn remove_snapshot(&self, id: &str) -> Result<()> {
        remove_all(&self.snapshots_dir().join(id))
    }

    /// The node-side state of volume `id` (empty if none is recorded).
    pub(crate) fn node(&self, id: &str) -> Result<NodeRecord> {
        if !valid_id(VOLUME_PREFIX, id) {
            return Ok(NodeRecord::default());
        }
        Ok(read_record(&self.node_dir().join(format!("{id}.json")))?.unwrap_or_default())
    }

    /// Records the node-side state of volume `id`; an empty state removes
    /// the file.
    pub(crate) fn save_node(&self, id: &str, record: &NodeRecord) -> Result<()> {
        let path = self.node_dir().join(format!("{id}.json"));
        if *record != NodeRecord::default() {
            return write_record(&path, record);
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    fn list<T>(&self, dir: &Path, prefix: &str, read: impl Fn(&str) -> Result<Option<T>>) -> Result<Vec<T>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let name = entry.map_err(io_error("listing", dir))?.file_name();
            if let Some(id) = name.to_str().filter(|id| valid_id(prefix, id)) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        // A directory without its record is a creation in progress: skipped.
        Ok(ids.iter().map(|id| read(id)).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
    }
}

fn read_record<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", path)(e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|source| StoreError::Json { path: path.to_path_buf(), source })
}

/// Writes `record` to `path` atomically: a temporary file beside it is
/// written and synced, then renamed over it, and the directory is synced.
fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let text =
        serde_json::to_vec_pretty(record).map_err(|source| StoreError::Json { path: path.to_path_buf(), source })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(io_error("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("renaming into place", path))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing", dir))
}

/// Removes the directory `path` with everything in it (or the file
/// `path`); nothing there is fine.
fn remove_all(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        let id = new_id(VOLUME_PREFIX);
        assert!(valid_id(VOLUME_PREFIX, &id), "{id}");
        for bad in ["", "vol-", "vol-../../etc", "snap-0123456789abcdef0123456789abcdef", &id.to_uppercase()] {
            assert!(!valid_id(VOLUME_PREFIX, bad), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_unfinished_creations_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (id, _) = store.new_volume_dir().unwrap();
        let (unfinished, unfinished_dir) = store.new_volume_dir().unwrap();
        let record = VolumeRecord {
            id: id.clone(),
            name: "db".into(),
            capacity_bytes: 1 << 20,
            backing: Backing::Image,
            fs_type: Some("ext4".into()),
            parameters: BTreeMap::from([("backing".into(), "image".into())]),
            source: Some(Source::Snapshot("snap-x".into())),
            created: SystemTime::now(),
        };
        store.save_volume(&record).unwrap();
        assert_eq!(store.volumes().unwrap().len(), 1, "the unfinished volume is not listed");
        assert!(store.volume(&unfinished).unwrap().is_none());

        let store = Store::open(dir.path()).unwrap();
        assert!(!unfinished_dir.exists());
        let read = store.volume(&id).unwrap().unwrap();
        assert_eq!((read.name.as_str(), read.source), ("db", Some(Source::Snapshot("snap-x".into()))));
        assert_eq!(store.node(&id).unwrap(), NodeRecord::default());
        store.remove_volume(&id).unwrap();
        assert!(store.volume(&id).unwrap().is_none());
    }
}
