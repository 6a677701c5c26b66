//! Resource usage of a running allocation, with Nomad's shapes for
//! `/v1/client/allocation/:id/stats` (`AllocResourceUsage`): memory and
//! CPU per task and summed for the allocation. `Measured` lists which
//! fields the driver could read, as Nomad's do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Memory use, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MemoryStats {
    /// Resident set size.
    #[serde(rename = "RSS")]
    pub rss: u64,
    /// Page cache charged to the task.
    pub cache: u64,
    /// Swap used.
    pub swap: u64,
    /// Memory-mapped files.
    pub mapped_file: u64,
    /// Total charged (the cgroup's usage).
    pub usage: u64,
    /// Highest usage seen.
    pub max_usage: u64,
    /// Kernel memory.
    pub kernel_usage: u64,
    /// Highest kernel memory seen.
    pub kernel_max_usage: u64,
    /// The fields above that were measured.
    pub measured: Vec<String>,
}

/// CPU use over the interval since the previous reading.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CpuStats {
    /// Percent of one core spent in the kernel.
    pub system_mode: f64,
    /// Percent of one core spent in user space.
    pub user_mode: f64,
    /// MHz used (percent of one core times the MHz of a core).
    pub total_ticks: f64,
    /// CFS periods in which the task was throttled.
    pub throttled_periods: u64,
    /// Nanoseconds the task was throttled.
    pub throttled_time: u64,
    /// Percent of one core used.
    pub percent: f64,
    /// The fields above that were measured.
    pub measured: Vec<String>,
}

/// Memory and CPU use.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResourceUsage {
    /// Memory.
    pub memory_stats: MemoryStats,
    /// CPU.
    pub cpu_stats: CpuStats,
    /// Devices (none: berth schedules no devices).
    pub device_stats: Vec<serde_json::Value>,
}

/// One task's use.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskResourceUsage {
    /// What the task uses.
    pub resource_usage: ResourceUsage,
    /// When it was read (Unix nanoseconds).
    pub timestamp: i64,
    /// Per process (not broken down: empty).
    pub pids: BTreeMap<String, ResourceUsage>,
}

/// `GET /v1/client/allocation/:id/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocResourceUsage {
    /// The sum over the running tasks.
    pub resource_usage: ResourceUsage,
    /// Each running task's use, by task name.
    pub tasks: BTreeMap<String, TaskResourceUsage>,
    /// When it was read (Unix nanoseconds).
    pub timestamp: i64,
}

impl ResourceUsage {
    /// Adds `other` into `self` (for an allocation's total); a field counts
    /// as measured when any part measured it.
    pub fn add(&mut self, other: &ResourceUsage) {
        let (m, o) = (&mut self.memory_stats, &other.memory_stats);
        m.rss += o.rss;
        m.cache += o.cache;
        m.swap += o.swap;
        m.mapped_file += o.mapped_file;
        m.usage += o.usage;
        m.max_usage += o.max_usage;
        m.kernel_usage += o.kernel_usage;
        m.kernel_max_usage += o.kernel_max_usage;
        merge_measured(&mut m.measured, &o.measured);
        let (c, o) = (&mut self.cpu_stats, &other.cpu_stats);
        c.system_mode += o.system_mode;
        c.user_mode += o.user_mode;
        c.total_ticks += o.total_ticks;
        c.throttled_periods += o.throttled_periods;
        c.throttled_time += o.throttled_time;
        c.percent += o.percent;
        merge_measured(&mut c.measured, &o.measured);
    }
}

fn merge_measured(into: &mut Vec<String>, from: &[String]) {
    for f in from {
        if !into.contains(f) {
            into.push(f.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nomad_field_names() {
        let mut u = AllocResourceUsage::default();
        u.resource_usage.memory_stats.rss = 5;
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["ResourceUsage"]["MemoryStats"]["RSS"], 5);
        assert!(v["ResourceUsage"]["CpuStats"]["TotalTicks"].is_number());
        assert!(v["Tasks"].is_object());
    }

    #[test]
    fn totals_add_up_and_keep_what_was_measured() {
        let task = |rss, pct, measured: &str| ResourceUsage {
            memory_stats: MemoryStats { rss, measured: vec![measured.into()], ..Default::default() },
            cpu_stats: CpuStats { percent: pct, measured: vec!["Percent".into()], ..Default::default() },
            ..Default::default()
        };
        let mut total = ResourceUsage::default();
        total.add(&task(10, 1.5, "RSS"));
        total.add(&task(20, 2.0, "Usage"));
        assert_eq!(total.memory_stats.rss, 30);
        assert_eq!(total.cpu_stats.percent, 3.5);
        assert_eq!(total.memory_stats.measured, vec!["RSS", "Usage"]);
        assert_eq!(total.cpu_stats.measured, vec!["Percent"]);
    }
}
