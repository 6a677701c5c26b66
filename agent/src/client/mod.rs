//! The client: fingerprints the node, registers and heartbeats with the
//! servers, watches its allocations (a blocking query) and runs an alloc
//! runner for each, and sends their status back in coalesced batches.
//! Allocations persisted in the client state are restored (re-attached)
//! before anything else, so an agent restart does not restart tasks.

pub mod allocrunner;
mod artifact;
pub mod control;
pub mod csi;
pub mod driver;
pub mod fingerprint;
pub mod hook;
mod identity;
pub mod logs;
pub mod network;
pub mod rpc;
pub mod services;
pub mod shim;
pub mod state;
mod stats;
pub mod taskenv;
pub mod taskrunner;
mod telemetry;
pub mod template;
mod updates;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::structs::{Allocation, ClientHostVolume, Node, NodeCpu, NodeDisk, NodeMemory, NodeResources};
use crate::wire::node::AllocClientUpdate;
use allocrunner::{AllocCommand, AllocRunnerCtl, RunnerDeps};
use driver::Driver;
use rpc::{RpcError, ServerRpc};
use state::ClientState;

/// Failures starting the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The data dir is unusable.
    #[error("client data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    State(#[from] state::ClientStateError),
    /// The bridge network configuration cannot work on this node.
    #[error("bridge network: {0}")]
    Network(#[from] cni::NetError),
    /// A built-in CSI plugin could not start.
    #[error("{0}")]
    BuiltinPlugin(String),
}

/// Client settings from the agent config.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Node name.
    pub node_name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node class.
    pub node_class: String,
    /// Client meta.
    pub meta: BTreeMap<String, String>,
    /// Declared host volumes.
    pub host_volumes: BTreeMap<String, ClientHostVolume>,
    /// Agent data dir.
    pub data_dir: PathBuf,
    /// IP address tasks' ports are published on.
    pub advertise_ip: String,
    /// `ip:port` of this agent's HTTP API (for log streaming).
    pub http_addr: String,
    /// `plugin "raw_exec" { config { enabled = true } }`.
    pub raw_exec_enabled: bool,
    /// `plugin "docker" { config { ... } }`.
    pub docker: driver::docker::DockerPluginConfig,
    /// `client { bridge_network_name }`.
    pub bridge_network_name: String,
    /// `client { bridge_network_subnet }`.
    pub bridge_network_subnet: ipnet::Ipv4Net,
    /// Where allocation network namespaces are mounted (`/run/netns`).
    pub netns_dir: PathBuf,
    /// `client { cni_path }`: where external CNI plugins are found.
    pub cni_path: Vec<PathBuf>,
    /// `client { cni_config_dir }`: where external CNI networks are defined.
    pub cni_config_dir: PathBuf,
    /// How often healthy CSI plugins are probed (Nomad: 30 s).
    pub csi_probe_interval: Duration,
    /// `plugin "synology" { config { ... } }`: the built-in Synology plugin.
    pub synology: Option<csi::builtin::SynologyPlugin>,
    /// `telemetry { publish_allocation_metrics }`: per-task usage gauges.
    pub publish_allocation_metrics: bool,
}

impl ClientConfig {
    /// The bridge network's settings; its IPAM store lives in the data dir.
    fn bridge(&self) -> cni::BridgeConfig {
        cni::BridgeConfig {
            name: self.bridge_network_name.clone(),
            subnet: self.bridge_network_subnet,
            ipam_dir: self.data_dir.join("client").join("networks"),
            netns_dir: self.netns_dir.clone(),
        }
    }
}

impl ClientConfig {
    /// Settings of `mode = "cni/<name>"` networks.
    fn external_cni(&self) -> network::ExternalCni {
        network::ExternalCni {
            config_dir: self.cni_config_dir.clone(),
            plugin_path: self.cni_path.clone(),
            netns_dir: self.netns_dir.clone(),
            cache_dir: self.data_dir.join("client").join("cni-results"),
        }
    }
}

/// Nomad's default bridge subnet.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.26.64.0/20";

