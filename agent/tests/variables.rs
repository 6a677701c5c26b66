//! Nomad Variables and templates end to end, on a dev agent with raw_exec
//! tasks: `var put nomad/jobs/web` reaches the web task through its
//! template (`nomadVar`), a stale `-check-index` is refused, the value
//! is in neither the agent's log nor the state file; the same template
//! follows `nomadService "db"`, and when the db allocation moves the web
//! task is restarted with the new address.

mod common;

use std::time::Duration;

use common::{free_port, job_file, wait_for, Agent};

fn db_job(port: u16) -> String {
    format!(
        r#"job "db" {{
  datacenters = ["dc1"]
  group "db" {{
    network {{
      port "db" {{
        static = {port}
      }}
    }}
    service {{
      name     = "db"
      port     = "db"
      provider = "nomad"
    }}
    task "db" {{
      driver = "raw_exec"
      config {{
        command = "/bin/sh"
        args    = ["-c", "exec sleep 600"]
      }}
    }}
  }}
}}
"#
    )
}

const WEB_JOB: &str = r#"job "web" {
  datacenters = ["dc1"]
  group "web" {
    task "web" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo \"pw=$PASSWORD db=$DB_ADDR\"; exec sleep 600"]
      }
      template {
        destination = "secrets/app.env"
        env         = true
        splay       = "0s"
        data        = <<EOT
PASSWORD={{ with nomadVar "nomad/jobs/web" }}{{ .password }}{{ end }}
{{ range nomadService "db" }}DB_ADDR={{ .Address }}:{{ .Port }}{{ end }}
EOT
      }
    }
  }
}
"#;

fn web_alloc(agent: &Agent) -> Option<String> {
    agent.alloc_ids("web", "running").into_iter().next()
}

fn web_logs(agent: &Agent, alloc: &str) -> String {
    agent.text(&format!("/v1/client/fs/logs/{alloc}?task=web&type=stdout&plain=true&origin=start"))
}

#[test]
fn a_template_renders_a_variable_and_follows_a_moving_service() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "vars");
    let secret = format!("hunter2-{}", std::process::id());

    let put = agent.cli(&["var", "put", "nomad/jobs/web", &format!("password={secret}")]);
    assert_eq!(put.code, 0, "{put:?}");
    let first_port = free_port();
    let run = agent.cli(&["job", "run", "-detach", &job_file(root.path(), "db.nomad", &db_job(first_port))]);
    assert_eq!(run.code, 0, "{run:?}");
    wait_for("the db service", Duration::from_secs(60), || {
        let found = agent.get("/v1/service/db");
        (found[0]["Port"] == first_port).then_some(())
    });
    let run = agent.cli(&["job", "run", "-detach", &job_file(root.path(), "web.nomad", WEB_JOB)]);
    assert_eq!(run.code, 0, "{run:?}");
    let alloc = wait_for("the web task to run", Duration::from_secs(60), || web_alloc(&agent));
    let want = format!("pw={secret} db=127.0.0.1:{first_port}");
    wait_for("the web task to print the rendered values", Duration::from_secs(30), || {
        web_logs(&agent, &alloc).contains(&want).then_some(())
    });

    // A stale check index is refused; the current one is accepted.
    let stale = agent.cli(&["var", "get", "-check-index", "1000000", "nomad/jobs/web"]);
    assert_ne!(stale.code, 0, "{stale:?}");
    assert!(stale.stderr.contains("Check-and-Set conflict"), "{stale:?}");
    let stale_put = agent.cli(&["var", "put", "-check-index", "1000000", "nomad/jobs/web", "password=x"]);
    assert_ne!(stale_put.code, 0, "{stale_put:?}");
    let index = agent.get("/v1/var/nomad/jobs/web")["ModifyIndex"].as_u64().unwrap().to_string();
    let current = agent.cli(&["var", "get", "-check-index", &index, "-item", "password", "nomad/jobs/web"]);
    assert_eq!((current.code, current.stdout.trim()), (0, secret.as_str()), "{current:?}");

    // The db moves to another port: the web task restarts with it.
    let second_port = free_port();
    let run = agent.cli(&["job", "run", "-detach", &job_file(root.path(), "db2.nomad", &db_job(second_port))]);
    assert_eq!(run.code, 0, "{run:?}");
    let moved = format!("pw={secret} db=127.0.0.1:{second_port}");
    wait_for("the web task to restart with the new db address", Duration::from_secs(90), || {
        web_logs(&agent, &alloc).contains(&moved).then_some(())
    });
    let state = agent.get(&format!("/v1/allocation/{alloc}"));
    assert!(state["TaskStates"]["web"]["Restarts"].as_u64().unwrap() >= 1, "{state}");
    let events = state["TaskStates"]["web"]["Events"].to_string();
    assert!(events.contains("Template with change_mode restart re-rendered"), "{events}");

    // The secret is in neither the agent's log nor the state file.
    assert!(!agent.log().contains(&secret), "the agent logged the variable's value");
    let db = std::fs::read(agent.dir.join("server/state.db")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "the state file holds the value in plain bytes");
}
