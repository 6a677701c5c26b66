//! Picks a node for one allocation: walks the nodes in a shuffled order,
//! filters with `feasible`, checks CPU, memory and ports against what is
//! already used (including this plan's own placements), and keeps the best
//! bin-packing score among a bounded number of candidates, as Nomad's
//! stack does (log2(N) candidates for service jobs, 2 for batch).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::RngExt;

use super::feasible::{self, Infeasible};
use crate::server::state::Tables;
use crate::structs::{
    AllocMetric, AllocatedCpu, AllocatedMemory, AllocatedPort, AllocatedResources, AllocatedSharedResources,
    AllocatedTaskResources, Job, Node, TaskGroup,
};

/// Default range for dynamic ports, as in Nomad.
pub const DEFAULT_MIN_DYNAMIC_PORT: u16 = 20000;
/// Upper end of the default dynamic port range.
pub const DEFAULT_MAX_DYNAMIC_PORT: u16 = 32000;

/// What is in use on a node.
#[derive(Debug, Default, Clone)]
struct NodeUsage {
    cpu: u64,
    memory_mb: u64,
    ports: HashSet<u16>,
    /// Allocations per (job, group) key, for anti-affinity and distinct_hosts.
    groups: HashMap<String, u32>,
}

/// A chosen node with the resources granted there.
pub struct Placement {
    /// The node.
    pub node: Arc<Node>,
    /// CPU, memory and ports granted.
    pub resources: AllocatedResources,
}

/// Per-evaluation placement state.
pub struct Placer<'a> {
    snap: &'a Tables,
    nodes: Vec<Arc<Node>>,
    usage: HashMap<String, NodeUsage>,
    freed: HashSet<String>,
    offset: usize,
    feasibility: HashMap<(String, usize), Result<(), Infeasible>>,
}

fn group_key(job: &Job, tg: &TaskGroup) -> String {
    format!("{}\u{0}{}\u{0}{}", job.namespace, job.id, tg.name)
}

