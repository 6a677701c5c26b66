//! The alloc runner: one tokio task per allocation. It runs the hooks,
//! starts a task runner per task, folds their updates into the
//! allocation's client status (a pure function of the task states),
//! persists what a restarted client needs to re-attach, and reports
//! changes to the server. Commands (`Update`, `Destroy`, the API's
//! `Control` of its tasks) come in over a channel; it owns its state and
//! nothing else touches it.

mod health;
mod hooks;
mod lifecycle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::control::{self, ControlError, ControlReply, TaskAction, TaskControl};
use super::driver::{Driver, VolumeBind};
use super::hook::{AllocHook, ChecksHealth, HookError, HookResources};
use super::network::ExternalCni;
use super::state::{ClientState, PersistedAlloc};
use super::taskrunner::{task_state, TaskRunner, TaskUpdate};
use crate::structs::{client_status, Allocation, Node, TaskEvent, TaskState};
use crate::wire::node::AllocClientUpdate;

pub use hooks::build_hooks;

/// Messages to a running alloc runner.
#[derive(Debug)]
pub enum AllocCommand {
    /// The server changed the allocation (desired status, job version).
    Update(Box<Allocation>),
    /// The allocation is gone from the server: stop and remove everything.
    Destroy,
    /// The client stops the allocation on its own (it could not reach the
    /// servers for its group's `disconnect.stop_on_client_after`), saying why.
    Stop(String),
    /// A request to one task (`task`) or to all of them.
    Control {
        /// The task, or `None` for every task.
        task: Option<String>,
        /// What to do.
        action: TaskAction,
        /// Where the outcome goes.
        reply: ControlReply,
    },
}

/// What the client keeps of a running alloc runner.
pub struct AllocRunnerCtl {
    /// Command channel.
    pub commands: mpsc::UnboundedSender<AllocCommand>,
    /// The `AllocModifyIndex` last handed to it.
    pub modify_index: u64,
    /// Its group's `disconnect.stop_on_client_after`.
    pub stop_after: Option<Duration>,
}

