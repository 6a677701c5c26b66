//! The server's state store: jobs (with every version), evaluations,
//! allocations, deployments, nodes, CSI volumes, service registrations
//! and (encrypted) Variables.
//!
//! Reads come from an in-memory copy (`Tables`) whose objects are shared
//! `Arc`s that are never modified in place; a reader takes a cheap
//! `snapshot()` and sees one consistent index. Writes are `WriteBatch`es:
//! each is given the next index, committed to redb in one transaction, and
//! only then applied to memory and announced to blocking queries.

mod persist;
mod services;
mod variables;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::structs::{Allocation, CsiVolume, Deployment, Evaluation, Job, Node, ServiceRegistration};

pub use persist::ns_key;
pub use variables::StoredVariable;

/// Failures of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database refused an operation.
    #[error("state database: {0}")]
    Db(#[from] redb::Error),
    /// The data dir could not be created.
    #[error("state directory {0}: {1}")]
    Io(String, std::io::Error),
    /// A record could not be encoded.
    #[error("encoding state record: {0}")]
    Encode(String),
    /// A stored record could not be decoded.
    #[error("decoding state record {0}")]
    Decode(String),
}

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Db(e.into())
            }
        }
    )*};
}
redb_error_from!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A set of writes applied atomically under one index.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Jobs to insert or replace; each is also recorded as a version.
    pub jobs: Vec<Job>,
    /// Jobs (namespace, id) to purge with all their versions.
    pub delete_jobs: Vec<(String, String)>,
    /// Allocations to insert or replace.
    pub allocs: Vec<Allocation>,
    /// Allocations to remove.
    pub delete_allocs: Vec<String>,
    /// Evaluations to insert or replace.
    pub evals: Vec<Evaluation>,
    /// Evaluations to remove.
    pub delete_evals: Vec<String>,
    /// Nodes to insert or replace.
    pub nodes: Vec<Node>,
    /// Deployments to insert or replace.
    pub deployments: Vec<Deployment>,
    /// Deployments to remove.
    pub delete_deployments: Vec<String>,
    /// CSI volumes to insert or replace.
    pub volumes: Vec<CsiVolume>,
    /// CSI volumes (namespace, id) to remove.
    pub delete_volumes: Vec<(String, String)>,
    /// Service registrations to insert or replace.
    pub services: Vec<ServiceRegistration>,
    /// Service registrations (by ID) to remove.
    pub delete_services: Vec<String>,
    /// Variables to insert or replace.
    pub variables: Vec<StoredVariable>,
    /// Variables (namespace, path) to remove.
    pub delete_variables: Vec<(String, String)>,
}

impl WriteBatch {
    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.delete_jobs.is_empty()
            && self.allocs.is_empty()
            && self.delete_allocs.is_empty()
            && self.evals.is_empty()
            && self.delete_evals.is_empty()
            && self.nodes.is_empty()
            && self.deployments.is_empty()
            && self.delete_deployments.is_empty()
            && self.volumes.is_empty()
            && self.delete_volumes.is_empty()
            && self.services.is_empty()
            && self.delete_services.is_empty()
            && self.variables.is_empty()
            && self.delete_variables.is_empty()
    }
}

/// What the live (not terminal) allocations on one node hold, kept up to
/// date on every write so that the scheduler does not have to visit each
/// allocation of every node it considers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeAllocated {
    /// CPU shares (MHz) of every task.
    pub cpu: u64,
    /// Memory (MB) of every task.
    pub memory_mb: u64,
    /// Ephemeral disk (MB) of every allocation.
    pub disk_mb: u64,
    /// Host ports in use, with how many allocations hold each.
    pub ports: BTreeMap<u16, u32>,
    /// Number of live allocations.
    pub allocs: u32,
}

impl NodeAllocated {
    fn add(&mut self, a: &Allocation) {
        for t in a.allocated_resources.tasks.values() {
            self.cpu += t.cpu.cpu_shares;
            self.memory_mb += t.memory.memory_mb;
        }
        self.disk_mb += a.allocated_resources.shared.disk_mb;
        for p in &a.allocated_resources.shared.ports {
            *self.ports.entry(p.value).or_default() += 1;
        }
        self.allocs += 1;
    }

