//! Scheduler tests: a small harness over an in-memory state store that
//! registers nodes and jobs, runs evaluations through `process` and applies
//! each plan the way `Server::process_eval` does, so that consecutive
//! evaluations see what the previous ones decided.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::{process, Plan};
use crate::server::state::{StateStore, WriteBatch};
use crate::structs::{
    client_status, deployment_status, desired, eval_status, node_status, AllocDeploymentStatus, Allocation, Constraint,
    Deployment, DriverInfo, Evaluation, Job, NetworkResource, Node, Port, ReschedulePolicy, RescheduleTracker,
    Resources, Task, TaskGroup, UpdateStrategy, JOB_TYPE_BATCH, JOB_TYPE_SYSTEM,
};
use crate::util::{new_id, now_nanos};

const SECOND: i64 = 1_000_000_000;

// === harness ===

/// An in-memory store plus the few server steps the scheduler depends on.
struct Harness {
    store: StateStore,
}

/// A ready node in `dc1` with a healthy `raw_exec` driver and Linux attributes.
fn node(name: &str, cpu: u64, memory_mb: u64) -> Node {
    let mut n = Node {
        id: new_id(),
        name: name.into(),
        datacenter: "dc1".into(),
        status: node_status::READY.into(),
        scheduling_eligibility: "eligible".into(),
        ..Default::default()
    };
    n.node_resources.cpu.cpu_shares = cpu;
    n.node_resources.memory.memory_mb = memory_mb;
    n.node_resources.disk.disk_mb = 100 * 1024;
    n.attributes.insert("kernel.name".into(), "linux".into());
    n.attributes.insert("unique.network.ip-address".into(), "10.0.0.1".into());
    n.drivers.insert(
        "raw_exec".into(),
        DriverInfo { detected: true, healthy: true, health_description: "Healthy".into(), ..Default::default() },
    );
    n
}

