//! A dev agent running raw_exec jobs end to end through the real CLI:
//! run, restart on kill, plan/run a scale-up, logs, purge; then agent
//! restarts (kill -9) keep tasks and state, and an agent killed while it
//! stops a task finishes the stop when it comes back.

mod common;

use std::time::Duration;

use common::{
    assert_task_reports_usage, counter_job, job_file, pids_with, raw_exec_job, restart_while_counting, wait_for, Agent,
    ALLOCATION_METRICS,
};

#[test]
fn raw_exec_job_lifecycle() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev1");
    let marker = format!("m{}", std::process::id());
    let one = job_file(root.path(), "one.nomad", &raw_exec_job("loop", 1, &marker));
    let three = job_file(root.path(), "three.nomad", &raw_exec_job("loop", 3, &marker));

    let out = agent.cli(&["job", "run", &one]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Deployment") && out.stdout.contains("successful"), "{out:?}");
    let running = agent.alloc_ids("loop", "running");
    assert_eq!(running.len(), 1, "{:?}", agent.allocs("loop"));
    let status = agent.cli(&["job", "status", "loop"]);
    assert!(status.stdout.contains("Status        = running"), "{status:?}");

    // Kill the task's process: the restart policy brings it back.
    let pid = wait_for("task process", Duration::from_secs(10), || pids_with(&marker).first().copied());
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    let new_pid =
        wait_for("restarted task", Duration::from_secs(15), || pids_with(&marker).into_iter().find(|p| *p != pid));
    assert_ne!(new_pid, pid);
    let alloc = agent.cli(&["alloc", "status", &running[0][..8]]);
    assert!(alloc.stdout.contains("Restarting"), "{alloc:?}");
    assert!(alloc.stdout.contains("Total Restarts = 1"), "{alloc:?}");

    // Plan a scale-up: the diff shows the count, exit code 1.
    let plan = agent.cli(&["job", "plan", &three]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("+/- Count: \"1\" => \"3\" (forces create)"), "{plan:?}");
    assert!(plan.stdout.contains("2 create"), "{plan:?}");

    let out = agent.cli(&["job", "run", &three]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_for("three running", Duration::from_secs(20), || {
        (agent.alloc_ids("loop", "running").len() == 3).then_some(())
    });
    let unchanged = agent.cli(&["job", "plan", &three]);
    assert_eq!(unchanged.code, 0, "{unchanged:?}");

    // Logs.
    let id = agent.alloc_ids("loop", "running")[0].clone();
    let logs = wait_for("log output", Duration::from_secs(10), || {
        let l = agent.cli(&["alloc", "logs", &id[..8]]);
        l.stdout.contains(&format!("tick {marker}")).then_some(l)
    });
    assert_eq!(logs.code, 0);
    let tail = agent.cli(&["logs", "-tail", "-n", "1", &id]);
    assert_eq!(tail.stdout.lines().count(), 1, "{tail:?}");

    // Purge: the job is gone and so are its processes.
    let stop = agent.cli(&["job", "stop", "-purge", "loop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let gone = agent.cli(&["job", "status", "loop"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("No job(s) with prefix or ID \"loop\" found"), "{gone:?}");
    wait_for("tasks to stop", Duration::from_secs(15), || pids_with(&marker).is_empty().then_some(()));
}

#[test]
fn agent_restart_keeps_tasks_and_state() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "dev2");
    let marker = format!("r{}", std::process::id());
    let job = job_file(root.path(), "keep.nomad", &raw_exec_job("keep", 2, &marker));
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    wait_for("two running", Duration::from_secs(20), || (agent.alloc_ids("keep", "running").len() == 2).then_some(()));
    let pids = wait_for("two task processes", Duration::from_secs(10), || {
        let p = pids_with(&marker);
        (p.len() == 2).then_some(p)
    });
    let allocs_before = agent.alloc_ids("keep", "running");

    agent.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pids_with(&marker), pids, "tasks must outlive the agent");
    agent.start();

    // Server state survived, client re-attached without restarting anything.
    let status = agent.cli(&["job", "status", "keep"]);
    assert_eq!(status.code, 0, "{status:?}");
    let mut after = wait_for("allocs running after restart", Duration::from_secs(20), || {
        let a = agent.alloc_ids("keep", "running");
        (a.len() == 2).then_some(a)
    });
    let mut before = allocs_before.clone();
    before.sort();
    after.sort();
    assert_eq!(before, after);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pids_with(&marker), pids, "no task was restarted");

    // A re-attached task is still supervised.
    let _ = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status();
    wait_for("re-attached task restarted", Duration::from_secs(15), || {
        let p = pids_with(&marker);
        (p.len() == 2 && !p.contains(&pids[0])).then_some(())
    });
    assert_eq!(agent.cli(&["job", "stop", "-purge", "keep"]).code, 0);
    wait_for("tasks to stop", Duration::from_secs(15), || pids_with(&marker).is_empty().then_some(()));
}