    fn remove(&mut self, a: &Allocation) {
        for t in a.allocated_resources.tasks.values() {
            self.cpu = self.cpu.saturating_sub(t.cpu.cpu_shares);
            self.memory_mb = self.memory_mb.saturating_sub(t.memory.memory_mb);
        }
        self.disk_mb = self.disk_mb.saturating_sub(a.allocated_resources.shared.disk_mb);
        for p in &a.allocated_resources.shared.ports {
            if let Some(n) = self.ports.get_mut(&p.value) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(&p.value);
                }
            }
        }
        self.allocs = self.allocs.saturating_sub(1);
    }
}

/// A node with the number of its computed class (see `Tables::class_numbers`),
/// derived once per write rather than by every evaluation.
#[derive(Debug, Clone)]
struct StoredNode {
    node: Arc<Node>,
    class: usize,
}

/// What the scheduler reads of one node (`Tables::placement_nodes`).
#[derive(Debug, Clone, Copy)]
pub struct PlacementNode<'t> {
    /// The node.
    pub node: &'t Arc<Node>,
    /// The number of its computed class, below `Tables::class_count()`.
    pub class: usize,
    /// What its live allocations hold (`None` when it never had any).
    pub allocated: Option<&'t NodeAllocated>,
}

/// Runs `f` on the value under `key`, inserting a default value first when
/// there is none: the key is copied only then, and hashed once when found.
fn update<V: Default>(map: &mut HashMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(v) => f(v),
        None => {
            let mut v = V::default();
            f(&mut v);
            map.insert(key.to_string(), v);
        }
    }
}

/// Adds an allocation ID to an index set. The ID of an allocation new to
/// the tables is added straight away; another one is first looked for, so
/// that it is copied only when missing.
fn index_id(ids: &mut BTreeSet<String>, id: &str, new: bool) {
    if new || !ids.contains(id) {
        ids.insert(id.to_string());
    }
}

/// The in-memory tables with their secondary indexes.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    /// The index of the last write.
    pub index: u64,
    jobs: BTreeMap<String, Arc<Job>>,
    job_versions: BTreeMap<String, BTreeMap<u64, Arc<Job>>>,
    allocs: HashMap<String, Arc<Allocation>>,
    /// Allocation IDs by namespace, then job ID (two levels, so that no key
    /// has to be built to look one up).
    allocs_by_job: HashMap<String, HashMap<String, BTreeSet<String>>>,
    allocs_by_node: HashMap<String, BTreeSet<String>>,
    /// Per node, the index of the last server-side change to its
    /// allocations (one placed, changed by the server, or removed): what a
    /// client's blocking query waits on, so that other writes (its own
    /// status reports among them) do not wake it.
    node_alloc_index: HashMap<String, u64>,
    /// Ordered by node ID, like `nodes`, so that `placement_nodes` pairs
    /// them up without a lookup per node.
    allocated_by_node: BTreeMap<String, NodeAllocated>,
    evals: HashMap<String, Arc<Evaluation>>,
    nodes: BTreeMap<String, StoredNode>,
    /// Computed classes (`Node::computed_class`) numbered in the order
    /// first seen, so that the scheduler can keep a result per class in a
    /// `Vec`. Numbers are never reused: nodes come in few classes.
    class_numbers: HashMap<u64, usize>,
    deployments: HashMap<String, Arc<Deployment>>,
    volumes: BTreeMap<String, Arc<CsiVolume>>,
    /// IDs of the allocations holding claims, by volume key (`ns_key`):
    /// derived from the allocations on every write.
    claims: HashMap<String, BTreeSet<String>>,
    /// Service registrations by ID, and their IDs by allocation.
    services: services::ServiceTable,
    /// Variables, encrypted.
    variables: variables::VariableTable,
}

impl Tables {
    fn insert_job(&mut self, job: Arc<Job>) {
        self.jobs.insert(ns_key(&job.namespace, &job.id), job);
    }

    fn insert_job_version(&mut self, job: Arc<Job>) {
        self.job_versions.entry(ns_key(&job.namespace, &job.id)).or_default().insert(job.version, job);
    }

    fn insert_node(&mut self, node: Node) {
        let next = self.class_numbers.len();
        let class = *self.class_numbers.entry(node.computed_class()).or_insert(next);
        self.nodes.insert(node.id.clone(), StoredNode { node: Arc::new(node), class });
    }

    fn insert_eval(&mut self, eval: Evaluation) {
        self.evals.insert(eval.id.clone(), Arc::new(eval));
    }

    fn insert_deployment(&mut self, dep: Deployment) {
        self.deployments.insert(dep.id.clone(), Arc::new(dep));
    }