/// A service job with one group `web` of `count` allocations, one
/// `raw_exec` task asking 500 MHz and 256 MB, in `dc1` (not canonicalized:
/// `Harness::register` does that).
fn job(id: &str, count: u32) -> Job {
    let mut config = BTreeMap::new();
    config.insert("command".to_string(), serde_json::json!("/bin/sleep"));
    config.insert("args".to_string(), serde_json::json!(["3600"]));
    Job {
        id: id.into(),
        datacenters: vec!["dc1".into()],
        task_groups: vec![TaskGroup {
            name: "web".into(),
            count,
            tasks: vec![Task {
                name: "server".into(),
                driver: "raw_exec".into(),
                config,
                resources: Some(Resources { cpu: 500, memory_mb: 256, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn constraint(l: &str, op: &str, r: &str) -> Constraint {
    Constraint { l_target: l.into(), operand: op.into(), r_target: r.into() }
}

fn static_port(label: &str, value: u16) -> NetworkResource {
    NetworkResource {
        reserved_ports: vec![Port { label: label.into(), value, to: 0, host_network: String::new() }],
        ..Default::default()
    }
}

fn group(job: &mut Job) -> &mut TaskGroup {
    &mut job.task_groups[0]
}

impl Harness {
    fn new() -> Self {
        Harness { store: StateStore::in_memory() }
    }

    fn apply(&self, batch: WriteBatch) {
        self.store.apply(batch).expect("in-memory apply");
    }

    fn add_node(&self, n: Node) -> String {
        let id = n.id.clone();
        self.apply(WriteBatch { nodes: vec![n], ..Default::default() });
        id
    }

    /// Adds `n` nodes named `node-<i>` with the given resources.
    fn add_nodes(&self, n: usize, cpu: u64, memory_mb: u64) -> Vec<String> {
        (0..n).map(|i| self.add_node(node(&format!("node-{i}"), cpu, memory_mb))).collect()
    }

    fn update_node(&self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut n = (*self.store.snapshot().node(id).expect("node exists")).clone();
        f(&mut n);
        self.apply(WriteBatch { nodes: vec![n], ..Default::default() });
    }

    /// Canonicalizes and registers a job; a job already registered gets the
    /// next version, as `Server::register_job` does for a changed spec.
    fn register(&self, mut job: Job) -> Job {
        job.canonicalize();
        assert_eq!(job.validate(), Ok(()), "test job must be valid");
        let existing = self.store.snapshot().job(&job.namespace, &job.id);
        job.version = existing.as_ref().map(|e| e.version + 1).unwrap_or(0);
        job.status = existing.map(|e| e.status.clone()).unwrap_or_else(|| "pending".into());
        self.apply(WriteBatch { jobs: vec![job.clone()], ..Default::default() });
        job
    }

    fn job(&self, id: &str) -> Arc<Job> {
        self.store.snapshot().job("default", id).expect("job registered")
    }

    /// Changes the registered job and registers the result as a new version.
    fn update_job(&self, id: &str, f: impl FnOnce(&mut Job)) -> Job {
        let mut j = (*self.job(id)).clone();
        f(&mut j);
        self.register(j)
    }

    /// `job stop`: the job stays, marked stopped, as a new version.
    fn stop_job(&self, id: &str) {
        let mut j = (*self.job(id)).clone();
        j.stop = true;
        j.version += 1;
        self.apply(WriteBatch { jobs: vec![j], ..Default::default() });
    }

    /// `job stop -purge`.
    fn purge_job(&self, id: &str) {
        self.apply(WriteBatch { delete_jobs: vec![("default".into(), id.into())], ..Default::default() });
    }

    /// Creates a pending evaluation for the job (registered or not) and
    /// returns its ID.
    fn create_eval(&self, job_id: &str) -> String {
        let job = self.store.snapshot().job("default", job_id).map(|j| (*j).clone()).unwrap_or_else(|| {
            let mut j = job(job_id, 0);
            j.canonicalize();
            j
        });
        let eval = Evaluation::pending(&job, "job-register");
        let id = eval.id.clone();
        self.apply(WriteBatch { evals: vec![eval], ..Default::default() });
        id
    }

    /// Runs a pending evaluation through the scheduler and applies the
    /// plan as `Server::process_eval` does; returns the plan.
    fn process(&self, eval_id: &str) -> Plan {
        let snap = self.store.snapshot();
        let eval = snap.eval(eval_id).expect("eval exists");
        assert_eq!(eval.status, eval_status::PENDING, "only pending evals are processed");
        let plan = process(&snap, &eval);
        check_plan_invariants(&plan);
        let write = crate::server::plan_apply::plan_write(&snap, &eval, plan.clone());
        drop(snap);
        self.apply(write.batch);
        plan
    }

    /// Creates an evaluation for the job and processes it.
    fn eval(&self, job_id: &str) -> Plan {
        let id = self.create_eval(job_id);
        self.process(&id)
    }

    fn allocs(&self, job_id: &str) -> Vec<Arc<Allocation>> {
        self.store.snapshot().allocs_by_job("default", job_id)
    }

    /// Allocations the server still wants running.
    fn live(&self, job_id: &str) -> Vec<Arc<Allocation>> {
        let mut v: Vec<_> = self.allocs(job_id).into_iter().filter(|a| !a.server_terminal()).collect();
        v.sort_by_key(|a| a.index());
        v
    }

    fn live_by_index(&self, job_id: &str, index: u32) -> Arc<Allocation> {
        let mut found = self.live(job_id).into_iter().filter(|a| a.index() == index);
        let a = found.next().unwrap_or_else(|| panic!("no live alloc with index {index}"));
        assert!(found.next().is_none(), "two live allocs with index {index}");
        a
    }

    /// Changes an allocation as a client update would.
    fn update_alloc(&self, id: &str, f: impl FnOnce(&mut Allocation)) {
        let mut a = (*self.store.snapshot().alloc(id).expect("alloc exists")).clone();
        f(&mut a);
        self.apply(WriteBatch { allocs: vec![a], ..Default::default() });
    }

    fn set_client_status(&self, id: &str, status: &str) {
        self.update_alloc(id, |a| a.client_status = status.into());
    }

    /// Sets every live allocation of the job to `status` on the client.
    fn set_all_client_status(&self, job_id: &str, status: &str) {
        for a in self.live(job_id) {
            self.set_client_status(&a.id, status);
        }
    }

    /// Every live allocation of the job runs, and is healthy in its
    /// deployment (as its client reports once it has been).
    fn set_all_healthy(&self, job_id: &str) {
        for a in self.live(job_id) {
            self.update_alloc(&a.id, |a| {
                a.client_status = client_status::RUNNING.into();
                let canary = a.is_canary();
                a.deployment_status = Some(AllocDeploymentStatus { healthy: Some(true), canary, ..Default::default() });
            });
        }
    }

    /// The job's latest deployment.
    fn deployment(&self, job_id: &str) -> Deployment {
        (*self.store.snapshot().latest_deployment("default", job_id).expect("a deployment")).clone()
    }

    /// Checks that no ready node holds more than it offers, and that no two
    /// live allocations on a node share a host port.
    fn assert_capacity_respected(&self) {
        let snap = self.store.snapshot();
        for n in snap.nodes() {
            let live: Vec<_> = snap.allocs_by_node(&n.id).into_iter().filter(|a| !a.is_terminal()).collect();
            let cpu: u64 =
                live.iter().flat_map(|a| a.allocated_resources.tasks.values()).map(|t| t.cpu.cpu_shares).sum();
            let mem: u64 =
                live.iter().flat_map(|a| a.allocated_resources.tasks.values()).map(|t| t.memory.memory_mb).sum();
            assert!(cpu <= n.node_resources.cpu.cpu_shares, "node {} cpu over-committed: {cpu}", n.name);
            assert!(mem <= n.node_resources.memory.memory_mb, "node {} memory over-committed: {mem}", n.name);
            let mut ports = HashSet::new();
            for p in live.iter().flat_map(|a| a.allocated_resources.shared.ports.iter()) {
                assert!(ports.insert(p.value), "port {} used twice on node {}", p.value, n.name);
            }
        }
    }
}

/// Properties every plan must have, whatever the scenario.
fn check_plan_invariants(plan: &Plan) {
    let mut ids = HashSet::new();
    for a in plan.place.iter().chain(&plan.update) {
        assert!(ids.insert(a.id.clone()), "alloc {} appears twice in one plan", a.id);
    }
    for a in &plan.place {
        assert_eq!(a.desired_status, desired::RUN);
        assert_eq!(a.client_status, client_status::PENDING);
        assert!(!a.node_id.is_empty(), "placed without a node");
    }
    for (tg, m) in &plan.failed_tg_allocs {
        let queued = plan.queued.get(tg).copied().unwrap_or(0);
        assert_eq!(m.coalesced_failures + 1, queued, "group {tg}: CoalescedFailures must be queued - 1");
    }
}

fn names(allocs: &[Allocation]) -> BTreeSet<String> {
    allocs.iter().map(|a| a.name.clone()).collect()
}

fn indexes(allocs: &[Arc<Allocation>]) -> Vec<u32> {
    let mut v: Vec<u32> = allocs.iter().map(|a| a.index()).collect();
    v.sort_unstable();
    v
}

fn per_node(allocs: &[Arc<Allocation>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in allocs {
        *m.entry(a.node_id.clone()).or_default() += 1;
    }
    m
}

// === service jobs: placement and counts ===

#[test]
fn service_job_places_count_with_distinct_indexes() {
    let h = Harness::new();
    let nodes: HashSet<String> = h.add_nodes(3, 4000, 8192).into_iter().collect();
    h.register(job("web", 5));
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 5);
    let expected: BTreeSet<String> = (0..5).map(|i| format!("web.web[{i}]")).collect();
    assert_eq!(names(&plan.place), expected);
    for a in &plan.place {
        assert!(nodes.contains(&a.node_id), "placed on unknown node {}", a.node_id);
        assert_eq!(a.task_group, "web");
        assert_eq!(a.job_version(), 0);
        let t = &a.allocated_resources.tasks["server"];
        assert_eq!(t.cpu.cpu_shares, 500);
        assert_eq!(t.memory.memory_mb, 256);
        assert_eq!(a.allocated_resources.shared.disk_mb, 300, "canonical ephemeral disk");
        assert!(a.metrics.as_ref().is_some_and(|m| m.nodes_evaluated > 0));
        assert!(!a.deployment_id.is_empty(), "service placements belong to a deployment");
    }
    let u = &plan.desired_updates["web"];
    assert_eq!((u.place, u.ignore, u.stop), (5, 0, 0));
    assert!(plan.failed_tg_allocs.is_empty() && plan.queued.is_empty());
    let dep = plan.deployment.as_ref().expect("deployment");
    assert_eq!(dep.task_groups["web"].desired_total, 5);
    assert_eq!(dep.task_groups["web"].placed_allocs, 5);
    assert_eq!(indexes(&h.live("web")), vec![0, 1, 2, 3, 4]);
    assert_eq!(h.job("web").status, "running");
    h.assert_capacity_respected();
}

#[test]
fn unchanged_job_second_eval_ignores_everything() {
    let h = Harness::new();
    h.add_nodes(3, 4000, 8192);
    h.register(job("web", 5));
    h.eval("web");
    let before: BTreeSet<String> = h.live("web").iter().map(|a| a.id.clone()).collect();
    let plan = h.eval("web");
    assert!(plan.place.is_empty(), "nothing to place: {:?}", names(&plan.place));
    assert!(plan.update.is_empty());
    assert!(plan.followups.is_empty());
    assert_eq!(plan.desired_updates["web"], super::DesiredUpdates { ignore: 5, ..Default::default() });
    assert!(!plan.changes_allocations());
    let after: BTreeSet<String> = h.live("web").iter().map(|a| a.id.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn scale_down_stops_highest_indexes() {
    let h = Harness::new();
    h.add_nodes(3, 4000, 8192);
    h.register(job("web", 5));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    h.update_job("web", |j| group(j).count = 3);
    let plan = h.eval("web");
    assert!(plan.place.is_empty());
    let stops: Vec<Allocation> = plan.update.iter().filter(|a| a.desired_status == desired::STOP).cloned().collect();
    assert_eq!(names(&stops), ["web.web[3]".to_string(), "web.web[4]".to_string()].into_iter().collect());
    // The count is part of the job: the kept allocations move to the new
    // version in place, as in Nomad.
    let u = &plan.desired_updates["web"];
    assert_eq!((u.stop, u.place, u.destructive_update, u.in_place_update), (2, 0, 0, 3));
    assert_eq!(indexes(&h.live("web")), vec![0, 1, 2]);
}

#[test]
fn scale_up_fills_lowest_free_indexes() {
    let h = Harness::new();
    h.add_nodes(3, 4000, 8192);
    h.register(job("web", 3));
    h.eval("web");
    // An operator stops alloc [1]; scaling to 4 must reuse index 1, then 3.
    let one = h.live_by_index("web", 1);
    h.update_alloc(&one.id, |a| a.desired_status = desired::STOP.into());
    h.update_job("web", |j| group(j).count = 4);
    let plan = h.eval("web");
    assert_eq!(names(&plan.place), ["web.web[1]".to_string(), "web.web[3]".to_string()].into_iter().collect());
    assert_eq!(plan.desired_updates["web"].place, 2);
    assert_eq!(indexes(&h.live("web")), vec![0, 1, 2, 3]);
    h.update_job("web", |j| group(j).count = 6);
    let plan = h.eval("web");
    assert_eq!(names(&plan.place), ["web.web[4]".to_string(), "web.web[5]".to_string()].into_iter().collect());
    assert_eq!(indexes(&h.live("web")), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn scale_down_while_a_node_is_down_does_not_exceed_count() {
    let h = Harness::new();
    let nodes = h.add_nodes(2, 8000, 16384);
    h.register(job("web", 5));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    // Take down the node holding alloc [4] while scaling down to 3: the lost
    // alloc must not be replaced above the new count.
    let lost = h.live_by_index("web", 4);
    h.update_node(&lost.node_id, |n| n.status = node_status::DOWN.into());
    assert!(nodes.contains(&lost.node_id));
    h.update_job("web", |j| group(j).count = 3);
    let plan = h.eval("web");
    for a in &plan.place {
        assert!(a.index() < 3, "placed {} above the count", a.name);
    }
    let live = h.live("web");
    assert_eq!(live.len(), 3, "live: {:?}", live.iter().map(|a| &a.name).collect::<Vec<_>>());
    assert_eq!(indexes(&live), vec![0, 1, 2]);
    assert!(live.iter().all(|a| a.node_id != lost.node_id));
    // And the next eval is stable.
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty());
}

// === feasibility ===

#[test]
fn constraints_filter_nodes() {
    let h = Harness::new();
    let linux = h.add_nodes(2, 4000, 8192);
    let mut mac = node("mac", 4000, 8192);
    mac.attributes.insert("kernel.name".into(), "darwin".into());
    h.add_node(mac);
    let mut j = job("web", 4);
    j.constraints.push(constraint("${attr.kernel.name}", "=", "linux"));
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    assert!(plan.place.iter().all(|a| linux.contains(&a.node_id)), "placed on the darwin node");
    assert!(plan.failed_tg_allocs.is_empty());
}

#[test]
fn constraints_on_unique_values_are_checked_per_node() {
    // Nodes that differ only in their names share one computed class.
    let h = Harness::new();
    let ids = h.add_nodes(6, 4000, 8192);
    let mut j = job("web", 4);
    group(&mut j).constraints.push(constraint("${node.unique.name}", "regexp", "^node-[24]$"));
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    assert!(plan.place.iter().all(|a| a.node_id == ids[2] || a.node_id == ids[4]), "placed outside node-2 and node-4");
    assert!(plan.failed_tg_allocs.is_empty());
}

#[test]
fn task_and_group_constraints_filter_nodes() {
    let h = Harness::new();
    let mut big = node("big", 8000, 16384);
    big.meta.insert("rack".into(), "r2".into());
    let big = h.add_node(big);
    let mut small = node("small", 8000, 16384);
    small.meta.insert("rack".into(), "r1".into());
    h.add_node(small);
    let mut j = job("web", 3);
    group(&mut j).constraints.push(constraint("${meta.rack}", "regexp", "^r[2-9]$"));
    group(&mut j).tasks[0].constraints.push(constraint("${attr.kernel.name}", "!=", "windows"));
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 3);
    assert!(plan.place.iter().all(|a| a.node_id == big));
}

#[test]
fn groups_of_one_job_are_filtered_by_their_own_constraints() {
    let h = Harness::new();
    let linux = h.add_node(node("linux", 8000, 16384));
    let mut mac = node("mac", 8000, 16384);
    mac.attributes.insert("kernel.name".into(), "darwin".into());
    let mac = h.add_node(mac);
    let mut j = job("web", 2);
    let mut other = j.task_groups[0].clone();
    other.name = "mac".into();
    other.constraints.push(constraint("${attr.kernel.name}", "=", "darwin"));
    group(&mut j).constraints.push(constraint("${attr.kernel.name}", "=", "linux"));
    j.task_groups.push(other);
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    for a in &plan.place {
        let want = if a.task_group == "web" { &linux } else { &mac };
        assert_eq!(&a.node_id, want, "{} on the wrong node", a.name);
    }
}

#[test]
fn unsatisfiable_constraint_reports_metrics() {
    let h = Harness::new();
    h.add_nodes(3, 4000, 8192);
    let mut j = job("web", 4);
    j.constraints.push(constraint("${attr.kernel.name}", "=", "windows"));
    h.register(j);
    let plan = h.eval("web");
    assert!(plan.place.is_empty());
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.nodes_evaluated, 3);
    assert_eq!(m.nodes_filtered, 3);
    assert_eq!(m.nodes_exhausted, 0);
    assert_eq!(m.constraint_filtered.get("${attr.kernel.name} = windows"), Some(&3), "{:?}", m.constraint_filtered);
    assert_eq!(m.nodes_in_pool, 3);
    assert_eq!(m.coalesced_failures, 3);
    assert_eq!(plan.queued["web"], 4);
    assert_eq!(plan.desired_updates["web"].place, 4, "the plan still wants 4 placements");
    // The server records a blocked eval for the queued allocations.
    let snap = h.store.snapshot();
    let blocked: Vec<_> = snap.evals().filter(|e| e.status == eval_status::BLOCKED).collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].job_id, "web");
}

#[test]
fn missing_driver_is_filtered() {
    let h = Harness::new();
    let mut n = node("nodriver", 4000, 8192);
    n.drivers.clear();
    h.add_node(n);
    h.register(job("web", 1));
    let plan = h.eval("web");
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.constraint_filtered.get("missing drivers"), Some(&1));
    assert_eq!((m.nodes_evaluated, m.nodes_filtered), (1, 1));
}

#[test]
fn a_device_request_is_filtered_on_every_node() {
    let h = Harness::new();
    h.add_nodes(2, 4000, 8192);
    let mut j = job("gpu", 1);
    let resources = group(&mut j).tasks[0].resources.get_or_insert_with(Default::default);
    resources.devices.push(crate::structs::RequestedDevice { name: "nvidia/gpu".into(), ..Default::default() });
    h.register(j);
    let plan = h.eval("gpu");
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.constraint_filtered.get("missing devices"), Some(&2), "{:?}", m.constraint_filtered);
    assert!(plan.place.is_empty());
}

#[test]
fn datacenters_filter_nodes() {
    let h = Harness::new();
    h.add_nodes(2, 4000, 8192);
    let mut other = node("other", 4000, 8192);
    other.datacenter = "dc2".into();
    let other = h.add_node(other);
    let mut j = job("web", 3);
    j.datacenters = vec!["dc2".into()];
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 3);
    assert!(plan.place.iter().all(|a| a.node_id == other));
    // A glob matches too.
    let mut j = job("glob", 2);
    j.datacenters = vec!["dc*".into()];
    h.register(j);
    assert_eq!(h.eval("glob").place.len(), 2);
    // No node in the datacenter: nothing evaluated, everything queued.
    let mut j = job("nowhere", 2);
    j.datacenters = vec!["eu-west".into()];
    h.register(j);
    let plan = h.eval("nowhere");
    assert!(plan.place.is_empty());
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!((m.nodes_evaluated, m.nodes_filtered, m.nodes_exhausted), (0, 0, 0));
    assert_eq!(plan.queued["web"], 2);
    assert_eq!(m.coalesced_failures, 1);
}

#[test]
fn ineligible_draining_and_down_nodes_get_nothing() {
    let h = Harness::new();
    let good = h.add_node(node("good", 8000, 16384));
    let mut n = node("ineligible", 8000, 16384);
    n.scheduling_eligibility = "ineligible".into();
    h.add_node(n);
    let mut n = node("draining", 8000, 16384);
    n.drain = true;
    h.add_node(n);
    let mut n = node("down", 8000, 16384);
    n.status = node_status::DOWN.into();
    h.add_node(n);
    h.register(job("web", 4));
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    assert!(plan.place.iter().all(|a| a.node_id == good));
}

// === resources ===

#[test]
fn memory_exhaustion_reports_dimension_and_queues() {
    let h = Harness::new();
    // Each node fits two allocations by memory (2 × 400 <= 1000) and many by CPU.
    h.add_nodes(2, 20000, 1000);
    let mut j = job("web", 6);
    group(&mut j).tasks[0].resources = Some(Resources { cpu: 100, memory_mb: 400, ..Default::default() });
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    assert!(per_node(&h.live("web")).values().all(|&n| n == 2));
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.dimension_exhausted.get("memory"), Some(&2), "{:?}", m.dimension_exhausted);
    assert!(!m.dimension_exhausted.contains_key("cpu"));
    assert_eq!(m.nodes_exhausted, 2);
    assert_eq!(m.nodes_evaluated, 2);
    assert_eq!(m.coalesced_failures, 1);
    assert_eq!(plan.queued["web"], 2);
    h.assert_capacity_respected();
}

#[test]
fn cpu_exhaustion_reports_dimension() {
    let h = Harness::new();
    h.add_nodes(1, 1000, 16384);
    h.register(job("web", 3));
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 2);
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.dimension_exhausted.get("cpu"), Some(&1));
    assert_eq!(plan.queued["web"], 1);
    assert_eq!(m.coalesced_failures, 0);
}

#[test]
fn ephemeral_disk_is_placed_against_the_nodes_free_disk() {
    let h = Harness::new();
    // Room for two 300 MB ephemeral disks (the default size) on each node.
    for name in ["small-1", "small-2"] {
        let mut n = node(name, 20000, 16384);
        n.node_resources.disk.disk_mb = 700;
        h.add_node(n);
    }
    h.register(job("web", 5));
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 4);
    assert!(plan.place.iter().all(|a| a.allocated_resources.shared.disk_mb == 300));
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.dimension_exhausted.get("disk"), Some(&2), "{:?}", m.dimension_exhausted);
    // Stopping the job gives the disk back.
    h.stop_job("web");
    h.eval("web");
    h.register(job("db", 2));
    assert_eq!(h.eval("db").place.len(), 2);
}

