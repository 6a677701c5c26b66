//! Checks benchmark: what N service checks at a 1 s interval cost one dev
//! agent (client and server in one process). Ten raw_exec busybox httpd
//! allocations run first with no services (the baseline: the idle agent
//! with the same tasks, measured in the same run); then an in-place update
//! gives each allocation N/10 services with one check each, half TCP and
//! half HTTP, and once every check passes the agent's CPU (user + system,
//! as a share of one core) and RSS are measured over the same window. The
//! httpd processes' own CPU (answering the probes) is the tasks' and not
//! counted.
//!
//! `cargo bench -p berth --bench checks` (N = 1,000, 30 s windows;
//! `BERTH_BENCH_CHECKS`, `BERTH_BENCH_WINDOW_SECS` change them).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{rss_kib, DevAgent};

const ALLOCS: usize = 10;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn busybox() -> &'static str {
    let found = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists());
    found.expect("needs busybox on the host (busybox-static)")
}

/// The job: `ALLOCS` httpd allocations, each with `services` services.
fn job(www: &std::path::Path, services: usize) -> Value {
    let services: Vec<Value> = (0..services)
        .map(|i| {
            let check = if i % 2 == 0 {
                json!({"Name": "alive", "Type": "tcp", "Interval": 1_000_000_000u64, "Timeout": 1_000_000_000u64})
            } else {
                json!({"Name": "page", "Type": "http", "Path": "/index.html",
                       "Interval": 1_000_000_000u64, "Timeout": 1_000_000_000u64})
            };
            json!({"Name": format!("bench-{i}"), "PortLabel": "http", "Provider": "nomad", "Checks": [check]})
        })
        .collect();
    json!({"Job": {
        "ID": "checks", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "web", "Count": ALLOCS,
            "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
            "Services": services,
            "Tasks": [{"Name": "httpd", "Driver": "raw_exec",
                "Config": {"command": busybox(),
                           "args": ["httpd", "-f", "-p", "${NOMAD_PORT_http}", "-h", www.display().to_string()]},
                "Resources": {"CPU": 20, "MemoryMB": 16}}]
        }]
    }})
}

/// User + system CPU time of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start at state (3).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields[11] + fields[12];
    let per_second: u64 =
        String::from_utf8(std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// The agent's CPU share of one core (%) over `window`, and its RSS (KiB)
/// at the end.
fn measure(agent: &DevAgent, window: Duration) -> (f64, u64) {
    let (before, started) = (cpu_time(agent.pid()), Instant::now());
    std::thread::sleep(window);
    let used = cpu_time(agent.pid()) - before;
    (100.0 * used.as_secs_f64() / started.elapsed().as_secs_f64(), rss_kib(agent.pid()))
}

/// Checks of the job's allocations that pass now.
fn passing(agent: &DevAgent) -> usize {
    let get = |path: &str| -> Value {
        agent.http.get(format!("{}{path}", agent.base)).send().and_then(|r| r.json()).unwrap_or_default()
    };
    let allocs = get("/v1/job/checks/allocations");
    let ids = allocs.as_array().cloned().unwrap_or_default();
    ids.iter()
        .filter_map(|a| a["ID"].as_str())
        .map(|id| {
            let checks = get(&format!("/v1/allocation/{id}/checks"));
            let results: Vec<Value> = match checks {
                Value::Object(m) => m.into_values().collect(),
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            results.iter().filter(|c| c["Status"] == "success").count()
        })
        .sum()
}

fn main() {
    let checks = setting("BERTH_BENCH_CHECKS", 1000).max(ALLOCS as u64) as usize;
    let window = Duration::from_secs(setting("BERTH_BENCH_WINDOW_SECS", 30));
    let per_alloc = checks / ALLOCS;
    let checks = per_alloc * ALLOCS;
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "ok").unwrap();

    let agent = DevAgent::start();
    agent.submit_and_wait(&job(www.path(), 0), ALLOCS);
    std::thread::sleep(Duration::from_secs(2));
    let (idle_cpu, idle_rss) = measure(&agent, window);

    let resp = agent.http.put(format!("{}/v1/jobs", agent.base)).json(&job(www.path(), per_alloc)).send().unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = passing(&agent);
        if now == checks {
            break;
        }
        assert!(Instant::now() < deadline, "only {now}/{checks} checks pass after 120 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    let live: usize = agent
        .http
        .get(format!("{}/v1/job/checks/allocations", agent.base))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["ClientStatus"] == "running")
        .count();
    assert_eq!(live, ALLOCS, "the update was in place: the same allocations run");
    let (busy_cpu, busy_rss) = measure(&agent, window);
    agent.purge("checks");

    let added_cpu = busy_cpu - idle_cpu;
    let added_mib = (busy_rss as f64 - idle_rss as f64) / 1024.0;
    println!(
        "checks: {checks} ({} tcp, {} http) at 1 s on one client, {} s windows",
        checks - checks / 2,
        checks / 2,
        window.as_secs()
    );
    println!(
        "  idle agent ({ALLOCS} allocations, no checks): {idle_cpu:.2} % of one core, RSS {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!("  with the checks: {busy_cpu:.2} % of one core, RSS {:.1} MiB", busy_rss as f64 / 1024.0);
    println!(
        "  added: {added_cpu:.2} % of one core (target <= 5), {added_mib:.1} MiB RSS (target <= 10); busy/idle CPU {:.1}x, RSS {:.2}x",
        busy_cpu / idle_cpu.max(0.01),
        busy_rss as f64 / idle_rss.max(1) as f64
    );
}
