//! Test harness: runs real `berth` agents on free loopback ports with their
//! own data dirs, drives them with the real CLI, and cleans up every task
//! process they started, even when a test fails half-way.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built `berth` binary.
pub fn berth() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Output of a CLI command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the CLI with `args` (no agent address).
pub fn cli(args: &[&str]) -> Run {
    Command::new(berth()).args(args).stdin(Stdio::null()).output().expect("run berth").into()
}

/// One agent process.
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub http: u16,
    pub rpc: u16,
    config: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// A dev agent (server + client) with its own ports and data dir.
    pub fn dev(root: &Path, name: &str) -> Agent {
        let http = free_port();
        let rpc = free_port();
        let cfg = format!("name = \"{name}\"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n");
        Agent::with_config(root, name, http, rpc, &cfg, &["-dev"])
    }

    /// A dev agent with extra config text (e.g. a `client { host_volume }`).
    pub fn dev_with(root: &Path, name: &str, extra: &str) -> Agent {
        let http = free_port();
        let rpc = free_port();
        let cfg = format!("name = \"{name}\"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n{extra}");
        Agent::with_config(root, name, http, rpc, &cfg, &["-dev"])
    }

    /// An agent from a config text (ports must match `http`/`rpc`).
    pub fn with_config(root: &Path, name: &str, http: u16, rpc: u16, config: &str, extra: &[&str]) -> Agent {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = root.join(format!("{name}.hcl"));
        std::fs::write(&config_path, config).unwrap();
        let mut a = Agent {
            name: name.into(),
            dir,
            http,
            rpc,
            config: config_path,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        a.start();
        a
    }

    /// Starts (or restarts) the process and waits for its HTTP API.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log")).unwrap();
        let child = Command::new(berth())
            .arg("agent")
            .args(&self.extra)
            .arg(format!("-config={}", self.config.display()))
            .arg(format!("-data-dir={}", self.dir.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.http);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!("agent {} did not listen on {addr} within 60 s; its log ends:\n{}", self.name, tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the agent process (tasks keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Run {
        Command::new(berth())
            .args(args)
            .env("BERTH_ADDR", format!("http://127.0.0.1:{}", self.http))
            .env_remove("NOMAD_ADDR")
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
            .into()
    }

    /// GETs an API path and decodes JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", self.http);
        reqwest::blocking::get(url).and_then(|r| r.json()).unwrap_or(serde_json::Value::Null)
    }

    /// GETs an API path as text (empty when it cannot be read).
    pub fn text(&self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.http);
        reqwest::blocking::get(url).and_then(|r| r.text()).unwrap_or_default()
    }

    /// Allocations of a job as JSON stubs.
    pub fn allocs(&self, job: &str) -> Vec<serde_json::Value> {
        self.get(&format!("/v1/job/{job}/allocations")).as_array().cloned().unwrap_or_default()
    }

    /// Allocation IDs of a job with the given client status and desired run.
    pub fn alloc_ids(&self, job: &str, status: &str) -> Vec<String> {
        self.allocs(job)
            .iter()
            .filter(|a| a["ClientStatus"] == status && a["DesiredStatus"] == "run")
            .map(|a| a["ID"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        kill_tasks_under(&self.dir);
    }
}

/// Kills every task shim (and its task's process group) whose spec lives
/// under `dir`: what a crashed test leaves running.
pub fn kill_tasks_under(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !text.contains("task-shim") || !text.contains(&needle) {
            continue;
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
            kill_pid(-child);
        }
        kill_pid(pid);
    }
}

fn kill_pid(pid: i32) {
    let _ = Command::new("kill").args(["-9", "--", &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Writes a job file into `dir` and returns its path.
pub fn job_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A raw_exec service job running a shell loop that prints `marker`.
pub fn raw_exec_job(id: &str, count: u32, marker: &str) -> String {
    format!(
        r#"job "{id}" {{
  datacenters = ["dc1"]
  group "g" {{
    count = {count}
    restart {{
      attempts = 5
      delay    = "1s"
    }}
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "/bin/sh"
        args    = ["-c", "echo start {marker} $NOMAD_ALLOC_INDEX; while true; do echo tick {marker}; sleep 1; done"]
      }}
      resources {{
        cpu    = 50
        memory = 32
      }}
    }}
  }}
}}
"#
    )
}

