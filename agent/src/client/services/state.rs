//! The pure half of an allocation's services: which are live for the
//! tasks that run, what each check's results make of its status, when a
//! check's failures restart its task, and the registrations that follow.
//! No I/O: the watcher feeds it and carries out what it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::address::Places;
use super::probe::{Outcome, Probe};
use super::scheduler::ScheduledCheck;
use crate::client::hook::ChecksHealth;
use crate::structs::{
    check_mode, check_status, on_update, Allocation, CheckQueryResult, Service, ServiceCheck, ServiceRegistration,
};

/// One `service` block of the allocation.
#[derive(Debug, Clone)]
pub struct Entry {
    service: Service,
    /// The task of a task service, else empty.
    task: String,
    /// The task it follows: its own, a group service's `task`, or none
    /// (a group service is live while any task runs).
    follows: Option<String>,
}

/// The allocation's services.
#[derive(Debug, Clone, Default)]
pub struct Services(Vec<Entry>);

impl Services {
    /// Group services, then each task's.
    pub fn of(alloc: &Allocation) -> Self {
        let Some(tg) = alloc.group() else { return Services::default() };
        let group = tg.services.iter().map(|s| Entry {
            service: s.clone(),
            task: String::new(),
            follows: (!s.task_name.is_empty()).then(|| s.task_name.clone()),
        });
        let tasks = tg.tasks.iter().flat_map(|t| {
            t.services.iter().map(|s| Entry { service: s.clone(), task: t.name.clone(), follows: Some(t.name.clone()) })
        });
        Services(group.chain(tasks).collect())
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One check of a live service.
#[derive(Debug, Clone)]
struct CheckState {
    /// Which entry it belongs to.
    entry: usize,
    check: ServiceCheck,
    result: CheckQueryResult,
    successes: u32,
    failures: u32,
    /// Unhealthy results in a row past the grace period (`check_restart`).
    unhealthy: u32,
    /// When failures start to count for `check_restart`.
    counts_from: Instant,
    /// The task it runs in or restarts, if any.
    task: Option<String>,
}

/// What a change of the running tasks means for the checks.
#[derive(Debug, Default)]
pub struct Change {
    /// Checks to run from now on.
    pub started: Vec<ScheduledCheck>,
    /// Checks (by ID) to stop running.
    pub stopped: Vec<String>,
}

/// An allocation's services and checks as they are.
#[derive(Debug)]
pub struct ServicesState {
    group: String,
    alloc_id: String,
    entries: Services,
    places: Places,
    running: BTreeSet<String>,
    checks: BTreeMap<String, CheckState>,
    /// Counts the changes to what is registered and to the checks' health,
    /// so that a steady check's results cost no recomputation.
    revision: u64,
}

impl ServicesState {
    /// Nothing running yet.
    pub fn new(alloc: &Allocation, entries: Services, places: Places) -> Self {
        ServicesState {
            group: alloc.task_group.clone(),
            alloc_id: alloc.id.clone(),
            entries,
            places,
            running: BTreeSet::new(),
            checks: BTreeMap::new(),
            revision: 0,
        }
    }

    /// Changes with what [`ServicesState::registrations`] and
    /// [`ServicesState::health`] return (it may change without them).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn live(&self, entry: &Entry) -> bool {
        match &entry.follows {
            Some(task) => self.running.contains(task),
            None => !self.running.is_empty(),
        }
    }

    /// True when some service is live.
    pub fn any_active(&self) -> bool {
        self.entries.0.iter().any(|e| self.live(e))
    }

    fn check_id(&self, entry: &Entry, check: &ServiceCheck) -> String {
        let mut h = Sha256::new();
        for part in [&self.alloc_id, &self.group, &entry.task, &entry.service.name, &check.name] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The tasks running now: checks of services that came alive start
    /// (with fresh counts), those of services that did not stay stop.
    pub fn set_running(&mut self, running: BTreeSet<String>) -> Change {
        self.revision += 1;
        let was: Vec<bool> = self.entries.0.iter().map(|e| self.live(e)).collect();
        self.running = running;
        let mut change = Change::default();
        for (i, entry) in self.entries.0.clone().iter().enumerate() {
            let now = self.live(entry);
            if now == was[i] {
                continue;
            }
            for check in &entry.service.checks {
                let id = self.check_id(entry, check);
                if !now {
                    self.checks.remove(&id);
                    change.stopped.push(id);
                    continue;
                }
                let task = [&check.task_name, &entry.task, &entry.service.task_name]
                    .into_iter()
                    .find(|t| !t.is_empty())
                    .cloned();
                let grace = check.check_restart.as_ref().map_or(0, |r| r.grace.max(0) as u64);
                let mut state = CheckState {
                    entry: i,
                    check: check.clone(),
                    result: CheckQueryResult {
                        id: id.clone(),
                        mode: check.mode().into(),
                        status: check.initial().into(),
                        output: String::new(),
                        timestamp: unix_now(),
                        group: self.group.clone(),
                        task: entry.task.clone(),
                        service: entry.service.name.clone(),
                        check: check.name.clone(),
                        status_code: 0,
                    },
                    successes: 0,
                    failures: 0,
                    unhealthy: 0,
                    counts_from: Instant::now() + Duration::from_nanos(grace),
                    task,
                };
                match self.probe(entry, check) {
                    Ok(probe) => change.started.push(ScheduledCheck {
                        id: id.clone(),
                        probe,
                        interval: Duration::from_nanos(check.interval.max(0) as u64),
                        timeout: Duration::from_nanos(check.timeout.max(0) as u64),
                    }),
                    Err(e) => {
                        state.result.status = check_status::FAILURE.into();
                        state.result.output = e;
                    }
                }
                self.checks.insert(id, state);
            }
        }
        change
    }

    /// The allocation's services as a new job version has them (an
    /// in-place update): a check that is the same as before and probes the
    /// same place keeps running with its status and counts; the others
    /// stop, and the checks of live services start afresh.
    pub fn set_services(&mut self, entries: Services) -> Change {
        let before = std::mem::take(&mut self.checks);
        let probes: BTreeMap<&String, Result<Probe, String>> =
            before.iter().map(|(id, c)| (id, self.probe(&self.entries.0[c.entry], &c.check))).collect();
        let running = std::mem::take(&mut self.running);
        self.entries = entries;
        let mut change = self.set_running(running);
        let (mut started, mut kept) = (Vec::new(), BTreeSet::new());
        for check in std::mem::take(&mut change.started) {
            let (Some(old), Some(new)) = (before.get(&check.id), self.checks.get(&check.id)) else {
                started.push(check);
                continue;
            };
            let same = old.check == new.check && old.task == new.task && probes[&check.id] == Ok(check.probe.clone());
            if !same {
                started.push(check);
                continue;
            }
            let state = CheckState { entry: new.entry, ..old.clone() };
            self.checks.insert(check.id.clone(), state);
            kept.insert(check.id);
        }
        change.started = started;
        change.stopped = before.into_keys().filter(|id| !kept.contains(id)).collect();
        change
    }

    fn probe(&self, entry: &Entry, check: &ServiceCheck) -> Result<Probe, String> {
        let (ip, port) = self.places.check(&entry.service, check)?;
        let addr = format!("{ip}:{port}");
        match check.check_type.as_str() {
            "tcp" => Ok(Probe::Tcp { addr }),
            "http" => {
                let protocol = if check.protocol.is_empty() { "http" } else { check.protocol.as_str() };
                let headers = check.header.iter().flat_map(|(k, vs)| vs.iter().map(|v| (k.clone(), v.clone())));
                Ok(Probe::Http {
                    url: format!("{protocol}://{addr}{}", check.path),
                    method: check.method.clone(),
                    headers: headers.collect(),
                    body: check.body.clone(),
                    tls_skip_verify: check.tls_skip_verify,
                })
            }
            other => Err(format!("{other} checks are not run by this client")),
        }
    }

    /// The task a check belongs to (for a check of a paused task).
    pub fn task_of_check(&self, id: &str) -> Option<&str> {
        self.checks.get(id).and_then(|c| c.task.as_deref())
    }

    /// Folds one outcome into its check's status. The result kept (and
    /// reported) changes only when the status does, so that a steady check
    /// costs the servers nothing. Returns the task to restart and why,
    /// when `check_restart`'s limit is reached.
    pub fn record(&mut self, id: &str, outcome: Outcome) -> Option<(String, String)> {
        let state = self.checks.get_mut(id)?;
        let c = &state.check;
        let before = state.result.status.clone();
        let status = if outcome.status == check_status::SUCCESS {
            state.successes += 1;
            state.failures = 0;
            if state.successes >= c.success_before_passing.max(1) {
                check_status::SUCCESS
            } else {
                before.as_str()
            }
        } else {
            state.failures += 1;
            state.successes = 0;
            if c.failures_before_critical > 0 && state.failures < c.failures_before_critical {
                if c.failures_before_warning > 0 && state.failures >= c.failures_before_warning {
                    check_status::WARNING
                } else {
                    before.as_str()
                }
            } else {
                check_status::FAILURE
            }
        }
        .to_string();
        if status != before || state.result.output.is_empty() {
            self.revision += 1;
            state.result.status = status.clone();
            state.result.output = outcome.output;
            state.result.status_code = outcome.status_code;
            state.result.timestamp = unix_now();
        }
        let restart = state.check.check_restart.as_ref()?;
        if restart.limit == 0 || Instant::now() < state.counts_from {
            return None;
        }
        let unhealthy =
            status == check_status::FAILURE || (status == check_status::WARNING && !restart.ignore_warnings);
        state.unhealthy = if unhealthy { state.unhealthy + 1 } else { 0 };
        if state.unhealthy < restart.limit {
            return None;
        }
        state.unhealthy = 0;
        state.counts_from = Instant::now() + Duration::from_nanos(restart.grace.max(0) as u64);
        let task = state.task.clone()?;
        Some((task, format!("healthcheck: check {:?} unhealthy", state.check.name)))
    }

    /// How the checks a deployment waits for stand: a check of a service
    /// not live yet does not pass; a warning passes with
    /// `on_update = "ignore_warnings"`; `on_update = "ignore"` is not
    /// looked at.
    pub fn health(&self) -> ChecksHealth {
        let mut health = ChecksHealth::default();
        for entry in &self.entries.0 {
            let mut ok = true;
            for check in entry.service.checks.iter().filter(|c| c.mode() == check_mode::HEALTHINESS) {
                health.total += 1;
                let status = self.checks.get(&self.check_id(entry, check)).map(|c| c.result.status.as_str());
                ok &= status == Some(check_status::SUCCESS)
                    || (status == Some(check_status::WARNING) && check.on_update == on_update::IGNORE_WARNINGS);
            }
            if !ok && !health.failing.contains(&entry.service.name) {
                health.failing.push(entry.service.name.clone());
            }
        }
        health
    }

    /// The registrations of the live services with their checks' results,
    /// ordered by ID. A service whose address cannot be worked out is left
    /// out (and said so in the log).
    pub fn registrations(&self, alloc_id: &str) -> Vec<ServiceRegistration> {
        let mut out = Vec::new();
        let mut by_entry: BTreeMap<usize, Vec<CheckQueryResult>> = BTreeMap::new();
        for c in self.checks.values() {
            by_entry.entry(c.entry).or_default().push(c.result.clone());
        }
        for (i, entry) in self.entries.0.iter().enumerate() {
            if !self.live(entry) {
                continue;
            }
            let (address, port) = match self.places.service(&entry.service) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(alloc_id, service = %entry.service.name, error = %e, "service not registered");
                    continue;
                }
            };
            let owner = if entry.task.is_empty() { format!("group-{}", self.group) } else { entry.task.clone() };
            let checks = by_entry.remove(&i).unwrap_or_default();
            out.push(ServiceRegistration {
                id: ServiceRegistration::id_for(alloc_id, &owner, &entry.service),
                service_name: entry.service.name.clone(),
                tags: entry.service.tags.clone(),
                address,
                port,
                checks,
                ..Default::default()
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn unix_now() -> i64 {
    crate::util::now_nanos() / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{AllocatedPort, CheckRestart, Job, Node, Task, TaskGroup};

    fn alloc(check: ServiceCheck) -> Allocation {
        let service = Service {
            name: "redis-cache".into(),
            port_label: "db".into(),
            address_mode: "auto".into(),
            checks: vec![check],
            ..Default::default()
        };
        let task = Task { name: "redis".into(), services: vec![service], ..Default::default() };
        let group = TaskGroup { name: "cache".into(), tasks: vec![task], ..Default::default() };
        let mut a = Allocation {
            id: "a1".into(),
            task_group: "cache".into(),
            job: Some(std::sync::Arc::new(Job { task_groups: vec![group], ..Default::default() })),
            ..Default::default()
        };
        a.allocated_resources.shared.ports =
            vec![AllocatedPort { label: "db".into(), value: 25000, to: 6379, host_ip: "10.0.0.5".into() }];
        a
    }

    fn tcp(configure: impl FnOnce(&mut ServiceCheck)) -> ServicesState {
        let mut check = ServiceCheck {
            name: "alive".into(),
            check_type: "tcp".into(),
            address_mode: "host".into(),
            interval: 1_000_000_000,
            timeout: 1_000_000_000,
            ..Default::default()
        };
        configure(&mut check);
        let a = alloc(check);
        let node = Node::default();
        ServicesState::new(&a, Services::of(&a), Places::new(&a, &node, None))
    }

    fn outcome(ok: bool) -> Outcome {
        let status = if ok { check_status::SUCCESS } else { check_status::FAILURE };
        Outcome { status, status_code: 0, output: format!("ok={ok}") }
    }

    fn run_redis(s: &mut ServicesState) -> String {
        let change = s.set_running(BTreeSet::from(["redis".to_string()]));
        assert_eq!(change.started.len(), 1);
        assert_eq!(change.started[0].probe, Probe::Tcp { addr: "10.0.0.5:25000".into() });
        change.started[0].id.clone()
    }

    #[test]
    fn a_service_lives_while_its_task_runs_and_reports_its_checks() {
        let mut s = tcp(|_| {});
        assert!(s.registrations("a1").is_empty());
        let id = run_redis(&mut s);
        let regs = s.registrations("a1");
        assert_eq!(regs.len(), 1);
        assert_eq!((regs[0].address.as_str(), regs[0].port), ("10.0.0.5", 25000));
        assert_eq!(regs[0].id, "_nomad-task-a1-redis-redis-cache-db");
        assert_eq!(regs[0].checks[0].status, check_status::PENDING);
        s.record(&id, outcome(true));
        assert_eq!(s.registrations("a1")[0].checks[0].status, check_status::SUCCESS);
        // A steady status does not change what is reported.
        let before = s.registrations("a1");
        s.record(&id, outcome(true));
        assert_eq!(s.registrations("a1"), before);
        let change = s.set_running(BTreeSet::new());
        assert_eq!(change.stopped, [id]);
        assert!(s.registrations("a1").is_empty());
    }

    #[test]
    fn thresholds_hold_a_status_until_enough_results_agree() {
        let mut s = tcp(|c| {
            c.success_before_passing = 2;
            c.failures_before_warning = 1;
            c.failures_before_critical = 3;
        });
        let id = run_redis(&mut s);
        let status = |s: &ServicesState| s.registrations("a1")[0].checks[0].status.clone();
        s.record(&id, outcome(true));
        assert_eq!(status(&s), check_status::PENDING);
        s.record(&id, outcome(true));
        assert_eq!(status(&s), check_status::SUCCESS);
        s.record(&id, outcome(false));
        assert_eq!(status(&s), check_status::WARNING);
        s.record(&id, outcome(false));
        assert_eq!(status(&s), check_status::WARNING);
        s.record(&id, outcome(false));
        assert_eq!(status(&s), check_status::FAILURE);
    }

    #[test]
    fn check_restart_asks_for_a_restart_after_its_limit_of_failures_in_a_row() {
        let mut s = tcp(|c| c.check_restart = Some(CheckRestart { limit: 2, grace: 0, ignore_warnings: false }));
        let id = run_redis(&mut s);
        assert_eq!(s.record(&id, outcome(false)), None);
        assert_eq!(s.record(&id, outcome(true)), None, "a pass starts the count again");
        assert_eq!(s.record(&id, outcome(false)), None);
        let restart = s.record(&id, outcome(false)).expect("limit reached");
        assert_eq!(restart.0, "redis");
        assert!(restart.1.contains("\"alive\" unhealthy"), "{}", restart.1);
        assert_eq!(s.record(&id, outcome(false)), None, "counted again from zero");
        let mut graced = tcp(|c| {
            c.check_restart = Some(CheckRestart { limit: 1, grace: 3_600_000_000_000, ignore_warnings: false })
        });
        let id = run_redis(&mut graced);
        assert_eq!(graced.record(&id, outcome(false)), None, "failures in the grace period do not count");
    }

    #[test]
    fn an_in_place_update_keeps_unchanged_checks_and_restarts_changed_ones() {
        let mut s = tcp(|_| {});
        let id = run_redis(&mut s);
        s.record(&id, outcome(true));
        let same = alloc(s.checks[&id].check.clone());
        let change = s.set_services(Services::of(&same));
        assert!(change.started.is_empty() && change.stopped.is_empty(), "{change:?}");
        assert_eq!(s.registrations("a1")[0].checks[0].status, check_status::SUCCESS, "keeps its status");
        assert!(s.health().passing());

        let mut changed = s.checks[&id].check.clone();
        changed.interval = 5_000_000_000;
        let change = s.set_services(Services::of(&alloc(changed)));
        assert_eq!(change.stopped, [id]);
        assert_eq!(change.started.len(), 1);
        assert_eq!(change.started[0].interval, Duration::from_secs(5));
        assert_eq!(s.registrations("a1")[0].checks[0].status, check_status::PENDING, "starts afresh");
        assert!(!s.health().passing());
    }
}