    fn insert_volume(&mut self, volume: CsiVolume) {
        self.volumes.insert(ns_key(&volume.namespace, &volume.id), Arc::new(volume));
    }

    /// Keeps `claims` in step with one allocation's old and new versions.
    fn index_claims(&mut self, old: Option<&Allocation>, new: Option<&Allocation>) {
        let keys = |a: &Allocation| -> Vec<String> {
            if !a.holds_csi_claims() {
                return Vec::new();
            }
            a.csi_requests().into_iter().map(|(id, _)| ns_key(&a.namespace, &id)).collect()
        };
        let before = old.map(keys).unwrap_or_default();
        let after = new.map(keys).unwrap_or_default();
        if before == after {
            return;
        }
        let id = new.or(old).map(|a| a.id.as_str()).unwrap_or_default();
        for key in before.iter().filter(|k| !after.contains(k)) {
            if let Some(set) = self.claims.get_mut(key) {
                set.remove(id);
                if set.is_empty() {
                    self.claims.remove(key);
                }
            }
        }
        for key in after.iter().filter(|k| !before.contains(k)) {
            self.claims.entry(key.clone()).or_default().insert(id.to_string());
        }
    }

    /// Records a server-side change to `node`'s allocations at `index`.
    fn touch_node_allocs(&mut self, node: &str, index: u64) {
        let at = self.node_alloc_index.entry(node.to_string()).or_default();
        *at = (*at).max(index);
    }

    fn insert_alloc(&mut self, alloc: Allocation) {
        let alloc = Arc::new(alloc);
        let old = self.allocs.insert(alloc.id.clone(), Arc::clone(&alloc));
        match &old {
            Some(o) if o.node_id != alloc.node_id => {
                self.touch_node_allocs(&o.node_id, alloc.alloc_modify_index);
                self.touch_node_allocs(&alloc.node_id, alloc.alloc_modify_index);
            }
            Some(o) if o.alloc_modify_index == alloc.alloc_modify_index => {}
            _ => self.touch_node_allocs(&alloc.node_id, alloc.alloc_modify_index),
        }
        if old.as_ref().is_some_and(|o| o.holds_csi_claims()) || alloc.holds_csi_claims() {
            self.index_claims(old.as_deref(), Some(&alloc));
        }
        let new = old.is_none();
        if let Some(old) = old {
            if old.node_id != alloc.node_id {
                if let Some(set) = self.allocs_by_node.get_mut(&old.node_id) {
                    set.remove(&alloc.id);
                }
            }
            if !old.is_terminal() {
                if let Some(used) = self.allocated_by_node.get_mut(&old.node_id) {
                    used.remove(&old);
                }
            }
        }
        if !alloc.is_terminal() {
            match self.allocated_by_node.get_mut(&alloc.node_id) {
                Some(used) => used.add(&alloc),
                None => {
                    let mut used = NodeAllocated::default();
                    used.add(&alloc);
                    self.allocated_by_node.insert(alloc.node_id.clone(), used);
                }
            }
        }
        update(&mut self.allocs_by_job, &alloc.namespace, |jobs| {
            update(jobs, &alloc.job_id, |ids| index_id(ids, &alloc.id, new))
        });
        update(&mut self.allocs_by_node, &alloc.node_id, |ids| index_id(ids, &alloc.id, new));
    }

    fn remove_alloc(&mut self, id: &str) {
        if let Some(old) = self.allocs.remove(id) {
            self.touch_node_allocs(&old.node_id, self.index);
            if old.holds_csi_claims() {
                self.index_claims(Some(&old), None);
            }
            if let Some(set) = self.allocs_by_job.get_mut(&old.namespace).and_then(|jobs| jobs.get_mut(&old.job_id)) {
                set.remove(id);
            }
            if !old.is_terminal() {
                if let Some(used) = self.allocated_by_node.get_mut(&old.node_id) {
                    used.remove(&old);
                }
            }
            if let Some(set) = self.allocs_by_node.get_mut(&old.node_id) {
                set.remove(id);
            }
        }
    }