#[test]
fn existing_allocations_of_other_jobs_count_as_used() {
    let h = Harness::new();
    h.add_nodes(2, 1000, 16384);
    h.register(job("a", 4));
    assert_eq!(h.eval("a").place.len(), 4);
    h.register(job("b", 1));
    let plan = h.eval("b");
    assert!(plan.place.is_empty());
    assert_eq!(plan.failed_tg_allocs["web"].dimension_exhausted.get("cpu"), Some(&2));
    // Stopping job a frees the capacity.
    h.stop_job("a");
    h.eval("a");
    assert_eq!(h.eval("b").place.len(), 1);
    h.assert_capacity_respected();
}

// === ports ===

#[test]
fn static_port_collision_on_one_node() {
    let h = Harness::new();
    h.add_nodes(1, 8000, 16384);
    let mut a = job("a", 1);
    group(&mut a).networks.push(static_port("http", 8080));
    h.register(a);
    let plan = h.eval("a");
    assert_eq!(plan.place.len(), 1);
    let granted = &plan.place[0].allocated_resources.shared.ports;
    assert_eq!(granted.len(), 1);
    assert_eq!((granted[0].label.as_str(), granted[0].value), ("http", 8080));
    assert_eq!(granted[0].host_ip, "10.0.0.1");
    let mut b = job("b", 1);
    group(&mut b).networks.push(static_port("web", 8080));
    h.register(b);
    let plan = h.eval("b");
    assert!(plan.place.is_empty());
    let m = &plan.failed_tg_allocs["web"];
    // Nomad's text: the asking group's label and the port.
    let dims: Vec<&String> = m.dimension_exhausted.keys().collect();
    assert_eq!(dims, ["network: reserved port collision web=8080"], "{dims:?}");
    assert_eq!(m.nodes_exhausted, 1);
}

