//! Agent benchmark: the dev agent's idle RSS, and submit-to-running for a
//! raw_exec job of N allocations against a baseline measured in the same
//! run (starting the same N processes directly, one after another), and the
//! client state's writes against its (grouped) commits meanwhile.
//!
//! `cargo bench -p berth --bench agent` (N = 50; `BERTH_BENCH_QUICK=1`: N = 10).

mod support;

use support::rss_kib;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn main() {
    let n: usize = if std::env::var_os("BERTH_BENCH_QUICK").is_some() { 10 } else { 50 };

    // Baseline RSS: a trivial process.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sleep_rss = rss_kib(sleeper.id());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let agent = support::DevAgent::start();
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_kib(agent.pid());

    // Submit-to-running through berth.
    let job = json!({"Job": {
        "ID": "bench", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g", "Count": n,
            "Tasks": [{"Name": "t", "Driver": "raw_exec",
                "Config": {"command": "/bin/sleep", "args": ["300"]},
                "Resources": {"CPU": 10, "MemoryMB": 10}}]
        }]
    }});
    let state_before = (agent.counter("berth.client.state.writes"), agent.counter("berth.client.state.commits"));
    let berth_time = agent.submit_and_wait(&job, n);
    let writes = agent.counter("berth.client.state.writes") - state_before.0;
    let commits = agent.counter("berth.client.state.commits") - state_before.1;
    let busy_rss = rss_kib(agent.pid());
    agent.purge("bench");

    // Baseline: the same processes started directly, in sequence.
    let started = Instant::now();
    let mut direct = Vec::new();
    for _ in 0..n {
        direct
            .push(Command::new("/bin/sleep").arg("300").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    }
    let direct_time = started.elapsed();
    for mut c in direct {
        let _ = c.kill();
        let _ = c.wait();
    }

    let per_alloc = berth_time.saturating_sub(direct_time) / n as u32;
    println!("agent idle RSS:            {:.1} MiB (target <= 25 MiB; ratio to target {:.2}; `sleep` baseline {:.1} MiB, ratio {:.1}x)",
        idle_rss as f64 / 1024.0, idle_rss as f64 / (25.0 * 1024.0), sleep_rss as f64 / 1024.0, idle_rss as f64 / sleep_rss.max(1) as f64);
    println!("agent RSS with {n} allocs:  {:.1} MiB", busy_rss as f64 / 1024.0);
    println!("submit-to-running, {n} raw_exec allocs: {:.1} ms (all running)", berth_time.as_secs_f64() * 1e3);
    println!(
        "baseline, {n} direct process starts:    {:.1} ms (ratio berth/baseline {:.1}x)",
        direct_time.as_secs_f64() * 1e3,
        berth_time.as_secs_f64() / direct_time.as_secs_f64().max(1e-9)
    );
    println!("orchestrator overhead per allocation:   {:.2} ms (target <= 5 ms)", per_alloc.as_secs_f64() * 1e3);
    println!(
        "client state while starting them: {writes} writes in {commits} commits (ratio {:.2}; one commit per write ungrouped)",
        commits as f64 / writes.max(1) as f64
    );
}
