//! An allocation's health in its deployment, as Nomad's client decides
//! it: healthy once every task that should run has run, and (with
//! `health_check = "checks"`) every check a deployment waits for has
//! passed, for `min_healthy_time` without a break; unhealthy when a task
//! fails or dies, or when `healthy_deadline` passes first. Pure: the alloc
//! runner feeds it task states, check health and the time, and reports
//! the verdict.

use std::collections::BTreeMap;

use crate::client::hook::ChecksHealth;
use crate::client::taskrunner::task_state;
use crate::structs::{Allocation, Task, TaskPhase, TaskState, JOB_TYPE_SERVICE};
use crate::util::format_duration;

/// What the tracker decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy for the deployment.
    Healthy,
    /// Unhealthy, and why (Nomad's words).
    Unhealthy(String),
}

/// How the tasks stand.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tasks {
    /// Not all started yet (or one restarts).
    Starting,
    /// All running since this time (Unix nanoseconds).
    RunningSince(i64),
    /// One failed or died.
    Broken(&'static str),
}

/// Tracks one allocation's health for one deployment.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    /// The deployment the verdict is for.
    pub deployment_id: String,
    tasks_spec: Vec<Task>,
    use_checks: bool,
    min_healthy: i64,
    healthy_deadline: i64,
    /// Unix nanoseconds: unhealthy when not healthy by then.
    deadline: i64,
    tasks: Tasks,
    /// Since when every check passes (Unix nanoseconds), if it does.
    checks_since: Option<i64>,
    failing: Vec<String>,
}

impl HealthTracker {
    /// A tracker for an allocation that waits for its health in its
    /// deployment (a service job's group with an `update` block whose
    /// `health_check` is not `manual`, not decided yet), started `now`.
    pub fn for_alloc(alloc: &Allocation, now: i64) -> Option<HealthTracker> {
        if alloc.deployment_id.is_empty() || alloc.deployment_status.as_ref().is_some_and(|d| d.healthy.is_some()) {
            return None;
        }
        let job = alloc.job.as_ref().filter(|j| j.job_type == JOB_TYPE_SERVICE)?;
        let tg = job.task_group(&alloc.task_group)?;
        let update = tg.update.as_ref().filter(|u| u.max_parallel > 0 && u.health_check != "manual")?;
        let has_checks = tg
            .services
            .iter()
            .chain(tg.tasks.iter().flat_map(|t| t.services.iter()))
            .any(|s| s.checks.iter().any(|c| c.mode() == crate::structs::check_mode::HEALTHINESS));
        Some(HealthTracker {
            deployment_id: alloc.deployment_id.clone(),
            tasks_spec: tg.tasks.clone(),
            use_checks: update.health_check == "checks" && has_checks,
            min_healthy: update.min_healthy_time,
            healthy_deadline: update.healthy_deadline,
            deadline: now.saturating_add(update.healthy_deadline),
            tasks: Tasks::Starting,
            checks_since: None,
            failing: Vec::new(),
        })
    }

    /// The tasks' states changed.
    pub fn tasks(&mut self, states: &BTreeMap<String, TaskState>) {
        self.tasks = tasks_health(&self.tasks_spec, states);
    }

    /// The checks' health changed (at `now`).
    pub fn checks(&mut self, health: &ChecksHealth, now: i64) {
        self.failing = health.failing.clone();
        match (health.passing(), self.checks_since) {
            (true, None) => self.checks_since = Some(now),
            (false, _) => self.checks_since = None,
            (true, Some(_)) => {}
        }
    }

    /// When it would be healthy if nothing changes.
    fn healthy_at(&self) -> Option<i64> {
        let Tasks::RunningSince(tasks) = self.tasks else { return None };
        let since = match self.use_checks {
            true => tasks.max(self.checks_since?),
            false => tasks,
        };
        Some(since.saturating_add(self.min_healthy))
    }

