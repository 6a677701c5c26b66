//! The client's persisted state (`<data_dir>/client/state.db`, redb): for
//! each allocation, the allocation itself, its task states and the driver
//! handles needed to re-attach to running tasks after a restart.
//!
//! Writers never wait for the disk. A write lands in memory at once (what
//! [`ClientState::load`] answers) and joins the pending rows; one committer
//! thread writes the pending rows in a single durable transaction a few
//! milliseconds after a write that must reach disk (task handles, removals)
//! once writes pause, or at most [`LAZY_WRITE_DELAY`] after one that need
//! not (status and events). Many allocations changing at once thus cost a
//! few disk syncs, not one each, and no alloc runner sits behind an fsync.
//! A later write of an allocation replaces an earlier pending one.
//! [`ClientState::flush`] (agent shutdown) and dropping the store write
//! whatever is pending. `berth.client.state.writes` and
//! `berth.client.state.commits` count both sides.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::driver::TaskHandle;
use crate::structs::{Allocation, TaskState};

const ALLOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("allocs");

/// How long writes must pause before pending durable rows are committed.
const QUIET: Duration = Duration::from_millis(3);
/// The longest a durable row waits for writes to pause.
const DURABLE_DELAY: Duration = Duration::from_millis(30);
/// The longest a row that need not be durable at once stays in memory only.
pub const LAZY_WRITE_DELAY: Duration = Duration::from_secs(2);
/// Wait before retrying a commit that failed.
const RETRY: Duration = Duration::from_secs(1);

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
    /// The client stopped it because its `max_run_duration` ran out.
    #[serde(default)]
    pub max_run_exceeded: bool,
    /// Its health in a deployment (the deployment's ID), once decided.
    #[serde(default)]
    pub health: Option<(String, crate::structs::AllocDeploymentStatus)>,
}

/// The client state database.
pub struct ClientState {
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    db: Database,
    path: String,
    rows: parking_lot::Mutex<Rows>,
    /// Wakes the committer.
    wake: parking_lot::Condvar,
    /// Wakes [`ClientState::flush`] callers.
    committed: parking_lot::Condvar,
}

/// The latest state and what of it is not on disk yet.
#[derive(Default)]
struct Rows {
    /// Every allocation as last written.
    latest: BTreeMap<String, PersistedAlloc>,
    /// Rows not yet committed, by allocation ID (`None`: delete it).
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// When the oldest pending row that must be durable soon was written.
    urgent_since: Option<Instant>,
    /// When the oldest pending row was written.
    pending_since: Option<Instant>,
    /// When the latest write came.
    last_write: Option<Instant>,
    /// A caller waits for everything pending to be on disk.
    flush_asked: bool,
    /// The committer is writing a batch.
    committing: bool,
    /// After a failed commit: no retry before this.
    not_before: Option<Instant>,
    /// Commits done.
    commits: u64,
    /// Commits that failed.
    failures: u64,
    /// The committer is to finish.
    closing: bool,
}

impl Rows {
    /// When the pending rows are due to be committed (now if a flush is asked).
    fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let now = Instant::now();
        let due = if self.flush_asked || self.closing {
            Some(now)
        } else {
            let lazy = self.pending_since.map(|t| t + LAZY_WRITE_DELAY);
            let urgent = self.urgent_since.map(|t| {
                let quiet = self.last_write.map_or(now, |w| w + QUIET);
                quiet.min(t + DURABLE_DELAY)
            });
            [lazy, urgent].into_iter().flatten().min()
        };
        due.map(|at| self.not_before.map_or(at, |nb| at.max(nb)))
    }
}

impl ClientState {
    fn err(&self, e: impl std::fmt::Display) -> ClientStateError {
        ClientStateError { path: self.shared.path.clone(), reason: e.to_string() }
    }

    /// Opens (or creates) the database in `dir` and reads it.
    pub fn open(dir: &Path) -> Result<Self, ClientStateError> {
        let path = dir.join("state.db");
        let fail =
            |e: &dyn std::fmt::Display| ClientStateError { path: path.display().to_string(), reason: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let db = Database::create(&path).map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(ALLOCS).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        let mut latest = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(|e| fail(&e))?;
            let table = txn.open_table(ALLOCS).map_err(|e| fail(&e))?;
            for row in table.iter().map_err(|e| fail(&e))? {
                let (k, v) = row.map_err(|e| fail(&e))?;
                match serde_json::from_slice::<PersistedAlloc>(v.value()) {
                    Ok(p) => {
                        latest.insert(k.value().to_string(), p);
                    }
                    Err(e) => tracing::warn!(alloc_id = k.value(), error = %e, "skipping unreadable allocation state"),
                }
            }
        }
        let shared = Arc::new(Shared {
            db,
            path: path.display().to_string(),
            rows: parking_lot::Mutex::new(Rows { latest, ..Default::default() }),
            wake: Default::default(),
            committed: Default::default(),
        });
        let worker = shared.clone();
        let committer = std::thread::Builder::new()
            .name("berth-client-state".into())
            .spawn(move || worker.commit_loop())
            .map_err(|e| fail(&e))?;
        Ok(ClientState { shared, committer: Some(committer) })
    }

    /// Every allocation as last written (from memory).
    pub fn load(&self) -> Vec<PersistedAlloc> {
        self.shared.rows.lock().latest.values().cloned().collect()
    }

    /// One allocation as last written.
    pub fn get(&self, id: &str) -> Option<PersistedAlloc> {
        self.shared.rows.lock().latest.get(id).cloned()
    }

