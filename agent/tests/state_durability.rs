//! `kill -9` of the server at any moment loses nothing it acknowledged:
//! every job whose registration returned 200 is there after a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Agent;
use serde_json::json;

fn job(id: &str) -> serde_json::Value {
    json!({"Job": {"ID": id, "Type": "batch", "Datacenters": ["nowhere"],
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "raw_exec",
            "Config": {"command": "/bin/true"}}]}]}})
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::dev(root.path(), "crash1");
    let base = format!("http://127.0.0.1:{}", agent.http);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{i}");
                    i += 1;
                    if let Ok(r) = http.put(format!("{base}/v1/jobs")).json(&job(&id)).send() {
                        if r.status().is_success() {
                            acked.lock().unwrap().push(id);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writers made progress ({} writes)", acked.len());
    agent.start();
    let jobs = agent.get("/v1/jobs");
    let present: std::collections::BTreeSet<String> =
        jobs.as_array().unwrap().iter().map(|j| j["ID"].as_str().unwrap().to_string()).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged jobs lost after kill -9: {missing:?}");
    // Their evaluations survived too and are still answerable.
    let evals = agent.get("/v1/evaluations");
    assert!(evals.as_array().unwrap().len() >= acked.len());
}
