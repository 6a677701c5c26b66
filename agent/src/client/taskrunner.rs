//! The task runner: one tokio task per task that waits for its lifecycle
//! phase, prepares the task (artifacts, env, templates), starts it through its
//! driver, waits, and applies the restart policy; it also carries out the API's requests to the running task
//! (signal, restart in place). Two tokens end it: `kill` stops the workload (the allocation is
//! stopping), `shutdown` only detaches (the agent is exiting and the task
//! keeps running, to be re-attached through its persisted handle).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::control::{ControlError, TaskAction, TaskControl};
use super::driver::{Driver, ExitResult, TaskConfig, TaskHandle};
use super::logs::Rotation;
use super::{artifact, taskenv, template};
use crate::structs::{Allocation, Node, RestartPolicy, Task, TaskEvent, TaskState};
use crate::util::{format_duration, now_rfc3339};

/// Task lifecycle states, as Nomad names them.
pub mod task_state {
    /// Not started.
    pub const PENDING: &str = "pending";
    /// Running.
    pub const RUNNING: &str = "running";
    /// Finished, failed or killed.
    pub const DEAD: &str = "dead";
}

/// What a task runner reports to its alloc runner.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    /// Task name.
    pub task: String,
    /// New state.
    pub state: TaskState,
    /// The driver handle while the task runs (None once it exited).
    pub handle: Option<TaskHandle>,
}

/// Everything a task runner needs.
pub struct TaskRunner {
    /// The allocation (for env).
    pub alloc: Allocation,
    /// The task spec.
    pub task: Task,
    /// The node (for interpolation).
    pub node: Arc<Node>,
    /// The driver.
    pub driver: Arc<dyn Driver>,
    /// The alloc's root directory.
    pub alloc_root: PathBuf,
    /// Restart policy (task's, else group's).
    pub restart: RestartPolicy,
    /// Batch jobs finish on a clean exit; others restart.
    pub batch: bool,
    /// State carried over from before a restart of the client.
    pub state: TaskState,
    /// A handle of a task still running from before.
    pub handle: Option<TaskHandle>,
    /// Stop the workload.
    pub kill: CancellationToken,
    /// Detach and leave the workload running.
    pub shutdown: CancellationToken,
    /// Where updates go.
    pub updates: mpsc::UnboundedSender<TaskUpdate>,
    /// Host paths of the task's `volume_mount`s.
    pub binds: Vec<super::driver::VolumeBind>,
    /// Environment the alloc hooks add (`CSI_ENDPOINT`); the task's own
    /// `env` overrides it.
    pub extra_env: BTreeMap<String, String>,
    /// The allocation's bridge network, if it has one.
    pub network: Option<std::sync::Arc<super::hook::GroupNetwork>>,
    /// Requests from the API (signal, restart).
    pub control: mpsc::UnboundedReceiver<TaskControl>,
    /// Opens when the task's turn comes (its lifecycle phase); `None`
    /// starts it at once.
    pub gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// Why the allocation kills its tasks, when it is not the usual stop
    /// (its `max_run_duration` ran out): the Killing event says so.
    pub kill_reason: Arc<std::sync::OnceLock<String>>,
    /// The task's templates, until their first render hands them to the
    /// watcher that re-renders them.
    pub templates: Option<template::TemplateSet>,
    /// What the `env = true` templates set, as last rendered.
    pub template_env: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    /// This runner's own control channel (the template watcher's requests).
    pub control_tx: mpsc::UnboundedSender<TaskControl>,
}

enum Next {
    Restart(Duration),
    Done { failed: bool },
}

impl TaskRunner {
    fn emit(&mut self, event: TaskEvent) {
        tracing::debug!(alloc_id = %self.alloc.id, task = %self.task.name, event = %event.event_type, "{}", event.display_message);
        self.state.events.push(event);
        if self.state.events.len() > 10 {
            self.state.events.remove(0);
        }
        self.publish();
    }

    fn publish(&self) {
        let _ = self.updates.send(TaskUpdate {
            task: self.task.name.clone(),
            state: self.state.clone(),
            handle: self.handle.clone(),
        });
    }

