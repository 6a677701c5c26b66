//! Picks a node for one allocation: walks the nodes in a shuffled order,
//! filters with `feasible`, checks CPU, memory and ports against what is
//! already used (including this plan's own placements), and keeps the best
//! score among a bounded number of candidates, as Nomad's stack does
//! (log2(N) candidates for service jobs, 2 for batch; with affinities or
//! spreads, up to 100 so that the preferred nodes are among them). A node's score is the mean of
//! its bin-packing fit, the job anti-affinity penalty, and the group's
//! node-affinity and spread scores (`preference`), each counted only when
//! it applies, as Nomad normalizes them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::RngExt;

use super::feasible::{self, Infeasible};
use super::preference::Preferences;
use super::score::{Score, TopNodes};
use crate::server::csi::claims::{self, Holder};
use crate::server::state::{PlacementNode, Tables};
use crate::structs::{
    AllocMetric, AllocatedCpu, AllocatedMemory, AllocatedPort, AllocatedResources, AllocatedSharedResources,
    AllocatedTaskResources, Allocation, ClaimMode, Job, Node, TaskGroup, VolumeRequest,
};

/// Default range for dynamic ports, as in Nomad.
pub const DEFAULT_MIN_DYNAMIC_PORT: u16 = 20000;
/// Upper end of the default dynamic port range.
pub const DEFAULT_MAX_DYNAMIC_PORT: u16 = 32000;

/// How many nodes are scored for a group with affinities or spreads.
const MAX_PREFERENCE_CANDIDATES: usize = 100;

/// What is in use on a node.
#[derive(Debug, Default, Clone)]
struct NodeUsage {
    cpu: u64,
    memory_mb: u64,
    disk_mb: u64,
    ports: HashSet<u16>,
    /// The node's CPU, memory and disk, copied here so that scoring it
    /// reads one record.
    total_cpu: u64,
    total_memory_mb: u64,
    total_disk_mb: u64,
    /// Allocations of the job being placed, per group, for anti-affinity
    /// and distinct_hosts (a placer serves a single job).
    groups: GroupCounts,
}

/// Allocations per group of the job, by the group's position in it
/// (the first few inline: scoring a node reads them without following a
/// pointer).
#[derive(Debug, Default, Clone)]
struct GroupCounts {
    first: [u32; 4],
    rest: Vec<u32>,
}

impl GroupCounts {
    fn get(&self, group: usize) -> u32 {
        match group.checked_sub(self.first.len()) {
            None => self.first[group],
            Some(i) => self.rest.get(i).copied().unwrap_or(0),
        }
    }

    fn slot(&mut self, group: usize) -> &mut u32 {
        match group.checked_sub(self.first.len()) {
            None => &mut self.first[group],
            Some(i) => {
                if self.rest.len() <= i {
                    self.rest.resize(i + 1, 0);
                }
                &mut self.rest[i]
            }
        }
    }

    fn add(&mut self, group: usize) {
        *self.slot(group) += 1;
    }

    fn remove(&mut self, group: usize) {
        let n = self.slot(group);
        *n = n.saturating_sub(1);
    }
}

/// A chosen node with the resources granted there.
pub struct Placement {
    /// The node.
    pub node: Arc<Node>,
    /// CPU, memory and ports granted.
    pub resources: AllocatedResources,
}

/// Static feasibility of the nodes for one group, cached for the evaluation:
/// by computed class, or by node position when the group's constraints
/// refer to values unique to each node; and the group's preferences.
struct GroupFeasibility {
    group: String,
    by_class: bool,
    results: Vec<Option<Result<(), Infeasible>>>,
    preferences: Option<Preferences>,
}

