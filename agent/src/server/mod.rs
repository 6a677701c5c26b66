//! The server: owns the state store, runs evaluations through the
//! scheduler one at a time (the eval broker is a queue feeding a single
//! worker, since plans are applied serially anyway), applies plans, and
//! watches node heartbeats.
//!
//! Writes from the API land here as methods (`register_job`,
//! `update_allocs`, …); each is one state-store batch.

pub mod csi;
mod deployments;
pub mod diff;
mod dispatch;
mod drain;
mod identity;
mod jobs;
pub mod keyring;
mod nodes;
mod periodic;
pub mod plan_apply;
pub mod scheduler;
pub mod services;
pub mod state;
pub mod summary;
pub mod telemetry;
mod template_reads;
mod variables;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::structs::{client_status, eval_status, Evaluation, Job};
use crate::util::now_nanos;
pub use deployments::DeploymentAction;
use state::{StateError, StateStore, WriteBatch};
pub use variables::{Applied, VarOp};

/// Failures of server operations, classified for the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request is invalid (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The object does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (HTTP 403): a node secret that does not
    /// match.
    #[error("Permission denied")]
    PermissionDenied,
    /// The state store failed (HTTP 500).
    #[error(transparent)]
    State(#[from] StateError),
    /// A CSI plugin could not be reached or refused the call; its gRPC
    /// code decides the HTTP status.
    #[error("{0}")]
    Plugin(crate::wire::csi::PluginError),
    /// The signing keyring failed (HTTP 500).
    #[error(transparent)]
    Keyring(#[from] keyring::KeyringError),
}

/// How long evaluations of purged jobs are kept.
const EVAL_GC_THRESHOLD: Duration = Duration::from_secs(3600);
/// How long finished children of periodic and parameterized jobs are kept
/// (Nomad's `job_gc_threshold`).
const JOB_GC_THRESHOLD: Duration = Duration::from_secs(4 * 3600);

/// Server tunables.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Region name.
    pub region: String,
    /// Datacenter of the server itself.
    pub datacenter: String,
    /// Name of this server.
    pub name: String,
    /// Heartbeat TTL handed to clients.
    pub heartbeat_ttl: Duration,
    /// Extra time after a missed TTL before a node is marked down.
    pub heartbeat_grace: Duration,
    /// How long the CSI claims of allocations on a down node are kept for
    /// it to come back and unpublish.
    pub csi_claim_release_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            region: "global".into(),
            datacenter: "dc1".into(),
            name: "server".into(),
            heartbeat_ttl: Duration::from_secs(10),
            heartbeat_grace: Duration::from_secs(10),
            csi_claim_release_timeout: Duration::from_secs(300),
        }
    }
}

/// The running server.
pub struct Server {
    /// The state store.
    pub state: Arc<StateStore>,
    /// Tunables.
    pub config: ServerConfig,
    broker: mpsc::UnboundedSender<String>,
    heartbeats: parking_lot::Mutex<BTreeMap<String, std::time::Instant>>,
    plugin_calls: std::sync::OnceLock<Arc<dyn crate::wire::csi::PluginCalls>>,
    detach_tx: mpsc::UnboundedSender<csi::ControllerDetach>,
    /// Encrypts Variables and signs workload identities.
    pub keyring: keyring::Keyring,
    variable_locks: parking_lot::Mutex<variables::LockTimers>,
}

impl Server {
    /// Opens the state and the keyring in `data_dir/server` and starts the
    /// eval worker and the heartbeat monitor. Pending evaluations from
    /// before a restart are queued again.
    pub fn start(data_dir: &Path, config: ServerConfig) -> Result<Arc<Server>, ServerError> {
        let state = Arc::new(StateStore::open(&data_dir.join("server"))?);
        let keyring = keyring::Keyring::open(&data_dir.join("server").join("keystore"))?;
        Ok(Self::start_with(state, keyring, config))
    }

    /// Starts a server over an existing store, with a keyring in memory (tests).
    #[cfg(test)]
    pub fn start_with_state(state: Arc<StateStore>, config: ServerConfig) -> Arc<Server> {
        let keyring = keyring::Keyring::ephemeral().expect("an in-memory signing key");
        Self::start_with(state, keyring, config)
    }