#[test]
fn a_restored_task_keeps_its_logs_takes_signals_and_restarts_in_place() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev_with(root.path(), "dev6", ALLOCATION_METRICS);
    let marker = format!("c{}", std::process::id());
    let driver = r#"driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", {script}]
      }"#;
    let job = job_file(root.path(), "counter.nomad", &counter_job("counter", &marker, driver));
    assert_eq!(agent.cli(&["job", "run", "-detach", &job]).code, 0);
    let alloc = wait_for("running", Duration::from_secs(20), || agent.alloc_ids("counter", "running").pop());

    // Every number once, in order, across three agent restarts.
    restart_while_counting(&mut agent, &alloc, 3);

    // The restored task reports its usage...
    assert_task_reports_usage(&agent, &alloc, "t");

    // ...takes signals...
    let signal = agent.cli(&["alloc", "signal", "-s", "SIGUSR1", &alloc[..8], "t"]);
    assert_eq!(signal.code, 0, "{signal:?}");
    wait_for("the task to report SIGUSR1", Duration::from_secs(10), || {
        agent.cli(&["alloc", "logs", &alloc, "t"]).stdout.contains("got-usr1").then_some(())
    });
    let bad = agent.cli(&["alloc", "signal", "-s", "SIGNOPE", &alloc[..8]]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("unknown signal \"SIGNOPE\""), "{bad:?}");
    let unknown = agent.cli(&["alloc", "signal", &alloc[..8], "nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("Could not find task named: nope"), "{unknown:?}");

    // ...and restarts in place: same allocation, a new process, one restart.
    let pid = wait_for("the task process", Duration::from_secs(10), || pids_with(&marker).first().copied());
    let restart = agent.cli(&["alloc", "restart", &alloc[..8]]);
    assert_eq!(restart.code, 0, "{restart:?}");
    let new_pid = wait_for("a new task process", Duration::from_secs(15), || {
        pids_with(&marker).first().copied().filter(|p| *p != pid)
    });
    assert!(!pids_with(&marker).contains(&pid), "the old process is gone");
    let a = wait_for("the allocation running again", Duration::from_secs(15), || {
        let a = agent.get(&format!("/v1/allocation/{alloc}"));
        (a["ClientStatus"] == "running" && a["TaskStates"]["t"]["State"] == "running").then_some(a)
    });
    assert_eq!(a["TaskStates"]["t"]["Restarts"], 1, "{a}");
    let events: Vec<&str> =
        a["TaskStates"]["t"]["Events"].as_array().unwrap().iter().filter_map(|e| e["Type"].as_str()).collect();
    assert!(events.contains(&"Restart Signaled"), "{events:?}");
    assert_eq!(agent.alloc_ids("counter", "running"), vec![alloc.clone()], "restarted in place");
    assert!(pids_with(&marker).contains(&new_pid));

    // alloc stop: the allocation ends and the scheduler replaces it.
    let stop = agent.cli(&["alloc", "stop", &alloc[..8]]);
    assert_eq!(stop.code, 0, "{stop:?}");
    wait_for("a replacement", Duration::from_secs(20), || {
        agent.alloc_ids("counter", "running").into_iter().find(|a| *a != alloc)
    });
    assert_eq!(agent.get(&format!("/v1/allocation/{alloc}"))["DesiredStatus"], "stop");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "counter"]).code, 0);
    wait_for("tasks to stop", Duration::from_secs(15), || pids_with(&marker).is_empty().then_some(()));
}

