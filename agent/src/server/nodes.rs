//! Node membership and client updates: registration, heartbeats (a node
//! that misses its TTL plus grace goes down and its allocations are
//! replaced), allocation status reported by clients, and deployment
//! progress derived from it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jobs::job_status;
use super::state::{Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{client_status, node_status, Allocation, Evaluation, Node, NodeEvent};
use crate::util::{now_nanos, now_rfc3339};
use crate::wire::node::{AllocClientUpdate, NodeAllocIndexes};

/// The node, when `secret` is its secret: what a client's request proves
/// first.
pub(super) fn authenticated_node(snap: &Tables, node_id: &str, secret: &str) -> Result<Arc<Node>, ServerError> {
    let node = snap.node(node_id).ok_or_else(|| ServerError::NotFound(format!("node {node_id} not found")))?;
    if node.secret_id != secret {
        return Err(ServerError::PermissionDenied);
    }
    Ok(node)
}

/// The node and one of its allocations, for a request about that
/// allocation from that node.
pub(super) fn authenticated_alloc(
    snap: &Tables,
    node_id: &str,
    secret: &str,
    alloc_id: &str,
) -> Result<(Arc<Node>, Arc<Allocation>), ServerError> {
    let node = authenticated_node(snap, node_id, secret)?;
    let alloc = snap
        .alloc(alloc_id)
        .filter(|a| a.node_id == node_id)
        .ok_or_else(|| ServerError::NotFound(format!("allocation {alloc_id} not found on this node")))?;
    Ok((node, alloc))
}

pub(super) fn node_event(subsystem: &str, message: &str) -> NodeEvent {
    NodeEvent { message: message.into(), subsystem: subsystem.into(), timestamp: now_rfc3339(), create_index: 0 }
}

impl Server {
    /// Registers or re-registers a node and returns its heartbeat TTL.
    pub fn register_node(&self, mut node: Node) -> Result<Duration, ServerError> {
        let (_, (evals, capacity_changed)) = self.state.commit(|snap| {
            let existing = snap.node(&node.id);
            if let Some(e) = &existing {
                if !e.secret_id.is_empty() && e.secret_id != node.secret_id {
                    return Err(ServerError::BadRequest(format!("node {}: secret ID does not match", node.id)));
                }
            }
            let was_ready = existing.as_ref().map(|e| e.status == node_status::READY).unwrap_or(false);
            node.events = existing.as_ref().map(|e| e.events.clone()).unwrap_or_default();
            // Eligibility and drains are the servers' to set, not the client's.
            if let Some(e) = &existing {
                node.scheduling_eligibility = e.scheduling_eligibility.clone();
                node.drain = e.drain;
                node.drain_strategy = e.drain_strategy.clone();
                node.last_drain = e.last_drain.clone();
            }
            if existing.is_none() {
                node.events.push(node_event("Cluster", "Node registered"));
            } else if !was_ready {
                node.events.push(node_event("Cluster", "Node re-registered"));
            }
            if node.events.len() > 10 {
                node.events.drain(..node.events.len() - 10);
            }
            node.status = node_status::READY.into();
            node.status_updated_at = now_nanos() / 1_000_000_000;
            if node.scheduling_eligibility.is_empty() {
                node.scheduling_eligibility = "eligible".into();
            }
            let mut batch = WriteBatch::default();
            let capacity_changed = !was_ready
                || existing
                    .as_ref()
                    .map(|e| {
                        e.drivers != node.drivers
                            || e.node_resources != node.node_resources
                            || e.csi_node_plugins != node.csi_node_plugins
                            || e.csi_controller_plugins != node.csi_controller_plugins
                    })
                    .unwrap_or(true);
            if capacity_changed {
                batch.evals.extend(self.system_job_evals(snap, &node.id));
            }
            batch.nodes.push(node.clone());
            let evals = batch.evals.clone();
            Ok::<_, ServerError>((batch, (evals, capacity_changed)))
        })?;
        self.heartbeats.lock().insert(node.id.clone(), Instant::now());
        for e in &evals {
            self.enqueue(e);
        }
        if capacity_changed {
            self.unblock_evals()?;
        }
        Ok(self.config.heartbeat_ttl)
    }

    fn system_job_evals(&self, snap: &Tables, node_id: &str) -> Vec<Evaluation> {
        snap.jobs()
            .filter(|j| j.is_system_like() && !j.stop)
            .map(|j| {
                let mut e = Evaluation::pending(j, "node-update");
                e.node_id = node_id.to_string();
                e
            })
            .collect()
    }

    /// Records a heartbeat; a node the server marked down comes back.
    pub fn heartbeat(&self, node_id: &str, secret_id: &str) -> Result<Duration, ServerError> {
        let snap = self.state.snapshot();
        let node = snap.node(node_id).ok_or_else(|| ServerError::NotFound(format!("node {node_id} not found")))?;
        if !node.secret_id.is_empty() && node.secret_id != secret_id {
            return Err(ServerError::BadRequest(format!("node {node_id}: secret ID does not match")));
        }
        if node.status != node_status::READY {
            return self.register_node((*node).clone());
        }
        self.heartbeats.lock().insert(node_id.to_string(), Instant::now());
        Ok(self.config.heartbeat_ttl)
    }

    /// A client's allocation query: waits (at most `wait`) for a
    /// server-side change to the node's allocations past `min_index`, then
    /// answers with their IDs and `AllocModifyIndex`. Writes elsewhere, and
    /// the node's own status reports, do not end the wait.
    pub async fn node_alloc_indexes(&self, node_id: &str, min_index: u64, wait: Duration) -> NodeAllocIndexes {
        let index = self.state.wait_node_allocs(node_id, min_index, wait).await;
        NodeAllocIndexes { allocs: self.state.snapshot().node_alloc_indexes(node_id), index }
    }

    /// The allocations among `ids` that are placed on the node (others are
    /// skipped); only for the node itself, since they carry its tasks'
    /// configuration.
    pub fn fetch_node_allocs(
        &self,
        node_id: &str,
        secret: &str,
        ids: &[String],
    ) -> Result<Vec<Allocation>, ServerError> {
        let snap = self.state.snapshot();
        authenticated_node(&snap, node_id, secret)?;
        let allocs: Vec<Allocation> =
            ids.iter().filter_map(|id| snap.alloc(id)).filter(|a| a.node_id == node_id).map(|a| (*a).clone()).collect();
        metrics::counter!("berth.server.node_allocations.sent").increment(allocs.len() as u64);
        Ok(allocs)
    }

    pub(super) async fn heartbeat_monitor(server: Arc<Server>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let deadline = server.config.heartbeat_ttl + server.config.heartbeat_grace;
            let expired: Vec<String> = server
                .heartbeats
                .lock()
                .iter()
                .filter(|(_, last)| last.elapsed() > deadline)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                server.heartbeats.lock().remove(&id);
                match server.mark_node_down(&id) {
                    // Disconnected: down once the longest lost_after passes
                    // (the timer takes the heartbeat deadline again).
                    Ok(Some(lost_after)) => {
                        let last = Instant::now() + lost_after.saturating_sub(deadline);
                        server.heartbeats.lock().insert(id, last);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(node_id = %id, error = %e, "marking node down"),
                }
            }
            if let Err(e) = server.check_deployment_deadlines() {
                tracing::error!(error = %e, "checking deployment deadlines");
            }
        }
    }

    /// A node missed its heartbeat deadline: it turns disconnected when
    /// allocations on it have `disconnect.lost_after` (and the answer is
    /// the longest, after which it goes down), otherwise down; every job
    /// with allocations on it is evaluated.
    pub fn mark_node_down(&self, node_id: &str) -> Result<Option<Duration>, ServerError> {
        let (_, (evals, lost_after)) = self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            let Some(node) = snap.node(node_id) else { return Ok((batch, (Vec::new(), None))) };
            if node.status == node_status::DOWN {
                return Ok((batch, (Vec::new(), None)));
            }
            let live: Vec<_> = snap.allocs_by_node(node_id).into_iter().filter(|a| !a.is_terminal()).collect();
            let lost_after = live
                .iter()
                .filter(|a| a.job.as_ref().is_some_and(|j| !j.is_system_like()))
                .filter_map(|a| a.group().map(|tg| tg.lost_after()))
                .max()
                .filter(|l| *l > 0 && node.status != node_status::DISCONNECTED);
            let mut n = (*node).clone();
            let (status, event) = match lost_after {
                Some(_) => (node_status::DISCONNECTED, "Node heartbeat missed; allocations kept as unknown"),
                None => (node_status::DOWN, "Node heartbeat missed"),
            };
            tracing::warn!(node_id, name = %node.name, status, "node missed its heartbeat");
            n.status = status.into();
            n.status_updated_at = now_nanos() / 1_000_000_000;
            n.events.push(node_event("Cluster", event));
            batch.nodes.push(n);
            let jobs: BTreeSet<(String, String)> =
                live.iter().map(|a| (a.namespace.clone(), a.job_id.clone())).collect();
            for (ns, id) in jobs {
                if let Some(job) = snap.job(&ns, &id) {
                    let mut e = Evaluation::pending(&job, "node-update");
                    e.node_id = node_id.to_string();
                    batch.evals.push(e);
                }
            }
            let evals = batch.evals.clone();
            let lost_after = lost_after.map(|l| Duration::from_nanos(l as u64));
            Ok::<_, ServerError>((batch, (evals, lost_after)))
        })?;
        for e in &evals {
            self.enqueue(e);
        }
        Ok(lost_after)
    }

    /// Applies allocation status reported by a client, and creates the
    /// evaluations that follow from it (failures, rolling updates).
    pub fn update_allocs(&self, node_id: &str, updates: Vec<AllocClientUpdate>) -> Result<(), ServerError> {
        let (_, (evals, released, freed)) = self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            let mut failed_jobs: BTreeSet<(String, String)> = BTreeSet::new();
            let mut touched_jobs: BTreeSet<(String, String)> = BTreeSet::new();
            // Jobs with allocations back from a node that was out of touch.
            let mut reconnected_jobs: BTreeSet<(String, String)> = BTreeSet::new();
            let mut freed = false;
            for u in updates {
                let Some(old) = snap.alloc(&u.id) else { continue };
                if old.node_id != node_id {
                    continue;
                }
                let mut a = (*old).clone();
                a.client_status = u.client_status;
                a.client_description = u.client_description;
                a.task_states = u.task_states;
                if u.network_status.is_some() {
                    a.network_status = u.network_status;
                }
                // The client's verdict on its health in its deployment, unless
                // an operator's came first.
                let undecided = old.deployment_status.as_ref().is_none_or(|d| d.healthy.is_none());
                if let Some(mut health) = u.deployment_status.filter(|_| undecided) {
                    if u.health_deployment_id == old.deployment_id && !old.deployment_id.is_empty() {
                        health.canary = old.is_canary();
                        a.deployment_status = Some(health);
                    }
                }
                if u.csi_volumes_released && !old.csi_volumes_released {
                    a.csi_volumes_released = true;
                    freed = true;
                }
                let key = (a.namespace.clone(), a.job_id.clone());
                if a.client_status == client_status::FAILED
                    && old.client_status != client_status::FAILED
                    && !a.server_terminal()
                {
                    failed_jobs.insert(key.clone());
                }
                if a.client_terminal() && !old.client_terminal() {
                    freed = true;
                }
                if old.client_status == client_status::UNKNOWN && a.client_status != client_status::UNKNOWN {
                    reconnected_jobs.insert(key.clone());
                }
                if a.client_status != old.client_status || a.deployment_status != old.deployment_status {
                    touched_jobs.insert(key);
                }
                batch.allocs.push(a);
            }
            if batch.allocs.is_empty() {
                return Ok((batch, (Vec::new(), Vec::new(), false)));
            }
            for (ns, id) in &touched_jobs {
                let Some(job) = snap.job(ns, id) else { continue };
                if reconnected_jobs.contains(&(ns.clone(), id.clone())) {
                    batch.evals.push(Evaluation::pending(&job, "reconnect"));
                } else if failed_jobs.contains(&(ns.clone(), id.clone())) {
                    batch.evals.push(Evaluation::pending(&job, "alloc-failure"));
                }
                let status = job_status(snap, &job, &batch.allocs);
                if status != job.status {
                    let mut j = (*job).clone();
                    j.status = status;
                    batch.jobs.push(j);
                }
                let overlay = std::mem::take(&mut batch.allocs);
                super::deployments::track(snap, &job, &overlay, &mut batch);
                batch.allocs = overlay;
            }
            let evals = batch.evals.clone();
            let released: Vec<Allocation> = batch
                .allocs
                .iter()
                .filter(|a| a.csi_volumes_released && snap.alloc(&a.id).is_some_and(|old| !old.csi_volumes_released))
                .cloned()
                .collect();
            Ok::<_, ServerError>((batch, (evals, released, freed)))
        })?;
        self.queue_detach(&released);
        for e in &evals {
            self.enqueue(e);
        }
        if freed {
            self.unblock_evals()?;
            self.garbage_collect()?;
        }
        Ok(())
    }
}
