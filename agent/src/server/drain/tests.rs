//! The drainer's pacing over an in-memory state: which allocations one
//! look at a draining node marks, by job type and migrate block.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{drain_step, health_settled, DrainStep};
use crate::server::state::{StateStore, WriteBatch};
use crate::structs::{
    client_status, desired, node_status, Allocation, DrainSpec, DrainStrategy, Job, MigrateStrategy, Node, Task,
    TaskGroup, TaskState, JOB_TYPE_BATCH, JOB_TYPE_SERVICE, JOB_TYPE_SYSTEM,
};
use crate::util::{now_nanos, rfc3339};

const SECOND: i64 = 1_000_000_000;

fn node(id: &str, draining: bool) -> Node {
    let now = now_nanos();
    Node {
        id: id.into(),
        name: id.into(),
        status: node_status::READY.into(),
        drain: draining,
        drain_strategy: draining
            .then(|| DrainStrategy::start(&DrainSpec { deadline: 0, ignore_system_jobs: false }, now)),
        ..Default::default()
    }
}

fn job(id: &str, job_type: &str, count: u32, max_parallel: i64) -> Arc<Job> {
    let mut job = Job {
        id: id.into(),
        job_type: job_type.into(),
        task_groups: vec![TaskGroup {
            name: "g".into(),
            count,
            tasks: vec![Task { name: "t".into(), driver: "raw_exec".into(), ..Default::default() }],
            ..Default::default()
        }],
        ..Default::default()
    };
    job.canonicalize();
    if let Some(m) = &mut job.task_groups[0].migrate {
        m.max_parallel = max_parallel;
        m.min_healthy_time = 5 * SECOND;
    }
    Arc::new(job)
}

/// A running allocation of `job` on `node`, its task started `age` ago.
fn alloc(job: &Arc<Job>, node: &str, index: u32, age: i64) -> Allocation {
    let now = now_nanos();
    let state = TaskState { state: "running".into(), started_at: Some(rfc3339(now - age)), ..Default::default() };
    Allocation {
        id: format!("{}-{node}-{index}", job.id),
        namespace: job.namespace.clone(),
        name: format!("{}.g[{index}]", job.id),
        node_id: node.into(),
        job_id: job.id.clone(),
        job: Some(Arc::clone(job)),
        task_group: "g".into(),
        desired_status: desired::RUN.into(),
        client_status: client_status::RUNNING.into(),
        task_states: BTreeMap::from([("t".to_string(), state)]),
        create_time: now - age,
        ..Default::default()
    }
}

struct World {
    store: StateStore,
}

impl World {
    fn new(jobs: &[&Arc<Job>]) -> Self {
        let store = StateStore::in_memory();
        let batch = WriteBatch {
            nodes: vec![node("a", true), node("b", false)],
            jobs: jobs.iter().map(|j| (***j).clone()).collect(),
            ..Default::default()
        };
        store.apply(batch).unwrap();
        World { store }
    }

    fn put(&self, allocs: Vec<Allocation>) {
        self.store.apply(WriteBatch { allocs, ..Default::default() }).unwrap();
    }

    fn step_at(&self, now: i64) -> DrainStep {
        let snap = self.store.snapshot();
        let node = snap.node("a").unwrap();
        drain_step(&snap, &node, node.drain_strategy.as_ref().unwrap(), now)
    }

    fn step(&self) -> DrainStep {
        self.step_at(now_nanos())
    }

    /// Marks allocations the way the drainer does, then the scheduler's
    /// stop of each.
    fn migrate(&self, ids: &[String]) {
        let snap = self.store.snapshot();
        let stopped = ids
            .iter()
            .map(|id| {
                let mut a = (*snap.alloc(id).unwrap()).clone();
                a.desired_transition.migrate = Some(true);
                a.desired_status = desired::STOP.into();
                a
            })
            .collect();
        self.put(stopped);
    }
}

#[test]
fn a_service_group_moves_max_parallel_at_a_time_and_waits_for_healthy_replacements() {
    let web = job("web", JOB_TYPE_SERVICE, 3, 1);
    let world = World::new(&[&web]);
    world.put((0..3).map(|i| alloc(&web, "a", i, 60 * SECOND)).collect());
    let first = world.step();
    assert_eq!((first.migrate.len(), first.done), (1, false));
    world.migrate(&first.migrate);
    // Two healthy left, threshold 3 - 1 = 2: nothing more until a
    // replacement has run min_healthy_time.
    assert!(world.step().migrate.is_empty());
    world.put(vec![alloc(&web, "b", 0, SECOND)]);
    assert!(world.step().migrate.is_empty(), "a replacement 1 s old is not healthy yet (min 5 s)");
    world.put(vec![alloc(&web, "b", 0, 6 * SECOND)]);
    let second = world.step();
    assert_eq!(second.migrate.len(), 1);
    assert_ne!(second.migrate, first.migrate);
}

