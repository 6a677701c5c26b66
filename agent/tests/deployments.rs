//! Health-gated deployments end to end, on raw_exec tasks: a rolling
//! update to a version whose HTTP check fails never takes the last
//! healthy allocation away, fails, and auto-reverts to the last stable
//! version; canaries run beside the old version until `deployment
//! promote`, then replace it. Needs busybox on the host.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{job_file, wait_for, Agent};

fn busybox() -> &'static str {
    let found = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists());
    found.expect("needs busybox on the host (busybox-static)")
}

/// Two busybox httpd allocations rolled one at a time; the HTTP check asks
/// for `page`.
fn web_job(www: &std::path::Path, page: &str) -> String {
    format!(
        r#"job "roll" {{
  datacenters = ["dc1"]
  group "web" {{
    count = 2
    network {{
      port "http" {{}}
    }}
    update {{
      max_parallel      = 1
      min_healthy_time  = "1s"
      healthy_deadline  = "6s"
      progress_deadline = "1m"
      auto_revert       = true
    }}
    service {{
      name = "roll"
      port = "http"
      task = "server"
      check {{
        type     = "http"
        path     = "/{page}"
        interval = "1s"
        timeout  = "1s"
      }}
    }}
    task "server" {{
      driver = "raw_exec"
      config {{
        command = "{busybox}"
        args    = ["httpd", "-f", "-p", "${{NOMAD_PORT_http}}", "-h", "{www}"]
      }}
      # A task change, so that each version replaces allocations (a check
      # change alone updates every allocation in place at once).
      env {{
        PAGE = "{page}"
      }}
      resources {{
        cpu    = 50
        memory = 32
      }}
    }}
  }}
}}
"#,
        busybox = busybox(),
        www = www.display()
    )
}

/// Instances of the `roll` service whose check passes, asked of the agent
/// on `http`.
fn passing(http: u16) -> usize {
    let url = format!("http://127.0.0.1:{http}/v1/service/roll");
    let found: serde_json::Value = reqwest::blocking::get(url).and_then(|r| r.json()).unwrap_or_default();
    let list = found.as_array().cloned().unwrap_or_default();
    list.iter().filter(|i| i["Checks"].as_array().is_some_and(|c| c.iter().all(|c| c["Status"] == "success"))).count()
}

fn latest_deployment(agent: &Agent, job: &str) -> serde_json::Value {
    agent.get(&format!("/v1/job/{job}/deployment"))
}

#[test]
fn a_broken_version_never_takes_the_last_healthy_allocation_and_is_reverted() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "deploy-revert");
    let www = root.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ok").unwrap();
    let good = job_file(root.path(), "good.nomad", &web_job(&www, "index.html"));
    let first = agent.cli(&["job", "run", &good]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains("Deployment completed successfully"), "{first:?}");
    assert_eq!(passing(agent.http), 2);
    let history = agent.cli(&["job", "history", "roll"]);
    assert!(history.stdout.contains("Stable      = true"), "a successful deployment marks v0 stable: {history:?}");

    // Sample the healthy instances through the whole update and rollback.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, http) = (stop.clone(), agent.http);
        std::thread::spawn(move || {
            let mut lowest = usize::MAX;
            while !stop.load(Ordering::SeqCst) {
                lowest = lowest.min(passing(http));
                std::thread::sleep(Duration::from_millis(100));
            }
            lowest
        })
    };
    let broken = job_file(root.path(), "broken.nomad", &web_job(&www, "missing.html"));
    let second = agent.cli(&["job", "run", &broken]);
    assert_eq!(second.code, 1, "a failed deployment fails the run: {second:?}");
    assert!(
        second.stdout.contains("Failed due to unhealthy allocations - rolling back to job version 0"),
        "{second:?}"
    );
    wait_for("the rollback to succeed", Duration::from_secs(90), || {
        let d = latest_deployment(&agent, "roll");
        (d["JobVersion"] == 2 && d["Status"] == "successful").then_some(())
    });
    wait_for("both instances to pass", Duration::from_secs(30), || (passing(agent.http) == 2).then_some(()));
    stop.store(true, Ordering::SeqCst);
    let lowest = sampler.join().unwrap();
    assert!(lowest >= 1, "a healthy instance served throughout; lowest seen: {lowest}");

    let job = agent.get("/v1/job/roll");
    assert_eq!(job["Version"], 2);
    assert_eq!(job["TaskGroups"][0]["Services"][0]["Checks"][0]["Path"], "/index.html", "v0's specification");
    let live: Vec<_> = agent.allocs("roll").into_iter().filter(|a| a["DesiredStatus"] == "run").collect();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|a| a["JobVersion"] == 2), "{live:?}");
    let list = agent.cli(&["deployment", "list"]);
    assert!(list.stdout.contains("failed") && list.stdout.contains("successful"), "{list:?}");
    let history = agent.cli(&["job", "history", "-p", "roll"]);
    assert!(history.stdout.contains("Version     = 2"), "{history:?}");
    assert!(history.stdout.contains("missing.html"), "diffs show the broken path: {history:?}");
}