#[test]
fn task_level_static_ports_collide_too() {
    let h = Harness::new();
    h.add_nodes(1, 8000, 16384);
    // HCL1-era jobs declare ports in the task's resources.
    let task_port = |j: &mut Job| {
        let r = group(j).tasks[0].resources.as_mut().unwrap();
        r.networks.push(static_port("db", 5432));
    };
    let mut a = job("a", 1);
    task_port(&mut a);
    h.register(a);
    let plan = h.eval("a");
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].allocated_resources.shared.ports[0].value, 5432);
    let mut b = job("b", 1);
    task_port(&mut b);
    h.register(b);
    let plan = h.eval("b");
    assert!(plan.place.is_empty());
    assert_eq!(
        plan.failed_tg_allocs["web"].dimension_exhausted.get("network: reserved port collision db=5432"),
        Some(&1)
    );
}

#[test]
fn static_ports_spread_groups_and_jobs_across_nodes() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    // Two groups of one job with the same static port, plus a count of 2:
    // three allocations that need three different nodes.
    let mut a = job("a", 2);
    group(&mut a).networks.push(static_port("http", 9000));
    let mut second = a.task_groups[0].clone();
    second.name = "api".into();
    second.count = 1;
    a.task_groups.push(second);
    h.register(a);
    let plan = h.eval("a");
    assert_eq!(plan.place.len(), 3);
    let live = h.live("a");
    assert!(per_node(&live).values().all(|&n| n == 1), "two 9000s on one node");
    // A second job wanting 9000 finds every node taken.
    let mut b = job("b", 1);
    group(&mut b).networks.push(static_port("http", 9000));
    h.register(b);
    let plan = h.eval("b");
    assert!(plan.place.is_empty());
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.nodes_exhausted, 3);
    assert_eq!(m.dimension_exhausted.values().sum::<u64>(), 3);
    assert_eq!(m.dimension_exhausted.get("network: reserved port collision http=9000"), Some(&3));
    h.assert_capacity_respected();
}

#[test]
fn dynamic_ports_are_in_range_and_unique_per_node() {
    let h = Harness::new();
    h.add_nodes(1, 100000, 100000);
    let mut j = job("web", 30);
    group(&mut j).tasks[0].resources = Some(Resources { cpu: 10, memory_mb: 10, ..Default::default() });
    group(&mut j).networks.push(NetworkResource {
        dynamic_ports: vec![
            Port { label: "http".into(), value: 0, to: -1, host_network: String::new() },
            Port { label: "admin".into(), value: 0, to: 0, host_network: String::new() },
        ],
        ..Default::default()
    });
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 30);
    let mut seen = HashSet::new();
    for a in &plan.place {
        let ports = &a.allocated_resources.shared.ports;
        assert_eq!(ports.len(), 2);
        for p in ports {
            assert!((20000..=32000).contains(&p.value), "dynamic port {} out of range", p.value);
            assert!(seen.insert(p.value), "port {} granted twice", p.value);
            if p.label == "http" {
                assert_eq!(p.to, p.value as i32, "to = -1 maps to the host port");
            }
        }
        let net = &a.allocated_resources.shared.networks[0];
        for p in &net.dynamic_ports {
            assert!(ports.iter().any(|g| g.label == p.label && g.value == p.value), "network block not filled in");
        }
    }
    h.assert_capacity_respected();
}

// === lost nodes ===

#[test]
fn allocations_on_down_node_are_lost_and_replaced() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    h.register(job("web", 4));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let before = h.live("web");
    let down = before[0].node_id.clone();
    let on_down: BTreeMap<String, u32> =
        before.iter().filter(|a| a.node_id == down).map(|a| (a.id.clone(), a.index())).collect();
    h.update_node(&down, |n| n.status = node_status::DOWN.into());
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    let k = on_down.len() as u64;
    assert_eq!((u.stop, u.place, u.ignore), (k, k, 4 - k));
    assert_eq!(plan.update.len(), on_down.len());
    for s in &plan.update {
        assert!(on_down.contains_key(&s.id));
        assert_eq!(s.desired_status, desired::STOP);
        assert_eq!(s.client_status, client_status::LOST);
    }
    assert_eq!(plan.place.len(), on_down.len());
    for p in &plan.place {
        assert_ne!(p.node_id, down);
        let prev = on_down.get(&p.previous_allocation).expect("replacement names the lost alloc");
        assert_eq!(p.index(), *prev, "replacement keeps the index");
    }
    assert_eq!(indexes(&h.live("web")), vec![0, 1, 2, 3]);
    // The next eval is stable.
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty());
}

/// A two-allocation job whose group keeps allocations of a disconnected
/// node for a minute, running on two nodes; answers the allocation of
/// index 0 and its node.
fn disconnect_job(h: &Harness, replace: bool, strategy: &str) -> (Arc<Allocation>, String) {
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 2);
    group(&mut j).disconnect = Some(crate::structs::DisconnectStrategy {
        lost_after: 60 * 1_000_000_000,
        replace: Some(replace),
        reconcile: strategy.into(),
        ..Default::default()
    });
    h.register(j);
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let original = h.live_by_index("web", 0);
    let node = original.node_id.clone();
    h.update_node(&node, |n| n.status = node_status::DISCONNECTED.into());
    (original, node)
}

#[test]
fn allocations_of_a_disconnected_node_are_unknown_replaced_and_kept_when_it_returns() {
    let h = Harness::new();
    let (original, node) = disconnect_job(&h, true, "keep_original");
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.disconnect, u.place, u.stop), (1, 1, 0), "{u:?}");
    let unknown = plan.update.iter().find(|a| a.id == original.id).expect("marked unknown");
    assert_eq!((unknown.client_status.as_str(), unknown.desired_status.as_str()), ("unknown", desired::RUN));
    assert!(unknown.unknown_since().is_some());
    let followup = plan.followups.iter().find(|e| e.triggered_by == "max-disconnect-timeout").expect("timeout eval");
    assert!(followup.wait_until > now_nanos() + 59 * 1_000_000_000);
    assert_eq!(plan.place[0].previous_allocation, original.id);
    assert_eq!(h.allocs("web").iter().find(|a| a.id == original.id).unwrap().next_allocation, plan.place[0].id);
    assert!(h.eval("web").place.is_empty(), "one replacement only");

    // Back: the client says it runs; keep_original stops the replacement.
    h.update_node(&node, |n| n.status = node_status::READY.into());
    let replacement = plan.place[0].id.clone();
    h.set_client_status(&original.id, client_status::RUNNING);
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"].reconnect, 1);
    let stopped = plan.update.iter().find(|a| a.id == replacement).expect("replacement stopped");
    assert_eq!(stopped.desired_description, super::disconnect::REPLACEMENT_NOT_NEEDED);
    let back = h.allocs("web").into_iter().find(|a| a.id == original.id).unwrap();
    assert_eq!((back.desired_status.as_str(), back.unknown_since()), (desired::RUN, None));
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty(), "stable: {:?}", plan.desired_updates);
    assert_eq!(indexes(&h.live("web")), vec![0, 1]);
}

#[test]
fn an_unknown_allocation_is_lost_after_lost_after_and_replaced_then_even_without_replace() {
    let h = Harness::new();
    let (original, _) = disconnect_job(&h, false, "best_score");
    let plan = h.eval("web");
    assert_eq!((plan.desired_updates["web"].disconnect, plan.place.len()), (1, 0), "replace = false places nothing");
    // lost_after passes.
    h.update_alloc(&original.id, |a| a.alloc_states[0].time_nanos -= 61 * 1_000_000_000);
    let plan = h.eval("web");
    let lost = plan.update.iter().find(|a| a.id == original.id).expect("lost");
    assert_eq!((lost.client_status.as_str(), lost.desired_status.as_str()), (client_status::LOST, desired::STOP));
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].previous_allocation, original.id);
}