    /// When to look again: the time it turns healthy, or its deadline.
    pub fn wake_at(&self) -> i64 {
        self.healthy_at().map_or(self.deadline, |at| at.min(self.deadline))
    }

    /// The verdict at `now`, once there is one.
    pub fn verdict(&self, now: i64) -> Option<Verdict> {
        if let Tasks::Broken(why) = self.tasks {
            return Some(Verdict::Unhealthy(why.into()));
        }
        if self.healthy_at().is_some_and(|at| at <= now && at <= self.deadline) {
            return Some(Verdict::Healthy);
        }
        if now < self.deadline {
            return None;
        }
        let (min, deadline) = (format_duration(self.min_healthy), format_duration(self.healthy_deadline));
        Some(Verdict::Unhealthy(match self.tasks {
            Tasks::Starting => format!("Task not running by healthy_deadline of {deadline}"),
            Tasks::RunningSince(since) if since.saturating_add(self.min_healthy) > self.deadline => {
                format!("Task not running for min_healthy_time of {min} by healthy_deadline of {deadline}")
            }
            _ if !self.failing.is_empty() => format!("Services not healthy by deadline: {}", self.failing.join(", ")),
            _ => format!("Checks not passing for min_healthy_time of {min} by healthy_deadline of {deadline}"),
        }))
    }
}