#[test]
fn an_agent_killed_while_stopping_a_task_stops_it_after_the_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "dev5");
    let marker = format!("s{}", std::process::id());
    // The task ignores the interrupt, so the stop waits out kill_timeout.
    let job = raw_exec_job("stubborn", 1, &marker)
        .replace("-c\", \"echo", "-c\", \"trap '' INT TERM; echo")
        .replace("driver = \"raw_exec\"", "driver = \"raw_exec\"\n      kill_timeout = \"3s\"");
    let job = job_file(root.path(), "stubborn.nomad", &job);
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    let alloc = wait_for("running", Duration::from_secs(20), || agent.alloc_ids("stubborn", "running").pop());
    let pid = wait_for("the task process", Duration::from_secs(10), || pids_with(&marker).first().copied());

    assert_eq!(agent.cli(&["job", "stop", "-detach", "stubborn"]).code, 0);
    wait_for("the stop to begin", Duration::from_secs(10), || {
        agent.cli(&["alloc", "status", &alloc[..8]]).stdout.contains("Sent interrupt").then_some(())
    });
    agent.kill();
    assert!(pids_with(&marker).contains(&pid), "the task outlives the agent killed mid-stop");
    agent.start();
    wait_for("the task to be stopped after the restart", Duration::from_secs(20), || {
        pids_with(&marker).is_empty().then_some(())
    });
    wait_for("the allocation to complete", Duration::from_secs(10), || {
        (agent.get(&format!("/v1/allocation/{alloc}"))["ClientStatus"] == "complete").then_some(())
    });
}

/// A stopped allocation waits its group's and then its task's
/// `shutdown_delay` before the task is signalled.
#[test]
fn a_stopping_task_is_signalled_after_the_group_and_task_shutdown_delays() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev-delay");
    let marker = format!("d{}", std::process::id());
    let job = raw_exec_job("delayed", 1, &marker)
        .replace("-c\", \"echo", "-c\", \"trap 'echo signalled-at $(date +%s%N); exit 0' INT TERM; echo")
        .replace("  group \"g\" {\n", "  group \"g\" {\n    shutdown_delay = \"1s\"\n")
        .replace("driver = \"raw_exec\"", "driver = \"raw_exec\"\n      shutdown_delay = \"1s\"");
    let job = job_file(root.path(), "delayed.nomad", &job);
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    let alloc = wait_for("running", Duration::from_secs(20), || agent.alloc_ids("delayed", "running").pop());
    wait_for("the task to print", Duration::from_secs(10), || {
        agent.cli(&["alloc", "logs", &alloc, "t"]).stdout.contains("tick").then_some(())
    });
    let stopped = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(agent.cli(&["job", "stop", "-detach", "delayed"]).code, 0);
    wait_for("the allocation to complete", Duration::from_secs(20), || {
        (agent.get(&format!("/v1/allocation/{alloc}"))["ClientStatus"] == "complete").then_some(())
    });
    let logs = agent.cli(&["alloc", "logs", &alloc, "t"]).stdout;
    let signalled: u128 = logs
        .lines()
        .find_map(|l| l.strip_prefix("signalled-at ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("the task was not signalled: {logs}"));
    let waited = Duration::from_nanos((signalled - stopped.as_nanos()) as u64);
    assert!(waited >= Duration::from_secs(2), "signalled {waited:?} after the stop, before 1 s + 1 s of delay");
}

#[test]
fn impossible_jobs_exit_2_with_reasons() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev3");
    let huge = raw_exec_job("huge", 1, "huge").replace("memory = 32", "memory = 99999999");
    let f = job_file(root.path(), "huge.nomad", &huge);
    let out = agent.cli(&["job", "run", &f]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("failed to place all allocations"), "{out:?}");
    assert!(out.stdout.contains("Dimension \"memory\" exhausted on 1 nodes"), "{out:?}");
    let status = agent.cli(&["job", "status", "huge"]);
    assert!(status.stdout.contains("Placement Failure"), "{status:?}");
    let plan = agent.cli(&["job", "plan", &f]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("WARNING: Failed to place all allocations."), "{plan:?}");

    let constrained = raw_exec_job("nowhere", 1, "nowhere").replace(
        "group \"g\" {",
        "constraint {\n    attribute = \"${attr.kernel.name}\"\n    value     = \"plan9\"\n  }\n  group \"g\" {",
    );
    let f = job_file(root.path(), "nowhere.nomad", &constrained);
    let out = agent.cli(&["job", "run", &f]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("Constraint \"${attr.kernel.name} = plan9\": 1 nodes excluded by filter"), "{out:?}");
    // An affinity is a preference, never a filter: it shows in the scores.
    let preferring = raw_exec_job("prefers", 1, "prefers").replace(
        "group \"g\" {",
        "affinity {\n    attribute = \"${attr.kernel.name}\"\n    value     = \"linux\"\n    weight    = 80\n  }\n  affinity {\n    attribute = \"${attr.kernel.name}\"\n    value     = \"plan9\"\n    weight    = -20\n  }\n  group \"g\" {",
    );
    let f = job_file(root.path(), "prefers.nomad", &preferring);
    let plan = agent.cli(&["job", "plan", "-verbose", &f]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("Placement scores of task group \"g\""), "{plan:?}");
    let header = plan.stdout.lines().find(|l| l.starts_with("Node ")).expect("score table");
    assert!(header.contains("node-affinity") && header.contains("final score"), "{plan:?}");
    let row = plan.stdout.lines().skip_while(|l| !l.starts_with("Node ")).nth(1).expect("a scored node");
    // 80 of the 100 weight matched.
    assert!(row.split_whitespace().any(|c| c == "0.800"), "{plan:?}");
    let plain = agent.cli(&["job", "plan", &f]);
    assert!(!plain.stdout.contains("Placement scores"), "{plain:?}");
}

