//! The on-disk half of the state store: one redb table per entity kind,
//! values as JSON, every batch of writes committed in one transaction.
//!
//! A job's body is stored once per version, in `job_versions`; the `jobs`
//! row (the current version) and every allocation row refer to it by
//! [`JobRef`] (the registration's create index and the version), so a
//! status report rewrites a small allocation row and never a job. A
//! version that allocations still use outlives a purge of its job until
//! the last of them is removed. Rows written before this layout (full jobs
//! in `jobs` and in allocation rows) still load.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{StateError, Tables, WriteBatch};
use crate::structs::{Allocation, Job};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const JOB_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_versions");
const ALLOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("allocs");
const EVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("evals");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("csi_volumes");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("service_registrations");
const VARIABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("variables");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The redb file behind a server's state.
pub struct Persist {
    db: Database,
}

/// Which stored body of a job: the registration (its create index, new
/// after a purge and a fresh register) and the version. Stored as a JSON
/// array, which no row of the older layout (an object) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRef(u64, u64);

impl JobRef {
    /// The reference to `job`'s body.
    pub fn of(job: &Job) -> JobRef {
        JobRef(job.create_index, job.version)
    }

    /// The registration: the job's create index.
    pub fn registration(self) -> u64 {
        self.0
    }
}

/// A job version's body, named: namespace, job ID and reference.
pub type VersionName = (String, String, JobRef);

/// Key of a job version: zero-padded so registrations and versions sort
/// numerically under the job's prefix.
fn version_key(ns: &str, id: &str, r: JobRef) -> String {
    format!("{ns}\u{0}{id}\u{0}{:020}\u{0}{:020}", r.0, r.1)
}

/// What a commit removes of the job bodies beyond its batch: the bodies
/// (namespace, job, reference) to keep through a purge, because
/// allocations still use them, and those whose last user the batch removes.
#[derive(Debug, Default)]
pub struct Retention {
    /// Bodies a purge in the batch keeps.
    pub keep: BTreeSet<VersionName>,
    /// Bodies of purged jobs no allocation uses any longer.
    pub drop: BTreeSet<VersionName>,
}

impl Retention {
    /// What `batch`, applied to `current`, keeps and drops.
    pub fn of(current: &Tables, batch: &WriteBatch) -> Retention {
        let mut out = Retention::default();
        if batch.delete_jobs.is_empty() && batch.delete_allocs.is_empty() {
            return out;
        }
        let deleted: BTreeSet<&str> = batch.delete_allocs.iter().map(String::as_str).collect();
        let written: BTreeSet<&str> = batch.allocs.iter().map(|a| a.id.as_str()).collect();
        let purged: BTreeSet<(&str, &str)> = batch.delete_jobs.iter().map(|(n, i)| (n.as_str(), i.as_str())).collect();
        // The bodies the allocations of (ns, job) use once the batch is in.
        let mut used: HashMap<(String, String), BTreeSet<JobRef>> = HashMap::new();
        let mut used_after = |ns: &str, id: &str| -> BTreeSet<JobRef> {
            let key = (ns.to_string(), id.to_string());
            used.entry(key)
                .or_insert_with(|| {
                    let kept = current.allocs_by_job(ns, id);
                    let kept =
                        kept.iter().filter(|a| !deleted.contains(a.id.as_str()) && !written.contains(a.id.as_str()));
                    let new = batch.allocs.iter().filter(|a| a.namespace == ns && a.job_id == id);
                    kept.map(|a| &**a).chain(new).filter_map(|a| a.job.as_deref().map(JobRef::of)).collect()
                })
                .clone()
        };
        for (ns, id) in &purged {
            out.keep.extend(used_after(ns, id).into_iter().map(|r| (ns.to_string(), id.to_string(), r)));
        }
        // A removed allocation of a job that is gone (or registered anew) may
        // have been the last user of a kept body.
        for a in batch.delete_allocs.iter().filter_map(|id| current.alloc(id)) {
            let Some(r) = a.job.as_deref().map(JobRef::of) else { continue };
            let registered = !purged.contains(&(a.namespace.as_str(), a.job_id.as_str()))
                && current
                    .job(&a.namespace, &a.job_id)
                    .is_some_and(|j| JobRef::of(&j).registration() == r.registration());
            if !registered && !used_after(&a.namespace, &a.job_id).contains(&r) {
                out.drop.insert((a.namespace.clone(), a.job_id.clone(), r));
            }
        }
        out
    }
}