#[test]
fn a_lost_allocation_whose_client_stops_it_is_replaced_once_it_surely_has() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("web", 1);
    group(&mut j).disconnect = Some(crate::structs::DisconnectStrategy {
        stop_on_client_after: Some(30 * 1_000_000_000),
        ..Default::default()
    });
    h.register(j);
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let original = h.live_by_index("web", 0);
    let down_at = now_nanos() / 1_000_000_000;
    h.update_node(&original.node_id, |n| {
        n.status = node_status::DOWN.into();
        n.status_updated_at = down_at;
    });
    let plan = h.eval("web");
    assert!(plan.place.is_empty(), "not before stop_on_client_after and the kill timeout");
    let followup = &plan.followups[0];
    assert_eq!(followup.triggered_by, "stop-on-client-after");
    assert_eq!(followup.wait_until, (down_at + 30 + 5) * 1_000_000_000);
    h.update_node(&original.node_id, |n| n.status_updated_at = down_at - 40);
    let plan = h.eval("web");
    assert_eq!((plan.place.len(), plan.update[0].client_status.as_str()), (1, client_status::LOST));
}

#[test]
fn a_replacement_that_scored_higher_stays_when_the_original_returns() {
    let h = Harness::new();
    let (original, node) = disconnect_job(&h, true, "best_score");
    let plan = h.eval("web");
    let replacement = plan.place[0].id.clone();
    h.set_client_status(&replacement, client_status::RUNNING);
    h.update_alloc(&original.id, |a| a.metrics = Some(crate::structs::AllocMetric::default()));
    h.update_node(&node, |n| n.status = node_status::READY.into());
    h.set_client_status(&original.id, client_status::RUNNING);
    let plan = h.eval("web");
    let stopped = plan.update.iter().find(|a| a.id == original.id).expect("original stopped");
    assert_eq!(stopped.desired_description, super::disconnect::ORIGINAL_NOT_NEEDED);
    assert!(plan.place.is_empty());
    assert!(h.live("web").iter().any(|a| a.id == replacement));
}

#[test]
fn allocations_marked_for_migration_move_off_a_draining_node() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    h.register(job("web", 3));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let draining = h.live("web")[0].node_id.clone();
    h.update_node(&draining, |n| {
        n.drain = true;
        n.scheduling_eligibility = "ineligible".into();
    });
    // Draining alone moves nothing: the drainer marks what goes.
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty());
    let mut marked = (*h.live("web").into_iter().find(|a| a.node_id == draining).unwrap()).clone();
    marked.desired_transition.migrate = Some(true);
    h.apply(WriteBatch { allocs: vec![marked.clone()], ..Default::default() });
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"].migrate, 1);
    assert_eq!(plan.update.len(), 1);
    assert_eq!(
        (plan.update[0].id.as_str(), plan.update[0].desired_description.as_str()),
        (marked.id.as_str(), "alloc is being migrated")
    );
    assert_eq!(plan.place.len(), 1);
    assert_ne!(plan.place[0].node_id, draining);
    assert_eq!(
        (plan.place[0].previous_allocation.as_str(), plan.place[0].index()),
        (marked.id.as_str(), marked.index())
    );
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty());
}

// === updates ===

#[test]
fn destructive_update_replaces_allocations() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 3);
    j.update = Some(UpdateStrategy { max_parallel: 3, ..Default::default() });
    h.register(j);
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let old: BTreeMap<String, u32> = h.live("web").iter().map(|a| (a.id.clone(), a.index())).collect();
    h.update_job("web", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.destructive_update, u.in_place_update, u.ignore, u.place, u.stop), (3, 0, 0, 0, 0));
    assert_eq!(plan.update.len(), 3);
    assert!(plan.update.iter().all(|a| a.desired_status == desired::STOP && old.contains_key(&a.id)));
    assert_eq!(plan.place.len(), 3);
    for p in &plan.place {
        assert_eq!(p.job_version(), 1);
        assert_eq!(old.get(&p.previous_allocation), Some(&p.index()));
    }
    let live = h.live("web");
    assert_eq!(indexes(&live), vec![0, 1, 2]);
    assert!(live.iter().all(|a| a.job_version() == 1));
}

#[test]
fn destructive_update_reuses_resources_and_ports_it_frees() {
    let h = Harness::new();
    // One node that fits exactly two allocations.
    let only = h.add_node(node("only", 1000, 16384));
    let mut j = job("web", 2);
    j.update = Some(UpdateStrategy { max_parallel: 2, ..Default::default() });
    group(&mut j).networks.push(static_port("http", 8080));
    group(&mut j).networks[0].dynamic_ports.push(Port { label: "admin".into(), to: -1, ..Default::default() });
    group(&mut j).constraints.clear();
    h.register(j);
    // Two allocations of a group with a static port cannot share the node.
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 1);
    h.update_job("web", |j| group(j).networks[0].reserved_ports.clear());
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    assert_eq!(h.live("web").len(), 2);
    h.update_job("web", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    let plan = h.eval("web");
    assert!(plan.failed_tg_allocs.is_empty(), "{:?}", plan.failed_tg_allocs);
    assert_eq!(plan.desired_updates["web"].destructive_update, 2);
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|a| a.node_id == only));
    h.assert_capacity_respected();
}

#[test]
fn in_place_update_keeps_allocations() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    h.register(job("web", 3));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let before: BTreeMap<String, String> = h.live("web").iter().map(|a| (a.id.clone(), a.node_id.clone())).collect();
    h.update_job("web", |j| {
        j.meta.insert("owner".into(), "ops".into());
    });
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.in_place_update, u.destructive_update, u.ignore, u.place, u.stop), (3, 0, 0, 0, 0));
    assert!(plan.place.is_empty());
    assert!(!plan.changes_allocations());
    let live = h.live("web");
    let after: BTreeMap<String, String> = live.iter().map(|a| (a.id.clone(), a.node_id.clone())).collect();
    assert_eq!(before, after, "same allocations on the same nodes");
    assert!(live.iter().all(|a| a.job_version() == 1 && a.desired_status == desired::RUN));
    assert!(live.iter().all(|a| a.job.as_ref().unwrap().meta.get("owner").map(String::as_str) == Some("ops")));
}

#[test]
fn max_parallel_limits_destructive_updates_per_eval() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 3);
    j.update = Some(UpdateStrategy { max_parallel: 1, ..Default::default() });
    h.register(j);
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    h.update_job("web", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.destructive_update, u.ignore), (1, 2));
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.update.len(), 1);
    // While the new allocation is pending, and while it runs but is not
    // healthy yet, the next eval updates nothing more.
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"].destructive_update, 0);
    assert!(plan.place.is_empty());
    h.set_all_client_status("web", client_status::RUNNING);
    assert_eq!(h.eval("web").desired_updates["web"].destructive_update, 0);
    // Once it is healthy, the next one goes.
    h.set_all_healthy("web");
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"].destructive_update, 1);
    h.set_all_healthy("web");
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"].destructive_update, 1);
    h.set_all_healthy("web");
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["web"], super::DesiredUpdates { ignore: 3, ..Default::default() });
    let live = h.live("web");
    assert_eq!(indexes(&live), vec![0, 1, 2]);
    assert!(live.iter().all(|a| a.job_version() == 1));
}

#[test]
fn a_failed_or_paused_deployment_updates_nothing_more() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 3);
    j.update = Some(UpdateStrategy { max_parallel: 1, ..Default::default() });
    h.register(j);
    h.eval("web");
    h.set_all_healthy("web");
    h.update_job("web", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    assert_eq!(h.eval("web").desired_updates["web"].destructive_update, 1);
    h.set_all_healthy("web");
    for held in [deployment_status::PAUSED, deployment_status::FAILED] {
        let mut d = h.deployment("web");
        d.status = held.into();
        h.apply(WriteBatch { deployments: vec![d], ..Default::default() });
        let plan = h.eval("web");
        assert_eq!(plan.desired_updates["web"].destructive_update, 0, "{held} deployment");
        assert!(plan.place.is_empty());
    }
    let live = h.live("web");
    assert_eq!(live.iter().filter(|a| a.job_version() == 0).count(), 2, "the old version keeps running");
}

