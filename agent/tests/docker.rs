//! The docker driver against the real engine: the seed workshop's MySQL
//! job (HCL1 port_map, static 3306) with and without a host volume, a
//! Redis-style count=3 job reconciled after `docker kill`, and a client
//! restart that keeps the same containers. Needs a running Docker engine
//! and the local test images (`scripts/build-test-images.sh`); the tests
//! share the engine and run one at a time.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{
    assert_task_reports_usage, counted_to, counter_job, job_file, mysql, restart_while_counting, wait_for, Agent,
    ALLOCATION_METRICS,
};

static ENGINE: Mutex<()> = Mutex::new(());

fn engine() -> std::sync::MutexGuard<'static, ()> {
    let guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let ok = Command::new("docker")
        .args(["image", "inspect", "berth-test/mariadb:latest", "berth-test/tiny:latest"])
        .output();
    assert!(
        ok.map(|o| o.status.success()).unwrap_or(false),
        "needs the Docker engine and the test images: run scripts/build-test-images.sh"
    );
    guard
}

fn examples(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Container IDs of a job's running tasks, sorted.
fn containers_of(agent: &Agent, job: &str) -> Vec<String> {
    let mut ids: Vec<String> = agent
        .alloc_ids(job, "running")
        .iter()
        .map(|a| docker(&["ps", "-q", "--no-trunc", "--filter", &format!("label=berth.alloc_id={a}")]))
        .filter(|s| !s.is_empty())
        .collect();
    ids.sort();
    ids
}

fn wait_mysql() {
    wait_for("MariaDB to accept connections on 127.0.0.1:3306", Duration::from_secs(90), || mysql("SELECT 1").ok());
}

#[test]
fn workshop_mysql_job_with_and_without_a_host_volume() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("mysql-data");
    std::fs::create_dir_all(&data).unwrap();
    let agent = Agent::dev_with(
        root.path(),
        "mysql1",
        &format!("client {{\n  host_volume \"mysql-vol\" {{\n    path = \"{}\"\n  }}\n}}\n", data.display()),
    );

    // Without a volume the data is gone after stop + run.
    let job = examples("mysql.nomad");
    let run = agent.cli(&["job", "run", &job]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Job Warnings") || run.stdout.contains("deprecated"), "seed-era warnings: {run:?}");
    wait_mysql();
    mysql("CREATE DATABASE workshop").unwrap();
    assert!(mysql("SHOW DATABASES").unwrap().contains("workshop"));
    assert_eq!(agent.cli(&["job", "stop", "mysql-server"]).code, 0);
    wait_for("mysql to stop", Duration::from_secs(30), || mysql("SELECT 1").is_err().then_some(()));
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    wait_mysql();
    assert!(!mysql("SHOW DATABASES").unwrap().contains("workshop"), "no volume: the database is gone");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "mysql-server"]).code, 0);
    wait_for("mysql to stop", Duration::from_secs(30), || mysql("SELECT 1").is_err().then_some(()));

    // With the host volume the database survives, in the host directory.
    let with_volume = std::fs::read_to_string(&job).unwrap().replacen(
        "    task \"mysql-server\" {",
        "    volume \"mysql\" {\n      type   = \"host\"\n      source = \"mysql-vol\"\n    }\n\n    task \"mysql-server\" {\n      volume_mount {\n        volume      = \"mysql\"\n        destination = \"/var/lib/mysql\"\n      }\n",
        1,
    );
    let vjob = job_file(root.path(), "mysql-volume.nomad", &with_volume);
    assert_eq!(agent.cli(&["job", "run", &vjob]).code, 0);
    wait_mysql();
    mysql("CREATE DATABASE kept; CREATE TABLE kept.t (v INT); INSERT INTO kept.t VALUES (42)").unwrap();
    assert_eq!(agent.cli(&["job", "stop", "mysql-server"]).code, 0);
    wait_for("mysql to stop", Duration::from_secs(30), || mysql("SELECT 1").is_err().then_some(()));
    assert!(data.join("kept").is_dir(), "the database files are in the host directory");
    assert_eq!(agent.cli(&["job", "run", &vjob]).code, 0);
    wait_mysql();
    assert_eq!(mysql("SELECT v FROM kept.t").unwrap(), "42");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "mysql-server"]).code, 0);
    wait_for("containers removed", Duration::from_secs(30), || {
        docker(&["ps", "-aq", "--filter", "name=mysql-server-"]).is_empty().then_some(())
    });
}

