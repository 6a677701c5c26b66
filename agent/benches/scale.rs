//! Scale benchmark: one server and N client agents (real processes on
//! loopback) running M raw_exec allocations. It measures what the servers
//! send the clients while the cluster is idle, after a write that touches
//! no allocation, and after a write that stops one allocation, against the
//! baseline of the full re-fetch every client did before allocation sync
//! by index (each client downloading all its allocations, measured in the
//! same run by fetching them once through `/v1/node/:id/allocations`).
//!
//! `cargo bench -p berth --bench scale` (60 clients, 300 allocations, 30 s
//! idle; `BERTH_BENCH_CLIENTS`, `BERTH_BENCH_ALLOCS`, `BERTH_BENCH_IDLE_SECS`
//! change them).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{free_port, wait_for, Agent};
use serde_json::{json, Value};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn server(root: &std::path::Path) -> Agent {
    let (http, rpc) = (free_port(), free_port());
    let cfg = format!(
        "name = \"scale-server\"\nbind_addr = \"127.0.0.1\"\nlog_level = \"WARN\"\n\
         ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n\
         server {{\n  enabled = true\n  bootstrap_expect = 1\n}}\n",
        serf = free_port()
    );
    Agent::with_config(root, "scale-server", http, rpc, &cfg, &[])
}

fn client(root: &std::path::Path, i: usize, server_rpc: u16) -> Agent {
    let http = free_port();
    let name = format!("scale-client-{i}");
    let cfg = format!(
        "name = \"{name}\"\nbind_addr = \"127.0.0.1\"\nlog_level = \"WARN\"\nports {{\n  http = {http}\n}}\n\
         client {{\n  enabled = true\n  servers = [\"127.0.0.1:{server_rpc}\"]\n}}\n\
         plugin \"raw_exec\" {{\n  config {{\n    enabled = true\n  }}\n}}\n"
    );
    Agent::with_config(root, &name, http, 0, &cfg, &[])
}

/// A counter of an agent's `/v1/metrics`.
fn counter(agent: &Agent, name: &str) -> u64 {
    let metrics = agent.get("/v1/metrics");
    let found = metrics["Counters"].as_array().and_then(|c| c.iter().find(|c| c["Name"] == name).cloned());
    found.and_then(|c| c["Count"].as_u64()).unwrap_or(0)
}

/// Bytes the process has written (sockets and files): for an idle server
/// that writes no state, what it sent.
fn written_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// What the cluster did between two readings.
#[derive(Clone, Copy, Default)]
struct Reading {
    server_bytes: u64,
    sent: u64,
    wakeups: u64,
    fetched: u64,
}

fn read(server: &Agent, clients: &[Agent]) -> Reading {
    Reading {
        server_bytes: written_bytes(server.pid().unwrap()),
        sent: counter(server, "berth.server.node_allocations.sent"),
        wakeups: clients.iter().map(|c| counter(c, "berth.client.allocations.wakeups")).sum(),
        fetched: clients.iter().map(|c| counter(c, "berth.client.allocations.fetched")).sum(),
    }
}

impl std::ops::Sub for Reading {
    type Output = Reading;
    fn sub(self, o: Reading) -> Reading {
        Reading {
            server_bytes: self.server_bytes - o.server_bytes,
            sent: self.sent - o.sent,
            wakeups: self.wakeups - o.wakeups,
            fetched: self.fetched - o.fetched,
        }
    }
}

