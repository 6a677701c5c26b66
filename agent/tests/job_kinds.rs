//! Periodic and parameterized jobs against a real dev agent: dispatch with
//! a payload and meta, launches on a cron schedule, overlap prohibited,
//! an agent restart that neither loses nor repeats a launch, workload
//! identities, disabled logs and max_run_duration.

mod common;

use std::time::Duration;

use common::{job_file, wait_for, Agent};

/// `/v1/job/<id>` with a child's `/` encoded.
fn job_path(id: &str) -> String {
    format!("/v1/job/{}", id.replace('/', "%2F"))
}

/// The children of `parent` as (ID, status).
fn children(agent: &Agent, parent: &str) -> Vec<(String, String)> {
    let jobs = agent.get(&format!("/v1/jobs?prefix={parent}%2F"));
    let mut out: Vec<(String, String)> = jobs
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|j| j["ParentID"] == parent)
        .map(|j| (j["ID"].as_str().unwrap().to_string(), j["Status"].as_str().unwrap_or("").to_string()))
        .collect();
    out.sort();
    out
}

/// The launch times (Unix seconds) in the IDs of a periodic job's children.
fn launches(agent: &Agent, parent: &str) -> Vec<i64> {
    let prefix = format!("{parent}/periodic-");
    let mut out: Vec<i64> =
        children(agent, parent).iter().filter_map(|(id, _)| id.strip_prefix(&prefix)?.parse().ok()).collect();
    out.sort();
    out
}

/// True when `out` has a `key = value` line, however it is aligned.
fn kv_has(out: &str, key: &str, value: &str) -> bool {
    out.lines().any(|l| l.split_once('=').is_some_and(|(k, v)| k.trim() == key && v.trim() == value))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn dispatch_hands_the_task_its_payload_file_and_meta() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "disp1");
    let job = r#"job "backup" {
  type = "batch"
  meta { owner = "ops" }
  parameterized {
    payload       = "required"
    meta_required = ["target"]
    meta_optional = ["level"]
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      dispatch_payload { file = "in/payload.txt" }
      config {
        command = "/bin/sh"
        args    = ["-c", "echo payload=$(cat ${NOMAD_TASK_DIR}/in/payload.txt) target=$NOMAD_META_target owner=$NOMAD_META_owner parent=$NOMAD_JOB_PARENT_ID"]
      }
    }
  }
}
"#;
    let file = job_file(root.path(), "backup.nomad", job);
    let run = agent.cli(&["job", "run", &file]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Job registration successful") && !run.stdout.contains("Evaluation ID"), "{run:?}");
    assert!(agent.get("/v1/job/backup/allocations").as_array().is_some_and(|a| a.is_empty()), "the parent never runs");
    let status = agent.cli(&["job", "status", "backup"]);
    assert!(kv_has(&status.stdout, "Parameterized", "true"), "{status:?}");
    assert!(kv_has(&status.stdout, "Required Metadata", "target"), "{status:?}");

    let input = job_file(root.path(), "input.txt", "nightly-snapshot");
    let missing = agent.cli(&["job", "dispatch", "backup", &input]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("Dispatch did not provide required meta keys: [\"target\"]"), "{missing:?}");
    let no_payload = agent.cli(&["job", "dispatch", "-meta", "target=nas", "backup"]);
    assert!(no_payload.stderr.contains("Payload is not provided but required"), "{no_payload:?}");
    let bad = agent.cli(&["job", "dispatch", "-meta", "target=nas", "-meta", "color=red", "backup", &input]);
    assert!(bad.stderr.contains("unpermitted metadata keys: [\"color\"]"), "{bad:?}");

    let ok = agent.cli(&["job", "dispatch", "-meta", "target=nas", "backup", &input]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let child = ok
        .stdout
        .lines()
        .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == "Dispatched Job ID").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no child ID: {ok:?}"))
        .trim()
        .to_string();
    assert!(child.starts_with("backup/dispatch-"), "{child}");
    let alloc = wait_for("the child's allocation to complete", Duration::from_secs(30), || {
        let allocs = agent.get(&format!("{}/allocations", job_path(&child)));
        allocs.as_array()?.iter().find(|a| a["ClientStatus"] == "complete")?["ID"].as_str().map(String::from)
    });
    let logs = agent.cli(&["alloc", "logs", &alloc, "t"]);
    assert_eq!(logs.stdout.trim(), "payload=nightly-snapshot target=nas owner=ops parent=backup", "{logs:?}");
    let child_job = agent.get(&job_path(&child));
    assert_eq!(child_job["Dispatched"], true);
    assert_eq!(child_job["Payload"], "bmlnaHRseS1zbmFwc2hvdA==", "Nomad's base64 payload");
    let status = agent.cli(&["job", "status", "backup"]);
    assert!(status.stdout.contains("Dispatched Jobs") && status.stdout.contains(&child), "{status:?}");

    // An ID prefix and an idempotency token: the second dispatch with the
    // token makes nothing and names the first one's child.
    let dispatch = |token: &str| {
        let args = ["job", "dispatch", "-detach", "-id-prefix-template", "weekly", "-idempotency-token", token];
        let out = agent.cli(&[&args[..], &["-meta", "target=nas", "backup", &input]].concat());
        assert_eq!(out.code, 0, "{out:?}");
        let id = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Dispatched Job ID"))
            .map(|v| v.trim_start_matches([' ', '=']).trim().to_string());
        (id.unwrap_or_else(|| panic!("no child ID: {out:?}")), out.stdout.contains("Evaluation ID"))
    };
    let (first, evaluated) = dispatch("week-49");
    assert!(first.starts_with("backup/dispatch-weekly-") && evaluated, "{first}");
    assert_eq!(dispatch("week-49"), (first.clone(), false), "one child per token");
    let (other, _) = dispatch("week-50");
    assert_ne!(other, first);

    let plain = job_file(root.path(), "plain.nomad", &common::raw_exec_job("plain", 1, "plain-marker"));
    assert_eq!(agent.cli(&["job", "run", "-detach", &plain]).code, 0);
    let refused = agent.cli(&["job", "dispatch", "plain"]);
    assert!(refused.stderr.contains("is not a parameterized job"), "{refused:?}");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "plain"]).code, 0);
}