/// How the tasks that count stand: poststop tasks and finished poststart
/// ones do not; a prestart task that ran to completion is fine; any other
/// task that failed or ended breaks the allocation.
fn tasks_health(tasks: &[Task], states: &BTreeMap<String, TaskState>) -> Tasks {
    let mut latest = 0i64;
    let mut all_started = true;
    for task in tasks {
        let phase = task.phase();
        if phase == TaskPhase::Poststop {
            continue;
        }
        let Some(state) = states.get(&task.name) else {
            all_started = false;
            continue;
        };
        if state.failed {
            return Tasks::Broken("Unhealthy because of failed task");
        }
        if state.state == task_state::DEAD {
            if task.is_ephemeral() {
                continue;
            }
            return Tasks::Broken("Unhealthy because of dead task");
        }
        if state.state != task_state::RUNNING {
            all_started = false;
            continue;
        }
        let started = state.started_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        latest = latest.max(started.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0));
    }
    if all_started {
        Tasks::RunningSince(latest)
    } else {
        Tasks::Starting
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::structs::{Job, Service, ServiceCheck, TaskGroup, TaskLifecycle, UpdateStrategy};
    use crate::util::rfc3339;

    const S: i64 = 1_000_000_000;

    fn alloc(health_check: &str, with_check: bool) -> Allocation {
        let mut web = Task { name: "web".into(), ..Default::default() };
        if with_check {
            web.services.push(Service {
                name: "web".into(),
                checks: vec![ServiceCheck { name: "alive".into(), ..Default::default() }],
                ..Default::default()
            });
        }
        let init = Task {
            name: "init".into(),
            lifecycle: Some(TaskLifecycle { hook: "prestart".into(), sidecar: false }),
            ..Default::default()
        };
        let update = UpdateStrategy {
            max_parallel: 1,
            health_check: health_check.into(),
            min_healthy_time: 10 * S,
            healthy_deadline: 60 * S,
            ..Default::default()
        };
        let tg = TaskGroup { name: "g".into(), tasks: vec![init, web], update: Some(update), ..Default::default() };
        let job = Job { job_type: JOB_TYPE_SERVICE.into(), task_groups: vec![tg], ..Default::default() };
        Allocation {
            deployment_id: "d1".into(),
            task_group: "g".into(),
            job: Some(Arc::new(job)),
            ..Default::default()
        }
    }

    fn states(web: &str, started: i64, init_dead: bool) -> BTreeMap<String, TaskState> {
        let mut m = BTreeMap::new();
        let init = if init_dead { task_state::DEAD } else { task_state::RUNNING };
        m.insert("init".into(), TaskState { state: init.into(), ..Default::default() });
        m.insert(
            "web".into(),
            TaskState { state: web.into(), started_at: Some(rfc3339(started)), ..Default::default() },
        );
        m
    }

    #[test]
    fn healthy_after_tasks_and_checks_pass_for_min_healthy_time() {
        let mut t = HealthTracker::for_alloc(&alloc("checks", true), 0).unwrap();
        t.tasks(&states(task_state::RUNNING, S, true));
        assert_eq!(t.verdict(20 * S), None, "checks have not passed");
        t.checks(&ChecksHealth { failing: vec![], total: 1 }, 5 * S);
        assert_eq!(t.wake_at(), 15 * S);
        assert_eq!(t.verdict(14 * S), None);
        t.checks(&ChecksHealth { failing: vec!["web".into()], total: 1 }, 14 * S);
        t.checks(&ChecksHealth { failing: vec![], total: 1 }, 16 * S);
        assert_eq!(t.verdict(25 * S), None, "a failing check starts min_healthy_time again");
        assert_eq!(t.verdict(26 * S), Some(Verdict::Healthy));
    }

    #[test]
    fn task_states_mode_ignores_checks_and_a_restart_starts_the_wait_again() {
        let mut t = HealthTracker::for_alloc(&alloc("task_states", true), 0).unwrap();
        t.tasks(&states(task_state::RUNNING, S, true));
        assert_eq!(t.verdict(11 * S), Some(Verdict::Healthy));
        t.tasks(&states(task_state::RUNNING, 8 * S, true));
        assert_eq!((t.verdict(11 * S), t.wake_at()), (None, 18 * S));
    }

    #[test]
    fn failures_and_the_deadline_are_unhealthy_with_nomads_reasons() {
        let a = alloc("checks", true);
        let mut t = HealthTracker::for_alloc(&a, 0).unwrap();
        t.tasks(&states(task_state::PENDING, 0, false));
        assert_eq!(t.verdict(60 * S), Some(Verdict::Unhealthy("Task not running by healthy_deadline of 1m0s".into())));
        t.tasks(&states(task_state::RUNNING, 55 * S, true));
        let late = "Task not running for min_healthy_time of 10s by healthy_deadline of 1m0s";
        assert_eq!(t.verdict(60 * S), Some(Verdict::Unhealthy(late.into())));
        t.tasks(&states(task_state::RUNNING, S, true));
        t.checks(&ChecksHealth { failing: vec!["web".into()], total: 1 }, S);
        let failing = "Services not healthy by deadline: web";
        assert_eq!(t.verdict(60 * S), Some(Verdict::Unhealthy(failing.into())));
        let mut failed = states(task_state::DEAD, S, true);
        failed.get_mut("web").unwrap().failed = true;
        t.tasks(&failed);
        assert_eq!(t.verdict(2 * S), Some(Verdict::Unhealthy("Unhealthy because of failed task".into())));
        t.tasks(&states(task_state::DEAD, S, true));
        assert_eq!(t.verdict(2 * S), Some(Verdict::Unhealthy("Unhealthy because of dead task".into())));
    }

    #[test]
    fn only_undecided_allocations_of_deployments_with_automatic_health_are_tracked() {
        assert!(HealthTracker::for_alloc(&alloc("manual", true), 0).is_none());
        let mut decided = alloc("checks", true);
        decided.deployment_status =
            Some(crate::structs::AllocDeploymentStatus { healthy: Some(true), ..Default::default() });
        assert!(HealthTracker::for_alloc(&decided, 0).is_none());
        let mut outside = alloc("checks", true);
        outside.deployment_id.clear();
        assert!(HealthTracker::for_alloc(&outside, 0).is_none());
        let t = HealthTracker::for_alloc(&alloc("checks", false), 0).unwrap();
        assert!(!t.use_checks, "no checks: task states decide");
    }
}