fn running(server: &Agent, job: &str) -> usize {
    server.allocs(job).iter().filter(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run").count()
}

fn put(server: &Agent, path: &str, body: &Value) -> Value {
    let url = format!("http://127.0.0.1:{}{path}", server.http);
    let resp = reqwest::blocking::Client::new().put(url).json(body).send().expect("the server answers");
    assert!(resp.status().is_success(), "PUT {path}: {:?}", resp.text());
    resp.json().unwrap_or_default()
}

fn main() {
    let n_clients = setting("BERTH_BENCH_CLIENTS", 60);
    let n_allocs = setting("BERTH_BENCH_ALLOCS", 300);
    let idle = Duration::from_secs(setting("BERTH_BENCH_IDLE_SECS", 30) as u64);
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let started = Instant::now();
    let clients: Vec<Agent> = (0..n_clients).map(|i| client(root.path(), i, server.rpc)).collect();
    wait_for("every client ready", Duration::from_secs(120), || {
        let ready = server.get("/v1/nodes").as_array().map(|n| n.iter().filter(|n| n["Status"] == "ready").count());
        (ready == Some(n_clients)).then_some(())
    });
    println!("{n_clients} clients ready in {:.1} s", started.elapsed().as_secs_f64());

    let job = json!({"Job": {
        "ID": "scale", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g", "Count": n_allocs,
            "EphemeralDisk": {"SizeMB": 10},
            "Tasks": [{"Name": "t", "Driver": "raw_exec",
                "Config": {"command": "/bin/sleep", "args": ["3600"]},
                "Resources": {"CPU": 10, "MemoryMB": 10}}]
        }]
    }});
    let started = Instant::now();
    put(&server, "/v1/jobs", &job);
    wait_for("every allocation running", Duration::from_secs(600), || {
        (running(&server, "scale") == n_allocs).then_some(())
    });
    println!("{n_allocs} allocations running in {:.1} s", started.elapsed().as_secs_f64());
    // Let the last status reports and deployment updates land.
    std::thread::sleep(Duration::from_secs(3));

    // The baseline: one full re-fetch by every client of all its allocations.
    let full_refetch_bytes: usize = server
        .get("/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let url = format!("http://127.0.0.1:{}/v1/node/{}/allocations", server.http, n["ID"].as_str().unwrap());
            reqwest::blocking::get(url).and_then(|r| r.bytes()).map(|b| b.len()).unwrap_or(0)
        })
        .sum();

    let before = read(&server, &clients);
    std::thread::sleep(idle);
    let idle_delta = read(&server, &clients) - before;

    // A write that touches no allocation: a job that cannot be placed.
    let before = read(&server, &clients);
    let unplaceable = json!({"Job": {
        "ID": "nowhere", "Type": "batch", "Datacenters": ["no-such-dc"],
        "TaskGroups": [{"Name": "g", "Count": 1,
            "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]
    }});
    put(&server, "/v1/jobs", &unplaceable);
    std::thread::sleep(Duration::from_secs(3));
    let unrelated = read(&server, &clients) - before;

    // A write that stops one allocation (the scheduler replaces it).
    let before = read(&server, &clients);
    let victim = server.allocs("scale")[0]["ID"].as_str().unwrap().to_string();
    put(&server, &format!("/v1/allocation/{victim}/stop"), &json!({}));
    wait_for("the replacement running", Duration::from_secs(60), || {
        let replaced =
            server.allocs("scale").iter().any(|a| a["ID"] == victim.as_str() && a["ClientStatus"] == "complete");
        (replaced && running(&server, "scale") == n_allocs).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let one = read(&server, &clients) - before;

    let per_s = |bytes: u64| bytes as f64 / idle.as_secs_f64() / 1e6;
    println!(
        "idle {} s: server wrote {:.4} MB/s (heartbeat answers and blocking-query timeouts); {} allocation fetches, {} client wake-ups",
        idle.as_secs(),
        per_s(idle_delta.server_bytes),
        idle_delta.sent,
        idle_delta.wakeups
    );
    println!(
        "baseline: one full re-fetch by every client = {n_allocs} allocations, {:.2} MB",
        full_refetch_bytes as f64 / 1e6
    );
    println!(
        "an unrelated write: {} client wake-ups, {} allocations sent (the old protocol: {n_clients} wake-ups, {n_allocs} allocations)",
        unrelated.wakeups, unrelated.sent
    );
    println!(
        "one allocation stopped: {} wake-ups, {} allocations sent (it and its replacement) vs. {n_allocs} for a full \
         re-fetch by every client ({:.4}x)",
        one.wakeups,
        one.sent,
        one.sent as f64 / n_allocs as f64
    );

    let _ = reqwest::blocking::Client::new()
        .delete(format!("http://127.0.0.1:{}/v1/job/scale?purge=true", server.http))
        .send();
    wait_for("the allocations to stop", Duration::from_secs(120), || {
        server.allocs("scale").iter().all(|a| a["ClientStatus"] != "running").then_some(())
    });
    drop(clients);
}