#[test]
fn periodic_children_launch_on_schedule_never_overlap_and_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "peri1");
    let periodic = |id: &str, overlap: bool, seconds: u32| {
        format!(
            "job \"{id}\" {{\n  type = \"batch\"\n  periodic {{\n    cron             = \"*/2 * * * * * *\"\n    \
             prohibit_overlap = {overlap}\n  }}\n  group \"g\" {{\n    task \"t\" {{\n      driver = \"raw_exec\"\n      \
             config {{\n        command = \"/bin/sleep\"\n        args    = [\"{seconds}\"]\n      }}\n    }}\n  }}\n}}\n"
        )
    };
    let quick = job_file(root.path(), "tick.nomad", &periodic("tick", false, 0));
    let slow = job_file(root.path(), "slow.nomad", &periodic("slow", true, 3));
    let run = agent.cli(&["job", "run", &quick]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Approximate next launch time:"), "{run:?}");
    assert_eq!(agent.cli(&["job", "run", &slow]).code, 0);
    let status = agent.cli(&["job", "status", "tick"]);
    assert!(kv_has(&status.stdout, "Periodic", "true"), "{status:?}");
    assert!(status.stdout.contains("Next Periodic Launch"), "{status:?}");

    // Every two seconds, each launch once, on even seconds.
    let got = wait_for("three launches of tick", Duration::from_secs(20), || {
        let l = launches(&agent, "tick");
        (l.len() >= 3).then_some(l)
    });
    assert!(got.iter().all(|t| t % 2 == 0), "{got:?}");
    assert!(got.windows(2).all(|w| w[1] - w[0] >= 2), "{got:?}");
    let done = wait_for("a launched child to complete", Duration::from_secs(20), || {
        children(&agent, "tick").into_iter().find(|(_, s)| s == "dead")
    });
    assert!(done.0.starts_with("tick/periodic-"), "{done:?}");

    // A 3 s task every 2 s with overlap prohibited: the launch while one
    // runs is skipped, so no two are two seconds apart.
    let slow_launches = wait_for("two launches of slow", Duration::from_secs(30), || {
        let l = launches(&agent, "slow");
        (l.len() >= 2).then_some(l)
    });
    assert!(slow_launches.windows(2).all(|w| w[1] - w[0] >= 4), "overlapping launches: {slow_launches:?}");

    // Down across several launch times, then back: the last missed launch
    // is made once, nothing launched before is made again.
    assert_eq!(agent.cli(&["job", "stop", "slow"]).code, 0);
    let before = launches(&agent, "tick");
    agent.kill();
    let down_at = now();
    std::thread::sleep(Duration::from_secs(5));
    agent.start();
    let listening_at = now();
    let after = wait_for("the catch-up launch", Duration::from_secs(20), || {
        let l = launches(&agent, "tick");
        l.iter().any(|t| *t > down_at).then_some(l)
    });
    // The catch-up carries the last launch time that fell due, so it is
    // within the downtime (or the start-up second after it).
    let first_after = after.iter().copied().find(|t| *t > down_at).unwrap();
    assert!(first_after <= listening_at + 2, "the launches due while down were lost: {before:?} → {after:?}");
    let missed: Vec<i64> = after.iter().copied().filter(|t| *t > down_at && *t <= listening_at).collect();
    assert!(missed.len() <= 1, "each missed launch was made instead of one: {before:?} → {after:?}");
    assert!(
        before.iter().all(|t| after.contains(t)),
        "launches from before the restart changed: {before:?} → {after:?}"
    );
    wait_for("launches to go on after the restart", Duration::from_secs(20), || {
        (launches(&agent, "tick").iter().filter(|t| **t > listening_at).count() >= 2).then_some(())
    });

    // Forced, stopped, purged.
    let forced = agent.cli(&["job", "periodic", "force", "-detach", "tick"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stdout.contains("Force periodic successful"), "{forced:?}");
    assert_eq!(agent.cli(&["job", "stop", "tick"]).code, 0);
    let settled = launches(&agent, "tick").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(launches(&agent, "tick").len(), settled, "a stopped periodic job launched again");
    let refused = agent.cli(&["job", "periodic", "force", "tick/periodic-1"]);
    assert_ne!(refused.code, 0, "{refused:?}");
}

#[test]
fn a_task_gets_its_workload_identity_signed_verifiable_and_renewed() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "ident1");
    let job = r#"job "whoami" {
  group "g" {
    task "t" {
      driver = "raw_exec"
      identity {
        env  = true
        file = true
      }
      identity {
        name = "web"
        aud  = ["example.com", "other"]
        file = true
        ttl  = "4s"
      }
      config {
        command = "/bin/sh"
        args    = ["-c", "echo \"$NOMAD_TOKEN\" > ${NOMAD_TASK_DIR}/env_token; sleep 3600"]
      }
    }
  }
}
"#;
    let run = agent.cli(&["job", "run", &job_file(root.path(), "whoami.nomad", job)]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = wait_for("the task to run", Duration::from_secs(30), || {
        agent.alloc_ids("whoami", "running").into_iter().next()
    });
    let task = agent.dir.join("alloc").join(&id).join("t");
    let token = wait_for("the env token", Duration::from_secs(10), || {
        std::fs::read_to_string(task.join("local/env_token")).ok().filter(|t| !t.trim().is_empty())
    });
    let file = std::fs::read_to_string(task.join("secrets/nomad_token")).unwrap();
    assert_eq!(token.trim(), file, "NOMAD_TOKEN and secrets/nomad_token hold one token");

    // Anyone can verify it with the published keys; another key cannot.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(agent.get("/.well-known/jwks.json")).unwrap();
    let kid = jsonwebtoken::decode_header(&file).unwrap().kid.expect("a key ID");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).expect("the signing key is published")).unwrap();
    let verify = |jwt: &str, aud: &str| {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&[aud]);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v).map(|d| d.claims)
    };
    let claims = verify(&file, "nomadproject.io").unwrap();
    assert_eq!(claims["sub"], "global:default:whoami:g:t:default");
    assert_eq!((claims["nomad_allocation_id"].as_str(), claims["nomad_task"].as_str()), (Some(id.as_str()), Some("t")));
    assert!(claims.get("exp").is_none(), "the default identity has no ttl");
    assert!(verify(&format!("{file}x"), "nomadproject.io").is_err(), "a changed signature fails");

    let named = task.join("secrets/nomad_web.jwt");
    let first = std::fs::read_to_string(&named).unwrap();
    let web = verify(&first, "example.com").unwrap();
    let (iat, exp) = (web["iat"].as_i64().unwrap(), web["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 4);
    // Signed again at half its life: a new token, later expiry.
    let renewed = wait_for("the renewed token", Duration::from_secs(15), || {
        std::fs::read_to_string(&named).ok().filter(|t| *t != first)
    });
    assert!(verify(&renewed, "other").unwrap()["exp"].as_i64().unwrap() > exp);

    // The token is the task's own: the API never shows it.
    let alloc = agent.text(&format!("/v1/allocation/{id}"));
    assert!(!alloc.contains(&file) && !alloc.contains(&renewed));
    assert_eq!(agent.cli(&["job", "stop", "-purge", "whoami"]).code, 0);

    // change_mode = "signal": each renewal signals the task.
    let hup = job
        .replace("job \"whoami\"", "job \"hup\"")
        .replace(
            "ttl  = \"4s\"",
            "ttl  = \"4s\"\n        change_mode   = \"signal\"\n        change_signal = \"sighup\"",
        )
        .replace(
            "echo \\\"$NOMAD_TOKEN\\\" > ${NOMAD_TASK_DIR}/env_token; sleep 3600",
            "trap 'echo hup >> ${NOMAD_TASK_DIR}/signals' HUP; while true; do sleep 0.2; done",
        );
    assert!(hup.contains("trap"), "{hup}");
    let run = agent.cli(&["job", "run", &job_file(root.path(), "hup.nomad", &hup)]);
    assert_eq!(run.code, 0, "{run:?}");
    let id =
        wait_for("the task to run", Duration::from_secs(30), || agent.alloc_ids("hup", "running").into_iter().next());
    let signals = agent.dir.join("alloc").join(&id).join("t/local/signals");
    wait_for("the renewal's signal", Duration::from_secs(20), || std::fs::read_to_string(&signals).ok());
    let alloc = agent.get(&format!("/v1/allocation/{id}"));
    let events = alloc["TaskStates"]["t"]["Events"].as_array().cloned().unwrap_or_default();
    assert!(events.iter().any(|e| e["Type"] == "Signaling"), "{events:?}");
    assert_eq!(alloc["TaskStates"]["t"]["Restarts"], 0, "signalled, not restarted");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "hup"]).code, 0);
}