    fn start_with(state: Arc<StateStore>, keyring: keyring::Keyring, config: ServerConfig) -> Arc<Server> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (detach_tx, detach_rx) = mpsc::unbounded_channel();
        let server = Arc::new(Server {
            state,
            config,
            broker: tx,
            heartbeats: Default::default(),
            plugin_calls: Default::default(),
            detach_tx,
            keyring,
            variable_locks: Default::default(),
        });
        server.arm_variable_locks();
        let snap = server.state.snapshot();
        let now = std::time::Instant::now();
        for node in snap.nodes().filter(|n| n.status != "down") {
            server.heartbeats.lock().insert(node.id.clone(), now);
        }
        for eval in snap.evals().filter(|e| e.status == eval_status::PENDING) {
            server.enqueue(eval);
        }
        tokio::spawn(Self::eval_worker(server.clone(), rx));
        tokio::spawn(Self::heartbeat_monitor(server.clone()));
        tokio::spawn(Self::periodic_gc(server.clone()));
        tokio::spawn(Self::claim_watcher(server.clone()));
        tokio::spawn(Self::controller_detacher(server.clone(), detach_rx));
        tokio::spawn(Self::periodic_launcher(server.clone()));
        tokio::spawn(Self::drainer(server.clone()));
        tokio::spawn(Self::variable_lock_monitor(server.clone()));
        server
    }

    async fn periodic_gc(server: Arc<Server>) {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            if let Err(e) = server.garbage_collect() {
                tracing::error!(error = %e, "garbage collection");
            }
        }
    }

    /// Queues an evaluation, honouring its `WaitUntil`.
    pub fn enqueue(&self, eval: &Evaluation) {
        let wait = eval.wait_until - now_nanos();
        if wait > 0 {
            let tx = self.broker.clone();
            let id = eval.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
                let _ = tx.send(id);
            });
        } else {
            let _ = self.broker.send(eval.id.clone());
        }
    }

    async fn eval_worker(server: Arc<Server>, mut rx: mpsc::UnboundedReceiver<String>) {
        while let Some(id) = rx.recv().await {
            if let Err(e) = server.process_eval(&id) {
                tracing::error!(eval_id = %id, error = %e, "processing evaluation");
            }
        }
    }

    /// Runs one evaluation through the scheduler and applies its plan.
    pub fn process_eval(&self, id: &str) -> Result<(), ServerError> {
        let (_, planned) = self.state.commit(|snap| {
        let Some(eval) = snap.eval(id) else { return Ok((WriteBatch::default(), None)) };
        if eval.status != eval_status::PENDING {
            return Ok((WriteBatch::default(), None));
        }
        let span =
            tracing::debug_span!("eval", eval_id = %eval.id, job_id = %eval.job_id, triggered_by = %eval.triggered_by);
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let plan = scheduler::process(snap, &eval);
        let kind = if eval.eval_type.is_empty() { "service".to_string() } else { eval.eval_type.clone() };
        metrics::histogram!("nomad.nomad.worker.invoke_scheduler", "type" => kind)
            .record(crate::telemetry::millis_since(started));
        let applying = std::time::Instant::now();
        let write = plan_apply::plan_write(snap, &eval, plan);
        Ok::<_, ServerError>((write.batch, Some((write.followups, applying))))
        })?;
        let Some((followups, applying)) = planned else { return Ok(()) };
        metrics::histogram!("nomad.nomad.plan.apply").record(crate::telemetry::millis_since(applying));
        for e in &followups {
            self.enqueue(e);
        }
        Ok(())
    }

    /// Moves blocked evaluations back to pending (capacity changed).
    pub fn unblock_evals(&self) -> Result<(), ServerError> {
        let (_, queued) = self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            for e in snap.evals().filter(|e| e.status == eval_status::BLOCKED) {
                let mut c = (**e).clone();
                c.status = eval_status::PENDING.into();
                batch.evals.push(c);
            }
            let queued = batch.evals.clone();
            Ok::<_, ServerError>((batch, queued))
        })?;
        for e in &queued {
            self.enqueue(e);
        }
        Ok(())
    }

    /// Deletes terminal allocations of purged jobs at once, and their
    /// evaluations and deployments once older than `EVAL_GC_THRESHOLD` (so
    /// a CLI still monitoring a deregistration can read it), as Nomad's core
    /// GC does.
    pub fn garbage_collect(&self) -> Result<(), ServerError> {
        self.collect(EVAL_GC_THRESHOLD, JOB_GC_THRESHOLD)
    }

    /// `PUT /v1/system/gc`: collect everything collectable now.
    pub fn force_gc(&self) -> Result<(), ServerError> {
        self.collect(Duration::ZERO, Duration::ZERO)
    }

    fn collect(&self, eval_age: Duration, job_age: Duration) -> Result<(), ServerError> {
        let cutoff = now_nanos() - eval_age.as_nanos() as i64;
        let job_cutoff = now_nanos() - job_age.as_nanos() as i64;
        self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            // Finished children go, but a periodic job's newest one stays:
            // it records the last launch.
            let mut newest: BTreeMap<(&str, &str), &Job> = BTreeMap::new();
            for j in snap.jobs().filter(|j| !j.parent_id.is_empty()) {
                let slot = newest.entry((j.namespace.as_str(), j.parent_id.as_str())).or_insert(j);
                if j.submit_time > slot.submit_time {
                    *slot = j;
                }
            }
            for j in snap.jobs() {
                let keep = newest.get(&(j.namespace.as_str(), j.parent_id.as_str())).is_some_and(|n| n.id == j.id);
                if !j.parent_id.is_empty() && j.status == "dead" && j.submit_time <= job_cutoff && !keep {
                    batch.delete_jobs.push((j.namespace.clone(), j.id.clone()));
                }
            }
            for a in snap.allocs() {
                let gone = snap.job(&a.namespace, &a.job_id).is_none();
                let finished =
                    a.client_terminal() || (a.server_terminal() && a.client_status == client_status::PENDING);
                // An allocation whose node has not unpublished its volumes yet
                // is kept: it is what holds their claims.
                if gone && finished && !a.holds_csi_claims() {
                    batch.delete_allocs.push(a.id.clone());
                }
            }
            for e in snap.evals() {
                if snap.job(&e.namespace, &e.job_id).is_none()
                    && e.status != eval_status::PENDING
                    && e.modify_time <= cutoff
                {
                    batch.delete_evals.push(e.id.clone());
                }
            }
            for d in snap.deployments() {
                let evals_left =
                    snap.evals().any(|e| e.job_id == d.job_id && e.namespace == d.namespace && e.modify_time > cutoff);
                if snap.job(&d.namespace, &d.job_id).is_none() && !evals_left {
                    batch.delete_deployments.push(d.id.clone());
                }
            }
            Ok::<_, ServerError>((batch, ()))
        })?;
        Ok(())
    }
}