#[test]
fn canaries_run_beside_the_old_version_until_promoted() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 3);
    j.update = Some(UpdateStrategy { max_parallel: 1, canary: 1, ..Default::default() });
    h.register(j);
    let first = h.eval("web");
    assert!(first.place.iter().all(|a| !a.is_canary()), "a new job has no canaries");
    assert_eq!(h.deployment("web").task_groups["web"].desired_canaries, 0);
    h.set_all_healthy("web");
    h.update_job("web", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.canary, u.destructive_update, u.stop), (1, 0, 0));
    assert_eq!(plan.place.len(), 1);
    let canary = &plan.place[0];
    assert!(canary.is_canary() && canary.previous_allocation.is_empty());
    let dep = h.deployment("web");
    let state = &dep.task_groups["web"];
    assert_eq!((state.desired_canaries, state.placed_canaries.clone()), (1, vec![canary.id.clone()]));
    assert!(dep.requires_promotion());
    // Healthy, not promoted: still nothing more.
    h.set_all_healthy("web");
    let plan = h.eval("web");
    assert!(plan.place.is_empty() && plan.update.is_empty(), "waits for promotion: {:?}", plan.desired_updates);
    assert_eq!(h.live("web").len(), 4, "three old beside one canary");
    // Promoted: the old allocation beside the canary stops unreplaced, and
    // the rest roll one at a time.
    let mut d = h.deployment("web");
    d.task_groups.get_mut("web").unwrap().promoted = true;
    h.apply(WriteBatch { deployments: vec![d], ..Default::default() });
    let plan = h.eval("web");
    let u = &plan.desired_updates["web"];
    assert_eq!((u.stop, u.destructive_update, u.canary), (1, 1, 0));
    for _ in 0..3 {
        h.set_all_healthy("web");
        h.eval("web");
    }
    let live = h.live("web");
    assert_eq!(indexes(&live), vec![0, 1, 2]);
    assert!(live.iter().all(|a| a.job_version() == 1));
    assert!(live.iter().any(|a| a.id == canary.id), "the canary stays");
}

// === failures and rescheduling ===

fn no_delay_policy(attempts: u32, unlimited: bool) -> ReschedulePolicy {
    ReschedulePolicy {
        attempts,
        interval: 3600 * SECOND,
        delay: 0,
        delay_function: "constant".into(),
        max_delay: 0,
        unlimited,
    }
}

#[test]
fn failed_allocation_is_rescheduled() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 2);
    j.reschedule = Some(no_delay_policy(0, true));
    h.register(j);
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    let failed = h.live_by_index("web", 1);
    h.set_client_status(&failed.id, client_status::FAILED);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 1);
    let r = &plan.place[0];
    assert_eq!(r.name, "web.web[1]");
    assert_eq!(r.previous_allocation, failed.id);
    let tracker = r.reschedule_tracker.as_ref().expect("replacement carries a reschedule tracker");
    assert_eq!(tracker.events.len(), 1);
    assert_eq!(tracker.events[0].prev_alloc_id, failed.id);
    assert_eq!(tracker.events[0].prev_node_id, failed.node_id);
    assert!(plan.update.iter().any(|a| a.id == failed.id && a.desired_status == desired::STOP));
    assert_eq!(plan.desired_updates["web"].place, 1);
    assert!(plan.followups.is_empty());
    assert_eq!(indexes(&h.live("web")), vec![0, 1]);
}

#[test]
fn failed_allocation_frees_its_node() {
    let h = Harness::new();
    // Room for exactly one allocation.
    let only = h.add_node(node("only", 500, 16384));
    let mut j = job("web", 1);
    j.reschedule = Some(no_delay_policy(0, true));
    h.register(j);
    h.eval("web");
    let failed = h.live_by_index("web", 0);
    h.set_client_status(&failed.id, client_status::FAILED);
    let plan = h.eval("web");
    assert!(plan.failed_tg_allocs.is_empty(), "{:?}", plan.failed_tg_allocs);
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].node_id, only);
    h.assert_capacity_respected();
}

#[test]
fn batch_failure_is_not_rescheduled_once_attempts_are_used() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("batch", 1);
    j.job_type = JOB_TYPE_BATCH.into();
    // The batch default (1 attempt in 24h), without the 5s delay.
    j.reschedule = Some(ReschedulePolicy { interval: 24 * 3600 * SECOND, ..no_delay_policy(1, false) });
    h.register(j);
    h.eval("batch");
    let first = h.live_by_index("batch", 0);
    h.set_client_status(&first.id, client_status::FAILED);
    let plan = h.eval("batch");
    assert_eq!(plan.place.len(), 1, "the one attempt is used");
    let second = plan.place[0].clone();
    assert_eq!(second.reschedule_tracker.as_ref().map(|t| t.events.len()), Some(1));
    h.set_client_status(&second.id, client_status::FAILED);
    let plan = h.eval("batch");
    assert!(plan.place.is_empty(), "attempts exhausted");
    assert!(plan.followups.is_empty());
    assert!(plan.update.is_empty(), "the failed alloc is left as is");
    let live = h.live("batch");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, second.id);
    assert_eq!(live[0].client_status, client_status::FAILED);
}

#[test]
fn old_reschedule_events_do_not_count_against_attempts() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("batch", 1);
    j.job_type = JOB_TYPE_BATCH.into();
    j.reschedule = Some(no_delay_policy(1, false));
    h.register(j);
    h.eval("batch");
    let a = h.live_by_index("batch", 0);
    // One reschedule two hours ago: outside the 1h interval.
    h.update_alloc(&a.id, |a| {
        a.client_status = client_status::FAILED.into();
        a.reschedule_tracker = Some(RescheduleTracker {
            events: vec![crate::structs::RescheduleEvent {
                reschedule_time: now_nanos() - 2 * 3600 * SECOND,
                ..Default::default()
            }],
        });
    });
    let plan = h.eval("batch");
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].reschedule_tracker.as_ref().map(|t| t.events.len()), Some(2));
}

#[test]
fn delayed_reschedule_creates_a_followup_eval() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    // The service default: 30s, exponential, unlimited.
    h.register(job("web", 1));
    h.eval("web");
    let a = h.live_by_index("web", 0);
    h.set_client_status(&a.id, client_status::FAILED);
    let failed_at = h.store.snapshot().alloc(&a.id).unwrap().modify_time;
    let plan = h.eval("web");
    assert!(plan.place.is_empty(), "not before the delay");
    assert_eq!(plan.followups.len(), 1);
    let f = &plan.followups[0];
    assert_eq!(f.status, eval_status::PENDING);
    assert_eq!(f.triggered_by, "alloc-failure");
    assert_eq!(f.job_id, "web");
    assert!(f.wait_until > now_nanos(), "WaitUntil must be in the future");
    assert_eq!(f.wait_until, failed_at + 30 * SECOND);
    let marked = h.store.snapshot().alloc(&a.id).unwrap();
    assert_eq!(marked.followup_eval_id, f.id);
    assert_eq!(marked.desired_status, desired::RUN);
    // Another eval in the meantime does not create a second follow-up.
    let plan = h.eval("web");
    assert!(plan.followups.is_empty());
    assert!(plan.place.is_empty());
}

#[test]
fn followup_eval_reschedules_when_due() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("web", 1);
    j.reschedule = Some(ReschedulePolicy { delay: SECOND / 5, ..no_delay_policy(0, true) });
    h.register(j);
    h.eval("web");
    let a = h.live_by_index("web", 0);
    h.set_client_status(&a.id, client_status::FAILED);
    // The server evaluates a little after the client reported the failure.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let plan = h.eval("web");
    assert_eq!(plan.followups.len(), 1);
    let f = plan.followups[0].clone();
    let wait = f.wait_until - now_nanos();
    if wait > 0 {
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64 + 1_000_000));
    }
    // The broker runs the follow-up at its WaitUntil.
    let plan = h.process(&f.id);
    assert_eq!(plan.place.len(), 1, "the follow-up eval must reschedule the failed alloc");
    assert_eq!(plan.place[0].previous_allocation, a.id);
    assert!(plan.followups.is_empty());
}

// === batch ===

#[test]
fn complete_batch_allocations_are_not_replaced() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("batch", 3);
    j.job_type = JOB_TYPE_BATCH.into();
    h.register(j);
    assert_eq!(h.eval("batch").place.len(), 3);
    let done = h.live_by_index("batch", 1);
    h.set_client_status(&done.id, client_status::COMPLETE);
    let plan = h.eval("batch");
    assert!(plan.place.is_empty());
    assert!(plan.update.is_empty());
    h.set_all_client_status("batch", client_status::COMPLETE);
    let plan = h.eval("batch");
    assert!(plan.place.is_empty() && plan.update.is_empty());
    assert_eq!(h.job("batch").status, "dead");
}

#[test]
fn complete_service_allocations_are_replaced() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    h.register(job("web", 2));
    h.eval("web");
    let done = h.live_by_index("web", 0);
    h.set_client_status(&done.id, client_status::COMPLETE);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].name, "web.web[0]");
    assert_eq!(plan.place[0].previous_allocation, done.id);
}