/// An allocation row: the allocation without its job, and the reference.
fn alloc_row(a: &Allocation) -> Result<Vec<u8>, StateError> {
    match &a.job {
        Some(job) => to_json(&(&Allocation { job: None, ..a.clone() }, JobRef::of(job))),
        None => to_json(a),
    }
}

/// Decodes an allocation row of either layout; `bodies` gives the job.
fn decode_alloc(bytes: &[u8], bodies: &HashMap<VersionName, Arc<Job>>) -> Result<Allocation, String> {
    if bytes.first() != Some(&b'[') {
        return serde_json::from_slice(bytes).map_err(|e| e.to_string());
    }
    let (mut alloc, r): (Allocation, JobRef) = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let name = (alloc.namespace.clone(), alloc.job_id.clone(), r);
    alloc.job = Some(bodies.get(&name).cloned().ok_or_else(|| {
        format!("its job {:?} version {} (registered at index {}) is not stored", alloc.job_id, r.1, r.0)
    })?);
    Ok(alloc)
}

/// Decodes a `jobs` row of either layout: a reference into `bodies` or,
/// from before, the job itself.
fn decode_job(ns_id: &str, bytes: &[u8], bodies: &HashMap<VersionName, Arc<Job>>) -> Result<Arc<Job>, String> {
    if bytes.first() != Some(&b'[') {
        return serde_json::from_slice(bytes).map(Arc::new).map_err(|e| e.to_string());
    }
    let r: JobRef = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let (ns, id) = ns_id.split_once('\u{0}').unwrap_or(("", ns_id));
    bodies.get(&(ns.to_string(), id.to_string(), r)).cloned().ok_or_else(|| format!("version {} is not stored", r.1))
}

/// Key of a namespaced object.
pub fn ns_key(ns: &str, id: &str) -> String {
    format!("{ns}\u{0}{id}")
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(v).map_err(|e| StateError::Encode(e.to_string()))
}

fn load<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
    name: &str,
) -> Result<Vec<T>, StateError> {
    let table = txn.open_table(def)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let item = serde_json::from_slice(v.value())
            .map_err(|e| StateError::Decode(format!("{} {:?}: {e}", name, k.value())))?;
        out.push(item);
    }
    Ok(out)
}