#[test]
fn killed_containers_are_replaced_and_restarts_keep_containers() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "redis1");
    let job = examples("redis.nomad");
    let run = agent.cli(&["job", "run", &job]);
    assert_eq!(run.code, 0, "{run:?}");
    let before = containers_of(&agent, "example");
    assert_eq!(before.len(), 3, "{:?}", agent.allocs("example"));

    // docker kill: the restart policy brings the job back to three.
    docker(&["kill", &before[0]]);
    let started = std::time::Instant::now();
    wait_for("three running containers again", Duration::from_secs(15), || {
        let now = containers_of(&agent, "example");
        (now.len() == 3 && !now.contains(&before[0])).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(15));
    let alloc = agent.cli(&["job", "status", "example"]);
    assert!(alloc.stdout.contains("running"), "{alloc:?}");

    // The count diff shows in plan.
    let smaller = job_file(
        root.path(),
        "redis2.nomad",
        &std::fs::read_to_string(&job).unwrap().replace("count = 3", "count = 2"),
    );
    let plan = agent.cli(&["job", "plan", &smaller]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("+/- Count: \"3\" => \"2\" (forces destroy)"), "{plan:?}");

    // A client restart re-attaches to the same containers.
    let ids = containers_of(&agent, "example");
    agent.kill();
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(containers_of(&agent, "example"), ids, "same container IDs after the agent restart");
    let logs = agent.cli(&["alloc", "logs", &agent.alloc_ids("example", "running")[0]]);
    assert_eq!(logs.code, 0, "{logs:?}");

    assert_eq!(agent.cli(&["job", "stop", "-purge", "example"]).code, 0);
    wait_for("containers removed", Duration::from_secs(30), || {
        docker(&["ps", "-aq", "--filter", "label=berth.managed=true", "--filter", "name=redis-"])
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_restored_container_keeps_its_logs_takes_signals_and_restarts_in_place() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev_with(root.path(), "counter1", ALLOCATION_METRICS);
    let driver = r#"driver = "docker"
      config {
        image   = "berth-test/tiny:latest"
        command = "/bin/sh"
        args    = ["-c", {script}]
      }"#;
    let job = job_file(root.path(), "counter.nomad", &counter_job("dcounter", "docker", driver));
    assert_eq!(agent.cli(&["job", "run", "-detach", &job]).code, 0);
    let alloc = wait_for("running", Duration::from_secs(30), || agent.alloc_ids("dcounter", "running").pop());
    let container = wait_for("the container", Duration::from_secs(10), || containers_of(&agent, "dcounter").pop());

    // Every number once, in order, across three agent restarts; the same
    // lines as the engine's own log of the container.
    let logs = restart_while_counting(&mut agent, &alloc, 3);
    let last = counted_to(&logs).unwrap();
    let engine_log = docker(&["logs", &container]);
    let engine_lines: Vec<&str> = engine_log.lines().take(last as usize).collect();
    let berth_lines: Vec<&str> = logs.lines().collect();
    assert_eq!(berth_lines, engine_lines, "berth's copy of the container's output");

    // The re-attached container reports its usage, takes signals and
    // restarts in place.
    assert_task_reports_usage(&agent, &alloc, "t");
    let signal = agent.cli(&["alloc", "signal", "-s", "SIGUSR1", &alloc[..8], "t"]);
    assert_eq!(signal.code, 0, "{signal:?}");
    wait_for("the container to report SIGUSR1", Duration::from_secs(10), || {
        agent.cli(&["alloc", "logs", &alloc, "t"]).stdout.contains("got-usr1").then_some(())
    });
    let restart = agent.cli(&["alloc", "restart", &alloc[..8], "t"]);
    assert_eq!(restart.code, 0, "{restart:?}");
    let replaced = wait_for("a new container", Duration::from_secs(30), || {
        containers_of(&agent, "dcounter").pop().filter(|c| *c != container)
    });
    let a = agent.get(&format!("/v1/allocation/{alloc}"));
    assert_eq!(a["TaskStates"]["t"]["Restarts"], 1, "{a}");
    assert_eq!(agent.alloc_ids("dcounter", "running"), vec![alloc.clone()], "restarted in place");
    assert!(docker(&["ps", "-aq", "--no-trunc"]).lines().all(|c| c != container), "the old container is removed");

    assert_eq!(agent.cli(&["job", "stop", "-purge", "dcounter"]).code, 0);
    wait_for("container removed", Duration::from_secs(30), || {
        docker(&["ps", "-aq", "--no-trunc"]).lines().all(|c| c != replaced).then_some(())
    });
}

#[test]
fn orphaned_containers_are_removed_at_start() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "orphans1");
    let node_id = agent.get("/v1/nodes")[0]["ID"].as_str().unwrap().to_string();
    agent.kill();
    let run_labelled = |name: &str, node: &str| {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "berth.managed=true",
            "--label",
            "berth.alloc_id=not-an-alloc",
            "--label",
            &format!("berth.node_id={node}"),
            "berth-test/tiny:latest",
            "sleep",
            "300",
        ])
    };
    let mine = format!("orphan-mine-{}", std::process::id());
    let other = format!("orphan-other-{}", std::process::id());
    assert!(!run_labelled(&mine, &node_id).is_empty());
    assert!(!run_labelled(&other, "another-node").is_empty());
    agent.start();
    wait_for("this node's orphan to be removed", Duration::from_secs(15), || {
        docker(&["ps", "-aq", "--filter", &format!("name={mine}")]).is_empty().then_some(())
    });
    assert!(
        !docker(&["ps", "-q", "--filter", &format!("name={other}")]).is_empty(),
        "another node's container is left alone"
    );
    docker(&["rm", "-f", &other]);
}