/// PIDs of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        if text.contains(marker) && !text.contains("task-shim") {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// Runs SQL as root against MariaDB/MySQL on 127.0.0.1:3306 (password
/// `password`, as the examples set); its output, or the client's error.
pub fn mysql(sql: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", "3306", "-uroot", "-ppassword", "--connect-timeout=2", "-N", "-e", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}
pub mod synology;

/// The counter task's shell script: prints `count 1`, `count 2`, … five
/// times a second, `got-usr1` on SIGUSR1, and exits on SIGINT/SIGTERM.
/// `marker` is in its command line (for [`pids_with`]).
pub fn counter_script(marker: &str) -> String {
    format!(
        "trap 'echo got-usr1' USR1; trap 'exit 0' INT TERM; n=0; \
         while true; do n=$((n+1)); echo count $n; sleep 0.2; done # {marker}"
    )
}

/// A one-allocation service job running the counter; `driver` is the
/// task's driver line and config block (`{script}` is replaced by the
/// counter script as a quoted HCL string).
pub fn counter_job(id: &str, marker: &str, driver: &str) -> String {
    let script = serde_json::to_string(&counter_script(marker)).unwrap();
    format!(
        r#"job "{id}" {{
  datacenters = ["dc1"]
  group "g" {{
    task "t" {{
      {}
      resources {{
        cpu    = 50
        memory = 32
      }}
    }}
  }}
}}
"#,
        driver.replace("{script}", &script)
    )
}

/// The counter's numbers in `logs`, checked to run 1, 2, 3, … with no gap
/// and no repeat; the last one.
pub fn counted_to(logs: &str) -> Result<u64, String> {
    let mut last = 0;
    for line in logs.lines().filter_map(|l| l.strip_prefix("count ")) {
        let n: u64 = line.trim().parse().map_err(|_| format!("unreadable line {line:?}"))?;
        if n != last + 1 {
            return Err(format!("count {n} follows count {last}"));
        }
        last = n;
    }
    Ok(last)
}

/// Kills the agent (SIGKILL) and starts it again `times` times while the
/// counter of `alloc` runs, letting it count on between restarts, then
/// waits until `alloc logs` has caught up; returns the full stdout, every
/// number checked to be there once and in order.
pub fn restart_while_counting(agent: &mut Agent, alloc: &str, times: usize) -> String {
    let counted = |agent: &Agent, round: usize| {
        let out = agent.cli(&["alloc", "logs", alloc, "t"]).stdout;
        match counted_to(&out) {
            Ok(n) => (n, out),
            Err(e) => panic!("logs after {round} agent restarts: {e}\n{out}"),
        }
    };
    for round in 0..times {
        let before = wait_for("the counter to count", Duration::from_secs(20), || {
            Some(counted(agent, round).0).filter(|n| *n >= 3)
        });
        agent.kill();
        std::thread::sleep(Duration::from_millis(1500));
        agent.start();
        wait_for("the counter's logs to move on after the restart", Duration::from_secs(30), || {
            Some(counted(agent, round + 1).0).filter(|n| *n > before + 10)
        });
    }
    counted(agent, times).1
}

/// Agent config that publishes Nomad's per-task usage gauges.
pub const ALLOCATION_METRICS: &str = "telemetry {\n  publish_allocation_metrics = true\n}\n";

/// The running task `task` of `alloc` reports what it uses: through the
/// stats endpoint (memory and a CPU rate), `alloc status -stats`, and the
/// agent's Prometheus metrics (when it publishes allocation metrics).
pub fn assert_task_reports_usage(agent: &Agent, alloc: &str, task: &str) {
    let stats = agent.get(&format!("/v1/client/allocation/{alloc}/stats"));
    let usage = &stats["Tasks"][task]["ResourceUsage"];
    let memory = &usage["MemoryStats"];
    let measured: Vec<&str> =
        memory["Measured"].as_array().map(|m| m.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    let used = if measured.contains(&"RSS") { &memory["RSS"] } else { &memory["Usage"] };
    assert!(used.as_u64().unwrap_or(0) > 0, "no memory reading: {stats}");
    let cpu = usage["CpuStats"]["Measured"].as_array().cloned().unwrap_or_default();
    assert!(cpu.iter().any(|m| m == "Percent"), "no CPU rate: {stats}");
    assert!(stats["ResourceUsage"]["MemoryStats"]["RSS"] == memory["RSS"], "the allocation total: {stats}");
    let status = agent.cli(&["alloc", "status", "-stats", &alloc[..8]]);
    assert_eq!(status.code, 0, "{status:?}");
    let resources = status.stdout.lines().skip_while(|l| !l.starts_with("Task Resources")).nth(2).unwrap_or_default();
    assert!(resources.contains(" MHz") && resources.matches('/').count() >= 2, "used/asked: {status:?}");
    assert!(status.stdout.contains("Memory Stats") && status.stdout.contains("CPU Stats"), "{status:?}");
    let metrics = agent.text("/v1/metrics?format=prometheus");
    let series = format!("alloc_id=\"{alloc}\"");
    for name in ["nomad_client_allocs_memory_allocated", "nomad_client_allocs_cpu_total_percent"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name) && l.contains(&series)),
            "no {name} of {alloc}:\n{metrics}"
        );
    }
}
