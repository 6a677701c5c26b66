//! The on-disk half of the state store: one redb table per entity kind,
//! values as JSON, every batch of writes committed in one transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use super::{StateError, Tables, WriteBatch};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const JOB_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_versions");
const ALLOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("allocs");
const EVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("evals");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("csi_volumes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The redb file behind a server's state.
pub struct Persist {
    db: Database,
}

/// Key of a job version: zero-padded so versions sort numerically.
pub fn version_key(ns: &str, id: &str, version: u64) -> String {
    format!("{ns}\u{0}{id}\u{0}{version:020}")
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
        for def in [JOBS, JOB_VERSIONS, ALLOCS, EVALS, NODES, DEPLOYMENTS, VOLUMES] {
            txn.open_table(def)?;
        }
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Persist { db })
    }

    /// Reads every table into memory.
    pub fn load(&self) -> Result<Tables, StateError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(META)?.get("index")?.map(|v| v.value()).unwrap_or(0);
        let mut tables = Tables { index, ..Default::default() };
        for job in load(&txn, JOBS, "jobs")? {
            tables.insert_job(job);
        }
        for job in load(&txn, JOB_VERSIONS, "job_versions")? {
            tables.insert_job_version(job);
        }
        for node in load(&txn, NODES, "nodes")? {
            tables.insert_node(node);
        }
        for eval in load(&txn, EVALS, "evals")? {
            tables.insert_eval(eval);
        }
        for alloc in load(&txn, ALLOCS, "allocs")? {
            tables.insert_alloc(alloc);
        }
        for dep in load(&txn, DEPLOYMENTS, "deployments")? {
            tables.insert_deployment(dep);
        }
        for volume in load(&txn, VOLUMES, "csi_volumes")? {
            tables.insert_volume(volume);
        }
        Ok(tables)
    }

    /// Writes one batch durably; nothing of it is visible on disk unless all is.
    pub fn commit(&self, index: u64, batch: &WriteBatch) -> Result<(), StateError> {
        let txn = self.db.begin_write()?;
        {
            let mut jobs = txn.open_table(JOBS)?;
            let mut versions = txn.open_table(JOB_VERSIONS)?;
            for job in &batch.jobs {
                jobs.insert(ns_key(&job.namespace, &job.id).as_str(), to_json(job)?.as_slice())?;
                let vk = version_key(&job.namespace, &job.id, job.version);
                versions.insert(vk.as_str(), to_json(job)?.as_slice())?;
            }
            for (ns, id) in &batch.delete_jobs {
                jobs.remove(ns_key(ns, id).as_str())?;
                let start = ns_key(ns, id) + "\u{0}";
                let end = ns_key(ns, id) + "\u{1}";
                let keys: Vec<String> = versions
                    .range(start.as_str()..end.as_str())?
                    .map(|r| r.map(|(k, _)| k.value().to_string()))
                    .collect::<Result<_, _>>()?;
                for k in keys {
                    versions.remove(k.as_str())?;
                }
            }
            let mut allocs = txn.open_table(ALLOCS)?;
            for a in &batch.allocs {
                allocs.insert(a.id.as_str(), to_json(a)?.as_slice())?;
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
            txn.open_table(META)?.insert("index", index)?;
        }
        txn.commit()?;
        Ok(())
    }
}
