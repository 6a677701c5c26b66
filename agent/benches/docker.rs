//! Docker benchmark: submit-to-running of 20 containers of one job through
//! berth, against `docker run -d` of the same 20 containers in sequence,
//! measured in the same run. Needs the engine and `berth-test/tiny`
//! (`scripts/build-test-images.sh`).
//!
//! `cargo bench -p berth --bench docker` (`BERTH_BENCH_QUICK=1`: 5 containers).

mod support;

use std::process::Command;
use std::time::Instant;

use serde_json::json;

const IMAGE: &str = "berth-test/tiny:latest";

fn main() {
    let n: usize = if std::env::var_os("BERTH_BENCH_QUICK").is_some() { 5 } else { 20 };
    let ok =
        Command::new("docker").args(["image", "inspect", IMAGE]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "needs the Docker engine and {IMAGE} (scripts/build-test-images.sh)");

    // Baseline: the engine's own time for the same containers, in sequence.
    let tag = format!("berth-bench-{}", std::process::id());
    let started = Instant::now();
    for i in 0..n {
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &format!("{tag}-{i}"), "--label", &tag, IMAGE, "sleep", "300"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let docker_time = started.elapsed();
    let ids = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label={tag}")]).output().unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(str::to_string).collect();
    Command::new("docker").arg("rm").arg("-f").args(&ids).output().unwrap();

    let agent = support::DevAgent::start();
    let job = json!({"Job": {
        "ID": "dbench", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g", "Count": n,
            "Tasks": [{"Name": "t", "Driver": "docker",
                "Config": {"image": IMAGE, "command": "sleep", "args": ["300"]},
                "Resources": {"CPU": 10, "MemoryMB": 16}}]
        }]
    }});
    let berth_time = agent.submit_and_wait(&job, n);
    agent.purge("dbench");

    println!("docker run -d x{n}, in sequence:        {:.0} ms", docker_time.as_secs_f64() * 1e3);
    println!("berth submit-to-running, {n} containers: {:.0} ms", berth_time.as_secs_f64() * 1e3);
    println!("ratio berth / docker run: {:.2} (target <= 1.2)", berth_time.as_secs_f64() / docker_time.as_secs_f64());
}
