//! Scheduler throughput: 5,000 simulated nodes, 100 service jobs of 1,000
//! allocations each (a quarter constrained, half spread over racks, a third
//! with an affinity), scheduled by the real scheduler with every plan applied
//! to an in-memory state store before the next evaluation, as the server's
//! eval worker does. A naive first-fit over the same nodes, timed in the same
//! run, gives a machine-independent baseline.
//!
//! Run with `cargo bench --bench scheduler`. Sizes can be changed with
//! `BERTH_BENCH_NODES`, `BERTH_BENCH_JOBS` and `BERTH_BENCH_COUNT`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use berth::server::scheduler;
use berth::server::state::{StateStore, WriteBatch};
use berth::structs::{
    node_status, Affinity, Constraint, DriverInfo, Evaluation, Job, Node, Resources, Spread, Task, TaskGroup,
};

const NODE_CPU_MHZ: u64 = 8000;
const NODE_MEMORY_MB: u64 = 16 * 1024;
const TASK_CPU_MHZ: u64 = 100;
const TASK_MEMORY_MB: u64 = 128;
/// Every `CONSTRAINED_EVERY`th job only runs on `tier = gold` nodes (half of them).
const CONSTRAINED_EVERY: usize = 4;
/// Every `SPREAD_EVERY`th job spreads over the nodes' racks, and every
/// `AFFINITY_EVERY`th prefers `tier = silver`: the scheduler then scores up
/// to 100 nodes per placement instead of log2(N).
const SPREAD_EVERY: usize = 2;
const AFFINITY_EVERY: usize = 3;
/// Racks, as `meta.rack`.
const RACKS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn make_node(i: usize) -> Node {
    let mut n = Node {
        id: format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        name: format!("node-{i:05}"),
        datacenter: "dc1".into(),
        status: node_status::READY.into(),
        scheduling_eligibility: "eligible".into(),
        node_pool: "default".into(),
        ..Default::default()
    };
    n.node_resources.cpu.cpu_shares = NODE_CPU_MHZ;
    n.node_resources.cpu.total_core_count = 4;
    n.node_resources.memory.memory_mb = NODE_MEMORY_MB;
    n.node_resources.disk.disk_mb = 1024 * 1024;
    n.attributes.insert("kernel.name".into(), "linux".into());
    n.attributes.insert("cpu.numcores".into(), "4".into());
    n.attributes.insert("unique.network.ip-address".into(), format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
    n.meta.insert("tier".into(), if i.is_multiple_of(2) { "gold" } else { "silver" }.into());
    n.meta.insert("rack".into(), format!("r{}", i % RACKS));
    n.drivers.insert("raw_exec".into(), DriverInfo { detected: true, healthy: true, ..Default::default() });
    n
}

fn make_job(j: usize, count: u32) -> Job {
    let mut config = BTreeMap::new();
    config.insert("command".to_string(), serde_json::json!("/bin/sleep"));
    config.insert("args".to_string(), serde_json::json!(["3600"]));
    let mut job = Job {
        id: format!("bench-{j:03}"),
        datacenters: vec!["dc1".into()],
        constraints: vec![Constraint {
            l_target: "${attr.kernel.name}".into(),
            operand: "=".into(),
            r_target: "linux".into(),
        }],
        task_groups: vec![TaskGroup {
            name: "app".into(),
            count,
            tasks: vec![Task {
                name: "main".into(),
                driver: "raw_exec".into(),
                config,
                resources: Some(Resources { cpu: TASK_CPU_MHZ, memory_mb: TASK_MEMORY_MB, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    if j.is_multiple_of(SPREAD_EVERY) {
        job.task_groups[0].spreads.push(Spread { attribute: "${meta.rack}".into(), weight: 50, spread_target: vec![] });
    }
    if j.is_multiple_of(AFFINITY_EVERY) {
        job.affinities.push(Affinity {
            l_target: "${meta.tier}".into(),
            operand: "=".into(),
            r_target: "silver".into(),
            weight: 50,
        });
    }
    if j.is_multiple_of(CONSTRAINED_EVERY) {
        job.task_groups[0].constraints.push(Constraint {
            l_target: "${meta.tier}".into(),
            operand: "=".into(),
            r_target: "gold".into(),
        });
    }
    job.canonicalize();
    job
}

/// A naive first-fit over the same nodes: the cheapest loop that places the
/// same allocations, checking only CPU, memory and the tier constraint.
fn first_fit_baseline(nodes: &[Node], jobs: usize, count: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut free: Vec<(u64, u64, bool)> = nodes
        .iter()
        .map(|n| {
            let gold = n.meta.get("tier").map(String::as_str) == Some("gold");
            (n.node_resources.cpu.cpu_shares, n.node_resources.memory.memory_mb, gold)
        })
        .collect();
    let mut placed = 0;
    let mut assignment: Vec<u32> = Vec::with_capacity(jobs * count);
    for j in 0..jobs {
        let need_gold = j.is_multiple_of(CONSTRAINED_EVERY);
        for _ in 0..count {
            let fit = free
                .iter()
                .position(|&(cpu, mem, gold)| (!need_gold || gold) && cpu >= TASK_CPU_MHZ && mem >= TASK_MEMORY_MB);
            if let Some(i) = fit {
                free[i].0 -= TASK_CPU_MHZ;
                free[i].1 -= TASK_MEMORY_MB;
                assignment.push(i as u32);
                placed += 1;
            }
        }
    }
    std::hint::black_box(&assignment);
    (placed, started.elapsed())
}

fn main() {
    let node_count = env_usize("BERTH_BENCH_NODES", 5_000);
    let job_count = env_usize("BERTH_BENCH_JOBS", 100);
    let per_job = env_usize("BERTH_BENCH_COUNT", 1_000);
    let expected = job_count * per_job;
    println!("scheduler bench: {node_count} nodes, {job_count} jobs x {per_job} allocations");

    let store = StateStore::in_memory();
    let nodes: Vec<Node> = (0..node_count).map(make_node).collect();
    let setup = Instant::now();
    store.apply(WriteBatch { nodes: nodes.clone(), ..Default::default() }).expect("register nodes");
    let jobs: Vec<Job> = (0..job_count).map(|j| make_job(j, per_job as u32)).collect();
    store.apply(WriteBatch { jobs: jobs.clone(), ..Default::default() }).expect("register jobs");
    println!("setup (nodes + jobs registered):  {:>10.1} ms", setup.elapsed().as_secs_f64() * 1e3);

    let mut placements = 0usize;
    let mut failed_groups = 0usize;
    let (mut t_eval, mut t_schedule, mut t_apply) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    for job in &jobs {
        let t0 = Instant::now();
        let eval = Evaluation::pending(job, "job-register");
        store.apply(WriteBatch { evals: vec![eval.clone()], ..Default::default() }).expect("create eval");
        let t1 = Instant::now();
        let snap = store.snapshot();
        let eval = snap.eval(&eval.id).expect("eval stored");
        let plan = scheduler::process(&snap, &eval);
        let t2 = Instant::now();
        placements += plan.place.len();
        failed_groups += plan.failed_tg_allocs.len();
        let batch = berth::server::plan_apply::plan_write(&snap, &eval, plan).batch;
        // Release the snapshot before applying, or the store has to copy
        // every table to apply the batch (`Arc::make_mut`).
        drop(snap);
        store.apply(batch).expect("apply plan");
        let t3 = Instant::now();
        t_eval += t1 - t0;
        t_schedule += t2 - t1;
        t_apply += t3 - t2;
    }
    let wall = started.elapsed();
    let rate = placements as f64 / wall.as_secs_f64();

    let (baseline_placed, baseline) = first_fit_baseline(&nodes, job_count, per_job);
    let baseline_rate = baseline_placed as f64 / baseline.as_secs_f64();

    // What holding the snapshot across `apply` would cost per eval at the end
    // of the run: one full copy of the tables.
    let snap = store.snapshot();
    let copy_started = Instant::now();
    let copy = (*snap).clone();
    let copy_time = copy_started.elapsed();
    drop(copy);

    println!("placements:                       {placements:>10}");
    println!("wall time:                        {:>10.1} ms", wall.as_secs_f64() * 1e3);
    println!("  create evals:                   {:>10.1} ms", t_eval.as_secs_f64() * 1e3);
    println!("  scheduler::process:             {:>10.1} ms", t_schedule.as_secs_f64() * 1e3);
    println!("  build batch + apply:            {:>10.1} ms", t_apply.as_secs_f64() * 1e3);
    println!(
        "placements/s:                     {rate:>10.0}  (target >= 50000: {})",
        if rate >= 50_000.0 { "met" } else { "NOT met" }
    );
    println!("baseline first-fit placements:    {baseline_placed:>10}");
    println!("baseline first-fit time:          {:>10.1} ms", baseline.as_secs_f64() * 1e3);
    println!("baseline placements/s:            {baseline_rate:>10.0}");
    println!("scheduler / baseline time ratio:  {:>10.1}x", wall.as_secs_f64() / baseline.as_secs_f64());
    println!("one full Tables copy at the end:  {:>10.1} ms", copy_time.as_secs_f64() * 1e3);

    // Verification: every allocation exists, indexes are complete, the
    // constraint held, and no node is over-committed.
    let live: Vec<_> = snap.allocs().filter(|a| !a.is_terminal()).collect();
    assert_eq!(failed_groups, 0, "some placements failed");
    assert_eq!(placements, expected, "placements reported by the plans");
    assert_eq!(live.len(), expected, "live allocations in the store");
    assert_eq!(baseline_placed, expected, "baseline placements");
    let nodes_by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut used: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut indexes: HashMap<&str, HashSet<u32>> = HashMap::new();
    for a in &live {
        let node = nodes_by_id[a.node_id.as_str()];
        let u = used.entry(a.node_id.as_str()).or_default();
        for t in a.allocated_resources.tasks.values() {
            u.0 += t.cpu.cpu_shares;
            u.1 += t.memory.memory_mb;
        }
        assert!(indexes.entry(a.job_id.as_str()).or_default().insert(a.index()), "duplicate index in {}", a.name);
        let job_number: usize = a.job_id.trim_start_matches("bench-").parse().expect("bench job id");
        if job_number.is_multiple_of(CONSTRAINED_EVERY) {
            assert_eq!(node.meta["tier"], "gold", "constraint violated by {}", a.name);
        }
    }
    for (id, (cpu, mem)) in &used {
        let n = nodes_by_id[id];
        assert!(*cpu <= n.node_resources.cpu.cpu_shares, "node {} cpu over-committed: {cpu}", n.name);
        assert!(*mem <= n.node_resources.memory.memory_mb, "node {} memory over-committed: {mem}", n.name);
    }
    assert!(indexes.values().all(|s| s.len() == per_job && s.iter().all(|&i| (i as usize) < per_job)));
    println!("nodes used:                       {:>10}", used.len());
    println!("verified: {expected} live allocations, indexes complete, constraints held, no node over-committed");
}