#[test]
fn max_parallel_two_moves_two_and_zero_waits_for_the_deadline() {
    let web = job("web", JOB_TYPE_SERVICE, 4, 2);
    let world = World::new(&[&web]);
    world.put((0..4).map(|i| alloc(&web, "a", i, 60 * SECOND)).collect());
    assert_eq!(world.step().migrate.len(), 2);

    let pinned = job("pinned", JOB_TYPE_SERVICE, 1, 0);
    let world = World::new(&[&pinned]);
    world.put(vec![alloc(&pinned, "a", 0, 60 * SECOND)]);
    assert!(world.step().migrate.is_empty());
    let snap = world.store.snapshot();
    let mut node = (*snap.node("a").unwrap()).clone();
    node.drain_strategy =
        Some(DrainStrategy::start(&DrainSpec { deadline: SECOND, ignore_system_jobs: false }, now_nanos()));
    let strategy = node.drain_strategy.clone().unwrap();
    let forced = drain_step(&snap, &node, &strategy, now_nanos() + 2 * SECOND);
    assert_eq!(forced.migrate, vec!["pinned-a-0".to_string()]);
}

#[test]
fn batch_waits_for_the_deadline_and_system_goes_last() {
    let batch = job("batch", JOB_TYPE_BATCH, 1, 1);
    let web = job("web", JOB_TYPE_SERVICE, 1, 1);
    let sys = job("sys", JOB_TYPE_SYSTEM, 1, 1);
    let world = World::new(&[&batch, &web, &sys]);
    world.put(vec![
        alloc(&batch, "a", 0, 60 * SECOND),
        alloc(&web, "a", 0, 60 * SECOND),
        alloc(&sys, "a", 0, 60 * SECOND),
    ]);
    // The service allocation moves; batch waits; system waits for both.
    assert_eq!(world.step().migrate, vec!["web-a-0".to_string()]);
    world.migrate(&["web-a-0".to_string()]);
    assert!(world.step().migrate.is_empty());
    let mut done = alloc(&batch, "a", 0, 60 * SECOND);
    done.client_status = client_status::COMPLETE.into();
    world.put(vec![done]);
    assert_eq!(world.step().migrate, vec!["sys-a-0".to_string()]);
    world.migrate(&["sys-a-0".to_string()]);
    assert_eq!(world.step(), DrainStep { migrate: Vec::new(), done: true });
}

#[test]
fn ignoring_system_jobs_leaves_them_and_completes() {
    let sys = job("sys", JOB_TYPE_SYSTEM, 1, 1);
    let world = World::new(&[&sys]);
    world.put(vec![alloc(&sys, "a", 0, 60 * SECOND)]);
    let snap = world.store.snapshot();
    let node = snap.node("a").unwrap();
    let strategy = DrainStrategy::start(&DrainSpec { deadline: 0, ignore_system_jobs: true }, now_nanos());
    assert_eq!(drain_step(&snap, &node, &strategy, now_nanos()), DrainStep { migrate: Vec::new(), done: true });
}

#[test]
fn health_is_settled_after_min_healthy_time_or_the_healthy_deadline() {
    let web = job("web", JOB_TYPE_SERVICE, 1, 1);
    let pace = MigrateStrategy { min_healthy_time: 10 * SECOND, healthy_deadline: 60 * SECOND, ..Default::default() };
    let now = now_nanos();
    assert!(!health_settled(&alloc(&web, "b", 0, 5 * SECOND), &pace, now));
    assert!(health_settled(&alloc(&web, "b", 0, 11 * SECOND), &pace, now));
    let mut pending = alloc(&web, "b", 0, 30 * SECOND);
    pending.client_status = client_status::PENDING.into();
    pending.task_states.clear();
    assert!(!health_settled(&pending, &pace, now));
    pending.create_time = now - 61 * SECOND;
    assert!(health_settled(&pending, &pace, now), "past its healthy_deadline it will not get healthier");
}
