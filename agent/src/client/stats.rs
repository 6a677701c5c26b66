//! Resource usage of the allocations running here. Each running task's
//! driver is read when asked (the stats endpoint, a metrics scrape); CPU
//! is a rate over the time since that task's previous reading (the first
//! one: since the task started), so a scrape every 15 s yields the mean of
//! those 15 s. Nothing is polled in the background.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::control::ControlError;
use super::driver::usage::TaskUsage;
use super::state::PersistedAlloc;
use super::Client;
use crate::telemetry::Point;
use crate::wire::stats::{AllocResourceUsage, CpuStats, ResourceUsage, TaskResourceUsage};

impl Client {
    /// What allocation `alloc_id`'s running tasks use (Nomad's
    /// `/v1/client/allocation/:id/stats`).
    pub async fn alloc_stats(&self, alloc_id: &str) -> Result<AllocResourceUsage, ControlError> {
        let p = self.store.get(alloc_id).ok_or_else(|| ControlError::UnknownAlloc(alloc_id.into()))?;
        let tasks = self.task_usage(&p).await;
        let mut out = AllocResourceUsage { timestamp: crate::util::now_nanos(), ..Default::default() };
        for t in tasks.values() {
            out.resource_usage.add(&t.resource_usage);
        }
        out.tasks = tasks;
        Ok(out)
    }

    /// Nomad's `nomad.client.allocs.*` gauges of every running task, when
    /// `telemetry { publish_allocation_metrics = true }`.
    pub async fn allocation_gauges(&self) -> Vec<Point> {
        if !self.config.publish_allocation_metrics {
            return Vec::new();
        }
        let host = self.node.read().name.clone();
        let mut out = Vec::new();
        for p in self.store.load().iter().filter(|p| !p.handles.is_empty()) {
            for (task, usage) in self.task_usage(p).await {
                let labels = TaskLabels {
                    alloc_id: &p.alloc.id,
                    job: &p.alloc.job_id,
                    namespace: &p.alloc.namespace,
                    task_group: &p.alloc.task_group,
                    task: &task,
                    host: &host,
                };
                let given = p.alloc.allocated_resources.tasks.get(&task);
                let memory_mb = given.map_or(0, |r| r.memory.memory_mb);
                let cpu = given.map_or(0, |r| r.cpu.cpu_shares);
                out.extend(task_points(&labels, &usage, memory_mb, cpu));
            }
        }
        out
    }

    /// Reads the usage of an allocation's running tasks from their drivers;
    /// a task whose driver cannot tell is left out. Readings of
    /// allocations that no longer run here are forgotten.
    async fn task_usage(&self, p: &PersistedAlloc) -> BTreeMap<String, TaskResourceUsage> {
        self.usage.retain(&|id| self.runs(id));
        let node = self.node.read().clone();
        let cores = node.node_resources.cpu.total_core_count.max(1);
        let mhz_per_core = node.node_resources.cpu.cpu_shares as f64 / cores as f64;
        let readings = p.handles.iter().filter_map(|(task, handle)| {
            let driver = self.drivers.get(&handle.driver)?.clone();
            Some(async move { (task, handle, driver.stats(handle).await) })
        });
        let mut out = BTreeMap::new();
        for (task, handle, reading) in futures::future::join_all(readings).await {
            let reading = match reading {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(alloc_id = %p.alloc.id, task, error = %e, "no usage reading");
                    continue;
                }
            };
            let started = p.task_states.get(task).and_then(|s| s.started_at.as_deref());
            let running_for = started
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).as_seconds_f64().max(0.0));
            let since = Since { handle: handle.state.to_string(), running_for };
            let usage = self.usage.rate((p.alloc.id.clone(), task.clone()), &reading, since, mhz_per_core);
            let usage = TaskResourceUsage {
                resource_usage: usage,
                timestamp: crate::util::now_nanos(),
                pids: Default::default(),
            };
            out.insert(task.clone(), usage);
        }
        out
    }
}

/// A task's previous reading.
struct Previous {
    /// Which run of the task it was (the driver handle), so a restarted
    /// task starts a new series.
    handle: String,
    user_ns: u64,
    system_ns: u64,
    total_ns: u64,
    at: Instant,
}