    /// Applies a batch whose objects already carry their indexes.
    fn apply(&mut self, batch: WriteBatch) {
        for job in batch.jobs {
            let job = Arc::new(job);
            self.insert_job_version(job.clone());
            self.insert_job(job);
        }
        for (ns, id) in batch.delete_jobs {
            let key = ns_key(&ns, &id);
            self.jobs.remove(&key);
            self.job_versions.remove(&key);
        }
        for a in batch.allocs {
            self.insert_alloc(a);
        }
        for id in batch.delete_allocs {
            self.remove_alloc(&id);
        }
        for e in batch.evals {
            self.insert_eval(e);
        }
        for id in batch.delete_evals {
            self.evals.remove(&id);
        }
        for n in batch.nodes {
            self.insert_node(n);
        }
        for d in batch.deployments {
            self.insert_deployment(d);
        }
        for id in batch.delete_deployments {
            self.deployments.remove(&id);
        }
        for v in batch.volumes {
            self.insert_volume(v);
        }
        for (ns, id) in batch.delete_volumes {
            self.volumes.remove(&ns_key(&ns, &id));
        }
        for id in batch.delete_services {
            self.services.remove(&id);
        }
        for r in batch.services {
            self.services.insert(r);
        }
        for (ns, path) in batch.delete_variables {
            self.variables.remove(&ns_key(&ns, &path));
        }
        for v in batch.variables {
            self.variables.insert(ns_key(&v.meta.namespace, &v.meta.path), Arc::new(v));
        }
    }

    /// A scratch copy with `job` registered (for dry runs such as `job plan`).
    pub fn with_job(&self, job: Job) -> Tables {
        let mut scratch = self.clone();
        scratch.insert_job(Arc::new(job));
        scratch
    }

    // === reads ===

    /// A job by namespace and ID.
    pub fn job(&self, ns: &str, id: &str) -> Option<Arc<Job>> {
        self.jobs.get(&ns_key(ns, id)).cloned()
    }

    /// All jobs, ordered by namespace and ID.
    pub fn jobs(&self) -> impl Iterator<Item = &Arc<Job>> {
        self.jobs.values()
    }

    /// Every stored version of a job, newest first.
    pub fn job_versions(&self, ns: &str, id: &str) -> Vec<Arc<Job>> {
        self.job_versions.get(&ns_key(ns, id)).map(|v| v.values().rev().cloned().collect()).unwrap_or_default()
    }

    /// An allocation by ID.
    pub fn alloc(&self, id: &str) -> Option<Arc<Allocation>> {
        self.allocs.get(id).cloned()
    }

    /// All allocations.
    pub fn allocs(&self) -> impl Iterator<Item = &Arc<Allocation>> {
        self.allocs.values()
    }