/// `logs { disabled = true }`: the task runs, its output goes nowhere (no
/// log file), and the logs API says so; a task beside it keeps its logs.
#[test]
fn a_task_with_logging_disabled_runs_and_keeps_no_logs() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "nolog1");
    let task = |name: &str, logs: &str| {
        format!(
            "    task \"{name}\" {{\n      driver = \"raw_exec\"\n      {logs}\n      config {{\n        command = \"/bin/sh\"\n        args    = [\"-c\", \"echo said-{name}; touch ${{NOMAD_TASK_DIR}}/ran; sleep 3600\"]\n      }}\n    }}\n"
        )
    };
    let job = format!(
        "job \"quiet\" {{\n  group \"g\" {{\n{}{}  }}\n}}\n",
        task("quiet", "logs {\n        disabled = true\n      }"),
        task("loud", "")
    );
    let run = agent.cli(&["job", "run", &job_file(root.path(), "quiet.nomad", &job)]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = wait_for("the tasks to run", Duration::from_secs(30), || {
        agent.alloc_ids("quiet", "running").into_iter().next()
    });
    let alloc_dir = agent.dir.join("alloc").join(&id);
    wait_for("both tasks to start", Duration::from_secs(10), || {
        (alloc_dir.join("quiet/local/ran").exists() && alloc_dir.join("loud/local/ran").exists()).then_some(())
    });
    let loud = wait_for("the loud task's logs", Duration::from_secs(10), || {
        let out = agent.cli(&["alloc", "logs", &id, "loud"]);
        out.stdout.contains("said-loud").then_some(out)
    });
    assert_eq!(loud.code, 0);
    let logs: Vec<String> = std::fs::read_dir(alloc_dir.join("alloc/logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(logs.iter().all(|f| !f.starts_with("quiet.")), "no log file for the quiet task: {logs:?}");
    let quiet = agent.cli(&["alloc", "logs", &id, "quiet"]);
    assert_ne!(quiet.code, 0, "{quiet:?}");
    assert!(quiet.stderr.contains("logging is disabled"), "{quiet:?}");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "quiet"]).code, 0);
}