#[test]
fn rolling_update_and_runtime_values() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev4");
    let job = |version: &str| {
        format!(
            r#"job "roll" {{
  datacenters = ["dc1"]
  update {{
    max_parallel = 1
  }}
  group "g" {{
    count = 3
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "/bin/sh"
        args    = ["-c", "cat ${{NOMAD_TASK_DIR}}/info.txt; echo {version}; sleep 300"]
      }}
      template {{
        data        = "alloc={{{{ env \"NOMAD_ALLOC_ID\" }}}} index={{{{ env \"NOMAD_ALLOC_INDEX\" }}}} host={{{{ env \"attr.unique.hostname\" }}}}"
        destination = "local/info.txt"
      }}
      resources {{
        cpu    = 20
        memory = 16
      }}
    }}
  }}
}}
"#
        )
    };
    let v1 = job_file(root.path(), "v1.nomad", &job("roll-v1"));
    let v2 = job_file(root.path(), "v2.nomad", &job("roll-v2"));
    assert_eq!(agent.cli(&["job", "run", &v1]).code, 0);
    let first = agent.alloc_ids("roll", "running");
    assert_eq!(first.len(), 3);

    // Templates and ${...} interpolation are filled in on the client.
    let logs = wait_for("template output", Duration::from_secs(10), || {
        let l = agent.cli(&["alloc", "logs", &first[0]]).stdout;
        l.contains("roll-v1").then_some(l)
    });
    assert!(logs.contains(&format!("alloc={}", first[0])), "{logs}");
    assert!(!logs.contains("${"), "{logs}");

    // A task change replaces every allocation, one at a time.
    let plan = agent.cli(&["job", "plan", &v2]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("forces create/destroy update"), "{plan:?}");
    assert!(plan.stdout.contains("1 create/destroy update"), "max_parallel = 1 bounds the first step: {plan:?}");
    let run = agent.cli(&["job", "run", &v2]);
    assert_eq!(run.code, 0, "{run:?}");
    let allocs = agent.allocs("roll");
    let new: Vec<_> = allocs.iter().filter(|a| a["JobVersion"] == 1 && a["ClientStatus"] == "running").collect();
    assert_eq!(new.len(), 3, "all replaced by version 1: {allocs:#?}");
    assert!(allocs.iter().filter(|a| a["JobVersion"] == 0).all(|a| a["DesiredStatus"] == "stop"));
    // Rolling: the replacements were created one after the other.
    let mut created: Vec<u64> = new.iter().map(|a| a["CreateIndex"].as_u64().unwrap()).collect();
    created.sort_unstable();
    created.dedup();
    assert_eq!(created.len(), 3, "each replacement came from its own evaluation");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "roll"]).code, 0);
}

