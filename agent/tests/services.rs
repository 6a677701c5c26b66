//! Native service discovery end to end: a Docker task's service with a
//! TCP check (the seed's `redis-cache`), registered at the address its
//! port is published on, critical once the container is paused, its task
//! restarted by `check_restart`, and gone after `job stop -purge`; a
//! raw_exec group service following its `task` with an HTTP check. Needs
//! Docker and the local test images (`scripts/build-test-images.sh`) and
//! busybox on the host.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{job_file, wait_for, Agent};

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The instances of a service, as the API lists them.
fn instances(agent: &Agent, name: &str) -> Vec<serde_json::Value> {
    agent.get(&format!("/v1/service/{name}")).as_array().cloned().unwrap_or_default()
}

/// The status of the first check of the only instance, once there is one.
fn check_status(agent: &Agent, name: &str) -> Option<String> {
    let found = instances(agent, name);
    let status = found.first()?["Checks"][0]["Status"].as_str()?.to_string();
    Some(status)
}

const REDIS_LIKE: &str = r#"job "example" {
  datacenters = ["dc1"]
  group "cache" {
    network {
      port "db" {
        to = 6379
      }
    }
    restart {
      attempts = 5
      delay    = "1s"
    }
    task "redis" {
      driver = "docker"
      config {
        image   = "berth-test/tiny:latest"
        command = "sh"
        args    = ["-c", "echo ok > /tmp/index.html; exec httpd -f -p 6379 -h /tmp"]
        ports   = ["db"]
      }
      service {
        name     = "redis-cache"
        tags     = ["global", "cache"]
        port     = "db"
        provider = "nomad"
        check {
          name     = "alive"
          type     = "tcp"
          interval = "1s"
          timeout  = "1s"
          check_restart {
            limit = 2
            grace = "1s"
          }
        }
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
"#;

#[test]
fn a_docker_service_is_registered_fails_when_paused_is_restarted_and_goes_with_its_job() {
    let images = Command::new("docker").args(["image", "inspect", "berth-test/tiny:latest"]).output();
    assert!(
        images.map(|o| o.status.success()).unwrap_or(false),
        "needs the Docker engine and the test images: run scripts/build-test-images.sh"
    );
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "svc-docker");
    let job = job_file(root.path(), "redis.nomad", REDIS_LIKE);
    let run = agent.cli(&["job", "run", "-detach", &job]);
    assert_eq!(run.code, 0, "{run:?}");

    wait_for("the check to pass", Duration::from_secs(90), || {
        (check_status(&agent, "redis-cache").as_deref() == Some("success")).then_some(())
    });
    let found = instances(&agent, "redis-cache");
    assert_eq!(found.len(), 1, "{found:?}");
    let alloc_id = found[0]["AllocID"].as_str().unwrap().to_string();
    let alloc = agent.get(&format!("/v1/allocation/{alloc_id}"));
    let port = &alloc["AllocatedResources"]["Shared"]["Ports"][0];
    assert_eq!(found[0]["Port"], port["Value"], "the host port the container is published on");
    assert_eq!(found[0]["Address"], port["HostIP"]);
    assert_eq!(found[0]["JobID"], "example");
    assert_eq!(found[0]["Tags"], serde_json::json!(["global", "cache"]));

    let info = agent.cli(&["service", "info", "redis-cache"]);
    assert_eq!(info.code, 0, "{info:?}");
    let address = format!("{}:{}", port["HostIP"].as_str().unwrap(), port["Value"]);
    assert!(info.stdout.contains(&address) && info.stdout.contains("success (1/1 passing)"), "{info:?}");
    let list = agent.cli(&["service", "list"]);
    assert!(list.stdout.contains("redis-cache") && list.stdout.contains("[cache,global]"), "{list:?}");
    let status = agent.cli(&["alloc", "status", &alloc_id]);
    assert!(status.stdout.contains("Nomad Service Checks:"), "{status:?}");
    assert!(status.stdout.contains("redis-cache  redis  alive  healthiness  success"), "{status:?}");

    // Paused, the container holds its port but answers nothing.
    let container = docker(&["ps", "-q", "--filter", &format!("label=berth.alloc_id={alloc_id}")]);
    assert!(!container.is_empty());
    assert_eq!(docker(&["pause", &container]), container);
    wait_for("the check to fail", Duration::from_secs(30), || {
        (check_status(&agent, "redis-cache").as_deref() == Some("failure")).then_some(())
    });
    let checks = agent.get(&format!("/v1/allocation/{alloc_id}/checks"));
    let result = checks.as_object().and_then(|m| m.values().next()).cloned().unwrap_or_default();
    assert_eq!((result["Status"].as_str(), result["Check"].as_str()), (Some("failure"), Some("alive")), "{checks}");
    assert!(result["Output"].as_str().unwrap_or_default().contains("paused"), "{result}");

    // check_restart (limit 2) restarts the task; the new container passes.
    let restarted = wait_for("check_restart to restart the task", Duration::from_secs(60), || {
        let a = agent.get(&format!("/v1/allocation/{alloc_id}"));
        let state = &a["TaskStates"]["redis"];
        let events = state["Events"].as_array().cloned().unwrap_or_default();
        let signaled = events.iter().any(|e| {
            e["Type"] == "Restart Signaled"
                && e["DisplayMessage"].as_str().unwrap_or_default().contains("\"alive\" unhealthy")
        });
        (signaled && state["Restarts"].as_u64().unwrap_or(0) >= 1).then_some(a)
    });
    assert_eq!(restarted["ID"], alloc_id.as_str(), "restarted in place, not replaced");
    wait_for("the restarted task's check to pass", Duration::from_secs(60), || {
        (check_status(&agent, "redis-cache").as_deref() == Some("success")).then_some(())
    });
    assert_ne!(docker(&["ps", "-q", "--filter", &format!("label=berth.alloc_id={alloc_id}")]), container);

    let stop = agent.cli(&["job", "stop", "-purge", "example"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    wait_for("the service to be gone", Duration::from_secs(60), || {
        instances(&agent, "redis-cache").is_empty().then_some(())
    });
    let list = agent.cli(&["service", "list"]);
    assert!(list.stdout.contains("No service registrations found"), "{list:?}");
    let _ = docker(&["rm", "-f", &container]);
}

#[test]
fn a_group_service_follows_its_task_and_an_http_check_sees_the_task_stop_answering() {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists());
    let busybox = busybox.expect("needs busybox on the host (busybox-static)");
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "svc-raw");
    let www = root.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ok").unwrap();
    let job = format!(
        r#"job "web" {{
  datacenters = ["dc1"]
  group "web" {{
    network {{
      port "http" {{}}
    }}
    service {{
      name = "web"
      port = "http"
      task = "server"
      check {{
        type     = "http"
        path     = "/index.html"
        interval = "1s"
        timeout  = "1s"
        header {{
          X-Check = ["berth"]
        }}
      }}
    }}
    task "server" {{
      driver = "raw_exec"
      config {{
        command = "{busybox}"
        args    = ["httpd", "-f", "-p", "${{NOMAD_PORT_http}}", "-h", "{www}"]
      }}
    }}
  }}
}}
"#,
        www = www.display()
    );
    let path = job_file(root.path(), "web.nomad", &job);
    let run = agent.cli(&["job", "run", "-detach", &path]);
    assert_eq!(run.code, 0, "{run:?}");
    wait_for("the http check to pass", Duration::from_secs(60), || {
        (check_status(&agent, "web").as_deref() == Some("success")).then_some(())
    });
    let found = instances(&agent, "web");
    assert!(found[0]["ID"].as_str().unwrap().contains("-group-web-web-http"), "{found:?}");
    assert_eq!(found[0]["Checks"][0]["StatusCode"], 200);

    // A page the server no longer has: the check fails with its status.
    std::fs::remove_file(www.join("index.html")).unwrap();
    wait_for("the http check to fail", Duration::from_secs(30), || {
        (check_status(&agent, "web").as_deref() == Some("failure")).then_some(())
    });
    assert_eq!(instances(&agent, "web")[0]["Checks"][0]["StatusCode"], 404);

    // An operator's delete is undone by the client's next sync only when
    // something changes; the stop takes it away for good.
    let id = found[0]["ID"].as_str().unwrap().to_string();
    let delete = agent.cli(&["service", "delete", "web", &id]);
    assert_eq!(delete.code, 0, "{delete:?}");
    assert!(delete.stdout.contains("Successfully deleted service registration"), "{delete:?}");
    assert!(instances(&agent, "web").is_empty());
    let missing = agent.cli(&["service", "delete", "web", &id]);
    assert_ne!(missing.code, 0, "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{missing:?}");
    assert_eq!(agent.cli(&["job", "stop", "web"]).code, 0);
    wait_for("the job to stop", Duration::from_secs(30), || agent.alloc_ids("web", "running").is_empty().then_some(()));
    assert!(instances(&agent, "web").is_empty());
}
