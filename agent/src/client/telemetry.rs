//! The client's gauges, derived from its persisted allocations when
//! metrics are read, with Nomad's names: `nomad.client.allocations.*` (by
//! client status) and `nomad.client.{allocated,unallocated}.{cpu,memory,disk}`
//! (what the node's live allocations hold, and what is left of it).

use std::collections::BTreeMap;

use super::allocrunner::client_status_of;
use super::state::PersistedAlloc;
use crate::structs::{client_status, Node};
use crate::telemetry::Point;

/// Every client gauge of `node` with `allocs`.
pub fn gauges(node: &Node, allocs: &[PersistedAlloc]) -> Vec<Point> {
    const RUNNING: &str = "nomad.client.allocations.running";
    const PENDING: &str = "nomad.client.allocations.pending";
    const TERMINAL: &str = "nomad.client.allocations.terminal";
    let mut counts: BTreeMap<&'static str, u64> = [RUNNING, PENDING, TERMINAL].map(|n| (n, 0)).into();
    let (mut cpu, mut memory, mut disk) = (0u64, 0u64, 0u64);
    for p in allocs {
        let status = client_status_of(&p.task_states, p.alloc.task_names().len()).0;
        let name = match status {
            client_status::RUNNING => RUNNING,
            client_status::PENDING => PENDING,
            _ => TERMINAL,
        };
        *counts.entry(name).or_default() += 1;
        if name != TERMINAL && !p.alloc.server_terminal() {
            let r = &p.alloc.allocated_resources;
            cpu += r.tasks.values().map(|t| t.cpu.cpu_shares).sum::<u64>();
            memory += r.tasks.values().map(|t| t.memory.memory_mb).sum::<u64>();
            disk += r.shared.disk_mb;
        }
    }
    let labels = [("node_id", node.id.as_str()), ("datacenter", node.datacenter.as_str())];
    let total = &node.node_resources;
    let mut out: Vec<Point> = counts.into_iter().map(|(name, n)| Point::new(name, &labels, n as f64)).collect();
    for (allocated, unallocated, used, of) in [
        ("nomad.client.allocated.cpu", "nomad.client.unallocated.cpu", cpu, total.cpu.cpu_shares),
        ("nomad.client.allocated.memory", "nomad.client.unallocated.memory", memory, total.memory.memory_mb),
        ("nomad.client.allocated.disk", "nomad.client.unallocated.disk", disk, total.disk.disk_mb),
    ] {
        out.push(Point::new(allocated, &labels, used as f64));
        out.push(Point::new(unallocated, &labels, of.saturating_sub(used) as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::client::taskrunner::task_state;
    use crate::structs::{AllocatedTaskResources, Allocation, Job, Task, TaskGroup, TaskState};

    fn alloc(state: &str, cpu: u64) -> PersistedAlloc {
        let job = Job {
            task_groups: vec![TaskGroup {
                name: "g".into(),
                tasks: vec![Task { name: "t".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut a = Allocation { task_group: "g".into(), job: Some(Arc::new(job)), ..Default::default() };
        let mut t = AllocatedTaskResources::default();
        t.cpu.cpu_shares = cpu;
        t.memory.memory_mb = cpu / 2;
        a.allocated_resources.tasks.insert("t".into(), t);
        a.allocated_resources.shared.disk_mb = 300;
        let states = [("t".to_string(), TaskState { state: state.into(), ..Default::default() })].into();
        PersistedAlloc { alloc: a, task_states: states, ..Default::default() }
    }

    #[test]
    fn allocations_by_status_and_what_the_live_ones_hold() {
        let mut node = Node { id: "n1".into(), datacenter: "dc1".into(), ..Default::default() };
        node.node_resources.cpu.cpu_shares = 2000;
        node.node_resources.memory.memory_mb = 4096;
        node.node_resources.disk.disk_mb = 10_000;
        let allocs = [alloc(task_state::RUNNING, 500), alloc(task_state::PENDING, 200), alloc(task_state::DEAD, 900)];
        let found: BTreeMap<&str, f64> = gauges(&node, &allocs).into_iter().map(|p| (p.name, p.value)).collect();
        let expected: BTreeMap<&str, f64> = [
            ("nomad.client.allocations.running", 1.0),
            ("nomad.client.allocations.pending", 1.0),
            ("nomad.client.allocations.terminal", 1.0),
            ("nomad.client.allocated.cpu", 700.0),
            ("nomad.client.unallocated.cpu", 1300.0),
            ("nomad.client.allocated.memory", 350.0),
            ("nomad.client.unallocated.memory", 3746.0),
            ("nomad.client.allocated.disk", 600.0),
            ("nomad.client.unallocated.disk", 9400.0),
        ]
        .into();
        assert_eq!(found, expected);
    }
}