#[test]
fn a_deployment_that_misses_its_progress_deadline_fails() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev5");
    let job = job_file(
        root.path(),
        "stuck.nomad",
        r#"job "stuck" {
  datacenters = ["dc1"]
  update {
    progress_deadline = "3s"
  }
  group "g" {
    restart {
      attempts = 1
      interval = "1h"
      delay    = "1s"
      mode     = "delay"
    }
    task "t" {
      driver = "raw_exec"
      config {
        command = "/nonexistent/berth-test-binary"
      }
    }
  }
}
"#,
    );
    let started = std::time::Instant::now();
    let run = agent.cli(&["job", "run", &job]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("Failed due to progress deadline"), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(agent.cli(&["job", "stop", "-purge", "stuck"]).code, 0);
}

/// The time of the first event of `kind` of `task` in allocation `a`.
fn event_time(a: &serde_json::Value, task: &str, kind: &str) -> i64 {
    a["TaskStates"][task]["Events"]
        .as_array()
        .and_then(|evs| evs.iter().find(|e| e["Type"] == kind))
        .and_then(|e| e["Time"].as_i64())
        .unwrap_or_else(|| panic!("task {task} has no {kind:?} event: {a}"))
}

#[test]
fn lifecycle_tasks_run_in_nomads_order() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "dev7");
    let task = |name: &str, lifecycle: &str, script: &str| {
        format!(
            "    task \"{name}\" {{\n      driver = \"raw_exec\"\n{lifecycle}      config {{\n        command = \"/bin/sh\"\n        \
             args = [\"-c\", {}]\n      }}\n    }}\n",
            serde_json::to_string(script).unwrap()
        )
    };
    let job = [
        "job \"ordered\" {\n  type = \"batch\"\n  group \"g\" {\n".to_string(),
        task("init", "      lifecycle { hook = \"prestart\" }\n", "echo from-init > $NOMAD_ALLOC_DIR/init.txt"),
        task(
            "proxy",
            "      lifecycle {\n        hook = \"prestart\"\n        sidecar = true\n      }\n",
            "while true; do sleep 0.1; done",
        ),
        task("main", "", "sleep 1; echo main-read-$(cat $NOMAD_ALLOC_DIR/init.txt)"),
        task(
            "cleanup",
            "      lifecycle { hook = \"poststop\" }\n",
            "test -f $NOMAD_ALLOC_DIR/init.txt && echo cleaned > $NOMAD_ALLOC_DIR/post.txt",
        ),
        "  }\n}\n".to_string(),
    ]
    .concat();
    let file = job_file(root.path(), "ordered.nomad", &job);
    let run = agent.cli(&["job", "run", "-detach", &file]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = wait_for("the allocation", Duration::from_secs(20), || {
        agent.allocs("ordered").first().and_then(|a| a["ID"].as_str().map(String::from))
    });
    let a = wait_for("the allocation to complete", Duration::from_secs(40), || {
        let a = agent.get(&format!("/v1/allocation/{id}"));
        (a["ClientStatus"] == "complete").then_some(a)
    });
    for t in ["init", "proxy", "main", "cleanup"] {
        assert_eq!(a["TaskStates"][t]["State"], "dead", "{t}: {a}");
        assert_eq!(a["TaskStates"][t]["Failed"], false, "{t}: {a}");
    }
    // The main task read what the prestart task wrote.
    let logs = agent.cli(&["alloc", "logs", &id, "main"]);
    assert!(logs.stdout.contains("main-read-from-init"), "{logs:?}");
    // Main started after init ended and while the sidecar ran; the sidecar
    // was stopped after main ended; the poststop task ran after both.
    let (init_end, main_start) = (event_time(&a, "init", "Terminated"), event_time(&a, "main", "Started"));
    assert!(init_end <= main_start, "main started before init ended: {a}");
    assert!(event_time(&a, "proxy", "Started") <= main_start, "{a}");
    let main_end = event_time(&a, "main", "Terminated");
    assert!(main_end <= event_time(&a, "proxy", "Killing"), "the sidecar was stopped before main ended: {a}");
    let cleanup_start = event_time(&a, "cleanup", "Started");
    assert!(event_time(&a, "proxy", "Killed") <= cleanup_start, "poststop ran beside the sidecar: {a}");
    let alloc_dir = agent.dir.join("alloc").join(&id).join("alloc");
    assert_eq!(std::fs::read_to_string(alloc_dir.join("post.txt")).unwrap_or_default().trim(), "cleaned");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "ordered"]).code, 0);
}