/// Per-evaluation placement state, for the allocations of one job.
///
/// Everything per node is kept by the node's position in `nodes`: the
/// walk visits thousands of nodes per evaluation, so no lookup by ID (and
/// no string hashing) happens on that path.
pub struct Placer<'a> {
    snap: &'a Tables,
    namespace: String,
    job_id: String,
    /// The job's group names, in order (a group's position keys `NodeUsage::groups`).
    group_names: Vec<String>,
    nodes: Vec<PlacementNode<'a>>,
    /// Node ID to position, built on first use.
    positions: Option<HashMap<String, usize>>,
    /// The job's live allocations in the snapshot, by node ID.
    mine: HashMap<String, Vec<Arc<Allocation>>>,
    usage: Vec<Option<NodeUsage>>,
    freed: HashSet<String>,
    offset: usize,
    /// Per group (a job has few groups: a linear search is cheapest).
    feasibility: Vec<GroupFeasibility>,
    /// CSI claims of this plan's placements: (volume ID, node ID, mode, allocation name).
    planned_claims: Vec<(String, String, ClaimMode, String)>,
}

/// What one allocation of a group asks of a node, computed once per placement.
struct Ask<'t> {
    /// The group's position in the job.
    group: usize,
    /// The group's slot in `Placer::feasibility`.
    feasibility: usize,
    count: u32,
    cpu: u64,
    memory_mb: u64,
    /// The group's `ephemeral_disk` size.
    disk_mb: u64,
    distinct: bool,
    /// Static ports as (label, value).
    static_ports: Vec<(&'t str, u16)>,
    /// The allocation's index in its group.
    index: u32,
    /// CSI volumes: (volume ID with `per_alloc` applied, request).
    csi: Vec<(String, &'t VolumeRequest)>,
}

impl<'t> Ask<'t> {
    fn new(job: &Job, tg: &'t TaskGroup, index: u32, feasibility: usize) -> Self {
        let (cpu, memory_mb) = tg.resource_ask();
        // The ports of `tg.effective_network()`, without copying it.
        let static_ports = match tg.networks.first() {
            Some(n) => n.reserved_ports.iter().map(|p| (p.label.as_str(), p.value)).collect(),
            None => tg
                .tasks
                .iter()
                .flat_map(|t| t.resources.iter().flat_map(|r| r.networks.iter()))
                .flat_map(|n| n.reserved_ports.iter().map(|p| (p.label.as_str(), p.value)))
                .collect(),
        };
        Ask {
            group: job.task_groups.iter().position(|g| g.name == tg.name).unwrap_or(usize::MAX),
            feasibility,
            count: tg.count,
            cpu,
            memory_mb,
            disk_mb: tg.ephemeral_disk_mb(),
            distinct: feasible::wants_distinct_hosts(job, tg),
            static_ports,
            index,
            csi: tg.csi_requests(index),
        }
    }
}

/// Adds one to a metric counter without allocating when the key exists.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(v) => *v += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

impl<'a> Placer<'a> {
    /// A placer for `job`'s allocations over the snapshot's nodes. `freed`
    /// are allocations this plan stops, whose resources count as available.
    pub fn new(snap: &'a Tables, job: &Job, freed: HashSet<String>) -> Self {
        let mut nodes: Vec<PlacementNode<'a>> = snap.placement_nodes().collect();
        nodes.shuffle(&mut rand::rng());
        let usage = vec![None; nodes.len()];
        let mut mine: HashMap<String, Vec<Arc<Allocation>>> = HashMap::new();
        for a in snap.allocs_by_job(&job.namespace, &job.id) {
            if !a.is_terminal() {
                mine.entry(a.node_id.clone()).or_default().push(a);
            }
        }
        Placer {
            snap,
            namespace: job.namespace.clone(),
            job_id: job.id.clone(),
            group_names: job.task_groups.iter().map(|g| g.name.clone()).collect(),
            nodes,
            positions: None,
            mine,
            usage,
            freed,
            offset: 0,
            feasibility: Vec::new(),
            planned_claims: Vec::new(),
        }
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The position of a node in `nodes`.
    fn position(&mut self, node_id: &str) -> Option<usize> {
        let nodes = &self.nodes;
        let positions = self
            .positions
            .get_or_insert_with(|| nodes.iter().enumerate().map(|(i, n)| (n.node.id.clone(), i)).collect());
        positions.get(node_id).copied()
    }

    /// What is in use on node `i`: the snapshot's live allocations there
    /// (minus those this plan frees) plus this plan's placements.
    fn usage(&mut self, i: usize) -> &mut NodeUsage {
        if self.usage[i].is_none() {
            let node_id = self.nodes[i].node.id.as_str();
            let total = &self.nodes[i].node.node_resources;
            let mut u = NodeUsage {
                total_cpu: total.cpu.cpu_shares,
                total_memory_mb: total.memory.memory_mb,
                total_disk_mb: total.disk.disk_mb,
                ..NodeUsage::default()
            };
            let used = self.nodes[i].allocated;
            if let Some(used) = used {
                u.cpu = used.cpu;
                u.memory_mb = used.memory_mb;
                u.disk_mb = used.disk_mb;
                u.ports = used.ports.keys().copied().collect();
            }
            // Only this job's own allocations can be freed by this plan, and
            // only they count for distinct_hosts and anti-affinity.
            if let Some(mine) = self.mine.get(node_id) {
                let mut freed_ports: Vec<u16> = Vec::new();
                for a in mine {
                    if self.freed.contains(&a.id) {
                        for t in a.allocated_resources.tasks.values() {
                            u.cpu = u.cpu.saturating_sub(t.cpu.cpu_shares);
                            u.memory_mb = u.memory_mb.saturating_sub(t.memory.memory_mb);
                        }
                        u.disk_mb = u.disk_mb.saturating_sub(a.allocated_resources.shared.disk_mb);
                        freed_ports.extend(a.allocated_resources.shared.ports.iter().map(|p| p.value));
                    } else {
                        if let Some(g) = self.group_names.iter().position(|n| *n == a.task_group) {
                            u.groups.add(g);
                        }
                    }
                }
                for p in &freed_ports {
                    let holders = used.and_then(|used| used.ports.get(p)).copied().unwrap_or(0) as usize;
                    if freed_ports.iter().filter(|q| *q == p).count() >= holders {
                        u.ports.remove(p);
                    }
                }
            }
            self.usage[i] = Some(u);
        }
        self.usage[i].as_mut().expect("computed above")
    }

    /// Counts an allocation this plan stops as no longer using its node,
    /// even when that node's usage was already computed.
    pub fn free(&mut self, alloc: &Allocation) {
        if !self.freed.insert(alloc.id.clone()) || alloc.is_terminal() {
            return;
        }
        let Some(i) = self.position(&alloc.node_id) else { return };
        let mine = alloc.job_id == self.job_id && alloc.namespace == self.namespace;
        let node = self.nodes[i].node;
        let group = self.feasibility.iter_mut().find(|f| f.group == alloc.task_group).filter(|_| mine);
        if let Some(prefs) = group.and_then(|f| f.preferences.as_mut()) {
            prefs.count(node, false);
        }
        let Some(u) = self.usage[i].as_mut() else { return };
        for t in alloc.allocated_resources.tasks.values() {
            u.cpu = u.cpu.saturating_sub(t.cpu.cpu_shares);
            u.memory_mb = u.memory_mb.saturating_sub(t.memory.memory_mb);
        }
        u.disk_mb = u.disk_mb.saturating_sub(alloc.allocated_resources.shared.disk_mb);
        for p in &alloc.allocated_resources.shared.ports {
            u.ports.remove(&p.value);
        }
        if let Some(g) = self.group_names.iter().position(|n| *n == alloc.task_group).filter(|_| mine) {
            u.groups.remove(g);
        }
    }

    /// Places one allocation of `tg` on any feasible node, updating `metric`.
    pub fn place_any(&mut self, job: &Job, tg: &TaskGroup, index: u32, metric: &mut AllocMetric) -> Option<Placement> {
        let n = self.nodes.len();
        if n == 0 {
            return None;
        }
        let slot = self.feasibility_slot(job, tg);
        let mut limit = if job.is_batch_like() { 2 } else { ((n as f64).log2().ceil() as usize).max(2) };
        if self.feasibility[slot].preferences.is_some() {
            // Preferences only help when the preferred nodes are scored.
            limit = limit.max(n.min(MAX_PREFERENCE_CANDIDATES));
        }
        let ask = Ask::new(job, tg, index, slot);
        let mut top = TopNodes::default();
        let mut candidates = 0;
        let start = self.offset;
        for step in 0..n {
            let i = (start + step) % n;
            if let Some(score) = self.evaluate(job, tg, &ask, i, metric) {
                candidates += 1;
                top.offer(i, score);
                if candidates >= limit {
                    self.offset = (i + 1) % n;
                    break;
                }
            }
        }
        let i = top.best()?;
        metric.score_meta_data = top.into_meta(|i| &self.nodes[i].node.id);
        self.commit(tg, &ask, i)
    }

    /// Places one allocation of `tg` on a given node (system jobs).
    pub fn place_on(
        &mut self,
        job: &Job,
        tg: &TaskGroup,
        node_id: &str,
        metric: &mut AllocMetric,
    ) -> Option<Placement> {
        let i = self.position(node_id)?;
        let ask = Ask::new(job, tg, 0, self.feasibility_slot(job, tg));
        let score = self.evaluate(job, tg, &ask, i, metric)?;
        let mut top = TopNodes::default();
        top.offer(i, score);
        metric.score_meta_data = top.into_meta(|i| &self.nodes[i].node.id);
        self.commit(tg, &ask, i)
    }

    /// Why node `i` cannot mount the group's CSI volumes now (plugin
    /// missing or unhealthy there, topology, or a claim another allocation
    /// holds), as the message Nomad users know.
    fn csi_infeasible(&self, job: &Job, ask: &Ask, i: usize) -> Option<String> {
        let node = self.nodes[i].node;
        for (volume_id, req) in &ask.csi {
            let Some(v) = self.snap.volume(&job.namespace, volume_id) else {
                return Some(format!("missing CSI volume {volume_id}"));
            };
            let Some(info) = node.csi_node_plugins.get(&v.plugin_id) else {
                return Some(format!("CSI plugin {} is missing from client {}", v.plugin_id, node.name));
            };
            if !info.healthy {
                return Some(format!(
                    "CSI plugin {} is unhealthy on client {}: {}",
                    v.plugin_id, node.name, info.health_description
                ));
            }
            if !v.offers(&req.access_mode, &req.attachment_mode) {
                return Some(format!(
                    "CSI volume {volume_id} has no capability {}/{}",
                    req.access_mode, req.attachment_mode
                ));
            }
            if !v.topologies.is_empty() {
                let reachable = info
                    .node_info
                    .as_ref()
                    .and_then(|n| n.accessible_topology.as_ref())
                    .is_some_and(|t| v.topologies.iter().any(|want| want.admits(t)));
                if !reachable {
                    return Some(format!("CSI volume {volume_id} is not accessible from client {}", node.name));
                }
            }
            let claimers = self.snap.volume_claimers(&job.namespace, volume_id);
            let mut holders: Vec<Holder<'_>> = claimers
                .iter()
                .filter(|a| !a.server_terminal() && !self.freed.contains(&a.id))
                .filter_map(|a| {
                    Some(Holder {
                        alloc_id: &a.id,
                        job_id: &a.job_id,
                        node_id: &a.node_id,
                        mode: claims::mode_of(a, volume_id)?,
                        state: claims::state_word(a),
                    })
                })
                .collect();
            holders.extend(self.planned_claims.iter().filter(|(id, ..)| id == volume_id).map(
                |(_, node_id, mode, name)| Holder {
                    alloc_id: name,
                    job_id: &job.id,
                    node_id,
                    mode: *mode,
                    state: "placed by this plan",
                },
            ));
            let mode = if req.writes() { ClaimMode::Write } else { ClaimMode::Read };
            if let Some(why) = claims::conflict(&v, &req.access_mode, mode, &node.id, &holders) {
                return Some(why);
            }
        }
        None
    }

    /// The slot of `tg`'s feasibility cache in `feasibility`, made on first use.
    fn feasibility_slot(&mut self, job: &Job, tg: &TaskGroup) -> usize {
        if let Some(slot) = self.feasibility.iter().position(|f| f.group == tg.name) {
            return slot;
        }
        let by_class = !feasible::escapes_class(job, tg);
        let len = if by_class { self.snap.class_count() } else { self.nodes.len() };
        let mut preferences = Preferences::new(job, tg, self.snap.class_count(), self.nodes.len());
        if let Some(prefs) = &mut preferences {
            let live = self.mine.values().flatten().filter(|a| a.task_group == tg.name && !self.freed.contains(&a.id));
            let held: Vec<String> = live.map(|a| a.node_id.clone()).collect();
            for node_id in held {
                match self.position(&node_id) {
                    Some(i) => prefs.count(self.nodes[i].node, true),
                    None => {
                        if let Some(node) = self.snap.node(&node_id) {
                            prefs.count(&node, true);
                        }
                    }
                }
            }
        }
        self.feasibility.push(GroupFeasibility {
            group: tg.name.clone(),
            by_class,
            results: vec![None; len],
            preferences,
        });
        self.feasibility.len() - 1
    }

    /// Static feasibility of node `i` for `tg` (whose cache is `slot`): checked
    /// once per computed class, or per node when the group escapes classes.
    fn feasible(&mut self, job: &Job, tg: &TaskGroup, slot: usize, i: usize) -> &Result<(), Infeasible> {
        let cache = &mut self.feasibility[slot];
        let PlacementNode { node, class, .. } = self.nodes[i];
        let key = if cache.by_class { class } else { i };
        cache.results[key].get_or_insert_with(|| feasible::check_node(job, tg, node))
    }

    /// The IDs of the nodes where `tg` is statically feasible.
    pub fn feasible_nodes(&mut self, job: &Job, tg: &TaskGroup) -> Vec<String> {
        let slot = self.feasibility_slot(job, tg);
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.feasible(job, tg, slot, i).is_ok() {
                out.push(self.nodes[i].node.id.clone());
            }
        }
        out
    }

    /// Scores node `i` for `tg`, or records why it cannot take it.
    fn evaluate(&mut self, job: &Job, tg: &TaskGroup, ask: &Ask, i: usize, metric: &mut AllocMetric) -> Option<Score> {
        match self.feasible(job, tg, ask.feasibility, i) {
            Ok(()) => {}
            Err(Infeasible::Datacenter) => return None,
            Err(Infeasible::NotSchedulable) => {
                metric.nodes_evaluated += 1;
                metric.nodes_filtered += 1;
                return None;
            }
            Err(Infeasible::Constraint(why)) => {
                metric.nodes_evaluated += 1;
                metric.nodes_filtered += 1;
                bump(&mut metric.constraint_filtered, why);
                return None;
            }
        }
        metric.nodes_evaluated += 1;
        if !ask.csi.is_empty() {
            if let Some(why) = self.csi_infeasible(job, ask, i) {
                metric.nodes_filtered += 1;
                bump(&mut metric.constraint_filtered, &why);
                return None;
            }
        }
        let u = self.usage(i);
        let (total_cpu, total_mem, total_disk) = (u.total_cpu, u.total_memory_mb, u.total_disk_mb);
        let collisions = u.groups.get(ask.group);
        let exhausted: Option<Option<Cow<'static, str>>> = if ask.distinct && collisions > 0 {
            Some(None)
        } else if u.cpu + ask.cpu > total_cpu {
            Some(Some("cpu".into()))
        } else if u.memory_mb + ask.memory_mb > total_mem {
            Some(Some("memory".into()))
        } else if u.disk_mb + ask.disk_mb > total_disk {
            Some(Some("disk".into()))
        } else {
            ask.static_ports
                .iter()
                .find(|(_, value)| u.ports.contains(value))
                .map(|(label, value)| Some(format!("network: reserved port collision {label}={value}").into()))
        };
        if let Some(dim) = exhausted {
            match dim {
                None => {
                    metric.nodes_filtered += 1;
                    bump(&mut metric.constraint_filtered, "distinct_hosts");
                }
                Some(dim) => {
                    metric.nodes_exhausted += 1;
                    bump(&mut metric.dimension_exhausted, &dim);
                }
            }
            return None;
        }
        let binpack = ((u.cpu + ask.cpu) as f64 / total_cpu.max(1) as f64
            + (u.memory_mb + ask.memory_mb) as f64 / total_mem.max(1) as f64)
            / 2.0;
        let collisions = collisions as f64;
        let anti_affinity = if collisions > 0.0 { -(collisions + 1.0) / ask.count.max(1) as f64 } else { 0.0 };
        let PlacementNode { node, class, .. } = self.nodes[i];
        let (affinity, spread) = match self.feasibility[ask.feasibility].preferences.as_mut() {
            Some(prefs) => (prefs.affinity(node, class, i), prefs.spread(node, i)),
            None => (0.0, 0.0),
        };
        Some(Score::new(binpack, anti_affinity, affinity, spread))
    }

    /// Grants resources on node `i` and records them as used.
    fn commit(&mut self, tg: &TaskGroup, ask: &Ask, i: usize) -> Option<Placement> {
        let node = Arc::clone(self.nodes[i].node);
        for (volume_id, req) in &ask.csi {
            let mode = if req.writes() { ClaimMode::Write } else { ClaimMode::Read };
            let name = format!("{}[{}]", tg.name, ask.index);
            self.planned_claims.push((volume_id.clone(), node.id.clone(), mode, name));
        }
        let network = tg.effective_network();
        let host_ip = match &network {
            Some(_) => node.attributes.get("unique.network.ip-address").cloned().unwrap_or_default(),
            None => String::new(),
        };
        let (min_port, max_port) = match (node.node_resources.min_dynamic_port, node.node_resources.max_dynamic_port) {
            (0, _) | (_, 0) => (DEFAULT_MIN_DYNAMIC_PORT, DEFAULT_MAX_DYNAMIC_PORT),
            range => range,
        };
        let u = self.usage(i);
        let mut ports = Vec::new();
        if let Some(net) = &network {
            for p in &net.reserved_ports {
                u.ports.insert(p.value);
                ports.push(AllocatedPort {
                    label: p.label.clone(),
                    value: p.value,
                    to: p.to,
                    host_ip: host_ip.clone(),
                });
            }
            for p in &net.dynamic_ports {
                let value = pick_dynamic_port(&u.ports, min_port, max_port)?;
                u.ports.insert(value);
                let to = if p.to == -1 { value as i32 } else { p.to };
                ports.push(AllocatedPort { label: p.label.clone(), value, to, host_ip: host_ip.clone() });
            }
        }
        let mut tasks = BTreeMap::new();
        for t in &tg.tasks {
            let (cpu, memory_mb, memory_max_mb) =
                t.resources.as_ref().map(|r| (r.cpu, r.memory_mb, r.memory_max_mb)).unwrap_or_default();
            u.cpu += cpu;
            u.memory_mb += memory_mb;
            tasks.insert(
                t.name.clone(),
                AllocatedTaskResources {
                    cpu: AllocatedCpu { cpu_shares: cpu },
                    memory: AllocatedMemory { memory_mb, memory_max_mb },
                },
            );
        }
        u.groups.add(ask.group);

        let mut networks: Vec<_> = network.into_iter().collect();
        for n in &mut networks {
            n.ip = host_ip.clone();
            for p in n.dynamic_ports.iter_mut() {
                if let Some(granted) = ports.iter().find(|g| g.label == p.label) {
                    p.value = granted.value;
                }
            }
        }
        let disk_mb = tg.ephemeral_disk_mb();
        u.disk_mb += disk_mb;
        if let Some(prefs) = self.feasibility[ask.feasibility].preferences.as_mut() {
            prefs.count(&node, true);
        }
        Some(Placement {
            node,
            resources: AllocatedResources { tasks, shared: AllocatedSharedResources { disk_mb, networks, ports } },
        })
    }
}

fn pick_dynamic_port(used: &HashSet<u16>, min: u16, max: u16) -> Option<u16> {
    let mut rng = rand::rng();
    for _ in 0..64 {
        let p = rng.random_range(min..=max);
        if !used.contains(&p) {
            return Some(p);
        }
    }
    (min..=max).find(|p| !used.contains(p))
}