    fn task_dir(&self) -> PathBuf {
        self.alloc_root.join(&self.task.name)
    }

    /// The task's environment: Nomad's variables, the alloc hooks' and the
    /// task's own `env`, interpolated.
    fn environment(&self) -> BTreeMap<String, String> {
        let task_dir = self.task_dir();
        let alloc_dir = self.alloc_root.join("alloc");
        // Isolated tasks see the directories where the driver mounts them.
        let (env_alloc, env_local, env_secrets) = if self.driver.fs_isolation() {
            (PathBuf::from("/alloc"), PathBuf::from("/local"), PathBuf::from("/secrets"))
        } else {
            (alloc_dir.clone(), task_dir.join("local"), task_dir.join("secrets"))
        };
        let dirs = taskenv::TaskDirs { alloc_dir: &env_alloc, local_dir: &env_local, secrets_dir: &env_secrets };
        let mut env = taskenv::build(&self.alloc, &self.task, &self.node, &dirs);
        if let Some(net) = &self.network {
            taskenv::add_bridge(&mut env, &self.alloc, &net.alloc);
        }
        env.extend(self.extra_env.clone());
        for (k, v) in &self.task.env {
            let value = taskenv::interpolate(v, &env, &self.node);
            env.insert(k.clone(), value);
        }
        env
    }