/// The previous reading of every task, by (allocation, task).
#[derive(Default)]
pub struct UsageTracker {
    last: parking_lot::Mutex<HashMap<(String, String), Previous>>,
}

/// Where a task's CPU rate is measured from when it has no earlier reading.
pub struct Since {
    /// The task's driver handle, serialised.
    pub handle: String,
    /// Seconds since the task started, if known.
    pub running_for: Option<f64>,
}

impl UsageTracker {
    /// Turns a reading of task `key` into Nomad's usage; `mhz_per_core`
    /// converts the CPU percentage into MHz (Nomad's TotalTicks).
    pub fn rate(&self, key: (String, String), reading: &TaskUsage, since: Since, mhz_per_core: f64) -> ResourceUsage {
        let now = Instant::now();
        let mut last = self.last.lock();
        let base = last
            .get(&key)
            .filter(|p| p.handle == since.handle && p.total_ns <= reading.total_ns)
            .map(|p| (p.user_ns, p.system_ns, p.total_ns, now.duration_since(p.at).as_secs_f64()));
        let (user0, system0, total0, seconds) = match base {
            Some(b) => b,
            None => (0, 0, 0, since.running_for.unwrap_or(0.0)),
        };
        last.insert(
            key,
            Previous {
                handle: since.handle,
                user_ns: reading.user_ns,
                system_ns: reading.system_ns,
                total_ns: reading.total_ns,
                at: now,
            },
        );
        let pct = |ns: u64, from: u64| {
            if seconds > 0.0 {
                ns.saturating_sub(from) as f64 / (seconds * 1e9) * 100.0
            } else {
                0.0
            }
        };
        let mut measured = vec!["System Mode", "User Mode"];
        if seconds > 0.0 {
            measured.extend(["Percent", "Total Ticks"]);
        }
        if reading.throttle_measured {
            measured.extend(["Throttled Periods", "Throttled Time"]);
        }
        let percent = pct(reading.total_ns, total0);
        ResourceUsage {
            memory_stats: reading.memory.clone(),
            cpu_stats: CpuStats {
                system_mode: pct(reading.system_ns, system0),
                user_mode: pct(reading.user_ns, user0),
                total_ticks: percent / 100.0 * mhz_per_core,
                throttled_periods: reading.throttled_periods,
                throttled_time: reading.throttled_ns,
                percent,
                measured: measured.into_iter().map(String::from).collect(),
            },
            device_stats: vec![],
        }
    }

    /// Forgets the tasks of allocations not in `live`.
    pub fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.last.lock().retain(|(alloc, _), _| live(alloc));
    }
}

/// Labels of one task's series, as Nomad's `nomad.client.allocs.*`.
pub struct TaskLabels<'a> {
    /// Allocation ID.
    pub alloc_id: &'a str,
    /// Job ID.
    pub job: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Task group.
    pub task_group: &'a str,
    /// Task.
    pub task: &'a str,
    /// Node name.
    pub host: &'a str,
}