/// `max_run_duration`: a batch allocation still running when it runs out
/// is stopped by its client and ends complete, saying why; its poststop
/// task does not run, and nothing replaces it.
#[test]
fn a_batch_allocation_is_stopped_when_its_max_run_duration_runs_out() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "maxrun1");
    let job = concat!(
        "job \"bounded\" {\n  type = \"batch\"\n  group \"g\" {\n    max_run_duration = \"4s\"\n",
        "    task \"work\" {\n      driver = \"raw_exec\"\n      config {\n        command = \"/bin/sleep\"\n        args = [\"3600\"]\n      }\n    }\n",
        "    task \"after\" {\n      driver = \"raw_exec\"\n      lifecycle { hook = \"poststop\" }\n",
        "      config {\n        command = \"/bin/sh\"\n        args = [\"-c\", \"touch ${NOMAD_ALLOC_DIR}/poststop-ran\"]\n      }\n    }\n",
        "  }\n}\n"
    );
    let run = agent.cli(&["job", "run", "-detach", &job_file(root.path(), "bounded.nomad", job)]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = wait_for("the allocation to run", Duration::from_secs(30), || {
        agent.alloc_ids("bounded", "running").into_iter().next()
    });
    let status = agent.cli(&["alloc", "status", &id]);
    let deadline = status.stdout.lines().find(|l| l.starts_with("Max Run Deadline")).unwrap_or_default().to_string();
    assert!(deadline.ends_with("from now"), "{}", status.stdout);
    let alloc = wait_for("the allocation to be stopped", Duration::from_secs(30), || {
        let a = agent.get(&format!("/v1/allocation/{id}"));
        (a["ClientStatus"] == "complete").then_some(a)
    });
    assert_eq!(alloc["ClientDescription"], "allocation exceeded max_run_duration");
    let events: Vec<String> = alloc["TaskStates"]["work"]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}: {}", e["Type"].as_str().unwrap(), e["DisplayMessage"].as_str().unwrap()))
        .collect();
    assert!(events.contains(&"Killing: allocation exceeded max_run_duration".to_string()), "{events:?}");
    assert_eq!(alloc["TaskStates"]["after"]["State"], "dead");
    assert!(!agent.dir.join("alloc").join(&id).join("alloc/poststop-ran").exists(), "the poststop task ran");
    wait_for("the job to be dead", Duration::from_secs(10), || {
        (agent.get("/v1/job/bounded")["Status"] == "dead").then_some(())
    });
    assert_eq!(agent.allocs("bounded").len(), 1, "nothing replaced it");
}