#[test]
fn job_scale_changes_a_groups_count_within_its_scaling_bounds() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "scale1");
    // No count: the group starts at its scaling minimum.
    let src = raw_exec_job("elastic", 1, "elastic").replace(
        "    count = 1\n",
        "    scaling {\n      min = 2\n      max = 3\n      policy {\n        cooldown = \"1m\"\n      }\n    }\n",
    );
    let f = job_file(root.path(), "elastic.nomad", &src);
    let out = agent.cli(&["job", "run", &f]);
    assert_eq!(out.code, 0, "{out:?}");
    let job = agent.get("/v1/job/elastic");
    assert_eq!(job["TaskGroups"][0]["Count"], 2, "{job}");
    assert_eq!(job["TaskGroups"][0]["Scaling"]["Max"], 3);
    assert_eq!(job["TaskGroups"][0]["Scaling"]["Policy"]["cooldown"], "1m");

    let out = agent.cli(&["job", "scale", "elastic", "3"]);
    assert_eq!(out.code, 0, "{out:?}");
    common::wait_for("three running allocations", std::time::Duration::from_secs(30), || {
        (agent.alloc_ids("elastic", "running").len() == 3).then_some(())
    });
    let job = agent.get("/v1/job/elastic");
    assert_eq!((job["TaskGroups"][0]["Count"].clone(), job["Version"].clone()), (3.into(), 1.into()));
    let status = agent.get("/v1/job/elastic/scale");
    assert_eq!((status["JobID"].as_str(), status["JobStopped"].as_bool()), (Some("elastic"), Some(false)));
    let g = &status["TaskGroups"]["g"];
    assert_eq!((g["Desired"].as_u64(), g["Placed"].as_u64(), g["Running"].as_u64()), (Some(3), Some(3), Some(3)));
    assert_eq!((g["Healthy"].as_u64(), g["Unhealthy"].as_u64()), (Some(3), Some(0)), "{status}");

    let out = agent.cli(&["job", "scale", "elastic", "g", "5"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("group count was greater than scaling policy maximum: 5 > 3"), "{out:?}");
    let out = agent.cli(&["job", "scale", "elastic", "nope", "2"]);
    assert!(out.stderr.contains("task group \"nope\" specified for scaling does not exist in job"), "{out:?}");
    let out = agent.cli(&["job", "scale", "-detach", "elastic", "g", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Job scale successful"), "{out:?}");
    common::wait_for("two running allocations", std::time::Duration::from_secs(30), || {
        (agent.alloc_ids("elastic", "running").len() == 2).then_some(())
    });
    let bad = src.replace("max = 3", "max = 1");
    let f = job_file(root.path(), "bad.nomad", &bad);
    let out = agent.cli(&["job", "validate", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("scaling policy maximum count must not be less than minimum count"), "{out:?}");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "elastic"]).code, 0);
}