    /// Allocations of one job, all versions.
    pub fn allocs_by_job(&self, ns: &str, job_id: &str) -> Vec<Arc<Allocation>> {
        self.allocs_by_job
            .get(ns)
            .and_then(|jobs| jobs.get(job_id))
            .map(|ids| ids.iter().filter_map(|id| self.allocs.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    /// Allocations placed on one node.
    pub fn allocs_by_node(&self, node_id: &str) -> Vec<Arc<Allocation>> {
        self.allocs_by_node
            .get(node_id)
            .map(|ids| ids.iter().filter_map(|id| self.allocs.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    /// The index of the last server-side change to the node's allocations
    /// (0 if none since the server started or the node appeared).
    pub fn node_alloc_index(&self, node_id: &str) -> u64 {
        self.node_alloc_index.get(node_id).copied().unwrap_or(0)
    }

    /// The node's allocations as ID → `AllocModifyIndex`, what a client
    /// compares with what it runs to fetch only what changed.
    pub fn node_alloc_indexes(&self, node_id: &str) -> BTreeMap<String, u64> {
        self.allocs_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.allocs.get(id))
            .map(|a| (a.id.clone(), a.alloc_modify_index))
            .collect()
    }

    /// The IDs of the allocations placed on one node (no clones).
    pub fn alloc_ids_by_node(&self, node_id: &str) -> Option<&BTreeSet<String>> {
        self.allocs_by_node.get(node_id)
    }

    /// What the live allocations on one node hold (`None` when it never
    /// had any).
    pub fn allocated_on_node(&self, node_id: &str) -> Option<&NodeAllocated> {
        self.allocated_by_node.get(node_id)
    }

    /// An evaluation by ID.
    pub fn eval(&self, id: &str) -> Option<Arc<Evaluation>> {
        self.evals.get(id).cloned()
    }

    /// All evaluations.
    pub fn evals(&self) -> impl Iterator<Item = &Arc<Evaluation>> {
        self.evals.values()
    }

    /// A node by ID.
    pub fn node(&self, id: &str) -> Option<Arc<Node>> {
        self.nodes.get(id).map(|n| Arc::clone(&n.node))
    }

    /// All nodes, ordered by ID.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values().map(|n| &n.node)
    }

    /// All nodes with what the scheduler reads of them, ordered by ID.
    pub fn placement_nodes(&self) -> impl Iterator<Item = PlacementNode<'_>> {
        // Both maps are ordered by node ID: walk them side by side.
        let mut allocated = self.allocated_by_node.iter().peekable();
        self.nodes.iter().map(move |(id, n)| {
            while allocated.next_if(|(other, _)| *other < id).is_some() {}
            let allocated = allocated.next_if(|(other, _)| *other == id).map(|(_, used)| used);
            PlacementNode { node: &n.node, class: n.class, allocated }
        })
    }

    /// A CSI volume by namespace and ID.
    pub fn volume(&self, ns: &str, id: &str) -> Option<Arc<CsiVolume>> {
        self.volumes.get(&ns_key(ns, id)).cloned()
    }

    /// All CSI volumes, ordered by namespace and ID.
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<CsiVolume>> {
        self.volumes.values()
    }

    /// The allocations holding claims on a volume, ordered by ID.
    pub fn volume_claimers(&self, ns: &str, id: &str) -> Vec<Arc<Allocation>> {
        self.claims
            .get(&ns_key(ns, id))
            .map(|ids| ids.iter().filter_map(|id| self.allocs.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    /// The number of computed classes the nodes' `class` numbers are below.
    pub fn class_count(&self) -> usize {
        self.class_numbers.len()
    }

    /// A deployment by ID.
    pub fn deployment(&self, id: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(id).cloned()
    }

    /// All deployments.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.deployments.values()
    }

    /// The newest deployment of a job.
    pub fn latest_deployment(&self, ns: &str, job_id: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == job_id)
            .max_by_key(|d| d.create_index)
            .cloned()
    }
}

/// The shared, persistent state store.
pub struct StateStore {
    tables: Mutex<Arc<Tables>>,
    persist: Option<persist::Persist>,
    index_tx: watch::Sender<u64>,
    write_lock: Mutex<()>,
    /// Why the last commit failed, until one succeeds (agent health).
    commit_error: Mutex<Option<String>>,
}

impl StateStore {
    /// Opens the store in `dir`, loading everything committed there before.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let persist = persist::Persist::open(dir)?;
        let tables = persist.load()?;
        Ok(Self::with_tables(tables, Some(persist)))
    }

    /// A store that lives only in memory (scheduler benchmarks and tests).
    pub fn in_memory() -> Self {
        Self::with_tables(Tables::default(), None)
    }

    fn with_tables(tables: Tables, persist: Option<persist::Persist>) -> Self {
        let (index_tx, _) = watch::channel(tables.index.max(1));
        StateStore {
            tables: Mutex::new(Arc::new(tables)),
            persist,
            index_tx,
            write_lock: Mutex::new(()),
            commit_error: Mutex::new(None),
        }
    }

    /// A consistent read-only view; never changes after it is taken.
    pub fn snapshot(&self) -> Arc<Tables> {
        self.tables.lock().clone()
    }

    /// The index of the last write (at least 1, as in Nomad).
    pub fn index(&self) -> u64 {
        *self.index_tx.borrow()
    }

    /// Why the last write could not be committed, while no later one has
    /// been.
    pub fn commit_error(&self) -> Option<String> {
        self.commit_error.lock().clone()
    }

    /// A receiver that changes whenever a write lands (for blocking queries).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.index_tx.subscribe()
    }

    /// Waits until the index passes `min` or `wait` elapses; returns the index.
    pub async fn wait_index(&self, min: u64, wait: std::time::Duration) -> u64 {
        let mut rx = self.watch();
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > min)).await;
        self.index()
    }

