//! The client's persisted state (`<data_dir>/client/state.db`, redb): for
//! each allocation, the allocation itself, its task states and the driver
//! handles needed to re-attach to running tasks after a restart.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::driver::TaskHandle;
use crate::structs::{Allocation, TaskState};

const ALLOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("allocs");

/// Failures of the client state database.
#[derive(Debug, thiserror::Error)]
#[error("client state {path}: {reason}")]
pub struct ClientStateError {
    path: String,
    reason: String,
}

/// What is persisted per allocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PersistedAlloc {
    /// The allocation as last received.
    pub alloc: Allocation,
    /// Task states.
    pub task_states: BTreeMap<String, TaskState>,
    /// Handles of running tasks.
    pub handles: BTreeMap<String, TaskHandle>,
    /// The allocation's CSI volumes are unpublished from this node.
    #[serde(default)]
    pub csi_volumes_released: bool,
}

/// The client state database.
pub struct ClientState {
    db: Database,
    path: String,
}

impl ClientState {
    fn err(&self, e: impl std::fmt::Display) -> ClientStateError {
        ClientStateError { path: self.path.clone(), reason: e.to_string() }
    }

    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClientStateError> {
        let path = dir.join("state.db");
        let fail =
            |e: &dyn std::fmt::Display| ClientStateError { path: path.display().to_string(), reason: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let db = Database::create(&path).map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(ALLOCS).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        Ok(ClientState { db, path: path.display().to_string() })
    }

    /// Every persisted allocation.
    pub fn load(&self) -> Result<Vec<PersistedAlloc>, ClientStateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ALLOCS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            match serde_json::from_slice(v.value()) {
                Ok(p) => out.push(p),
                Err(e) => tracing::warn!(alloc_id = k.value(), error = %e, "skipping unreadable allocation state"),
            }
        }
        Ok(out)
    }

    /// Stores one allocation's state. `durable` commits are on disk when
    /// this returns (needed when task handles change: they are what a
    /// restarted client re-attaches with); the others reach disk with the
    /// next durable commit.
    pub fn put(&self, p: &PersistedAlloc, durable: bool) -> Result<(), ClientStateError> {
        let data = serde_json::to_vec(p).map_err(|e| self.err(e))?;
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        }
        txn.open_table(ALLOCS)
            .map_err(|e| self.err(e))?
            .insert(p.alloc.id.as_str(), data.as_slice())
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets an allocation.
    pub fn delete(&self, id: &str) -> Result<(), ClientStateError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(ALLOCS).map_err(|e| self.err(e))?.remove(id).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }
}