fn canary_job(marker: &str) -> String {
    format!(
        r#"job "canary" {{
  datacenters = ["dc1"]
  group "g" {{
    count = 2
    update {{
      max_parallel     = 1
      canary           = 1
      min_healthy_time = "1s"
      healthy_deadline = "20s"
    }}
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "/bin/sh"
        args    = ["-c", "while true; do echo {marker}; sleep 1; done"]
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

#[test]
fn a_canary_runs_beside_the_old_version_until_promoted() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "deploy-canary");
    let v0 = job_file(root.path(), "v0.nomad", &canary_job("v0-canary-test"));
    assert_eq!(agent.cli(&["job", "run", &v0]).code, 0);
    let v1 = job_file(root.path(), "v1.nomad", &canary_job("v1-canary-test"));
    let run = agent.cli(&["job", "run", "-detach", &v1]);
    assert_eq!(run.code, 0, "{run:?}");
    let dep = wait_for("the canary to be healthy", Duration::from_secs(60), || {
        let d = latest_deployment(&agent, "canary");
        let healthy = d["TaskGroups"]["g"]["HealthyAllocs"] == 1;
        (d["JobVersion"] == 1 && healthy).then_some(d)
    });
    assert_eq!(dep["StatusDescription"], "Deployment is running but requires manual promotion");
    let id = dep["ID"].as_str().unwrap().to_string();
    let live: Vec<_> = agent.allocs("canary").into_iter().filter(|a| a["DesiredStatus"] == "run").collect();
    assert_eq!(live.len(), 3, "two old beside one canary: {live:?}");
    let canary = live.iter().find(|a| a["JobVersion"] == 1).expect("the canary");
    assert_eq!(canary["DeploymentStatus"]["Canary"], true);
    let status = agent.cli(&["deployment", "status", &id[..8]]);
    assert!(status.stdout.contains("Promoted") && status.stdout.contains("Canaries"), "{status:?}");
    let alloc = agent.cli(&["alloc", "status", canary["ID"].as_str().unwrap()]);
    assert!(alloc.stdout.contains("Canary") && alloc.stdout.contains("healthy"), "{alloc:?}");

    let promote = agent.cli(&["deployment", "promote", &id]);
    assert_eq!(promote.code, 0, "{promote:?}");
    wait_for("the deployment to finish", Duration::from_secs(60), || {
        (latest_deployment(&agent, "canary")["Status"] == "successful").then_some(())
    });
    let live: Vec<_> = agent.allocs("canary").into_iter().filter(|a| a["DesiredStatus"] == "run").collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|a| a["JobVersion"] == 1));
    assert!(live.iter().any(|a| a["ID"] == canary["ID"]), "the canary stays");
    let again = agent.cli(&["deployment", "promote", &id]);
    assert_ne!(again.code, 0, "a finished deployment cannot be promoted: {again:?}");
    assert!(again.stderr.contains("can't promote terminal deployment"), "{again:?}");
}