// === system jobs ===

fn system_job(id: &str) -> Job {
    let mut j = job(id, 1);
    j.job_type = JOB_TYPE_SYSTEM.into();
    j
}

#[test]
fn system_job_runs_once_per_feasible_node() {
    let h = Harness::new();
    let ready: BTreeSet<String> = h.add_nodes(3, 8000, 16384).into_iter().collect();
    let mut down = node("down", 8000, 16384);
    down.status = node_status::DOWN.into();
    h.add_node(down);
    let mut mac = node("mac", 8000, 16384);
    mac.attributes.insert("kernel.name".into(), "darwin".into());
    h.add_node(mac);
    let mut j = system_job("sys");
    j.constraints.push(constraint("${attr.kernel.name}", "=", "linux"));
    h.register(j);
    let plan = h.eval("sys");
    assert_eq!(plan.place.len(), 3);
    let placed: BTreeSet<String> = plan.place.iter().map(|a| a.node_id.clone()).collect();
    assert_eq!(placed, ready);
    assert!(plan.place.iter().all(|a| a.name == "sys.web[0]"));
    assert_eq!(plan.desired_updates["web"].place, 3);
    assert!(plan.failed_tg_allocs.is_empty());
    assert!(plan.deployment.is_none(), "system jobs have no deployments");
    // Stable.
    let plan = h.eval("sys");
    assert!(plan.place.is_empty() && plan.update.is_empty());
    assert_eq!(plan.desired_updates["web"].ignore, 3);
    // A new node gets one on the next eval; the others are left alone.
    let new = h.add_node(node("new", 8000, 16384));
    let plan = h.eval("sys");
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].node_id, new);
    assert_eq!(plan.desired_updates["web"].ignore, 3);
    assert_eq!(h.live("sys").len(), 4);
}

#[test]
fn system_job_stops_on_down_and_no_longer_feasible_nodes() {
    let h = Harness::new();
    let nodes = h.add_nodes(3, 8000, 16384);
    let mut j = system_job("sys");
    j.constraints.push(constraint("${attr.kernel.name}", "=", "linux"));
    h.register(j);
    h.eval("sys");
    h.set_all_client_status("sys", client_status::RUNNING);
    h.update_node(&nodes[0], |n| n.status = node_status::DOWN.into());
    h.update_node(&nodes[1], |n| {
        n.attributes.insert("kernel.name".into(), "freebsd".into());
    });
    let plan = h.eval("sys");
    assert!(plan.place.is_empty());
    assert_eq!(plan.update.len(), 2);
    let lost = plan.update.iter().find(|a| a.node_id == nodes[0]).expect("alloc on the down node stopped");
    assert_eq!(lost.client_status, client_status::LOST);
    let infeasible = plan.update.iter().find(|a| a.node_id == nodes[1]).expect("alloc on the changed node stopped");
    assert_eq!(infeasible.desired_status, desired::STOP);
    let live = h.live("sys");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].node_id, nodes[2]);
}

#[test]
fn system_job_destructive_update_with_static_port() {
    let h = Harness::new();
    let nodes: BTreeSet<String> = h.add_nodes(3, 8000, 16384).into_iter().collect();
    let mut j = system_job("exporter");
    group(&mut j).networks.push(static_port("metrics", 9100));
    h.register(j);
    assert_eq!(h.eval("exporter").place.len(), 3);
    h.set_all_client_status("exporter", client_status::RUNNING);
    h.update_job("exporter", |j| {
        group(j).tasks[0].config.insert("args".into(), serde_json::json!(["7200"]));
    });
    let plan = h.eval("exporter");
    // The old allocation's port is freed by its stop in the same plan.
    assert!(plan.failed_tg_allocs.is_empty(), "{:?}", plan.failed_tg_allocs);
    assert_eq!(plan.desired_updates["web"].destructive_update, 3);
    assert_eq!(plan.place.len(), 3);
    let placed: BTreeSet<String> = plan.place.iter().map(|a| a.node_id.clone()).collect();
    assert_eq!(placed, nodes);
    let live = h.live("exporter");
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|a| a.job_version() == 1));
    h.assert_capacity_respected();
}

#[test]
fn system_job_on_full_node_reports_failure() {
    let h = Harness::new();
    h.add_nodes(1, 8000, 16384);
    h.add_nodes(1, 100, 16384);
    h.register(system_job("sys"));
    let plan = h.eval("sys");
    assert_eq!(plan.place.len(), 1);
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.dimension_exhausted.get("cpu"), Some(&1));
    assert_eq!(plan.queued["web"], 1);
}

// === distinct_hosts ===

#[test]
fn distinct_hosts_never_shares_a_node() {
    let h = Harness::new();
    h.add_nodes(3, 8000, 16384);
    let mut j = job("web", 3);
    group(&mut j).constraints.push(Constraint { operand: "distinct_hosts".into(), ..Default::default() });
    h.register(j);
    assert_eq!(h.eval("web").place.len(), 3);
    assert!(per_node(&h.live("web")).values().all(|&n| n == 1));
    h.update_job("web", |j| group(j).count = 4);
    let plan = h.eval("web");
    assert!(plan.place.is_empty());
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.constraint_filtered.get("distinct_hosts"), Some(&3), "{:?}", m.constraint_filtered);
    assert_eq!(m.nodes_filtered, 3);
    assert_eq!(plan.queued["web"], 1);
    assert!(per_node(&h.live("web")).values().all(|&n| n == 1));
}

#[test]
fn job_level_distinct_hosts_applies_to_every_group() {
    let h = Harness::new();
    h.add_nodes(4, 8000, 16384);
    let mut j = job("web", 4);
    j.constraints.push(Constraint { operand: "distinct_hosts".into(), ..Default::default() });
    h.register(j);
    assert_eq!(h.eval("web").place.len(), 4);
    assert!(per_node(&h.live("web")).values().all(|&n| n == 1));
}

#[test]
fn distinct_hosts_with_a_false_value_is_off() {
    for value in ["false", "0"] {
        let h = Harness::new();
        h.add_nodes(1, 8000, 16384);
        let mut j = job("web", 3);
        let off = Constraint { operand: "distinct_hosts".into(), r_target: value.into(), ..Default::default() };
        group(&mut j).constraints.push(off);
        h.register(j);
        assert_eq!(h.eval("web").place.len(), 3, "value {value:?}: all three on the one node");
    }
}

// === stop and purge ===

#[test]
fn stopped_job_stops_every_allocation() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    h.register(job("web", 3));
    h.eval("web");
    h.set_all_client_status("web", client_status::RUNNING);
    h.stop_job("web");
    let plan = h.eval("web");
    assert!(plan.place.is_empty());
    assert_eq!(plan.update.len(), 3);
    assert!(plan.update.iter().all(|a| a.desired_status == desired::STOP));
    assert_eq!(plan.desired_updates["web"].stop, 3);
    assert!(h.live("web").is_empty());
    assert_eq!(h.job("web").status, "dead");
    // Nothing left to stop.
    let plan = h.eval("web");
    assert!(plan.update.is_empty() && plan.place.is_empty());
}

#[test]
fn purged_job_stops_every_allocation() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    h.register(job("web", 3));
    h.eval("web");
    h.purge_job("web");
    let plan = h.eval("web");
    assert!(plan.place.is_empty());
    assert_eq!(plan.update.len(), 3);
    assert!(plan.update.iter().all(|a| a.desired_status == desired::STOP));
    assert!(h.live("web").is_empty());
}

#[test]
fn removed_group_is_stopped() {
    let h = Harness::new();
    h.add_nodes(2, 8000, 16384);
    let mut j = job("web", 2);
    let mut api = j.task_groups[0].clone();
    api.name = "api".into();
    j.task_groups.push(api);
    h.register(j);
    assert_eq!(h.eval("web").place.len(), 4);
    h.update_job("web", |j| j.task_groups.retain(|g| g.name == "web"));
    let plan = h.eval("web");
    assert_eq!(plan.desired_updates["api"].stop, 2);
    assert!(h.live("web").iter().all(|a| a.task_group == "web"));
    assert_eq!(h.live("web").len(), 2);
}

// === evaluation bookkeeping ===

#[test]
fn processed_eval_is_marked_complete() {
    let h = Harness::new();
    h.add_nodes(1, 8000, 16384);
    h.register(job("web", 1));
    let id = h.create_eval("web");
    h.process(&id);
    let e: Arc<Evaluation> = h.store.snapshot().eval(&id).unwrap();
    assert_eq!(e.status, eval_status::COMPLETE);
    assert!(e.failed_tg_allocs.is_empty());
    assert!(e.blocked_eval.is_empty());
}