impl Persist {
    /// Opens (or creates) `state.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io(dir.display().to_string(), e))?;
        let db = Database::create(dir.join("state.db"))?;
        let txn = db.begin_write()?;
        for def in [JOBS, JOB_VERSIONS, ALLOCS, EVALS, NODES, DEPLOYMENTS, VOLUMES, SERVICES, VARIABLES] {
            txn.open_table(def)?;
        }
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Persist { db })
    }

    /// Reads every table into memory. Allocations of one job version
    /// share its body.
    pub fn load(&self) -> Result<Tables, StateError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(META)?.get("index")?.map(|v| v.value()).unwrap_or(0);
        let mut tables = Tables { index, ..Default::default() };
        let bodies: HashMap<VersionName, Arc<Job>> = load::<Job>(&txn, JOB_VERSIONS, "job_versions")?
            .into_iter()
            .map(|j| ((j.namespace.clone(), j.id.clone(), JobRef::of(&j)), Arc::new(j)))
            .collect();
        for row in txn.open_table(JOBS)?.iter()? {
            let (k, v) = row?;
            let job = decode_job(k.value(), v.value(), &bodies)
                .map_err(|e| StateError::Decode(format!("jobs {:?}: {e}", k.value())))?;
            tables.insert_job(job);
        }
        // The history of each job's current registration; bodies kept only
        // for the allocations of a purged job are not history.
        for ((ns, id, r), body) in &bodies {
            if tables.job(ns, id).is_some_and(|j| j.create_index == r.0) {
                tables.insert_job_version(body.clone());
            }
        }
        for node in load(&txn, NODES, "nodes")? {
            tables.insert_node(node);
        }
        for eval in load(&txn, EVALS, "evals")? {
            tables.insert_eval(eval);
        }
        for row in txn.open_table(ALLOCS)?.iter()? {
            let (k, v) = row?;
            let alloc = decode_alloc(v.value(), &bodies)
                .map_err(|e| StateError::Decode(format!("allocs {:?}: {e}", k.value())))?;
            tables.insert_alloc(alloc);
        }
        for dep in load(&txn, DEPLOYMENTS, "deployments")? {
            tables.insert_deployment(dep);
        }
        for volume in load(&txn, VOLUMES, "csi_volumes")? {
            tables.insert_volume(volume);
        }
        for registration in load(&txn, SERVICES, "service_registrations")? {
            tables.services.insert(registration);
        }
        for variable in load::<super::StoredVariable>(&txn, VARIABLES, "variables")? {
            tables.variables.insert(ns_key(&variable.meta.namespace, &variable.meta.path), Arc::new(variable));
        }
        Ok(tables)
    }

    /// Writes one batch durably; nothing of it is visible on disk unless
    /// all is. `retention` says which job bodies a purge keeps and which
    /// kept ones go.
    pub fn commit(&self, index: u64, batch: &WriteBatch, retention: &Retention) -> Result<(), StateError> {
        let txn = self.db.begin_write()?;
        {
            let mut jobs = txn.open_table(JOBS)?;
            let mut versions = txn.open_table(JOB_VERSIONS)?;
            for job in &batch.jobs {
                let r = JobRef::of(job);
                jobs.insert(ns_key(&job.namespace, &job.id).as_str(), to_json(&r)?.as_slice())?;
                versions.insert(version_key(&job.namespace, &job.id, r).as_str(), to_json(job)?.as_slice())?;
            }
            for (ns, id) in &batch.delete_jobs {
                jobs.remove(ns_key(ns, id).as_str())?;
                let start = ns_key(ns, id) + "\u{0}";
                let end = ns_key(ns, id) + "\u{1}";
                let mut doomed = Vec::new();
                for row in versions.range(start.as_str()..end.as_str())? {
                    let (k, v) = row?;
                    let kept = serde_json::from_slice::<Job>(v.value())
                        .is_ok_and(|j| retention.keep.contains(&(ns.clone(), id.clone(), JobRef::of(&j))));
                    if !kept {
                        doomed.push(k.value().to_string());
                    }
                }
                for k in doomed {
                    versions.remove(k.as_str())?;
                }
            }
            for (ns, id, r) in &retention.drop {
                versions.remove(version_key(ns, id, *r).as_str())?;
            }
            let mut allocs = txn.open_table(ALLOCS)?;
            for a in &batch.allocs {
                allocs.insert(a.id.as_str(), alloc_row(a)?.as_slice())?;
            }
            for id in &batch.delete_allocs {
                allocs.remove(id.as_str())?;
            }
            let mut evals = txn.open_table(EVALS)?;
            for e in &batch.evals {
                evals.insert(e.id.as_str(), to_json(e)?.as_slice())?;
            }
            for id in &batch.delete_evals {
                evals.remove(id.as_str())?;
            }
            let mut nodes = txn.open_table(NODES)?;
            for n in &batch.nodes {
                nodes.insert(n.id.as_str(), to_json(n)?.as_slice())?;
            }
            let mut deps = txn.open_table(DEPLOYMENTS)?;
            for d in &batch.deployments {
                deps.insert(d.id.as_str(), to_json(d)?.as_slice())?;
            }
            for id in &batch.delete_deployments {
                deps.remove(id.as_str())?;
            }
            let mut volumes = txn.open_table(VOLUMES)?;
            for v in &batch.volumes {
                volumes.insert(ns_key(&v.namespace, &v.id).as_str(), to_json(v)?.as_slice())?;
            }
            for (ns, id) in &batch.delete_volumes {
                volumes.remove(ns_key(ns, id).as_str())?;
            }
            let mut services = txn.open_table(SERVICES)?;
            for id in &batch.delete_services {
                services.remove(id.as_str())?;
            }
            for r in &batch.services {
                services.insert(r.id.as_str(), to_json(r)?.as_slice())?;
            }
            let mut variables = txn.open_table(VARIABLES)?;
            for (ns, path) in &batch.delete_variables {
                variables.remove(ns_key(ns, path).as_str())?;
            }
            for v in &batch.variables {
                variables.insert(ns_key(&v.meta.namespace, &v.meta.path).as_str(), to_json(v)?.as_slice())?;
            }
            txn.open_table(META)?.insert("index", index)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::StateStore;
    use super::*;
    use crate::structs::{desired, TaskGroup};

    fn rows(dir: &Path, def: TableDefinition<&str, &[u8]>) -> Vec<Vec<u8>> {
        let db = Database::open(dir.join("state.db")).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(def).unwrap();
        table.iter().unwrap().map(|r| r.unwrap().1.value().to_vec()).collect()
    }

    fn write(store: &StateStore, f: impl FnOnce(&mut WriteBatch)) {
        let mut b = WriteBatch::default();
        f(&mut b);
        store.apply(b).unwrap();
    }

    fn alloc(id: &str, job: &Arc<Job>) -> Allocation {
        Allocation {
            id: id.into(),
            namespace: "default".into(),
            job_id: job.id.clone(),
            node_id: "n1".into(),
            desired_status: desired::RUN.into(),
            job: Some(job.clone()),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_body_is_stored_once_per_version_and_outlives_a_purge_while_allocations_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = Job {
            id: "web".into(),
            namespace: "default".into(),
            task_groups: vec![TaskGroup { name: "g".repeat(4096), ..Default::default() }],
            ..Default::default()
        };
        {
            let store = StateStore::open(dir.path()).unwrap();
            write(&store, |b| b.jobs.push(big.clone()));
            let job = store.snapshot().job("default", "web").unwrap();
            write(&store, |b| b.allocs.extend([alloc("a1", &job), alloc("a2", &job)]));
            for status in ["pending", "running"] {
                let mut a = (*store.snapshot().alloc("a1").unwrap()).clone();
                a.client_status = status.into();
                write(&store, |b| b.allocs.push(a));
            }
        }
        assert_eq!(rows(dir.path(), JOB_VERSIONS).len(), 1, "one body for version 0");
        for row in rows(dir.path(), JOBS).iter().chain(&rows(dir.path(), ALLOCS)) {
            assert!(row.len() < 2048, "a row holds a job: {} bytes", row.len());
        }

        let store = StateStore::open(dir.path()).unwrap();
        let snap = store.snapshot();
        let (a1, a2) = (snap.alloc("a1").unwrap(), snap.alloc("a2").unwrap());
        assert_eq!(a1.client_status, "running");
        assert!(Arc::ptr_eq(a1.job.as_ref().unwrap(), a2.job.as_ref().unwrap()), "one body shared after a load");
        assert_eq!(**a1.job.as_ref().unwrap(), *snap.job("default", "web").unwrap());
        drop(snap);

        // Purge: a1 stops and stays, a2 goes; the body stays for a1.
        let mut stopped = (*store.snapshot().alloc("a1").unwrap()).clone();
        stopped.desired_status = desired::STOP.into();
        write(&store, |b| {
            b.delete_jobs.push(("default".into(), "web".into()));
            b.allocs.push(stopped);
            b.delete_allocs.push("a2".into());
        });
        drop(store);
        assert_eq!(rows(dir.path(), JOB_VERSIONS).len(), 1, "kept for a1");
        let store = StateStore::open(dir.path()).unwrap();
        let snap = store.snapshot();
        assert!(snap.job("default", "web").is_none() && snap.job_versions("default", "web").is_empty());
        assert_eq!(snap.alloc("a1").unwrap().job.as_ref().unwrap().task_groups[0].name.len(), 4096);
        drop(snap);

        // Its last allocation removed, the body goes too.
        write(&store, |b| b.delete_allocs.push("a1".into()));
        drop(store);
        assert!(rows(dir.path(), JOB_VERSIONS).is_empty());
    }

    #[test]
    fn rows_of_the_older_layout_load() {
        let dir = tempfile::tempdir().unwrap();
        let job =
            Arc::new(Job { id: "web".into(), namespace: "default".into(), create_index: 1, ..Default::default() });
        {
            let db = Database::create(dir.path().join("state.db")).unwrap();
            let txn = db.begin_write().unwrap();
            let body = serde_json::to_vec(&*job).unwrap();
            txn.open_table(JOBS).unwrap().insert(ns_key("default", "web").as_str(), body.as_slice()).unwrap();
            let old_key = format!("default\u{0}web\u{0}{:020}", 0);
            txn.open_table(JOB_VERSIONS).unwrap().insert(old_key.as_str(), body.as_slice()).unwrap();
            let row = serde_json::to_vec(&alloc("a1", &job)).unwrap();
            txn.open_table(ALLOCS).unwrap().insert("a1", row.as_slice()).unwrap();
            txn.open_table(META).unwrap().insert("index", 2).unwrap();
            txn.commit().unwrap();
        }
        let snap = StateStore::open(dir.path()).unwrap().snapshot();
        assert_eq!(snap.job("default", "web").unwrap().id, "web");
        assert_eq!(snap.job_versions("default", "web").len(), 1);
        assert_eq!(snap.alloc("a1").unwrap().job.as_ref().unwrap().id, "web");
    }
}
