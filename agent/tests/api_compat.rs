//! The HTTP API as existing Nomad clients use it: JSON jobs with Go's
//! `null`s and omitted fields, PUT or POST for writes, PascalCase answers,
//! blocking queries with `X-Nomad-Index`, and plain-text errors.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Agent};
use serde_json::{json, Value};

/// A job as Nomad's Go API client serialises it: nil slices and maps as
/// null, pointers left out, durations in nanoseconds.
fn go_style_job(id: &str) -> Value {
    json!({
        "ID": id, "Name": id, "Type": "service", "Datacenters": ["dc1"],
        "Constraints": null, "Affinities": null, "Spreads": null, "Meta": null,
        "TaskGroups": [{
            "Name": "web",
            "Constraints": null, "Networks": null, "Volumes": null, "Services": null,
            "RestartPolicy": {"Attempts": 2, "Interval": 1_800_000_000_000i64, "Delay": 1_000_000_000, "Mode": "fail"},
            "Tasks": [{
                "Name": "server", "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", "sleep 300"]},
                "Env": null, "Templates": null, "Services": null,
                "Resources": {"CPU": 50, "MemoryMB": 32, "Networks": null},
                "KillTimeout": 2_000_000_000
            }]
        }]
    })
}

#[test]
fn nomad_clients_can_drive_jobs() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "api1");
    let base = format!("http://127.0.0.1:{}", agent.http);
    let http = reqwest::blocking::Client::new();

    // Register with PUT, Go-style body.
    let resp = http.put(format!("{base}/v1/jobs")).json(&json!({"Job": go_style_job("api-web")})).send().unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert!(resp.headers().get("X-Nomad-Index").is_some());
    let reg: Value = resp.json().unwrap();
    assert!(reg["EvalID"].as_str().unwrap().len() == 36, "{reg}");
    assert!(reg["JobModifyIndex"].as_u64().unwrap() > 0);

    // List and read: PascalCase, Count defaulted to 1, defaults filled.
    let jobs: Value = http.get(format!("{base}/v1/jobs")).send().unwrap().json().unwrap();
    assert_eq!(jobs[0]["ID"], "api-web");
    assert!(jobs[0]["JobSummary"]["Summary"]["web"].is_object(), "{jobs}");
    let job: Value = http.get(format!("{base}/v1/job/api-web")).send().unwrap().json().unwrap();
    assert_eq!(job["TaskGroups"][0]["Count"], 1);
    assert_eq!(job["Priority"], 50);
    assert_eq!(job["Namespace"], "default");
    assert_eq!(job["TaskGroups"][0]["Tasks"][0]["Config"]["command"], "/bin/sh");

    wait_for("allocation running", Duration::from_secs(15), || {
        (agent.alloc_ids("api-web", "running").len() == 1).then_some(())
    });
    let allocs: Value = http.get(format!("{base}/v1/job/api-web/allocations")).send().unwrap().json().unwrap();
    let alloc_id = allocs[0]["ID"].as_str().unwrap().to_string();
    let alloc: Value = http.get(format!("{base}/v1/allocation/{alloc_id}")).send().unwrap().json().unwrap();
    assert_eq!(alloc["Job"]["ID"], "api-web");
    assert_eq!(alloc["TaskStates"]["server"]["State"], "running");
    let nodes: Value = http.get(format!("{base}/v1/nodes")).send().unwrap().json().unwrap();
    assert_eq!(nodes[0]["Status"], "ready");
    assert_eq!(nodes[0]["Drivers"]["raw_exec"]["Healthy"], true);
    let node: Value =
        http.get(format!("{base}/v1/node/{}", nodes[0]["ID"].as_str().unwrap())).send().unwrap().json().unwrap();
    assert!(node.get("SecretID").is_none(), "the node secret never leaves the server");

    // Plan with POST: a count change is a create.
    let mut bigger = go_style_job("api-web");
    bigger["TaskGroups"][0]["Count"] = json!(2);
    let plan: Value = http
        .post(format!("{base}/v1/job/api-web/plan"))
        .json(&json!({"Job": bigger, "Diff": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(plan["Annotations"]["DesiredTGUpdates"]["web"]["Place"], 1, "{plan}");
    assert_eq!(plan["Diff"]["Type"], "Edited");

    // Blocking query: returns when the index moves, with a new X-Nomad-Index.
    let index: u64 = http.get(format!("{base}/v1/jobs")).send().unwrap().headers()["X-Nomad-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let started = Instant::now();
    let waiter = {
        let url = format!("{base}/v1/jobs?index={index}&wait=20s");
        std::thread::spawn(move || {
            let r = reqwest::blocking::Client::new().get(url).timeout(Duration::from_secs(30)).send().unwrap();
            r.headers()["X-Nomad-Index"].to_str().unwrap().parse::<u64>().unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    http.delete(format!("{base}/v1/job/api-web")).send().unwrap();
    let new_index = waiter.join().unwrap();
    assert!(new_index > index);
    assert!(started.elapsed() < Duration::from_secs(15), "the blocking query returned on the write");

    // Stopped, then purged.
    let job: Value = http.get(format!("{base}/v1/job/api-web")).send().unwrap().json().unwrap();
    assert_eq!(job["Stop"], true);
    let resp = http.delete(format!("{base}/v1/job/api-web?purge=true")).send().unwrap();
    assert_eq!(resp.status(), 200);

    // Errors are plain text with Nomad's status codes.
    let resp = http.get(format!("{base}/v1/job/api-web")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["Content-Type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(resp.text().unwrap(), "job not found");
    let resp = http.put(format!("{base}/v1/jobs")).body("{not json").send().unwrap();
    assert_eq!(resp.status(), 400);
    let resp =
        http.put(format!("{base}/v1/jobs")).json(&json!({"Job": {"ID": "bad", "TaskGroups": []}})).send().unwrap();
    assert_eq!(resp.status(), 400, "a job with no groups is refused");
    let enforce = http
        .put(format!("{base}/v1/jobs"))
        .json(&json!({"Job": go_style_job("enf"), "EnforceIndex": true, "JobModifyIndex": 7}))
        .send()
        .unwrap();
    assert_eq!(enforce.status(), 400);
    assert_eq!(enforce.text().unwrap(), "Enforcing job modify index 7: job does not exist");

    // /v1/jobs/parse turns HCL into API JSON.
    let parsed: Value = http
        .post(format!("{base}/v1/jobs/parse"))
        .json(&json!({"JobHCL": "job \"p\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"raw_exec\"\n      config { command = \"/bin/true\" }\n    }\n  }\n}\n", "Canonicalize": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(parsed["ID"], "p");
    assert_eq!(parsed["TaskGroups"][0]["Tasks"][0]["Driver"], "raw_exec");
    // Variables is var-file content, as Nomad's API takes it.
    let hcl = "variable \"n\" { type = number }\njob \"p\" {\n  group \"g\" {\n    count = var.n\n    task \"t\" {\n      driver = \"raw_exec\"\n      config { command = \"/bin/true\" }\n    }\n  }\n}\n";
    let parse = |variables: &str| {
        http.post(format!("{base}/v1/jobs/parse")).json(&json!({"JobHCL": hcl, "Variables": variables})).send().unwrap()
    };
    let parsed: Value = parse("n = 3 # three\n").json().unwrap();
    assert_eq!(parsed["TaskGroups"][0]["Count"], 3);
    let bad = parse("m = 3\n");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("variables:1:1: variable \"m\" is set here but not declared"));

    // As Nomad's, the parser takes a fragment; registering it is what fails.
    let fragment = json!({"JobHCL": "job \"frag\" {\n  datacenters = [\"dc1\"]\n}\n"});
    let parsed: Value = http.post(format!("{base}/v1/jobs/parse")).json(&fragment).send().unwrap().json().unwrap();
    assert_eq!(parsed["ID"], "frag");
    assert_eq!(parsed["TaskGroups"], json!([]));
    let register = http.post(format!("{base}/v1/jobs")).json(&json!({"Job": parsed})).send().unwrap();
    assert_eq!(register.status(), 400);
    assert!(register.text().unwrap().contains("no task groups"));
}

#[test]
fn check_index_guards_updates() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "api2");
    let f = common::job_file(root.path(), "ci.nomad", &common::raw_exec_job("ci", 1, "checkindex"));
    let first = agent.cli(&["job", "run", "-detach", "-check-index", "0", &f]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains("Evaluation ID:"), "{first:?}");
    let again = agent.cli(&["job", "run", "-check-index", "0", &f]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("Enforcing job modify index 0: job already exists"), "{again:?}");
    assert!(again.stderr.contains("Job not updated"), "{again:?}");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "ci"]).code, 0);
}