/// Gives a node a healthy node plugin `local` whose topology is the node's name.
fn with_csi_plugin(n: &mut Node) {
    use crate::structs::{CsiInfo, CsiNodeInfo, CsiTopology};
    let topology = CsiTopology { segments: [("node".to_string(), n.name.clone())].into() };
    n.csi_node_plugins.insert(
        "local".into(),
        CsiInfo {
            plugin_id: "local".into(),
            healthy: true,
            node_info: Some(CsiNodeInfo { accessible_topology: Some(topology), ..Default::default() }),
            ..Default::default()
        },
    );
}

/// A single-node-writer volume of plugin `local`, reachable from `node_name` only.
fn csi_volume(id: &str, node_name: &str) -> crate::structs::CsiVolume {
    use crate::structs::{CsiTopology, CsiVolume, CsiVolumeCapability};
    CsiVolume {
        id: id.into(),
        namespace: "default".into(),
        plugin_id: "local".into(),
        requested_capabilities: vec![CsiVolumeCapability {
            access_mode: "single-node-writer".into(),
            attachment_mode: "file-system".into(),
        }],
        topologies: vec![CsiTopology { segments: [("node".to_string(), node_name.to_string())].into() }],
        ..Default::default()
    }
}

fn csi_job(id: &str, count: u32, source: &str, per_alloc: bool) -> Job {
    let mut j = job(id, count);
    group(&mut j).volumes.insert(
        "data".into(),
        crate::structs::VolumeRequest {
            volume_type: "csi".into(),
            source: source.into(),
            access_mode: "single-node-writer".into(),
            attachment_mode: "file-system".into(),
            per_alloc,
            ..Default::default()
        },
    );
    j
}

#[test]
fn csi_volumes_place_per_alloc_where_their_topology_and_plugin_are() {
    let h = Harness::new();
    for name in ["a", "b", "c"] {
        let mut n = node(name, 4000, 8192);
        if name != "c" {
            with_csi_plugin(&mut n);
        }
        h.add_node(n);
    }
    h.apply(WriteBatch { volumes: vec![csi_volume("db[0]", "a"), csi_volume("db[1]", "b")], ..Default::default() });
    h.register(csi_job("db", 3, "db", true));
    let plan = h.eval("db");
    let placed: BTreeSet<(u32, String)> = plan.place.iter().map(|a| (a.index(), a.node_name.clone())).collect();
    assert_eq!(placed, [(0, "a".to_string()), (1, "b".to_string())].into(), "each volume's node");
    let m = &plan.failed_tg_allocs["web"];
    assert_eq!(m.constraint_filtered.get("missing CSI volume db[2]"), Some(&3), "{:?}", m.constraint_filtered);
    assert_eq!(plan.queued["web"], 1);
}

#[test]
fn one_writer_per_single_node_writer_volume_even_within_a_plan() {
    let h = Harness::new();
    let mut n = node("a", 4000, 8192);
    with_csi_plugin(&mut n);
    h.add_node(n);
    h.apply(WriteBatch { volumes: vec![csi_volume("db", "a")], ..Default::default() });
    h.register(csi_job("db", 2, "db", false));
    let plan = h.eval("db");
    assert_eq!(plan.place.len(), 1);
    let why: Vec<&String> = plan.failed_tg_allocs["web"].constraint_filtered.keys().collect();
    assert!(why[0].contains("exhausted its available writer claims") && why[0].contains("web[0]"), "{why:?}");

    // Another job asking for it is told which allocation holds the claim.
    let holder = plan.place[0].id.clone();
    h.register(csi_job("other", 1, "db", false));
    let plan = h.eval("other");
    assert!(plan.place.is_empty());
    let why: Vec<&String> = plan.failed_tg_allocs["web"].constraint_filtered.keys().collect();
    assert!(why[0].contains(&holder[..8]), "{why:?}");

    // The plugin on the node turns unhealthy: that is the reason now.
    h.stop_job("db");
    h.eval("db");
    h.update_node(&h.store.snapshot().nodes().next().unwrap().id.clone(), |n| {
        let p = n.csi_node_plugins.get_mut("local").unwrap();
        p.healthy = false;
        p.health_description = "plugin allocation 1234abcd stopped".into();
    });
    let plan = h.eval("other");
    let why: Vec<&String> = plan.failed_tg_allocs["web"].constraint_filtered.keys().collect();
    assert_eq!(why, ["CSI plugin local is unhealthy on client a: plugin allocation 1234abcd stopped"]);
}

// === affinity and spread ===

fn with_meta(h: &Harness, name: &str, key: &str, value: &str) -> String {
    let mut n = node(name, 8000, 16384);
    n.meta.insert(key.into(), value.into());
    h.add_node(n)
}

fn affinity(l: &str, r: &str, weight: i8) -> crate::structs::Affinity {
    crate::structs::Affinity { l_target: l.into(), r_target: r.into(), operand: "=".into(), weight }
}

#[test]
fn affinity_draws_placements_and_shows_in_the_scores() {
    let h = Harness::new();
    let fast: Vec<String> = (0..2).map(|i| with_meta(&h, &format!("ssd-{i}"), "disk", "ssd")).collect();
    for i in 0..6 {
        with_meta(&h, &format!("hdd-{i}"), "disk", "hdd");
    }
    let mut j = job("db", 2);
    group(&mut j).affinities.push(affinity("${meta.disk}", "ssd", 100));
    h.register(j);
    let plan = h.eval("db");
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|a| fast.contains(&a.node_id)), "an affinity of 100 lost to bin packing");
    let top = &plan.place[0].metrics.as_ref().unwrap().score_meta_data;
    assert!(!top.is_empty() && top.len() <= 5);
    assert_eq!(top[0].scores["node-affinity"], 1.0, "{top:?}");
    assert!(top.windows(2).all(|w| w[0].norm_score >= w[1].norm_score), "{top:?}");
    let expected = (top[0].scores["binpack"] + 1.0) / 2.0;
    assert!((top[0].norm_score - expected).abs() < 1e-9, "mean of the scorers that apply: {top:?}");
}

#[test]
fn negative_affinity_keeps_placements_away() {
    let h = Harness::new();
    let slow: Vec<String> = (0..4).map(|i| with_meta(&h, &format!("pi-{i}"), "class", "pi")).collect();
    with_meta(&h, "big-0", "class", "big");
    with_meta(&h, "big-1", "class", "big");
    let mut j = job("web", 2);
    j.affinities.push(affinity("${meta.class}", "pi", -100));
    h.register(j);
    let plan = h.eval("web");
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|a| !slow.contains(&a.node_id)));
    let scores = &plan.place[0].metrics.as_ref().unwrap().score_meta_data;
    let affinities: Vec<f64> = scores.iter().map(|s| s.scores["node-affinity"]).collect();
    assert_eq!(affinities, [0.0, 0.0, -1.0, -1.0, -1.0], "the best nodes are the unmatched ones: {scores:?}");
}

#[test]
fn even_spread_balances_over_an_attribute() {
    let h = Harness::new();
    let mut zone_of = HashMap::new();
    for (zone, nodes) in [("a", 4), ("b", 1), ("c", 1)] {
        for i in 0..nodes {
            zone_of.insert(with_meta(&h, &format!("{zone}-{i}"), "zone", zone), zone);
        }
    }
    let mut j = job("web", 6);
    group(&mut j).spreads.push(crate::structs::Spread {
        attribute: "${meta.zone}".into(),
        weight: 100,
        spread_target: vec![],
    });
    h.register(j);
    h.eval("web");
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for a in h.live("web") {
        *per_zone.entry(zone_of[&a.node_id]).or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));
}

#[test]
fn spread_targets_split_placements_by_percent_across_evaluations() {
    let h = Harness::new();
    let mut rack_of = HashMap::new();
    for rack in ["r1", "r2"] {
        for i in 0..3 {
            rack_of.insert(with_meta(&h, &format!("{rack}-{i}"), "rack", rack), rack);
        }
    }
    let spread = |count| {
        let mut j = job("web", count);
        group(&mut j).spreads.push(crate::structs::Spread {
            attribute: "${meta.rack}".into(),
            weight: 50,
            spread_target: vec![crate::structs::SpreadTarget { value: "r1".into(), percent: 70 }],
        });
        j
    };
    h.register(spread(5));
    h.eval("web");
    // Scaling up counts the allocations already placed.
    h.register(spread(10));
    h.eval("web");
    let mut per_rack: BTreeMap<&str, usize> = BTreeMap::new();
    for a in h.live("web") {
        *per_rack.entry(rack_of[&a.node_id]).or_default() += 1;
    }
    assert_eq!(per_rack, BTreeMap::from([("r1", 7), ("r2", 3)]));
}