/// A group's `disconnect.stop_on_client_after`, if any.
pub fn stop_after(alloc: &Allocation) -> Option<Duration> {
    let nanos = alloc.group()?.disconnect.as_ref()?.stop_on_client_after?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// Shared things every alloc runner uses.
#[derive(Clone)]
pub struct RunnerDeps {
    /// This node.
    pub node: Arc<Node>,
    /// Drivers by name.
    pub drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    /// `<data_dir>/alloc`.
    pub alloc_dir: PathBuf,
    /// Status updates for the server.
    pub updates: mpsc::UnboundedSender<AllocClientUpdate>,
    /// Persisted client state.
    pub store: Arc<ClientState>,
    /// Agent shutdown: detach, leave tasks running.
    pub shutdown: CancellationToken,
    /// The node's bridge network.
    pub network: Arc<cni::BridgeNetwork>,
    /// Settings of external CNI networks.
    pub external_cni: Arc<ExternalCni>,
    /// The node's CSI plugins.
    pub csi: Arc<crate::client::csi::CsiManager>,
    /// The servers (CSI claims).
    pub rpc: Arc<dyn crate::client::rpc::ServerRpc>,
    /// The client's check scheduler.
    pub checks: crate::client::services::CheckScheduler,
}

/// The allocation's client status from its tasks' states, as Nomad has
/// it: failed if any task failed, running if any runs (a poststop task
/// waiting its turn does not hold it pending), complete once every task
/// is dead.
pub fn client_status_of(states: &BTreeMap<String, TaskState>, task_count: usize) -> (&'static str, &'static str) {
    if states.values().any(|s| s.failed) {
        return (client_status::FAILED, "Failed tasks");
    }
    if states.values().any(|s| s.state == task_state::RUNNING) {
        return (client_status::RUNNING, "Tasks are running");
    }
    let dead = states.values().filter(|s| s.state == task_state::DEAD).count();
    if task_count > 0 && dead == task_count {
        return (client_status::COMPLETE, "All tasks have completed");
    }
    (client_status::PENDING, "No tasks have started")
}

/// Starts an alloc runner; `restored` carries state from before a restart.
pub fn spawn(alloc: Allocation, restored: Option<PersistedAlloc>, deps: RunnerDeps) -> AllocRunnerCtl {
    let (tx, rx) = mpsc::unbounded_channel();
    let modify_index = alloc.alloc_modify_index;
    let stop_after = stop_after(&alloc);
    let span = tracing::info_span!("alloc", alloc_id = %alloc.id);
    tokio::spawn(tracing::Instrument::instrument(run(alloc, restored, deps, tx.downgrade(), rx), span));
    AllocRunnerCtl { commands: tx, modify_index, stop_after }
}

/// How the set-up of an allocation (its prerun hooks) ended.
enum Setup {
    /// The hooks ran; the tasks may start with these resources.
    Ready(HookResources),
    /// A hook failed.
    Failed {
        /// The hook's name.
        hook: &'static str,
        /// Why.
        error: HookError,
    },
    /// Stopped (or removed from the server: `destroy`) before the hooks
    /// were done.
    Stopped { destroy: bool },
    /// The agent shuts down: detach, leave everything as it is.
    Shutdown,
}

struct Runner {
    alloc: Allocation,
    persisted: PersistedAlloc,
    deps: RunnerDeps,
    hooks: Vec<Box<dyn AllocHook>>,
    reported: Option<Reported>,
    /// The address the network hook gave the allocation (bridge, CNI).
    network_status: Option<crate::structs::AllocNetworkStatus>,
    /// The request channels of the task runners, by task.
    controls: BTreeMap<String, mpsc::UnboundedSender<TaskControl>>,
    /// The order of the tasks, once they are started.
    lifecycle: Option<lifecycle::Coordinator>,
    /// Why the tasks are killed, for their Killing events, when it is not
    /// a plain stop.
    kill_reason: Arc<std::sync::OnceLock<String>>,
    /// Its health in its deployment, while undecided.
    health: Option<health::HealthTracker>,
    /// How its services' checks stand, when it has any.
    checks: Option<ChecksHealth>,
}

/// What was last reported: status, task states, volumes released, health.
type Reported = (String, BTreeMap<String, TaskState>, bool, Option<(String, crate::structs::AllocDeploymentStatus)>);

impl Runner {
    fn task_count(&self) -> usize {
        self.alloc.group().map(|tg| tg.tasks.len()).unwrap_or(0)
    }

    fn status(&self) -> (&'static str, &'static str) {
        if self.persisted.max_run_exceeded && all_dead(self) {
            return (client_status::COMPLETE, client_status::MAX_RUN_DURATION_EXCEEDED);
        }
        client_status_of(&self.persisted.task_states, self.task_count())
    }

    /// Its group's `max_run_duration` ran out: every task is stopped,
    /// poststop ones included (Nomad does not run them then), and the
    /// allocation ends complete, saying why.
    fn exceed_max_run(&mut self, kill: &CancellationToken) {
        tracing::info!("allocation exceeded max_run_duration: stopping its tasks");
        self.persisted.max_run_exceeded = true;
        let _ = self.kill_reason.set(client_status::MAX_RUN_DURATION_EXCEEDED.into());
        kill.cancel();
        if let Some(order) = &self.lifecycle {
            order.abandon();
        }
        self.persist(true);
        if self.persisted.handles.is_empty() {
            mark_unstarted_dead(self);
        }
        self.report();
    }

    fn persist(&mut self, durable: bool) {
        self.persisted.alloc = self.alloc.clone();
        if let Err(e) = self.deps.store.put(&self.persisted, durable) {
            tracing::error!(error = %e, "persisting allocation state");
        }
    }

    fn report(&mut self) {
        let (status, desc) = self.status();
        let now = (
            status.to_string(),
            self.persisted.task_states.clone(),
            self.persisted.csi_volumes_released,
            self.persisted.health.clone(),
        );
        if self.reported.as_ref() == Some(&now) {
            return;
        }
        self.reported = Some(now);
        let (health_deployment_id, deployment_status) = self.persisted.health.clone().unzip();
        let _ = self.deps.updates.send(AllocClientUpdate {
            id: self.alloc.id.clone(),
            client_status: status.into(),
            client_description: desc.into(),
            task_states: self.persisted.task_states.clone(),
            csi_volumes_released: self.persisted.csi_volumes_released,
            network_status: self.network_status.clone(),
            deployment_status,
            health_deployment_id: health_deployment_id.unwrap_or_default(),
        });
    }

    /// Tells the hooks of an in-place update (their errors are logged: the
    /// tasks run on).
    async fn update_hooks(&self) {
        for hook in &self.hooks {
            if let Err(e) = hook.update(&self.alloc).await {
                tracing::warn!(hook = hook.name(), error = %e, "updating the allocation in place");
            }
        }
    }

    /// Starts tracking its health when it is in a deployment that has not
    /// had its verdict from this client.
    fn track_health(&mut self) {
        let dep = &self.alloc.deployment_id;
        let decided = self.persisted.health.as_ref().is_some_and(|(d, _)| d == dep);
        if decided || self.health.as_ref().is_some_and(|t| &t.deployment_id == dep) {
            return;
        }
        let now = crate::util::now_nanos();
        self.health = health::HealthTracker::for_alloc(&self.alloc, now);
        if let Some(t) = &mut self.health {
            t.tasks(&self.persisted.task_states);
            if let Some(c) = &self.checks {
                t.checks(c, now);
            }
        }
        self.judge_health();
    }

    /// Records and reports the health verdict, once there is one; an
    /// unhealthy allocation's running tasks get an `Alloc Unhealthy` event.
    fn judge_health(&mut self) {
        let now = crate::util::now_nanos();
        let Some(tracker) = &self.health else { return };
        let Some(verdict) = tracker.verdict(now) else { return };
        let healthy = verdict == health::Verdict::Healthy;
        if let health::Verdict::Unhealthy(why) = verdict {
            tracing::info!(deployment_id = %tracker.deployment_id, reason = %why, "allocation unhealthy");
            let (reply, _) = oneshot::channel();
            self.control(None, TaskAction::Event(TaskEvent::new("Alloc Unhealthy", why)), reply);
        }
        let status =
            crate::structs::AllocDeploymentStatus { healthy: Some(healthy), timestamp: now, ..Default::default() };
        self.persisted.health = Some((tracker.deployment_id.clone(), status));
        self.health = None;
        self.persist(true);
        self.report();
    }

    /// Runs the prerun hooks, unless a stop, a removal or the agent's
    /// shutdown comes first: then the hook in progress is dropped where it
    /// waits (a claim held elsewhere, a plugin call) and what the hooks did
    /// so far is left to postrun, which undoes it from what is recorded and
    /// mounted. An update that does not stop the allocation is applied
    /// once the hooks are done.
    async fn setup(&mut self, commands: &mut mpsc::UnboundedReceiver<AllocCommand>) -> Setup {
        let mut res = HookResources::default();
        let alloc = self.alloc.clone();
        let shutdown = self.deps.shutdown.clone();
        let mut later = None;
        let mut prerun = Box::pin(async {
            for h in &self.hooks {
                h.prerun(&alloc, &mut res).await.map_err(|error| Setup::Failed { hook: h.name(), error })?;
            }
            Ok::<(), Setup>(())
        });
        let interrupted = loop {
            tokio::select! {
                done = &mut prerun => break done.err(),
                command = commands.recv() => match command {
                    Some(AllocCommand::Update(a)) if a.server_terminal() => {
                        later = Some(a);
                        break Some(Setup::Stopped { destroy: false });
                    }
                    Some(AllocCommand::Update(a)) => later = Some(a),
                    Some(AllocCommand::Stop(why)) => {
                        let mut a = Box::new(alloc.clone());
                        a.stop_locally(&why);
                        later = Some(a);
                        break Some(Setup::Stopped { destroy: false });
                    }
                    Some(AllocCommand::Control { reply, .. }) => {
                        let _ = reply.send(Err(ControlError::NotRunning));
                    }
                    Some(AllocCommand::Destroy) | None => break Some(Setup::Stopped { destroy: true }),
                },
                _ = shutdown.cancelled() => break Some(Setup::Shutdown),
            }
        };
        drop(prerun);
        if let Some(a) = later {
            self.alloc = *a;
            self.persist(true);
        }
        interrupted.unwrap_or(Setup::Ready(res))
    }

    /// A failed set-up: the tasks are marked failed; tasks still running
    /// from before are stopped first, then postrun undoes the hooks.
    async fn setup_failed(&mut self, why: &str, kill: &CancellationToken, updates: &mpsc::UnboundedSender<TaskUpdate>) {
        tracing::warn!(error = %why, "allocation setup failed");
        self.fail_setup(why);
        kill.cancel();
        if self.persisted.handles.is_empty() {
            self.run_postrun().await;
        } else {
            // Postrun follows once the restored tasks have stopped.
            self.stop_restored_tasks(kill, updates);
        }
    }

    fn fail_setup(&mut self, why: &str) {
        let tasks: Vec<String> = self.alloc.task_names();
        for t in tasks {
            let st = self.persisted.task_states.entry(t).or_default();
            let mut ev = TaskEvent::new("Setup Failure", format!("failed to setup alloc: {why}"));
            ev.driver_error = why.into();
            st.events.push(ev);
            st.state = task_state::DEAD.into();
            st.failed = true;
        }
        self.persist(true);
        self.report();
    }

    /// Runs every postrun hook; once the CSI volume hook has unpublished
    /// the allocation's volumes, records that and tells the server, which
    /// ends the allocation's claims.
    async fn run_postrun(&mut self) {
        let mut volumes_released = true;
        for h in self.hooks.iter().rev() {
            if let Err(e) = h.postrun(&self.alloc).await {
                tracing::warn!(hook = h.name(), error = %e, "postrun hook failed");
                if h.name() == super::csi::VOLUME_HOOK {
                    volumes_released = false;
                }
            }
        }
        if volumes_released && !self.persisted.csi_volumes_released && self.alloc.holds_csi_claims() {
            self.persisted.csi_volumes_released = true;
            self.persist(true);
            self.report();
        }
    }

    async fn run_destroy(&self) {
        for h in self.hooks.iter().rev() {
            if let Err(e) = h.destroy(&self.alloc).await {
                tracing::warn!(hook = h.name(), error = %e, "destroy hook failed");
            }
        }
        self.deps.store.delete(&self.alloc.id);
    }

    /// Starts a task runner per task that is not dead, or none when any
    /// cannot start (a missing driver or volume).
    fn start_tasks(
        &mut self,
        kill: &CancellationToken,
        updates: &mpsc::UnboundedSender<TaskUpdate>,
        res: &HookResources,
    ) -> Result<(), String> {
        let job = self.alloc.job.clone().ok_or("allocation has no job")?;
        let tg = job.task_group(&self.alloc.task_group).ok_or("allocation's group is not in its job")?;
        let order = lifecycle::Coordinator::new(&tg.tasks, kill);
        let mut runners = Vec::new();
        for task in &tg.tasks {
            if self.persisted.task_states.get(&task.name).is_some_and(|s| s.state == task_state::DEAD) {
                continue;
            }
            let mut binds = task
                .volume_mounts
                .iter()
                .map(|m| {
                    let (host, ro) = res.volume_paths.get(&m.volume).ok_or_else(|| {
                        format!("task {:?}: volume {:?} is not available on this client", task.name, m.volume)
                    })?;
                    Ok(VolumeBind {
                        host_path: host.clone(),
                        destination: m.destination.clone(),
                        read_only: *ro || m.read_only,
                        propagation: String::new(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            binds.extend(res.task_binds.get(&task.name).cloned().unwrap_or_default());
            let mut runner = self.task_runner(&job, task, kill, updates)?;
            runner.binds = binds;
            runner.extra_env = res.task_env.get(&task.name).cloned().unwrap_or_default();
            runner.network = res.network.clone();
            runner.gate = order.gate(task);
            runner.kill = order.kill_token(task, kill);
            runners.push(runner);
        }
        for runner in runners {
            spawn_task(runner);
        }
        order.advance(&self.persisted.task_states);
        self.lifecycle = Some(order);
        Ok(())
    }

    /// Re-attaches to the tasks a previous client left running, only to
    /// stop them (`kill` is cancelled): an allocation that will not start
    /// its tasks must not leave them running over volumes it unpublishes.
    fn stop_restored_tasks(&mut self, kill: &CancellationToken, updates: &mpsc::UnboundedSender<TaskUpdate>) {
        let Some(job) = self.alloc.job.clone() else { return };
        let Some(tg) = job.task_group(&self.alloc.task_group) else { return };
        let restored: Vec<_> =
            tg.tasks.iter().filter(|t| self.persisted.handles.contains_key(&t.name)).cloned().collect();
        for task in &restored {
            match self.task_runner(&job, task, kill, updates) {
                Ok(runner) => spawn_task(runner),
                Err(e) => tracing::error!(task = %task.name, error = %e, "cannot stop a restored task"),
            }
        }
    }

    /// Hands a request to the task runners it names; the answer comes
    /// once they have all answered.
    fn control(&self, task: Option<String>, action: TaskAction, reply: ControlReply) {
        let names = self.alloc.task_names();
        let targets = match task {
            Some(t) if !names.contains(&t) => {
                let _ = reply.send(Err(ControlError::UnknownTask(t)));
                return;
            }
            Some(t) => vec![t],
            None => names,
        };
        let replies = targets
            .iter()
            .map(|t| {
                let (tx, rx) = oneshot::channel();
                // A runner that has ended drops the request: not running.
                if let Some(runner) = self.controls.get(t) {
                    let _ = runner.send(TaskControl { action: action.clone(), reply: tx });
                }
                rx
            })
            .collect();
        tokio::spawn(async move {
            let _ = reply.send(control::gather(replies).await);
        });
    }

    /// A task runner for `task` with its persisted state and handle, no
    /// binds, environment or network yet.
    fn task_runner(
        &mut self,
        job: &crate::structs::Job,
        task: &crate::structs::Task,
        kill: &CancellationToken,
        updates: &mpsc::UnboundedSender<TaskUpdate>,
    ) -> Result<TaskRunner, String> {
        let tg = job.task_group(&self.alloc.task_group).ok_or("allocation's group is not in its job")?;
        let driver =
            self.deps.drivers.get(&task.driver).cloned().ok_or_else(|| {
                format!("task {:?}: driver {:?} is not available on this client", task.name, task.driver)
            })?;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        self.controls.insert(task.name.clone(), control_tx.clone());
        Ok(TaskRunner {
            alloc: self.alloc.clone(),
            task: task.clone(),
            node: self.deps.node.clone(),
            driver,
            alloc_root: self.deps.alloc_dir.join(&self.alloc.id),
            restart: task.restart_policy.clone().or_else(|| tg.restart_policy.clone()).unwrap_or_default(),
            batch: job.is_batch_like() || task.is_ephemeral(),
            state: self.persisted.task_states.get(&task.name).cloned().unwrap_or_default(),
            handle: self.persisted.handles.get(&task.name).cloned(),
            kill: kill.child_token(),
            shutdown: self.deps.shutdown.child_token(),
            updates: updates.clone(),
            binds: Vec::new(),
            extra_env: Default::default(),
            network: None,
            control: control_rx,
            gate: None,
            kill_reason: self.kill_reason.clone(),
            templates: Some(crate::client::template::TemplateSet::new(
                task.templates.clone(),
                Arc::new(crate::client::template::RpcTemplateReader {
                    rpc: self.deps.rpc.clone(),
                    node: self.deps.node.clone(),
                    alloc_id: self.alloc.id.clone(),
                    task: task.name.clone(),
                }),
                self.deps.alloc_dir.join(&self.alloc.id),
                task.name.clone(),
                self.deps.node.clone(),
            )),
            template_env: Default::default(),
            control_tx: control_tx.clone(),
        })
    }
}

fn spawn_task(runner: TaskRunner) {
    let span = tracing::info_span!("task", task = %runner.task.name);
    tokio::spawn(tracing::Instrument::instrument(runner.run(), span));
}

async fn run(
    alloc: Allocation,
    restored: Option<PersistedAlloc>,
    deps: RunnerDeps,
    own_commands: mpsc::WeakUnboundedSender<AllocCommand>,
    mut commands: mpsc::UnboundedReceiver<AllocCommand>,
) {
    let root = deps.alloc_dir.join(&alloc.id);
    let hooks = build_hooks(root, &deps, own_commands);
    let mut r = Runner {
        persisted: restored.unwrap_or_else(|| PersistedAlloc { alloc: alloc.clone(), ..Default::default() }),
        alloc,
        deps,
        hooks,
        reported: None,
        network_status: None,
        controls: BTreeMap::new(),
        lifecycle: None,
        kill_reason: Default::default(),
        health: None,
        checks: None,
    };
    let mut checks: Option<watch::Receiver<ChecksHealth>> = None;
    let kill = CancellationToken::new();
    let (task_tx, mut task_rx) = mpsc::unbounded_channel::<TaskUpdate>();
    // Done when every task has ended (a failed one ends the others, and
    // the poststop tasks run after them).
    let finished = |r: &Runner| {
        let status = r.status().0;
        status == client_status::COMPLETE
            || (status == client_status::FAILED && r.persisted.handles.is_empty() && all_dead(r))
    };
    let mut destroying = false;
    if r.alloc.server_terminal() || finished(&r) {
        kill.cancel();
        // Tasks still running from before are stopped first; a client
        // stopped between the tasks' end and the volumes' unpublish
        // finishes the teardown now, so the claims can end.
        r.stop_restored_tasks(&kill, &task_tx);
        if r.persisted.handles.is_empty() && r.alloc.holds_csi_claims() && !r.persisted.csi_volumes_released {
            r.run_postrun().await;
        }
    } else {
        match r.setup(&mut commands).await {
            Setup::Ready(mut res) => match r.start_tasks(&kill, &task_tx, &res) {
                Ok(()) => {
                    if res.network.as_ref().is_some_and(|n| n.is_addressed()) {
                        r.network_status = res.network.as_ref().map(|n| n.status());
                    }
                    checks = res.checks.take();
                    r.checks = checks.as_ref().map(|c| c.borrow().clone());
                    r.persist(false);
                    r.track_health();
                }
                Err(e) => r.setup_failed(&e, &kill, &task_tx).await,
            },
            Setup::Failed { hook, error } => r.setup_failed(&format!("{hook} hook: {error}"), &kill, &task_tx).await,
            Setup::Stopped { destroy } => {
                kill.cancel();
                destroying = destroy;
                if r.persisted.handles.is_empty() {
                    mark_unstarted_dead(&mut r);
                    r.report();
                    r.run_postrun().await;
                    if destroy {
                        r.run_destroy().await;
                        return;
                    }
                } else {
                    r.stop_restored_tasks(&kill, &task_tx);
                }
            }
            Setup::Shutdown => return,
        }
    }
    r.report();
    loop {
        let health_wake = r.health.as_ref().map(|t| nanos_until(t.wake_at()));
        let max_run = r.alloc.max_run_deadline().filter(|_| !kill.is_cancelled() && !r.persisted.max_run_exceeded);
        let left = max_run.map(nanos_until);
        tokio::select! {
            _ = tokio::time::sleep(left.unwrap_or_default()), if left.is_some() => r.exceed_max_run(&kill),
            _ = tokio::time::sleep(health_wake.unwrap_or_default()), if health_wake.is_some() => r.judge_health(),
            health = changed(&mut checks), if checks.is_some() => match health {
                Some(h) => {
                    if let Some(t) = &mut r.health {
                        t.checks(&h, crate::util::now_nanos());
                    }
                    r.checks = Some(h);
                    r.judge_health();
                }
                None => checks = None,
            },
            Some(u) = task_rx.recv() => {
                let failed = u.state.failed;
                let handle_changed = r.persisted.handles.get(&u.task) != u.handle.as_ref();
                r.persisted.task_states.insert(u.task.clone(), u.state);
                match u.handle {
                    Some(h) => { r.persisted.handles.insert(u.task, h); }
                    None => { r.persisted.handles.remove(&u.task); }
                }
                if failed {
                    kill.cancel();
                }
                if let Some(order) = &r.lifecycle {
                    order.advance(&r.persisted.task_states);
                }
                for h in &r.hooks {
                    h.task_states(&r.persisted.task_states, &r.persisted.handles);
                }
                if let Some(t) = &mut r.health {
                    t.tasks(&r.persisted.task_states);
                }
                r.persist(handle_changed);
                r.judge_health();
                r.report();
                if finished(&r) || (kill.is_cancelled() && r.persisted.handles.is_empty() && all_dead(&r)) {
                    r.run_postrun().await;
                    if destroying {
                        r.run_destroy().await;
                        return;
                    }
                }
            }
            cmd = commands.recv() => match cmd {
                Some(AllocCommand::Update(a)) => {
                    r.alloc = *a;
                    if r.alloc.server_terminal() {
                        kill.cancel();
                        r.health = None;
                    } else if !kill.is_cancelled() {
                        r.update_hooks().await;
                        if let Some(rx) = &mut checks {
                            r.checks = Some(rx.borrow_and_update().clone());
                        }
                        r.track_health();
                    }
                    r.persist(true);
                    // The servers marked it unknown while this node was out
                    // of touch: tell them again how it is.
                    if r.alloc.client_status == crate::structs::client_status::UNKNOWN {
                        r.reported = None;
                        r.report();
                    }
                    if kill.is_cancelled() && r.persisted.handles.is_empty() {
                        mark_unstarted_dead(&mut r);
                        r.report();
                    }
                }
                Some(AllocCommand::Stop(why)) => {
                    tracing::warn!(reason = %why, "stopping the allocation");
                    r.alloc.stop_locally(&why);
                    kill.cancel();
                    r.persist(true);
                    if r.persisted.handles.is_empty() {
                        mark_unstarted_dead(&mut r);
                        r.report();
                    }
                }
                Some(AllocCommand::Control { task, action, reply }) => r.control(task, action, reply),
                Some(AllocCommand::Destroy) | None => {
                    destroying = true;
                    kill.cancel();
                    if let Some(order) = &r.lifecycle {
                        order.abandon();
                    }
                    if r.persisted.handles.is_empty() {
                        r.run_postrun().await;
                        r.run_destroy().await;
                        return;
                    }
                }
            },
            _ = r.deps.shutdown.cancelled() => return,
        }
    }
}

/// The time from now to `at` (Unix nanoseconds), zero once past.
fn nanos_until(at: i64) -> Duration {
    Duration::from_nanos(u64::try_from(at.saturating_sub(crate::util::now_nanos())).unwrap_or(0))
}

/// The next health of the checks, or `None` once their watcher is gone.
async fn changed(checks: &mut Option<watch::Receiver<ChecksHealth>>) -> Option<ChecksHealth> {
    let rx = checks.as_mut()?;
    rx.changed().await.ok()?;
    let health = rx.borrow_and_update().clone();
    Some(health)
}

fn all_dead(r: &Runner) -> bool {
    r.persisted.task_states.values().all(|s| s.state == task_state::DEAD)
}

/// Tasks that never started (killed while pending, or stopped before the
/// hooks were done) are dead, not failed; with nothing run, no poststop
/// task runs either.
fn mark_unstarted_dead(r: &mut Runner) {
    if let Some(order) = &r.lifecycle {
        order.abandon();
    }
    for task in r.alloc.task_names() {
        let s = r.persisted.task_states.entry(task).or_default();
        if s.state != task_state::DEAD {
            s.state = task_state::DEAD.into();
        }
    }
    r.persist(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: &str, failed: bool) -> TaskState {
        TaskState { state: state.into(), failed, ..Default::default() }
    }

    #[test]
    fn client_status_is_a_function_of_task_states() {
        let mut m = BTreeMap::new();
        assert_eq!(client_status_of(&m, 2).0, "pending");
        m.insert("a".into(), st("running", false));
        assert_eq!(client_status_of(&m, 2).0, "running", "one task runs, the other waits its turn");
        m.insert("b".into(), st("pending", false));
        assert_eq!(client_status_of(&m, 2).0, "running");
        m.insert("b".into(), st("running", false));
        assert_eq!(client_status_of(&m, 2).0, "running");
        m.insert("b".into(), st("dead", false));
        assert_eq!(client_status_of(&m, 2).0, "running");
        m.insert("a".into(), st("dead", false));
        assert_eq!(client_status_of(&m, 2).0, "complete");
        m.insert("a".into(), st("dead", true));
        assert_eq!(client_status_of(&m, 2).0, "failed");
    }
}