/// Stops the Docker engine (systemd's unit when it runs one, else the
/// dockerd process) and returns how to start it again.
fn stop_engine() -> impl FnOnce() {
    let systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "docker"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if systemd {
        Command::new("systemctl").args(["stop", "docker.socket", "docker"]).status().unwrap();
    } else {
        Command::new("pkill").args(["-TERM", "-x", "dockerd"]).status().unwrap();
    }
    // Gone means the process too: dockerd keeps its pid file until it exits,
    // and a new one refuses to start while it is there.
    wait_for("the engine to stop", Duration::from_secs(60), || {
        let answering = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
        let process =
            Command::new("pgrep").args(["-x", "dockerd"]).output().map(|o| o.status.success()).unwrap_or(false);
        (!answering && !process).then_some(())
    });
    move || {
        if systemd {
            Command::new("systemctl").args(["start", "docker"]).status().unwrap();
        } else {
            // Detached, as scripts/lib.sh starts it: it must outlive the test.
            Command::new("sh").args(["-c", "nohup dockerd >>/var/log/berth-dockerd.log 2>&1 &"]).status().unwrap();
        }
        wait_for("the engine to start", Duration::from_secs(60), || {
            Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false).then_some(())
        });
    }
}

#[test]
fn a_stopped_engine_marks_the_driver_unhealthy_and_the_job_recovers() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "engine1");
    let job = examples("redis.nomad");
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    assert_eq!(containers_of(&agent, "example").len(), 3);

    let start_engine = stop_engine();
    let unhealthy = wait_for("docker to show unhealthy on the node", Duration::from_secs(40), || {
        let n = agent.cli(&["node", "status", "-self"]);
        n.stdout.lines().any(|l| l.starts_with("docker") && l.contains("false")).then_some(n)
    });
    assert!(unhealthy.stdout.contains("Failed to connect to docker daemon"), "{unhealthy:?}");
    start_engine();

    wait_for("the job to be whole again", Duration::from_secs(150), || {
        (containers_of(&agent, "example").len() == 3).then_some(())
    });
    wait_for("docker to be healthy on the node again", Duration::from_secs(40), || {
        let n = agent.cli(&["node", "status", "-self"]);
        n.stdout.lines().any(|l| l.starts_with("docker") && l.contains("true      true")).then_some(())
    });
    assert!(agent.log().lines().all(|l| !l.contains("panicked")), "no crash");
    // Containers that died with the engine are collected once it is back.
    let node = agent.get("/v1/nodes")[0]["ID"].as_str().unwrap().to_string();
    assert_eq!(agent.cli(&["job", "stop", "-purge", "example"]).code, 0);
    wait_for("no container of this node left", Duration::from_secs(60), || {
        docker(&["ps", "-aq", "--filter", &format!("label=berth.node_id={node}")]).is_empty().then_some(())
    });
}

#[test]
fn the_agent_imports_its_own_pause_image() {
    let _engine = engine();
    let image = format!("berth/pause:{}", env!("CARGO_PKG_VERSION"));
    docker(&["rmi", "-f", &image]);
    let root = tempfile::tempdir().unwrap();
    let _agent = Agent::dev(root.path(), "pause1");
    wait_for("the pause image", Duration::from_secs(20), || {
        Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    });
    let name = format!("pause-test-{}", std::process::id());
    assert!(!docker(&["run", "-d", "--name", &name, &image]).is_empty());
    let started = std::time::Instant::now();
    docker(&["stop", "-t", "10", &name]);
    assert!(started.elapsed() < Duration::from_secs(5), "pause exits on SIGTERM");
    assert_eq!(docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]), "0");
    docker(&["rm", "-f", &name]);
}

#[test]
fn a_failed_pull_names_the_image_and_why() {
    let _engine = engine();
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "pull1");
    // A registry on a closed loopback port: refused at once, nothing leaves the host.
    let image = "127.0.0.1:1/berth-missing:1";
    let job = job_file(
        root.path(),
        "missing.nomad",
        &format!(
            "job \"missing\" {{\n  datacenters = [\"dc1\"]\n  group \"g\" {{\n    restart {{\n      attempts = 0\n      mode = \"fail\"\n    }}\n    reschedule {{\n      attempts = 0\n      unlimited = false\n    }}\n    task \"t\" {{\n      driver = \"docker\"\n      config {{\n        image = \"{image}\"\n      }}\n    }}\n  }}\n}}\n"
        ),
    );
    let run = agent.cli(&["job", "run", "-detach", &job]);
    assert_eq!(run.code, 0, "{run:?}");
    let alloc = wait_for("the allocation to fail", Duration::from_secs(30), || {
        agent
            .allocs("missing")
            .into_iter()
            .find(|a| a["ClientStatus"] == "failed")
            .map(|a| a["ID"].as_str().unwrap().to_string())
    });
    let status = agent.cli(&["alloc", "status", &alloc]);
    assert!(status.stdout.contains(&format!("Downloading image {image}")), "{status:?}");
    assert!(status.stdout.contains(&format!("failed to pull image \"{image}\"")), "{status:?}");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "missing"]).code, 0);
}