    /// Waits until a server-side change to the node's allocations passes
    /// `min` or `wait` elapses; returns the node's allocation index (at
    /// least 1). Writes that do not touch the node's allocations do not
    /// end the wait; `min` 0 does not wait (a client's first query).
    pub async fn wait_node_allocs(&self, node_id: &str, min: u64, wait: std::time::Duration) -> u64 {
        if min == 0 {
            return self.snapshot().node_alloc_index(node_id).max(1);
        }
        let mut rx = self.watch();
        let moved = |s: &Self| s.snapshot().node_alloc_index(node_id) > min;
        let _ = tokio::time::timeout(wait, async {
            while !moved(self) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.snapshot().node_alloc_index(node_id).max(1)
    }

    /// The one write path. Under the write lock, `build` reads the tables
    /// as they are and returns the batch to write (with anything else it
    /// worked out); the batch gets the next index, is persisted in one
    /// transaction, becomes visible, and wakes blocking queries. An empty
    /// batch writes nothing. Returns the index (the current one when
    /// nothing was written) and what `build` returned; an error from
    /// `build` writes nothing.
    pub fn commit<T, E: From<StateError>>(
        &self,
        build: impl FnOnce(&Tables) -> Result<(WriteBatch, T), E>,
    ) -> Result<(u64, T), E> {
        let _serialised = self.write_lock.lock();
        let current = self.snapshot();
        let (batch, out) = build(&current)?;
        if batch.is_empty() {
            return Ok((current.index.max(1), out));
        }
        Ok((self.write_locked(current, batch)?, out))
    }

    /// [`Self::commit`] of a batch that depends on nothing it would read.
    pub fn apply(&self, batch: WriteBatch) -> Result<u64, StateError> {
        self.commit(|_| Ok::<_, StateError>((batch, ()))).map(|(index, ())| index)
    }

    /// Indexes, persists and shows `batch`; the caller holds the write lock
    /// and hands over its snapshot, released before the tables change so
    /// that they are not copied for it.
    fn write_locked(&self, current: Arc<Tables>, mut batch: WriteBatch) -> Result<u64, StateError> {
        let index = current.index + 1;
        let now = crate::util::now_nanos();
        for job in &mut batch.jobs {
            let existing = current.job(&job.namespace, &job.id);
            job.create_index = existing.as_ref().map(|j| j.create_index).unwrap_or(index);
            job.modify_index = index;
            if job.job_modify_index == 0 {
                job.job_modify_index = index;
            }
        }
        for a in &mut batch.allocs {
            match current.alloc(&a.id) {
                Some(old) => {
                    a.create_index = old.create_index;
                    a.create_time = old.create_time;
                    // AllocModifyIndex moves only when the server changes what
                    // the client acts on, not when the client reports status
                    // (but when the servers set it: the client says it again).
                    let server_change = old.desired_status != a.desired_status
                        || old.job_version() != a.job_version()
                        || old.node_id != a.node_id
                        || old.alloc_states.len() != a.alloc_states.len();
                    a.alloc_modify_index = if server_change { index } else { old.alloc_modify_index };
                }
                None => {
                    a.create_index = index;
                    a.create_time = now;
                    a.alloc_modify_index = index;
                }
            }
            a.modify_index = index;
            a.modify_time = now;
        }
        for v in &mut batch.volumes {
            v.create_index = current.volume(&v.namespace, &v.id).map(|o| o.create_index).unwrap_or(index);
            v.modify_index = index;
        }
        for e in &mut batch.evals {
            let old = current.eval(&e.id);
            e.create_index = old.as_ref().map(|o| o.create_index).unwrap_or(index);
            e.create_time = old.as_ref().map(|o| o.create_time).unwrap_or(now);
            e.modify_index = index;
            e.modify_time = now;
        }
        for n in &mut batch.nodes {
            n.create_index = current.node(&n.id).map(|o| o.create_index).unwrap_or(index);
            n.modify_index = index;
        }
        for d in &mut batch.deployments {
            d.create_index = current.deployment(&d.id).map(|o| o.create_index).unwrap_or(index);
            d.modify_index = index;
        }
        current.retire_services(&mut batch, index);
        current.index_variables(&mut batch, index, now);
        if let Some(p) = &self.persist {
            if let Err(e) = p.commit(index, &batch, &persist::Retention::of(&current, &batch)) {
                *self.commit_error.lock() = Some(e.to_string());
                return Err(e);
            }
            *self.commit_error.lock() = None;
        }
        drop(current);
        {
            let mut guard = self.tables.lock();
            let tables = Arc::make_mut(&mut guard);
            tables.index = index;
            tables.apply(batch);
        }
        self.index_tx.send_replace(index);
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, version: u64) -> Job {
        Job { id: id.into(), namespace: "default".into(), version, ..Default::default() }
    }

    #[test]
    fn batches_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.jobs.push(job("web", 0));
            b.allocs.push(Allocation {
                id: "a1".into(),
                namespace: "default".into(),
                job_id: "web".into(),
                node_id: "n1".into(),
                ..Default::default()
            });
            assert_eq!(store.apply(b).unwrap(), 1);
            let mut b = WriteBatch::default();
            b.jobs.push(job("web", 1));
            store.apply(b).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.index, 2);
        assert_eq!(snap.job("default", "web").unwrap().version, 1);
        assert_eq!(snap.job("default", "web").unwrap().create_index, 1);
        assert_eq!(snap.job_versions("default", "web").len(), 2);
        assert_eq!(snap.allocs_by_node("n1").len(), 1);
        assert_eq!(snap.allocs_by_job("default", "web")[0].create_index, 1);
    }

