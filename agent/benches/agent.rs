//! Agent benchmark: the dev agent's idle RSS, and submit-to-running for a
//! raw_exec job of N allocations against a baseline measured in the same
//! run (starting the same N processes directly, one after another).
//!
//! `cargo bench -p berth --bench agent` (N = 50; `BERTH_BENCH_QUICK=1`: N = 10).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let n: usize = if std::env::var_os("BERTH_BENCH_QUICK").is_some() { 10 } else { 50 };
    let dir = tempfile::tempdir().unwrap();
    let (http, rpc) = (free_port(), free_port());
    let cfg = dir.path().join("agent.hcl");
    std::fs::write(&cfg, format!("log_level = \"WARN\"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n")).unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::blocking::Client::new();

    // Baseline RSS: a trivial process.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sleep_rss = rss_kib(sleeper.id());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let agent = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["agent", "-dev"])
        .arg(format!("-config={}", cfg.display()))
        .arg(format!("-data-dir={}", dir.path().join("data").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent_pid = agent.id();
    let mut guard = Guard(vec![agent]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{base}/v1/nodes"))
            .send()
            .and_then(|r| r.json::<Value>())
            .map(|v| v.as_array().map(|a| a.iter().any(|n| n["Status"] == "ready")).unwrap_or(false))
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "agent did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_kib(agent_pid);

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
    let started = Instant::now();
    let resp = client.put(format!("{base}/v1/jobs")).json(&job).send().unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
    let mut index = 0u64;
    loop {
        let r = client
            .get(format!("{base}/v1/job/bench/allocations?index={index}&wait=10s"))
            .timeout(Duration::from_secs(20))
            .send()
            .unwrap();
        index = r.headers()["X-Nomad-Index"].to_str().unwrap().parse().unwrap();
        let allocs: Value = r.json().unwrap();
        let running = allocs.as_array().unwrap().iter().filter(|a| a["ClientStatus"] == "running").count();
        if running == n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "only {running}/{n} running after 60s");
    }
    let berth_time = started.elapsed();
    let busy_rss = rss_kib(agent_pid);
    let _ = client.delete(format!("{base}/v1/job/bench?purge=true")).send();

    // Baseline: the same processes started directly, in sequence.
    let started = Instant::now();
    let mut direct = Guard(Vec::new());
    for _ in 0..n {
        direct
            .0
            .push(Command::new("/bin/sleep").arg("300").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    }
    let direct_time = started.elapsed();
    drop(direct);

    // Let the purge stop the tasks before the agent goes.
    std::thread::sleep(Duration::from_secs(2));
    guard.0.clear();
    let _ = Command::new("kill").arg(agent_pid.to_string()).status();

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
}