    /// Stores one allocation's state. `durable` rows are committed within
    /// milliseconds (task handles: what a restarted client re-attaches
    /// with); the others within [`LAZY_WRITE_DELAY`].
    pub fn put(&self, p: &PersistedAlloc, durable: bool) -> Result<(), ClientStateError> {
        let data = serde_json::to_vec(p).map_err(|e| self.err(e))?;
        self.shared.write(&p.alloc.id, Some((p.clone(), data)), durable);
        Ok(())
    }

    /// Forgets an allocation.
    pub fn delete(&self, id: &str) {
        self.shared.write(id, None, true);
    }

    /// Returns once everything written so far is on disk, or a commit
    /// failed meanwhile (the committer logs it and retries).
    pub fn flush(&self) {
        let mut rows = self.shared.rows.lock();
        let failures = rows.failures;
        while (!rows.pending.is_empty() || rows.committing) && rows.failures == failures {
            rows.flush_asked = true;
            self.shared.wake.notify_one();
            self.shared.committed.wait(&mut rows);
        }
    }
}

impl Drop for ClientState {
    fn drop(&mut self) {
        self.shared.rows.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
    }
}

impl Shared {
    fn write(&self, id: &str, row: Option<(PersistedAlloc, Vec<u8>)>, durable: bool) {
        metrics::counter!("berth.client.state.writes").increment(1);
        let now = Instant::now();
        let mut rows = self.rows.lock();
        match row {
            Some((p, data)) => {
                rows.latest.insert(id.to_string(), p);
                rows.pending.insert(id.to_string(), Some(data));
            }
            None => {
                rows.latest.remove(id);
                rows.pending.insert(id.to_string(), None);
            }
        }
        rows.pending_since.get_or_insert(now);
        if durable {
            rows.urgent_since.get_or_insert(now);
        }
        rows.last_write = Some(now);
        self.wake.notify_one();
    }

    /// The committer: sleeps until pending rows are due, commits them in
    /// one durable transaction, and on `closing` commits what is left.
    fn commit_loop(&self) {
        let mut rows = self.rows.lock();
        loop {
            match rows.due() {
                None if rows.closing => return,
                None => {
                    self.wake.wait(&mut rows);
                    continue;
                }
                Some(at) if at > Instant::now() => {
                    let _ = self.wake.wait_until(&mut rows, at);
                    continue;
                }
                Some(_) => {}
            }
            let batch = std::mem::take(&mut rows.pending);
            rows.urgent_since = None;
            rows.pending_since = None;
            rows.flush_asked = false;
            rows.not_before = None;
            rows.committing = true;
            let result = parking_lot::MutexGuard::unlocked(&mut rows, || self.commit_rows(&batch));
            rows.committing = false;
            rows.commits += 1;
            if let Err(why) = result {
                rows.failures += 1;
                metrics::counter!("berth.client.state.errors").increment(1);
                tracing::error!(path = %self.path, error = %why, "committing the client state; retrying");
                // Rows written meanwhile are newer than the failed ones.
                for (id, row) in batch {
                    rows.pending.entry(id).or_insert(row);
                }
                let now = Instant::now();
                rows.urgent_since.get_or_insert(now);
                rows.pending_since.get_or_insert(now);
                rows.not_before = Some(now + RETRY);
                if rows.closing {
                    self.committed.notify_all();
                    return;
                }
            }
            self.committed.notify_all();
        }
    }

    fn commit_rows(&self, rows: &BTreeMap<String, Option<Vec<u8>>>) -> Result<(), String> {
        metrics::counter!("berth.client.state.commits").increment(1);
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
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

    fn on_disk(dir: &Path) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = ClientState::open(dir)
            .unwrap()
            .load()
            .into_iter()
            .map(|p| (p.alloc.id, p.alloc.client_description))
            .collect();
        found.sort();
        found
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
                    store.delete(&format!("a{t}-4"));
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(store.load().len(), 32, "reads see every write at once");
        drop(store);
        let mut expected: Vec<(String, String)> =
            (0..8).flat_map(|t| (0..4).map(move |k| (format!("a{t}-{k}"), format!("write {}", 35 + k)))).collect();
        expected.sort();
        assert_eq!(on_disk(dir.path()), expected);
    }

    #[test]
    fn a_durable_write_reaches_disk_without_a_flush_and_a_lazy_one_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClientState::open(dir.path()).unwrap();
        store.put(&persisted("lazy", "x"), false).unwrap();
        let read = |id: &str| -> Option<String> {
            let txn = store.shared.db.begin_read().unwrap();
            let table = txn.open_table(ALLOCS).unwrap();
            table.get(id).unwrap().map(|v| String::from_utf8_lossy(v.value()).into_owned())
        };
        std::thread::sleep(DURABLE_DELAY * 3);
        assert_eq!(read("lazy"), None, "a lazy write waits");
        store.put(&persisted("urgent", "y"), true).unwrap();
        let started = Instant::now();
        while read("urgent").is_none() {
            assert!(started.elapsed() < Duration::from_secs(5), "the durable write was never committed");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(read("lazy").is_some(), "pending lazy rows go with a durable commit");
        store.put(&persisted("lazy", "z"), false).unwrap();
        store.flush();
        assert!(read("lazy").unwrap().contains("\"z\""), "a flush commits lazy rows");
    }

    #[test]
    fn a_burst_of_durable_writes_is_one_commit_or_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClientState::open(dir.path()).unwrap();
        let before = store.shared.rows.lock().commits;
        assert_eq!(before, 0);
        for n in 0..100 {
            store.put(&persisted(&format!("a{n}"), "started"), true).unwrap();
        }
        store.flush();
        let commits = store.shared.rows.lock().commits - before;
        assert!((1..=10).contains(&commits), "{commits} commits for 100 durable writes");
        drop(store);
        assert_eq!(on_disk(dir.path()).len(), 100);
    }
}
