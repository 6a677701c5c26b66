//! Shared pieces of the end-to-end benchmarks: a dev agent on free ports,
//! and "submit a job, wait until N allocations run" through the HTTP API;
//! `first_mount` for the iSCSI benches. Each bench binary compiles this
//! module and uses part of it.

#![allow(dead_code)]

pub mod first_mount;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A dev agent process, killed on drop.
pub struct DevAgent {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl DevAgent {
    /// Starts `berth agent -dev` quietly and waits for a ready node.
    pub fn start() -> DevAgent {
        Self::start_with("")
    }

    /// [`DevAgent::start`] with more agent configuration.
    pub fn start_with(extra_config: &str) -> DevAgent {
        let dir = tempfile::tempdir().unwrap();
        let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (http_port, rpc_port) = (port(0), port(1));
        let cfg = dir.path().join("agent.hcl");
        std::fs::write(
            &cfg,
            format!("log_level = \"WARN\"\nports {{\n  http = {http_port}\n  rpc = {rpc_port}\n}}\n{extra_config}"),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "-dev"])
            .arg(format!("-config={}", cfg.display()))
            .arg(format!("-data-dir={}", dir.path().join("data").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent = DevAgent {
            child,
            base: format!("http://127.0.0.1:{http_port}"),
            http: reqwest::blocking::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.node_ready() {
            assert!(Instant::now() < deadline, "agent did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn node_ready(&self) -> bool {
        self.http
            .get(format!("{}/v1/nodes", self.base))
            .send()
            .and_then(|r| r.json::<Value>())
            .map(|v| v.as_array().map(|a| a.iter().any(|n| n["Status"] == "ready")).unwrap_or(false))
            .unwrap_or(false)
    }

    /// Registers `job` and returns how long until `n` of its allocations run.
    pub fn submit_and_wait(&self, job: &Value, n: usize) -> Duration {
        let id = job["Job"]["ID"].as_str().unwrap().to_string();
        let started = Instant::now();
        let resp = self.http.put(format!("{}/v1/jobs", self.base)).json(job).send().unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
        let mut index = 0u64;
        loop {
            let r = self
                .http
                .get(format!("{}/v1/job/{id}/allocations?index={index}&wait=10s", self.base))
                .timeout(Duration::from_secs(20))
                .send()
                .unwrap();
            index = r.headers()["X-Nomad-Index"].to_str().unwrap().parse().unwrap();
            let allocs: Value = r.json().unwrap();
            let running = allocs.as_array().unwrap().iter().filter(|a| a["ClientStatus"] == "running").count();
            if running == n {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(120), "only {running}/{n} running after 120s");
        }
    }

    /// The sum of a counter's series (every label set) in the agent's
    /// `/v1/metrics`.
    pub fn counter(&self, name: &str) -> u64 {
        let metrics: Value =
            self.http.get(format!("{}/v1/metrics", self.base)).send().and_then(|r| r.json()).unwrap_or_default();
        let counters = metrics["Counters"].as_array().cloned().unwrap_or_default();
        counters.iter().filter(|c| c["Name"] == name).filter_map(|c| c["Count"].as_u64()).sum()
    }

    /// Purges a job and gives its tasks time to stop.
    pub fn purge(&self, id: &str) {
        let _ = self.http.delete(format!("{}/v1/job/{id}?purge=true", self.base)).send();
        std::thread::sleep(Duration::from_secs(3));
    }
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
