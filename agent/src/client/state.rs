//! The client's persisted state (`<data_dir>/client/state.db`, redb): for
//! each allocation, the allocation itself, its task states and the driver
//! handles needed to re-attach to running tasks after a restart.
//!
//! Writes are group-committed: the alloc runners' writes that arrive while
//! one commit is under way go together in the next one (a later write of
//! an allocation replacing an earlier one), so many allocations starting
//! at once cost a few disk syncs, not one each. `berth.client.state.writes`
//! and `berth.client.state.commits` count both.

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
    group: parking_lot::Mutex<Group>,
    committed: parking_lot::Condvar,
}

/// Writes waiting for the next commit, and the commits ("rounds") done.
#[derive(Default)]
struct Group {
    /// Rows of the next round by allocation ID (`None`: delete it).
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Whether the next round must be on disk when it returns.
    durable: bool,
    /// The round pending rows go in.
    next: u64,
    /// Rounds up to this one are committed or failed.
    done: u64,
    /// A writer is committing a round.
    busy: bool,
    /// Why the latest failed rounds failed, by round.
    failures: BTreeMap<u64, String>,
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
        let group = parking_lot::Mutex::new(Group { next: 1, ..Default::default() });
        Ok(ClientState { db, path: path.display().to_string(), group, committed: Default::default() })
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
        self.write(&p.alloc.id, Some(data), durable)
    }

    /// Forgets an allocation.
    pub fn delete(&self, id: &str) -> Result<(), ClientStateError> {
        self.write(id, None, true)
    }

    /// Adds a row to the next round and returns once that round is
    /// committed: by this writer, when no commit is under way, or by the
    /// one that is.
    fn write(&self, id: &str, row: Option<Vec<u8>>, durable: bool) -> Result<(), ClientStateError> {
        metrics::counter!("berth.client.state.writes").increment(1);
        let mut g = self.group.lock();
        g.pending.insert(id.to_string(), row);
        g.durable |= durable;
        let round = g.next;
        loop {
            if g.done >= round {
                return g.failures.get(&round).map_or(Ok(()), |why| Err(self.err(why)));
            }
            if g.busy {
                self.committed.wait(&mut g);
                continue;
            }
            // Nothing under way: commit this round, with whatever joined it.
            g.busy = true;
            g.next += 1;
            let rows = std::mem::take(&mut g.pending);
            let durable = std::mem::take(&mut g.durable);
            let result = parking_lot::MutexGuard::unlocked(&mut g, || self.commit_rows(&rows, durable));
            g.busy = false;
            g.done = round;
            if let Err(why) = result {
                g.failures.insert(round, why);
                while g.failures.len() > 64 {
                    g.failures.pop_first();
                }
            }
            self.committed.notify_all();
        }
    }

    fn commit_rows(&self, rows: &BTreeMap<String, Option<Vec<u8>>>, durable: bool) -> Result<(), String> {
        metrics::counter!("berth.client.state.commits", "durable" => if durable { "true" } else { "false" })
            .increment(1);
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(|e| e.to_string())?;
        }
        {
            let mut table = txn.open_table(ALLOCS).map_err(|e| e.to_string())?;
            for (id, row) in rows {
                match row {
                    Some(row) => table.insert(id.as_str(), row.as_slice()).map(drop),
                    None => table.remove(id.as_str()).map(drop),
                }
                .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn persisted(id: &str, marker: &str) -> PersistedAlloc {
        let alloc = Allocation { id: id.into(), client_description: marker.into(), ..Default::default() };
        PersistedAlloc { alloc, ..Default::default() }
    }

    #[test]
    fn concurrent_writes_are_grouped_and_each_allocation_keeps_its_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ClientState::open(dir.path()).unwrap());
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..40 {
                        let id = format!("a{t}-{}", n % 5);
                        store.put(&persisted(&id, &format!("write {n}")), n % 2 == 0).unwrap();
                    }
                    store.delete(&format!("a{t}-4")).unwrap();
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        drop(store);
        let reopened = ClientState::open(dir.path()).unwrap();
        let mut found: Vec<(String, String)> =
            reopened.load().unwrap().into_iter().map(|p| (p.alloc.id, p.alloc.client_description)).collect();
        found.sort();
        let mut expected: Vec<(String, String)> =
            (0..8).flat_map(|t| (0..4).map(move |k| (format!("a{t}-{k}"), format!("write {}", 35 + k)))).collect();
        expected.sort();
        assert_eq!(found, expected);
    }
}