    #[test]
    fn commit_writes_what_its_builder_returns_and_nothing_on_an_error_or_an_empty_batch() {
        let store = StateStore::in_memory();
        let (index, seen) = store
            .commit(|t| {
                let b = WriteBatch { jobs: vec![job("web", 0)], ..Default::default() };
                Ok::<_, StateError>((b, t.index))
            })
            .unwrap();
        assert_eq!((index, seen), (1, 0));
        let failed = store.commit(|_| -> Result<(WriteBatch, ()), StateError> { Err(StateError::Encode("no".into())) });
        assert!(failed.is_err());
        let (index, ()) = store.commit(|_| Ok::<_, StateError>((WriteBatch::default(), ()))).unwrap();
        assert_eq!((index, store.index()), (1, 1), "nothing written");
        assert_eq!(store.snapshot().job_versions("default", "web").len(), 1);
    }

    #[test]
    fn purge_removes_all_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for v in 0..3 {
            let mut b = WriteBatch::default();
            b.jobs.push(job("web", v));
            store.apply(b).unwrap();
        }
        let mut b = WriteBatch::default();
        b.delete_jobs.push(("default".into(), "web".into()));
        store.apply(b).unwrap();
        drop(store);
        let snap = StateStore::open(dir.path()).unwrap().snapshot();
        assert!(snap.job("default", "web").is_none());
        assert!(snap.job_versions("default", "web").is_empty());
    }

    #[test]
    fn node_allocated_follows_alloc_writes() {
        use crate::structs::{client_status, desired, AllocatedPort, AllocatedTaskResources};
        let store = StateStore::in_memory();
        let mut a = Allocation {
            id: "a1".into(),
            namespace: "default".into(),
            job_id: "web".into(),
            node_id: "n1".into(),
            desired_status: desired::RUN.into(),
            client_status: client_status::RUNNING.into(),
            ..Default::default()
        };
        let mut t = AllocatedTaskResources::default();
        t.cpu.cpu_shares = 500;
        t.memory.memory_mb = 256;
        a.allocated_resources.tasks.insert("server".into(), t);
        a.allocated_resources.shared.ports.push(AllocatedPort { value: 8080, ..Default::default() });
        let mut b = a.clone();
        b.id = "a2".into();
        b.allocated_resources.shared.ports.clear();
        store.apply(WriteBatch { allocs: vec![a.clone(), b.clone()], ..Default::default() }).unwrap();
        let used = store.snapshot().allocated_on_node("n1").cloned().unwrap();
        assert_eq!((used.cpu, used.memory_mb, used.allocs), (1000, 512, 2));
        assert_eq!(used.ports.get(&8080), Some(&1));
        // Rewriting a live alloc does not count it twice.
        store.apply(WriteBatch { allocs: vec![a.clone()], ..Default::default() }).unwrap();
        assert_eq!(store.snapshot().allocated_on_node("n1").unwrap().cpu, 1000);
        // Moving it to another node moves its resources.
        a.node_id = "n2".into();
        store.apply(WriteBatch { allocs: vec![a.clone()], ..Default::default() }).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.allocated_on_node("n1").unwrap().cpu, 500);
        assert!(snap.allocated_on_node("n1").unwrap().ports.is_empty());
        assert_eq!(snap.allocated_on_node("n2").unwrap().ports.get(&8080), Some(&1));
        // Terminal allocations hold nothing; removal releases too.
        a.client_status = client_status::FAILED.into();
        b.desired_status = desired::STOP.into();
        store.apply(WriteBatch { allocs: vec![a.clone(), b], ..Default::default() }).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.allocated_on_node("n1").unwrap(), &NodeAllocated::default());
        assert_eq!(snap.allocated_on_node("n2").unwrap(), &NodeAllocated::default());
        a.client_status = client_status::RUNNING.into();
        store.apply(WriteBatch { allocs: vec![a], ..Default::default() }).unwrap();
        assert_eq!(store.snapshot().allocated_on_node("n2").unwrap().allocs, 1);
        store.apply(WriteBatch { delete_allocs: vec!["a1".into()], ..Default::default() }).unwrap();
        assert_eq!(store.snapshot().allocated_on_node("n2").unwrap(), &NodeAllocated::default());
    }

    #[tokio::test]
    async fn a_nodes_allocation_index_moves_only_with_server_changes_to_its_allocations() {
        use crate::structs::{client_status, desired};
        let store = StateStore::in_memory();
        let a = Allocation {
            id: "a1".into(),
            namespace: "default".into(),
            job_id: "web".into(),
            node_id: "n1".into(),
            desired_status: desired::RUN.into(),
            ..Default::default()
        };
        let placed = store.apply(WriteBatch { allocs: vec![a.clone()], ..Default::default() }).unwrap();
        let node_index = |n: &str| store.snapshot().node_alloc_index(n);
        assert_eq!(node_index("n1"), placed);
        assert_eq!(store.snapshot().node_alloc_indexes("n1"), BTreeMap::from([("a1".to_string(), placed)]));
        // The client's status report, and writes elsewhere, leave it.
        let mut running = a.clone();
        running.client_status = client_status::RUNNING.into();
        store.apply(WriteBatch { allocs: vec![running.clone()], ..Default::default() }).unwrap();
        let mut elsewhere = a.clone();
        elsewhere.id = "b1".into();
        elsewhere.node_id = "n2".into();
        store.apply(WriteBatch { allocs: vec![elsewhere], ..Default::default() }).unwrap();
        assert_eq!(node_index("n1"), placed);
        let short = std::time::Duration::from_millis(50);
        assert_eq!(store.wait_node_allocs("n1", placed, short).await, placed, "no wake-up for n1");
        // The server stopping it moves it, and wakes a waiter.
        let waiter = store.wait_node_allocs("n1", placed, std::time::Duration::from_secs(10));
        let mut stopped = running;
        stopped.desired_status = desired::STOP.into();
        let stop = async {
            tokio::task::yield_now().await;
            store.apply(WriteBatch { allocs: vec![stopped], ..Default::default() }).unwrap()
        };
        let (woke, stop_index) = tokio::join!(waiter, stop);
        assert_eq!(woke, stop_index);
        // So does its removal.
        let gone = store.apply(WriteBatch { delete_allocs: vec!["a1".into()], ..Default::default() }).unwrap();
        assert_eq!(node_index("n1"), gone);
        assert!(store.snapshot().node_alloc_indexes("n1").is_empty());
    }

    #[test]
    fn placement_nodes_pair_nodes_with_their_usage_and_class() {
        use crate::structs::AllocatedTaskResources;
        let store = StateStore::in_memory();
        let nodes: Vec<Node> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| {
                let mut n = Node { id: id.to_string(), ..Default::default() };
                n.meta.insert("rack".into(), if *id == "n3" { "r2" } else { "r1" }.into());
                n
            })
            .collect();
        // Allocations on nodes that sort before, between and after the
        // registered ones, and on no registered node at all.
        let allocs = ["n0", "n2", "n25", "n9"]
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut a = Allocation { id: format!("a{i}"), node_id: node.to_string(), ..Default::default() };
                let mut t = AllocatedTaskResources::default();
                t.cpu.cpu_shares = 100 * (i as u64 + 1);
                a.allocated_resources.tasks.insert("t".into(), t);
                a
            })
            .collect();
        store.apply(WriteBatch { nodes, allocs, ..Default::default() }).unwrap();
        let snap = store.snapshot();
        let seen: Vec<_> =
            snap.placement_nodes().map(|p| (p.node.id.as_str(), p.class, p.allocated.map(|u| u.cpu))).collect();
        assert_eq!(seen, [("n1", 0, None), ("n2", 0, Some(200)), ("n3", 1, None)]);
        assert_eq!(snap.class_count(), 2);
    }

    #[test]
    fn snapshots_do_not_change() {
        let store = StateStore::in_memory();
        let before = store.snapshot();
        let mut b = WriteBatch::default();
        b.jobs.push(job("web", 0));
        store.apply(b).unwrap();
        assert!(before.job("default", "web").is_none());
        assert!(store.snapshot().job("default", "web").is_some());
    }
}
