//! One reading of what a task uses, as its driver can tell: memory now and
//! CPU time so far (cumulative, so that the client can turn two readings
//! into a rate). Readers for a process group (`/proc`, the raw_exec
//! driver) and for a container (Docker's stats, cgroup v1 or v2).

use std::collections::HashMap;

use crate::wire::stats::MemoryStats;

/// One reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskUsage {
    /// Memory now.
    pub memory: MemoryStats,
    /// CPU time in user space so far, in nanoseconds.
    pub user_ns: u64,
    /// CPU time in the kernel so far, in nanoseconds.
    pub system_ns: u64,
    /// All CPU time so far, in nanoseconds.
    pub total_ns: u64,
    /// Throttled CFS periods so far.
    pub throttled_periods: u64,
    /// Throttled time so far, in nanoseconds.
    pub throttled_ns: u64,
    /// Whether the throttle counters were read.
    pub throttle_measured: bool,
}

/// Clock ticks per second and bytes per page.
fn clock() -> (u64, u64) {
    use nix::unistd::{sysconf, SysconfVar};
    let tick = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096).max(1) as u64;
    (tick, page)
}

/// The fields of `/proc/<pid>/stat` after the command name, from `state` on.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// What the processes of group `pgid` use: their resident memory and
/// their CPU time, including that of children they have reaped. `None`
/// when no process of the group is left.
pub fn of_process_group(pgid: i32) -> Option<TaskUsage> {
    let (tick, page) = clock();
    let to_ns = |ticks: u64| ticks * 1_000_000_000 / tick;
    let mut found = false;
    let mut u = TaskUsage::default();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(f) = stat_fields(&text) else { continue };
        // Fields from `state` (3rd in proc(5)): pgrp is 5th, utime 14th,
        // stime 15th, cutime 16th, cstime 17th, rss 24th.
        let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        found = true;
        let (user, system) = (num(14) + num(16), num(15) + num(17));
        u.user_ns += to_ns(user);
        u.system_ns += to_ns(system);
        u.memory.rss += num(24) * page;
    }
    u.total_ns = u.user_ns + u.system_ns;
    u.memory.measured = vec!["RSS".into()];
    found.then_some(u)
}

/// A reading from Docker's stats of a container. cgroup v1 reports `rss`
/// and `cache`, v2 `anon` and `file`; both are mapped to RSS and Cache.
pub fn of_container(stats: &bollard::models::ContainerStatsResponse) -> TaskUsage {
    let mut u = TaskUsage::default();
    if let Some(cpu) = &stats.cpu_stats {
        if let Some(c) = &cpu.cpu_usage {
            u.total_ns = c.total_usage.unwrap_or(0);
            u.user_ns = c.usage_in_usermode.unwrap_or(0);
            u.system_ns = c.usage_in_kernelmode.unwrap_or(0);
        }
        if let Some(t) = &cpu.throttling_data {
            u.throttled_periods = t.throttled_periods.unwrap_or(0);
            u.throttled_ns = t.throttled_time.unwrap_or(0);
            u.throttle_measured = true;
        }
    }
    if let Some(m) = &stats.memory_stats {
        let empty = HashMap::new();
        let s = m.stats.as_ref().unwrap_or(&empty);
        let get = |keys: &[&str]| keys.iter().find_map(|k| s.get(*k).copied());
        let mem = &mut u.memory;
        let mut measured = Vec::new();
        if let Some(rss) = get(&["total_rss", "rss", "anon"]) {
            mem.rss = rss;
            measured.push("RSS");
        }
        if let Some(cache) = get(&["total_cache", "cache", "file"]) {
            mem.cache = cache;
            measured.push("Cache");
        }
        if let Some(swap) = get(&["total_swap", "swap"]) {
            mem.swap = swap;
            measured.push("Swap");
        }
        mem.mapped_file = get(&["total_mapped_file", "mapped_file", "file_mapped"]).unwrap_or(0);
        if let Some(usage) = m.usage {
            mem.usage = usage;
            measured.push("Usage");
        }
        if let Some(max) = m.max_usage.filter(|m| *m > 0) {
            mem.max_usage = max;
            measured.push("Max Usage");
        }
        mem.measured = measured.into_iter().map(String::from).collect();
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_group_is_read_from_proc() {
        let me = nix::unistd::getpgrp().as_raw();
        let u = of_process_group(me).expect("this test's own group");
        assert!(u.memory.rss > 0, "{u:?}");
        assert_eq!(u.total_ns, u.user_ns + u.system_ns);
        assert_eq!(of_process_group(i32::MAX), None, "no such group");
    }

    #[test]
    fn command_names_with_spaces_and_parentheses_do_not_shift_fields() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 100 1000 9";
        let f = stat_fields(text).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[2], "42");
        assert_eq!(f[14 - 3], "7");
        assert_eq!(f[24 - 3], "9");
    }

    #[test]
    fn docker_stats_of_both_cgroup_versions() {
        let v1: bollard::models::ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5_000, "usage_in_usermode": 3_000, "usage_in_kernelmode": 2_000},
                          "throttling_data": {"periods": 9, "throttled_periods": 2, "throttled_time": 70}},
            "memory_stats": {"usage": 900, "max_usage": 1000, "stats": {"rss": 600, "cache": 300, "swap": 0}}
        }))
        .unwrap();
        let u = of_container(&v1);
        assert_eq!(
            (u.total_ns, u.user_ns, u.system_ns, u.throttled_periods, u.throttled_ns),
            (5_000, 3_000, 2_000, 2, 70)
        );
        assert_eq!((u.memory.rss, u.memory.cache, u.memory.usage, u.memory.max_usage), (600, 300, 900, 1000));
        assert_eq!(u.memory.measured, vec!["RSS", "Cache", "Swap", "Usage", "Max Usage"]);
        let v2: bollard::models::ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 10}},
            "memory_stats": {"usage": 800, "stats": {"anon": 500, "file": 200, "file_mapped": 50}}
        }))
        .unwrap();
        let u = of_container(&v2);
        assert_eq!((u.memory.rss, u.memory.cache, u.memory.mapped_file), (500, 200, 50));
        assert_eq!(u.memory.measured, vec!["RSS", "Cache", "Usage"]);
        assert!(!u.throttle_measured);
    }
}