/// The running client.
pub struct Client {
    /// Its node as last registered.
    pub node: parking_lot::RwLock<Arc<Node>>,
    config: ClientConfig,
    rpc: Arc<dyn ServerRpc>,
    drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    runners: parking_lot::Mutex<HashMap<String, AllocRunnerCtl>>,
    store: Arc<ClientState>,
    updates: mpsc::UnboundedSender<AllocClientUpdate>,
    shutdown: CancellationToken,
    network: Arc<cni::BridgeNetwork>,
    csi: Arc<csi::CsiManager>,
    /// Runs every allocation's service checks.
    checks: services::CheckScheduler,
    /// When the servers last answered a registration or heartbeat, and the
    /// TTL they gave.
    contact: parking_lot::Mutex<Option<(tokio::time::Instant, Duration)>>,
    /// Each task's previous usage reading.
    usage: stats::UsageTracker,
}

/// Whether the client is in touch with its servers.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerContact {
    /// The last heartbeat was answered this long ago, within its TTL.
    Current(Duration),
    /// Never answered, or not within the TTL.
    Lost(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Identity {
    id: String,
    secret: String,
}

/// The node's ID and secret, created once and kept in the data dir.
fn identity(dir: &Path) -> Result<Identity, ClientError> {
    let path = dir.join("client-id.json");
    if let Some(id) = std::fs::read(&path).ok().and_then(|d| serde_json::from_slice(&d).ok()) {
        return Ok(id);
    }
    let id = Identity { id: crate::util::new_id(), secret: crate::util::new_id() };
    let io = |source| ClientError::DataDir { path: path.display().to_string(), source };
    std::fs::write(&path, serde_json::to_vec(&id).unwrap_or_default()).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(id)
}

impl Client {
    /// Starts the client: restores persisted allocations, then registers
    /// and runs its loops until `shutdown`.
    pub async fn start(
        config: ClientConfig,
        rpc: Arc<dyn ServerRpc>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Client>, ClientError> {
        let client_dir = config.data_dir.join("client");
        std::fs::create_dir_all(&client_dir)
            .map_err(|source| ClientError::DataDir { path: client_dir.display().to_string(), source })?;
        let ident = identity(&client_dir)?;
        let store = Arc::new(ClientState::open(&client_dir)?);
        let mut drivers: BTreeMap<String, Arc<dyn Driver>> = BTreeMap::new();
        let bin = client_dir.join("bin");
        let task_shim =
            shim::install(&bin).map_err(|source| ClientError::DataDir { path: bin.display().to_string(), source })?;
        drivers.insert("raw_exec".into(), Arc::new(driver::raw_exec::RawExec::new(config.raw_exec_enabled, task_shim)));
        drivers.insert("docker".into(), Arc::new(driver::docker::DockerDriver::new(config.docker.clone(), &ident.id)));
        let drivers = Arc::new(drivers);
        let bridge = config.bridge();
        // A data dir that has used bridge networking may hold leftovers of
        // allocations that ended while the agent was away.
        let used_bridge = bridge.ipam_dir.join(&bridge.name).is_dir();
        let network = Arc::new(cni::BridgeNetwork::open(bridge).await?);
        if used_bridge {
            let live: HashSet<String> = store.load().into_iter().map(|p| p.alloc.id).collect();
            match network.gc(&live).await {
                Ok(r) if !r.removed.is_empty() => {
                    tracing::info!(allocs = ?r.removed, "removed stale allocation networks")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "collecting stale allocation networks"),
            }
        }
        let node = Self::build_node(&config, &ident, &drivers).await;
        let config_probe_interval =
            if config.csi_probe_interval.is_zero() { Duration::from_secs(30) } else { config.csi_probe_interval };
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Arc::new(Client {
            node: parking_lot::RwLock::new(Arc::new(node)),
            config,
            rpc,
            drivers,
            runners: Default::default(),
            store,
            updates: tx,
            shutdown,
            network,
            csi: Arc::new(csi::CsiManager::new(client_dir.join("csi"), config_probe_interval)),
            checks: services::CheckScheduler::start(),
            contact: parking_lot::Mutex::new(None),
            usage: Default::default(),
        });
        if let Some(synology) = &client.config.synology {
            synology.start(client.csi.clone(), &ident.id).map_err(ClientError::BuiltinPlugin)?;
        }
        client.restore();
        tokio::spawn(client.clone().collect_orphans());
        tokio::spawn(client.clone().sync_updates(rx));
        tokio::spawn(client.clone().membership());
        tokio::spawn(client.clone().watch_allocs());
        tokio::spawn(client.clone().stop_when_out_of_touch());
        Ok(client)
    }

    async fn build_node(config: &ClientConfig, ident: &Identity, drivers: &BTreeMap<String, Arc<dyn Driver>>) -> Node {
        let facts = fingerprint::fingerprint(&config.advertise_ip, &config.data_dir);
        let mut node = Node {
            id: ident.id.clone(),
            secret_id: ident.secret.clone(),
            datacenter: config.datacenter.clone(),
            name: config.node_name.clone(),
            http_addr: config.http_addr.clone(),
            attributes: facts.attributes,
            node_resources: NodeResources {
                cpu: NodeCpu { cpu_shares: facts.cpu_mhz, total_core_count: facts.cores },
                memory: NodeMemory { memory_mb: facts.memory_mb },
                disk: NodeDisk { disk_mb: facts.disk_free_mb },
                min_dynamic_port: 20000,
                max_dynamic_port: 32000,
            },
            meta: config.meta.clone(),
            node_class: config.node_class.clone(),
            node_pool: "default".into(),
            host_volumes: config.host_volumes.clone(),
            scheduling_eligibility: "eligible".into(),
            ..Default::default()
        };
        for (name, d) in drivers {
            let info = d.fingerprint().await;
            if info.detected {
                node.attributes.insert(format!("driver.{name}"), "1".into());
            }
            node.drivers.insert(name.clone(), info);
        }
        node
    }

    fn deps(&self) -> RunnerDeps {
        RunnerDeps {
            node: self.node.read().clone(),
            drivers: self.drivers.clone(),
            alloc_dir: self.config.data_dir.join("alloc"),
            updates: self.updates.clone(),
            store: self.store.clone(),
            shutdown: self.shutdown.clone(),
            network: self.network.clone(),
            external_cni: Arc::new(self.config.external_cni()),
            csi: self.csi.clone(),
            rpc: self.rpc.clone(),
            checks: self.checks.clone(),
        }
    }

    /// Re-creates runners for persisted allocations (re-attaching tasks).
    fn restore(&self) {
        let persisted = self.store.load();
        let mut runners = self.runners.lock();
        for p in persisted {
            tracing::info!(alloc_id = %p.alloc.id, tasks = p.handles.len(), "restoring allocation");
            let id = p.alloc.id.clone();
            let ctl = allocrunner::spawn(p.alloc.clone(), Some(p), self.deps());
            runners.insert(id, ctl);
        }
    }

    /// Removes what drivers left for allocations this client no longer
    /// has: at start (after restore), then every 15 s, which also collects
    /// what could not be removed while a runtime was away.
    async fn collect_orphans(self: Arc<Self>) {
        loop {
            let known: HashSet<String> = self.runners.lock().keys().cloned().collect();
            for d in self.drivers.values() {
                d.cleanup_orphans(&known).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// The node's CSI plugin registry.
    pub fn csi(&self) -> &csi::CsiManager {
        &self.csi
    }

    /// Whether the servers answer this client's heartbeats.
    pub fn server_contact(&self) -> ServerContact {
        match *self.contact.lock() {
            None => ServerContact::Lost("no known servers".into()),
            Some((at, ttl)) if at.elapsed() > ttl => ServerContact::Lost(format!(
                "no answer from the servers for {}s (heartbeat TTL {}s)",
                at.elapsed().as_secs(),
                ttl.as_secs()
            )),
            Some((at, _)) => ServerContact::Current(at.elapsed()),
        }
    }

    /// The client's gauges (see `telemetry`), from its state.
    pub fn gauges(&self) -> Vec<crate::telemetry::Point> {
        telemetry::gauges(&self.node.read(), &self.store.load())
    }

    /// Writes whatever client state is still in memory only to disk (the
    /// agent does this last when it exits).
    pub async fn flush_state(&self) {
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }

    /// True when the allocation has a runner on this client.
    pub fn runs(&self, alloc_id: &str) -> bool {
        self.runners.lock().contains_key(alloc_id)
    }

    /// Carries out an API request (signal, restart) on one task of an
    /// allocation running here, or on all of its tasks.
    pub async fn control(
        &self,
        alloc_id: &str,
        task: Option<String>,
        action: control::TaskAction,
    ) -> Result<(), control::ControlError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = AllocCommand::Control { task, action, reply };
        match self.runners.lock().get(alloc_id) {
            None => return Err(control::ControlError::UnknownAlloc(alloc_id.into())),
            Some(ctl) => {
                let _ = ctl.commands.send(command);
            }
        }
        answer.await.unwrap_or(Err(control::ControlError::NotRunning))
    }

    /// Whether a task of an allocation here runs with `logs { disabled }`.
    pub fn logs_disabled(&self, alloc_id: &str, task: &str) -> bool {
        let Some(persisted) = self.store.get(alloc_id) else { return false };
        let group = persisted.alloc.group();
        let task = group.and_then(|tg| tg.tasks.iter().find(|t| t.name == task));
        task.and_then(|t| t.log_config.as_ref()).is_some_and(|l| l.disabled)
    }

    /// The directory of an allocation on this client, if it runs here.
    pub fn alloc_root(&self, alloc_id: &str) -> Option<PathBuf> {
        let dir = self.config.data_dir.join("alloc").join(alloc_id);
        dir.is_dir().then_some(dir)
    }

    /// Stops and removes every allocation (a dev agent on a throw-away data
    /// dir does this on exit, since nothing could re-attach later).
    pub async fn stop_all(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        // CSI plugins go last: the allocations using their volumes need
        // them to unpublish (as Nomad drains plugins last).
        let plugins: HashSet<String> = self
            .store
            .load()
            .into_iter()
            .filter(|p| p.alloc.group().is_some_and(|tg| tg.tasks.iter().any(|t| t.csi_plugin_config.is_some())))
            .map(|p| p.alloc.id)
            .collect();
        for last in [false, true] {
            for (_, ctl) in self.runners.lock().extract_if(|id, _| plugins.contains(id) == last) {
                let _ = ctl.commands.send(AllocCommand::Destroy);
            }
            while tokio::time::Instant::now() < deadline {
                let left = self.store.load().iter().any(|p| last || !plugins.contains(&p.alloc.id));
                if !left {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Bridge teardown finishes in the background; let it.
        let _ = tokio::time::timeout_at(deadline, self.network.settled()).await;
    }

    /// Registers, then heartbeats (between a third and a half of the TTL,
    /// at random, so many clients do not beat in step); re-registers when
    /// the server forgot us and when driver health changes.
    async fn membership(self: Arc<Self>) {
        let mut ttl = Duration::from_secs(10);
        let mut registered = false;
        let mut backoff = Duration::from_millis(250);
        let mut last_fingerprint = tokio::time::Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            if last_fingerprint.elapsed() > Duration::from_secs(15) {
                last_fingerprint = tokio::time::Instant::now();
                if self.refresh_drivers().await {
                    registered = false;
                }
            }
            let node = self.node.read().clone();
            let result = if registered {
                self.rpc.heartbeat(&node.id, &node.secret_id).await
            } else {
                let mut node = (*node).clone();
                self.csi.fill_node(&mut node);
                self.rpc.register(node).await
            };
            let pause = match result {
                Ok(t) => {
                    if !registered {
                        tracing::info!(node_id = %node.id, "node registered");
                    }
                    *self.contact.lock() = Some((tokio::time::Instant::now(), t));
                    registered = true;
                    ttl = t;
                    backoff = Duration::from_millis(250);
                    heartbeat_pause(ttl)
                }
                Err(RpcError::NodeNotFound) => {
                    registered = false;
                    Duration::from_millis(10)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach servers");
                    backoff = (backoff * 2).min(ttl / 2);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.csi.changed() => registered = false,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Re-fingerprints drivers; true when anything changed.
    async fn refresh_drivers(&self) -> bool {
        let mut node = (**self.node.read()).clone();
        let mut changed = false;
        for (name, d) in self.drivers.iter() {
            let mut info = d.fingerprint().await;
            if let Some(old) = node.drivers.get(name) {
                if old.detected == info.detected && old.healthy == info.healthy {
                    continue;
                }
                info.update_time = crate::util::now_rfc3339();
            }
            node.drivers.insert(name.clone(), info);
            changed = true;
        }
        if changed {
            *self.node.write() = Arc::new(node);
        }
        changed
    }

    /// Follows the node's allocations: blocks until the servers change one
    /// of them, fetches only those that are new or whose `AllocModifyIndex`
    /// moved, and reconciles the runners (those whose allocation is gone
    /// are destroyed).
    async fn watch_allocs(self: Arc<Self>) {
        let mut index = 0;
        let (node_id, secret) = {
            let node = self.node.read();
            (node.id.clone(), node.secret_id.clone())
        };
        // The AllocModifyIndex of each allocation as last fetched.
        let mut known: HashMap<String, u64> =
            self.runners.lock().iter().map(|(id, ctl)| (id.clone(), ctl.modify_index)).collect();
        loop {
            let query = self.rpc.alloc_indexes(&node_id, index, Duration::from_secs(30));
            let result = tokio::select! {
                r = query => r,
                _ = self.shutdown.cancelled() => return,
            };
            let answer = match result {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "querying allocations");
                    self.pause(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let changed: Vec<String> = answer
                .allocs
                .iter()
                .filter(|(id, i)| known.get(*id).is_none_or(|k| *i > k))
                .map(|(id, _)| id.clone())
                .collect();
            let fetched = if changed.is_empty() {
                Vec::new()
            } else {
                match self.rpc.fetch_allocs(&node_id, &secret, changed).await {
                    Ok(allocs) => allocs,
                    Err(e) => {
                        tracing::warn!(error = %e, "fetching allocations");
                        self.pause(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            };
            // A wake-up: a change, neither the first answer nor a timeout.
            if index != 0 && answer.index != index {
                metrics::counter!("berth.client.allocations.wakeups").increment(1);
            }
            metrics::counter!("berth.client.allocations.fetched").increment(fetched.len() as u64);
            for a in &fetched {
                known.insert(a.id.clone(), a.alloc_modify_index);
            }
            known.retain(|id, _| answer.allocs.contains_key(id));
            self.reconcile(fetched, &answer.allocs);
            index = answer.index;
        }
    }

    /// Stops, on this client's own authority, each allocation whose group's
    /// `disconnect.stop_on_client_after` has passed since the servers last
    /// answered a heartbeat (once per allocation, checked every second).
    async fn stop_when_out_of_touch(self: Arc<Self>) {
        let mut stopped: HashSet<String> = HashSet::new();
        loop {
            self.pause(Duration::from_secs(1)).await;
            if self.shutdown.is_cancelled() {
                return;
            }
            let Some((last, _)) = *self.contact.lock() else { continue };
            let out_for = last.elapsed();
            let runners = self.runners.lock();
            stopped.retain(|id| runners.contains_key(id));
            for (id, ctl) in runners.iter() {
                let Some(after) = ctl.stop_after.filter(|after| out_for > *after) else { continue };
                if stopped.insert(id.clone()) {
                    let why = format!(
                        "alloc stopped by its client: no answer from the servers for {}s (stop_on_client_after {}s)",
                        out_for.as_secs(),
                        after.as_secs()
                    );
                    let _ = ctl.commands.send(AllocCommand::Stop(why));
                }
            }
        }
    }

    /// Sleeps, unless the agent shuts down first.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Hands the fetched allocations to their runners (starting one for a
    /// new allocation that is not terminal) and destroys the runners of
    /// allocations no longer in `present`.
    fn reconcile(&self, changed: Vec<Allocation>, present: &BTreeMap<String, u64>) {
        let mut runners = self.runners.lock();
        for a in changed {
            let index = a.alloc_modify_index;
            match runners.get_mut(&a.id) {
                Some(ctl) if index > ctl.modify_index => {
                    ctl.modify_index = index;
                    ctl.stop_after = allocrunner::stop_after(&a);
                    let _ = ctl.commands.send(AllocCommand::Update(Box::new(a)));
                }
                Some(_) => {}
                None if !a.is_terminal() => {
                    let id = a.id.clone();
                    runners.insert(id, allocrunner::spawn(a, None, self.deps()));
                }
                None => {}
            }
        }
        runners.retain(|id, ctl| {
            if present.contains_key(id) {
                return true;
            }
            let _ = ctl.commands.send(AllocCommand::Destroy);
            false
        });
    }

    /// Sends allocation updates, coalescing whatever queued up meanwhile.
    async fn sync_updates(self: Arc<Self>, rx: mpsc::UnboundedReceiver<AllocClientUpdate>) {
        let node = || self.node.read().clone();
        updates::run(self.rpc.clone(), node, rx, self.shutdown.clone()).await
    }
}

/// How long a client waits before its next heartbeat: a random point
/// between a third and a half of the TTL.
fn heartbeat_pause(ttl: Duration) -> Duration {
    use rand::RngExt;
    ttl / 3 + (ttl / 6).mul_f64(rand::rng().random_range(0.0..=1.0))
}