/// Nomad's per-task gauges: the measured memory and CPU fields, and what
/// the task was given (`memory.allocated` in bytes, `cpu.allocated` in MHz).
pub fn task_points(l: &TaskLabels<'_>, usage: &TaskResourceUsage, memory_mb: u64, cpu_mhz: u64) -> Vec<Point> {
    let labels = [
        ("alloc_id", l.alloc_id),
        ("job", l.job),
        ("namespace", l.namespace),
        ("task_group", l.task_group),
        ("task", l.task),
        ("host", l.host),
    ];
    let m = &usage.resource_usage.memory_stats;
    let c = &usage.resource_usage.cpu_stats;
    let memory: BTreeMap<&str, (&'static str, u64)> = [
        ("RSS", ("nomad.client.allocs.memory.rss", m.rss)),
        ("Cache", ("nomad.client.allocs.memory.cache", m.cache)),
        ("Swap", ("nomad.client.allocs.memory.swap", m.swap)),
        ("Usage", ("nomad.client.allocs.memory.usage", m.usage)),
        ("Max Usage", ("nomad.client.allocs.memory.max_usage", m.max_usage)),
    ]
    .into();
    let cpu: BTreeMap<&str, (&'static str, f64)> = [
        ("Percent", ("nomad.client.allocs.cpu.total_percent", c.percent)),
        ("System Mode", ("nomad.client.allocs.cpu.system", c.system_mode)),
        ("User Mode", ("nomad.client.allocs.cpu.user", c.user_mode)),
        ("Total Ticks", ("nomad.client.allocs.cpu.total_ticks", c.total_ticks)),
        ("Throttled Periods", ("nomad.client.allocs.cpu.throttled_periods", c.throttled_periods as f64)),
        ("Throttled Time", ("nomad.client.allocs.cpu.throttled_time", c.throttled_time as f64)),
    ]
    .into();
    let mut out = vec![
        Point::new("nomad.client.allocs.memory.allocated", &labels, (memory_mb * 1024 * 1024) as f64),
        Point::new("nomad.client.allocs.cpu.allocated", &labels, cpu_mhz as f64),
    ];
    out.extend(
        m.measured.iter().filter_map(|f| memory.get(f.as_str())).map(|(n, v)| Point::new(n, &labels, *v as f64)),
    );
    out.extend(c.measured.iter().filter_map(|f| cpu.get(f.as_str())).map(|(n, v)| Point::new(n, &labels, *v)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(user_ms: u64, system_ms: u64) -> TaskUsage {
        TaskUsage {
            user_ns: user_ms * 1_000_000,
            system_ns: system_ms * 1_000_000,
            total_ns: (user_ms + system_ms) * 1_000_000,
            ..Default::default()
        }
    }

    fn since(handle: &str, running_for: Option<f64>) -> Since {
        Since { handle: handle.into(), running_for }
    }

    #[test]
    fn the_first_reading_is_a_rate_since_the_start_and_later_ones_since_the_last() {
        let t = UsageTracker::default();
        let key = || ("a".to_string(), "t".to_string());
        // 500 ms of CPU over 2 s of running: 25 % of a core.
        let first = t.rate(key(), &reading(400, 100), since("h1", Some(2.0)), 2000.0);
        assert!((first.cpu_stats.percent - 25.0).abs() < 1e-9, "{first:?}");
        assert!((first.cpu_stats.user_mode - 20.0).abs() < 1e-9);
        assert!((first.cpu_stats.total_ticks - 500.0).abs() < 1e-9, "a quarter of a 2000 MHz core");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let second = t.rate(key(), &reading(400, 100), since("h1", Some(2.1)), 2000.0);
        assert_eq!(second.cpu_stats.percent, 0.0, "no CPU since the last reading");
        assert!(second.cpu_stats.measured.contains(&"Percent".to_string()));
        // A new run of the task (another handle) starts a new series.
        let restarted = t.rate(key(), &reading(10, 0), since("h2", None), 2000.0);
        assert!(!restarted.cpu_stats.measured.contains(&"Percent".to_string()), "{restarted:?}");
        t.retain(&|_| false);
        assert!(t.last.lock().is_empty());
    }

    #[test]
    fn only_measured_fields_become_gauges() {
        let mut u = TaskResourceUsage::default();
        u.resource_usage.memory_stats.rss = 4096;
        u.resource_usage.memory_stats.measured = vec!["RSS".into()];
        u.resource_usage.cpu_stats.percent = 12.5;
        u.resource_usage.cpu_stats.measured = vec!["Percent".into()];
        let l = TaskLabels { alloc_id: "a1", job: "j", namespace: "default", task_group: "g", task: "t", host: "n" };
        let points: BTreeMap<&str, f64> =
            task_points(&l, &u, 256, 500).into_iter().map(|p| (p.name, p.value)).collect();
        let expected: BTreeMap<&str, f64> = [
            ("nomad.client.allocs.memory.allocated", 256.0 * 1024.0 * 1024.0),
            ("nomad.client.allocs.cpu.allocated", 500.0),
            ("nomad.client.allocs.memory.rss", 4096.0),
            ("nomad.client.allocs.cpu.total_percent", 12.5),
        ]
        .into();
        assert_eq!(points, expected);
    }
}
