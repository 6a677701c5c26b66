//! Native service discovery on the client: the alloc hook that registers
//! an allocation's services in the servers' registry while the tasks they
//! belong to run, runs their checks on the client's one
//! [`CheckScheduler`], keeps each check's status (with
//! `success_before_passing`, `failures_before_warning` and
//! `failures_before_critical`), reports the results with the
//! registrations, and restarts a task whose checks keep failing
//! (`check_restart`).

mod address;
mod probe;
mod scheduler;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::control::{TaskAction, TaskRequester};
use super::driver::{Driver, TaskHandle};
use super::hook::{AllocHook, ChecksHealth, HookResources, HookResult};
use super::rpc::ServerRpc;
use super::taskrunner::task_state;
use crate::structs::{Allocation, Node, ServiceRegistration, TaskState};

pub use probe::{HttpClients, Outcome, Probe};
pub use scheduler::{CheckScheduler, ScheduledCheck};

/// Registers the allocation's services and runs their checks.
pub struct ServiceHook {
    /// The servers.
    pub rpc: Arc<dyn ServerRpc>,
    /// This node (its address and secret).
    pub node: Arc<Node>,
    /// Drivers by name (is a task paused?).
    pub drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    /// The client's check scheduler.
    pub checks: CheckScheduler,
    /// Restarts tasks for `check_restart`.
    pub tasks: TaskRequester,
    /// The running watcher, between prerun and postrun.
    watcher: Mutex<Option<mpsc::UnboundedSender<Message>>>,
}

impl ServiceHook {
    /// A hook with no watcher yet.
    pub fn new(
        rpc: Arc<dyn ServerRpc>,
        node: Arc<Node>,
        drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
        checks: CheckScheduler,
        tasks: TaskRequester,
    ) -> Self {
        ServiceHook { rpc, node, drivers, checks, tasks, watcher: Mutex::new(None) }
    }
}