impl<'a> Placer<'a> {
    /// A placer over the snapshot's nodes. `freed` are allocations this plan
    /// stops, whose resources count as available.
    pub fn new(snap: &'a Tables, freed: HashSet<String>) -> Self {
        let mut nodes: Vec<Arc<Node>> = snap.nodes().cloned().collect();
        nodes.shuffle(&mut rand::rng());
        Placer { snap, nodes, usage: HashMap::new(), freed, offset: 0, feasibility: HashMap::new() }
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn usage(&mut self, node_id: &str) -> &mut NodeUsage {
        if !self.usage.contains_key(node_id) {
            let mut u = NodeUsage::default();
            if let Some(ids) = self.snap.alloc_ids_by_node(node_id) {
                for id in ids {
                    let Some(a) = self.snap.alloc(id) else { continue };
                    if a.is_terminal() || self.freed.contains(id) {
                        continue;
                    }
                    for t in a.allocated_resources.tasks.values() {
                        u.cpu += t.cpu.cpu_shares;
                        u.memory_mb += t.memory.memory_mb;
                    }
                    u.ports.extend(a.allocated_resources.shared.ports.iter().map(|p| p.value));
                    let key = format!("{}\u{0}{}\u{0}{}", a.namespace, a.job_id, a.task_group);
                    *u.groups.entry(key).or_default() += 1;
                }
            }
            self.usage.insert(node_id.to_string(), u);
        }
        self.usage.get_mut(node_id).expect("inserted above")
    }

    /// Places one allocation of `tg` on any feasible node, updating `metric`.
    pub fn place_any(&mut self, job: &Job, tg: &TaskGroup, metric: &mut AllocMetric) -> Option<Placement> {
        let n = self.nodes.len();
        if n == 0 {
            return None;
        }
        let limit = if job.is_batch_like() { 2 } else { ((n as f64).log2().ceil() as usize).max(2) };
        let mut best: Option<(f64, usize)> = None;
        let mut candidates = 0;
        let start = self.offset;
        for step in 0..n {
            let i = (start + step) % n;
            match self.evaluate(job, tg, i, metric) {
                Some(score) => {
                    candidates += 1;
                    if best.map(|(s, _)| score > s).unwrap_or(true) {
                        best = Some((score, i));
                    }
                    if candidates >= limit {
                        self.offset = (i + 1) % n;
                        break;
                    }
                }
                None => continue,
            }
        }
        let (_, i) = best?;
        self.commit(job, tg, i)
    }

    /// Places one allocation of `tg` on a given node (system jobs).
    pub fn place_on(
        &mut self,
        job: &Job,
        tg: &TaskGroup,
        node_id: &str,
        metric: &mut AllocMetric,
    ) -> Option<Placement> {
        let i = self.nodes.iter().position(|n| n.id == node_id)?;
        self.evaluate(job, tg, i, metric)?;
        self.commit(job, tg, i)
    }

    /// Static feasibility of node `i` for `tg`, cached for the evaluation.
    pub fn feasible(&mut self, job: &Job, tg: &TaskGroup, i: usize) -> Result<(), Infeasible> {
        let key = (tg.name.clone(), i);
        if let Some(r) = self.feasibility.get(&key) {
            return r.clone();
        }
        let r = feasible::check_node(job, tg, &self.nodes[i]);
        self.feasibility.insert(key, r.clone());
        r
    }

    /// The IDs of the nodes where `tg` is statically feasible.
    pub fn feasible_nodes(&mut self, job: &Job, tg: &TaskGroup) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.feasible(job, tg, i).is_ok() {
                out.push(self.nodes[i].id.clone());
            }
        }
        out
    }

    /// Scores node `i` for `tg`, or records why it cannot take it.
    fn evaluate(&mut self, job: &Job, tg: &TaskGroup, i: usize, metric: &mut AllocMetric) -> Option<f64> {
        match self.feasible(job, tg, i) {
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
                *metric.constraint_filtered.entry(why).or_default() += 1;
                return None;
            }
        }
        metric.nodes_evaluated += 1;
        let node = self.nodes[i].clone();
        let (cpu_ask, mem_ask) = tg.resource_ask();
        let key = group_key(job, tg);
        let distinct = feasible::wants_distinct_hosts(job, tg);
        let static_ports: Vec<u16> =
            tg.effective_network().map(|n| n.reserved_ports.iter().map(|p| p.value).collect()).unwrap_or_default();
        let u = self.usage(&node.id);
        let exhausted = if distinct && u.groups.get(&key).copied().unwrap_or(0) > 0 {
            Some("distinct_hosts".to_string())
        } else if u.cpu + cpu_ask > node.node_resources.cpu.cpu_shares {
            Some("cpu".to_string())
        } else if u.memory_mb + mem_ask > node.node_resources.memory.memory_mb {
            Some("memory".to_string())
        } else {
            static_ports.iter().find(|p| u.ports.contains(p)).map(|p| format!("network: reserved port collision {p}"))
        };
        if let Some(dim) = exhausted {
            if dim == "distinct_hosts" {
                metric.nodes_filtered += 1;
                *metric.constraint_filtered.entry(dim).or_default() += 1;
            } else {
                metric.nodes_exhausted += 1;
                *metric.dimension_exhausted.entry(dim).or_default() += 1;
            }
            return None;
        }
        let total_cpu = node.node_resources.cpu.cpu_shares.max(1) as f64;
        let total_mem = node.node_resources.memory.memory_mb.max(1) as f64;
        let fit = ((u.cpu + cpu_ask) as f64 / total_cpu + (u.memory_mb + mem_ask) as f64 / total_mem) / 2.0;
        let collisions = u.groups.get(&key).copied().unwrap_or(0) as f64;
        let anti_affinity = if collisions > 0.0 { -(collisions + 1.0) / tg.count.max(1) as f64 } else { 0.0 };
        Some(fit + anti_affinity)
    }

    /// Grants resources on node `i` and records them as used.
    fn commit(&mut self, job: &Job, tg: &TaskGroup, i: usize) -> Option<Placement> {
        let node = self.nodes[i].clone();
        let network = tg.effective_network();
        let host_ip = node.attributes.get("unique.network.ip-address").cloned().unwrap_or_default();
        let (min_port, max_port) = match (node.node_resources.min_dynamic_port, node.node_resources.max_dynamic_port) {
            (0, _) | (_, 0) => (DEFAULT_MIN_DYNAMIC_PORT, DEFAULT_MAX_DYNAMIC_PORT),
            range => range,
        };
        let key = group_key(job, tg);
        let u = self.usage(&node.id);
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
            let r = t.resources.clone().unwrap_or_default();
            u.cpu += r.cpu;
            u.memory_mb += r.memory_mb;
            tasks.insert(
                t.name.clone(),
                AllocatedTaskResources {
                    cpu: AllocatedCpu { cpu_shares: r.cpu },
                    memory: AllocatedMemory { memory_mb: r.memory_mb, memory_max_mb: r.memory_max_mb },
                },
            );
        }
        *u.groups.entry(key).or_default() += 1;
        let mut networks: Vec<_> = network.into_iter().collect();
        for n in &mut networks {
            n.ip = host_ip.clone();
            for p in n.dynamic_ports.iter_mut() {
                if let Some(granted) = ports.iter().find(|g| g.label == p.label) {
                    p.value = granted.value;
                }
            }
        }
        let disk_mb = tg.ephemeral_disk.as_ref().map(|d| d.size_mb).unwrap_or(0);
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