    /// Builds the driver's config: env, the dispatch payload and templates.
    fn prepare(&self) -> Result<TaskConfig, String> {
        let task_dir = self.task_dir();
        let alloc_dir = self.alloc_root.join("alloc");
        let mut env = self.environment();
        if let (Some(d), Some(job)) = (&self.task.dispatch_payload, &self.alloc.job) {
            // Nomad's dispatch hook: the payload in the task's local/ directory.
            let dest = task_dir.join("local").join(&d.file);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("dispatch payload {}: {e}", d.file))?;
            }
            std::fs::write(&dest, &job.payload).map_err(|e| format!("dispatch payload {}: {e}", d.file))?;
        }
        env.extend(self.template_env.lock().clone());
        let config: BTreeMap<String, serde_json::Value> =
            self.task.config.iter().map(|(k, v)| (k.clone(), taskenv::interpolate_json(v, &env, &self.node))).collect();
        let resources = self.alloc.allocated_resources.tasks.get(&self.task.name);
        let rotation = self
            .task
            .log_config
            .as_ref()
            .map(|l| match l.disabled {
                true => Rotation::DISABLED,
                false => {
                    Rotation { max_files: l.max_files.max(1), max_file_bytes: l.max_file_size_mb.max(1) * 1024 * 1024 }
                }
            })
            .unwrap_or_default();
        Ok(TaskConfig {
            alloc_id: self.alloc.id.clone(),
            task: self.task.name.clone(),
            config,
            env,
            task_dir,
            log_dir: alloc_dir.join("logs"),
            rotation,
            user: self.task.user.clone(),
            cpu: resources.map(|r| r.cpu.cpu_shares).unwrap_or(0),
            memory_mb: resources.map(|r| r.memory.memory_mb).unwrap_or(0),
            memory_max_mb: resources.map(|r| r.memory.memory_max_mb).unwrap_or(0),
            ports: self.alloc.allocated_resources.shared.ports.clone(),
            binds: self.binds.clone(),
            kill_timeout: self.kill_timeout(),
            events: None,
            network: self.network.as_ref().map(|n| n.task.clone()),
        })
    }

    /// Renders the task's templates the first time (waiting for variables
    /// that do not exist yet, with a "Template" event saying which), then
    /// hands those that read from the servers to a watcher that renders
    /// them again when what they read changes. `None` if the task was
    /// killed meanwhile.
    async fn render_templates(&mut self, mut set: template::TemplateSet) -> Option<Result<(), template::RenderError>> {
        let env = self.environment();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let kill = self.kill.clone();
        let rendered = {
            let render = set.render_all(&env, |m| {
                let _ = tx.send(m.to_string());
            });
            tokio::pin!(render);
            loop {
                tokio::select! {
                    r = &mut render => break r,
                    Some(m) = rx.recv() => self.emit(TaskEvent::new("Template", m)),
                    _ = kill.cancelled() => return None,
                }
            }
        };
        while let Ok(m) = rx.try_recv() {
            self.emit(TaskEvent::new("Template", m));
        }
        if let Err(e) = rendered {
            return Some(Err(e));
        }
        *self.template_env.lock() = set.env_additions();
        if !set.follows_servers() {
            return Some(Ok(()));
        }
        let watch = template::watch(set, self.template_env.clone(), self.control_tx.clone());
        let kill = self.kill.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = watch => {}
                _ = kill.cancelled() => {}
            }
        });
        Some(Ok(()))
    }

    /// Downloads the task's artifacts; `None` if the task was killed meanwhile.
    async fn fetch_artifacts(&mut self) -> Option<Result<(), artifact::ArtifactError>> {
        self.emit(TaskEvent::new("Downloading Artifacts", "Client is downloading artifacts"));
        let env = self.environment();
        let node = self.node.clone();
        let fetch = artifact::fetch_all(&self.task.artifacts, &self.alloc_root, &self.task.name, |v| {
            taskenv::interpolate(v, &env, &node)
        });
        tokio::select! {
            r = fetch => Some(r),
            _ = self.kill.cancelled() => None,
        }
    }

    fn kill_timeout(&self) -> Duration {
        Duration::from_nanos(self.task.kill_timeout.unwrap_or(5_000_000_000).max(0) as u64)
    }

    fn mark_dead(&mut self, failed: bool) {
        self.state.state = task_state::DEAD.into();
        self.state.failed = failed;
        self.state.finished_at = Some(now_rfc3339());
        self.handle = None;
        self.publish();
    }

    fn decide(&mut self, exit: &ExitResult, window: &mut (Instant, u32)) -> Next {
        if self.batch && exit.successful() {
            return Next::Done { failed: false };
        }
        let interval = Duration::from_nanos(self.restart.interval.max(0) as u64);
        if window.0.elapsed() > interval {
            *window = (Instant::now(), 0);
        }
        if window.1 >= self.restart.attempts {
            if self.restart.mode == "delay" {
                let wait = interval.saturating_sub(window.0.elapsed());
                *window = (Instant::now() + wait, 0);
                return Next::Restart(wait);
            }
            let msg = format!(
                "Exceeded allowed attempts {} in interval {} and mode is \"fail\"",
                self.restart.attempts,
                format_duration(self.restart.interval)
            );
            self.emit(TaskEvent::new("Not Restarting", msg));
            return Next::Done { failed: true };
        }
        window.1 += 1;
        let base = self.restart.delay.max(0) as u64;
        let jitter = if base > 0 { rand::rng().random_range(0..=base / 4) } else { 0 };
        Next::Restart(Duration::from_nanos(base + jitter))
    }

    /// Runs the task to its end (or until shutdown detaches it).
    pub async fn run(mut self) {
        let mut window = (Instant::now(), 0u32);
        // Fetched once per run of the runner, as Nomad's artifact hook.
        let mut artifacts_done = false;
        if self.state.state.is_empty() {
            self.state.state = task_state::PENDING.into();
            self.emit(TaskEvent::new("Received", "Task received by client"));
        }
        if let Some(handle) = &self.handle {
            // A task left running by a previous client: the driver
            // re-attaches what it keeps (the log pump); an exit while the
            // agent was away is collected by the wait below.
            if !self.driver.recover(handle).await {
                tracing::info!("a restored task is no longer running");
            }
        }
        if self.handle.is_none() {
            if let Some(gate) = self.gate.take() {
                if !self.wait_for_turn(gate).await {
                    return;
                }
            }
        }
        loop {
            if self.handle.is_none() {
                if self.kill.is_cancelled() {
                    self.mark_dead(self.state.failed);
                    return;
                }
                self.emit(TaskEvent::new("Task Setup", "Building Task Directory"));
                if !artifacts_done && !self.task.artifacts.is_empty() {
                    match self.fetch_artifacts().await {
                        None => {
                            self.mark_dead(self.state.failed);
                            return;
                        }
                        Some(Ok(())) => artifacts_done = true,
                        Some(Err(e)) => {
                            let mut ev = TaskEvent::new("Failed Artifact Download", e.to_string());
                            ev.download_error = e.to_string();
                            self.emit(ev);
                            let exit = ExitResult { exit_code: -1, signal: 0, error: Some(e.to_string()) };
                            if !self.should_restart(&exit, &mut window).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
                if let Some(set) = self.templates.take().filter(|s| !s.is_empty()) {
                    match self.render_templates(set).await {
                        Some(Ok(())) => {}
                        None => {
                            self.mark_dead(self.state.failed);
                            return;
                        }
                        Some(Err(e)) => {
                            let mut ev = TaskEvent::new("Setup Failure", format!("failed to setup task: {e}"));
                            ev.driver_error = e.to_string();
                            self.emit(ev);
                            self.mark_dead(true);
                            return;
                        }
                    }
                }
                let mut cfg = match self.prepare() {
                    Ok(c) => c,
                    Err(e) => {
                        let mut ev = TaskEvent::new("Setup Failure", format!("failed to setup task: {e}"));
                        ev.driver_error = e;
                        self.emit(ev);
                        self.mark_dead(true);
                        return;
                    }
                };
                // Driver progress (image pulls) becomes task events while
                // the start is in flight.
                let (events_tx, mut events_rx) = mpsc::unbounded_channel();
                cfg.events = Some(events_tx);
                let driver = self.driver.clone();
                let start = driver.start(&cfg);
                tokio::pin!(start);
                let started = loop {
                    tokio::select! {
                        r = &mut start => break r,
                        Some(ev) = events_rx.recv() => self.emit(ev),
                    }
                };
                while let Ok(ev) = events_rx.try_recv() {
                    self.emit(ev);
                }
                match started {
                    Ok(h) => {
                        self.handle = Some(h);
                        self.state.state = task_state::RUNNING.into();
                        self.state.started_at = Some(now_rfc3339());
                        self.emit(TaskEvent::new("Started", "Task started by client"));
                    }
                    Err(e) => {
                        let mut ev = TaskEvent::new("Driver Failure", e.to_string());
                        ev.driver_error = e.to_string();
                        self.emit(ev);
                        let exit = ExitResult { exit_code: -1, signal: 0, error: Some(e.to_string()) };
                        if !self.should_restart(&exit, &mut window).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let handle = self.handle.clone().expect("set above");
            let exit = match self.supervise(&handle).await {
                Supervised::Exited(exit) => exit,
                Supervised::Restart => {
                    self.handle = None;
                    self.state.restarts += 1;
                    self.state.last_restart = Some(now_rfc3339());
                    self.state.state = task_state::PENDING.into();
                    self.publish();
                    continue;
                }
                Supervised::Killed => {
                    self.mark_dead(self.state.failed);
                    return;
                }
                Supervised::Detached => return,
            };
            let mut ev = TaskEvent::new(
                "Terminated",
                format!(
                    "Exit Code: {}{}",
                    exit.exit_code,
                    if exit.signal != 0 { format!(", Signal: {}", exit.signal) } else { String::new() }
                ),
            );
            ev.exit_code = exit.exit_code;
            ev.signal = exit.signal;
            if let Some(e) = &exit.error {
                ev.driver_error = e.clone();
            }
            self.driver.destroy(&handle).await;
            self.handle = None;
            self.emit(ev);
            if self.kill.is_cancelled() {
                self.mark_dead(false);
                return;
            }
            if !self.should_restart(&exit, &mut window).await {
                return;
            }
        }
    }

    /// Waits until the task's lifecycle phase may start; false when it is
    /// killed (then dead) or shut down meanwhile.
    async fn wait_for_turn(&mut self, mut gate: tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            tokio::select! {
                open = gate.wait_for(|open| *open) => return open.is_ok(),
                _ = self.kill.cancelled() => {
                    self.mark_dead(self.state.failed);
                    return false;
                }
                _ = self.shutdown.cancelled() => return false,
                Some(c) = self.control.recv() => {
                    let _ = c.reply.send(Err(ControlError::NotRunning));
                }
            }
        }
    }

    /// Applies the restart policy to an exit: true when the task is to be
    /// started again (after the delay), false when this runner is done.
    async fn should_restart(&mut self, exit: &ExitResult, window: &mut (Instant, u32)) -> bool {
        match self.decide(exit, window) {
            Next::Done { failed } => {
                self.mark_dead(failed);
                false
            }
            Next::Restart(delay) => self.restart_after(delay).await,
        }
    }

    /// Waits out a restart delay; false when killed or shut down meanwhile.
    async fn restart_after(&mut self, delay: Duration) -> bool {
        let mut ev =
            TaskEvent::new("Restarting", format!("Task restarting in {}", format_duration(delay.as_nanos() as i64)));
        ev.restart_reason = "Restart within policy".into();
        self.state.restarts += 1;
        self.state.last_restart = Some(now_rfc3339());
        self.state.state = task_state::PENDING.into();
        self.emit(ev);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                _ = self.kill.cancelled() => {
                    self.mark_dead(false);
                    return false;
                }
                _ = self.shutdown.cancelled() => return false,
                Some(c) = self.control.recv() => {
                    let _ = c.reply.send(Err(ControlError::NotRunning));
                }
            }
        }
    }

    /// Waits for the running task to exit, carrying out the API's requests
    /// meanwhile, until a kill stops it or a shutdown detaches from it.
    async fn supervise(&mut self, handle: &TaskHandle) -> Supervised {
        let driver = self.driver.clone();
        let wait = driver.wait(handle);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                exit = &mut wait => return Supervised::Exited(exit),
                _ = self.kill.cancelled() => {
                    // The group's shutdown delay, then the task's (as
                    // Nomad's prekill hooks run them), before the signal.
                    let group = self.alloc.group().and_then(|tg| tg.shutdown_delay).unwrap_or(0);
                    self.delay_shutdown(group).await;
                    self.stop_task(handle).await;
                    self.emit(TaskEvent::new("Killed", "Task successfully killed"));
                    return Supervised::Killed;
                }
                _ = self.shutdown.cancelled() => return Supervised::Detached,
                Some(TaskControl { action, reply }) = self.control.recv() => match action {
                    TaskAction::Signal(signal) => {
                        self.emit(TaskEvent::new("Signaling", format!("Task being sent signal {signal}")));
                        let _ = reply.send(driver.signal(handle, &signal).await.map_err(ControlError::from));
                    }
                    TaskAction::Event(event) => {
                        self.emit(event);
                        let _ = reply.send(Ok(()));
                    }
                    TaskAction::Restart | TaskAction::RestartFor(_) => {
                        let why = match action {
                            TaskAction::RestartFor(why) => why,
                            _ => "User requested task to restart".to_string(),
                        };
                        let mut ev = TaskEvent::new("Restart Signaled", why.clone());
                        ev.restart_reason = why;
                        self.emit(ev);
                        self.stop_task(handle).await;
                        let _ = reply.send(Ok(()));
                        return Supervised::Restart;
                    }
                },
            }
        }
    }

    /// Waits `nanos` of shutdown delay, unless the agent shuts down (which
    /// leaves the task running anyway).
    async fn delay_shutdown(&self, nanos: i64) {
        if nanos > 0 {
            let wait = Duration::from_nanos(nanos as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Stops the task with its kill signal and timeout (after its shutdown
    /// delay) and releases it.
    async fn stop_task(&mut self, handle: &TaskHandle) {
        self.delay_shutdown(self.task.shutdown_delay).await;
        let why = self.kill_reason.get().map_or("Sent interrupt. Waiting before force killing", String::as_str);
        self.emit(TaskEvent::new("Killing", why.to_string()));
        let default_signal = if self.driver.fs_isolation() { "SIGTERM" } else { "SIGINT" };
        let signal = if self.task.kill_signal.is_empty() { default_signal } else { self.task.kill_signal.as_str() };
        self.driver.stop(handle, signal, self.kill_timeout()).await;
        self.driver.destroy(handle).await;
    }
}

/// How supervising a running task ended.
enum Supervised {
    /// The task exited on its own.
    Exited(ExitResult),
    /// The API asked for a restart in place; the task is stopped.
    Restart,
    /// The allocation is stopping; the task is stopped.
    Killed,
    /// The agent shuts down; the task keeps running.
    Detached,
}