enum Message {
    Tasks(BTreeMap<String, TaskState>, BTreeMap<String, TaskHandle>),
    /// The allocation's services as its new job version has them; the
    /// reply comes once the checks' health reflects them.
    Update(state::Services, oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

impl AllocHook for ServiceHook {
    fn name(&self) -> &'static str {
        "services"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move {
            // A watcher even for no services: an in-place update may add some.
            let services = state::Services::of(alloc);
            let synced = services.is_empty().then(Vec::new);
            let alloc_ip = res.network.as_ref().filter(|n| n.is_addressed()).map(|n| n.alloc.ip.to_string());
            let places = address::Places::new(alloc, &self.node, alloc_ip);
            let (tx, rx) = mpsc::unbounded_channel();
            let state = state::ServicesState::new(alloc, services, places);
            let (health, checks) = watch::channel(state.health());
            res.checks = Some(checks);
            let watcher = Watcher {
                alloc_id: alloc.id.clone(),
                node: self.node.clone(),
                rpc: self.rpc.clone(),
                drivers: self.drivers.clone(),
                checks: self.checks.clone(),
                tasks: self.tasks.clone(),
                state,
                health,
                synced,
            };
            tokio::spawn(watcher.run(rx));
            *self.watcher.lock() = Some(tx);
            Ok(())
        }
        .boxed()
    }

    fn task_states(&self, states: &BTreeMap<String, TaskState>, handles: &BTreeMap<String, TaskHandle>) {
        if let Some(tx) = self.watcher.lock().as_ref() {
            let _ = tx.send(Message::Tasks(states.clone(), handles.clone()));
        }
    }

    fn update<'a>(&'a self, alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            let watcher = self.watcher.lock().clone();
            if let Some(tx) = watcher {
                let (done, wait) = oneshot::channel();
                if tx.send(Message::Update(state::Services::of(alloc), done)).is_ok() {
                    let _ = wait.await;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn postrun<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            let watcher = self.watcher.lock().take();
            if let Some(tx) = watcher {
                let (done, wait) = oneshot::channel();
                if tx.send(Message::Stop(done)).is_ok() {
                    let _ = wait.await;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// One allocation's services: follows its tasks, their checks' results,
/// and keeps the registry in step.
struct Watcher {
    alloc_id: String,
    node: Arc<Node>,
    rpc: Arc<dyn ServerRpc>,
    drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    checks: CheckScheduler,
    tasks: TaskRequester,
    state: state::ServicesState,
    /// How the checks stand, for the deployment health of the allocation.
    health: watch::Sender<ChecksHealth>,
    /// What the registry was last told (`None`: nothing yet, or it failed).
    synced: Option<Vec<ServiceRegistration>>,
}

/// How long a failed sync waits before it is tried again.
const SYNC_RETRY: Duration = Duration::from_secs(2);

impl Watcher {
    async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let (results_tx, mut results) = mpsc::unbounded_channel::<(String, Outcome)>();
        let mut handles = BTreeMap::new();
        let mut updated = None;
        let mut seen = None;
        loop {
            let retry = self.synced.is_none() && self.state.any_active();
            tokio::select! {
                message = messages.recv() => match message {
                    Some(Message::Tasks(states, now)) => {
                        handles = now;
                        let running = states
                            .iter()
                            .filter(|(_, s)| s.state == task_state::RUNNING)
                            .map(|(name, _)| name.clone())
                            .collect();
                        let change = self.state.set_running(running);
                        self.apply(change, &results_tx);
                    }
                    Some(Message::Update(services, done)) => {
                        let change = self.state.set_services(services);
                        self.apply(change, &results_tx);
                        updated = Some(done);
                    }
                    Some(Message::Stop(done)) => {
                        let change = self.state.set_running(Default::default());
                        self.apply(change, &results_tx);
                        self.sync(Vec::new()).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some((id, mut outcome)) = results.recv() => {
                    if let Some(handle) = self.state.task_of_check(&id).and_then(|t| handles.get(t)) {
                        let paused = match self.drivers.get(&handle.driver) {
                            Some(driver) => driver.paused(handle).await,
                            None => false,
                        };
                        if paused {
                            outcome = Outcome { status: crate::structs::check_status::FAILURE, status_code: 0,
                                output: format!("task is paused ({})", outcome.output) };
                        }
                    }
                    if let Some((task, why)) = self.state.record(&id, outcome) {
                        tracing::info!(alloc_id = %self.alloc_id, task = %task, "{why}: restarting the task");
                        let (reply, _) = oneshot::channel();
                        (self.tasks)(task, TaskAction::RestartFor(why), reply);
                    }
                }
                _ = tokio::time::sleep(SYNC_RETRY), if retry => {}
            }
            // A steady check's result changes nothing: skip the work.
            if seen != Some(self.state.revision()) || self.synced.is_none() {
                seen = Some(self.state.revision());
                let health = self.state.health();
                self.health.send_if_modified(|was| std::mem::replace(was, health.clone()) != health);
                let wanted = self.state.registrations(&self.alloc_id);
                if self.synced.as_ref() != Some(&wanted) {
                    self.sync(wanted).await;
                }
            }
            if let Some(done) = updated.take() {
                let _ = done.send(());
            }
        }
    }

    /// Stops and starts checks on the client's scheduler as `change` says.
    fn apply(&self, change: state::Change, results: &mpsc::UnboundedSender<(String, Outcome)>) {
        for id in change.stopped {
            self.checks.remove(&id);
        }
        for check in change.started {
            self.checks.add(check, results.clone());
        }
    }

    /// Tells the registry; on failure, `synced` stays unset and the next
    /// pass tries again.
    async fn sync(&mut self, wanted: Vec<ServiceRegistration>) {
        let answer = self.rpc.sync_services(&self.node.id, &self.node.secret_id, &self.alloc_id, wanted.clone()).await;
        match answer {
            Ok(()) => self.synced = Some(wanted),
            Err(e) => {
                tracing::warn!(alloc_id = %self.alloc_id, error = %e, "registering services");
                self.synced = None;
            }
        }
    }
}
