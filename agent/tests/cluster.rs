//! One server and several clients started from Nomad-style config files on
//! one host: clients register over the network, a client that stops
//! heartbeating goes down and its allocations are replaced elsewhere (or,
//! with `disconnect { lost_after }`, kept as unknown until it is back), and
//! system jobs cover every node, including one that joins later.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, job_file, raw_exec_job, wait_for, Agent};

fn server(root: &Path) -> Agent {
    let (http, rpc) = (free_port(), free_port());
    let cfg = format!(
        r#"name       = "server1"
datacenter = "dc1"
bind_addr  = "127.0.0.1"
log_level  = "DEBUG"
ports {{
  http = {http}
  rpc  = {rpc}
  serf = {serf}
}}
server {{
  enabled           = true
  bootstrap_expect  = 1
  min_heartbeat_ttl = "3s"
  heartbeat_grace   = "4s"
}}
"#,
        serf = free_port()
    );
    Agent::with_config(root, "server1", http, rpc, &cfg, &[])
}

fn client(root: &Path, name: &str, server_rpc: u16) -> Agent {
    let http = free_port();
    let cfg = format!(
        r#"name       = "{name}"
datacenter = "dc1"
bind_addr  = "127.0.0.1"
ports {{
  http = {http}
}}
client {{
  enabled = true
  servers = ["127.0.0.1:{server_rpc}"]
  meta {{
    node = "{name}"
  }}
}}
plugin "raw_exec" {{
  config {{
    enabled = true
  }}
}}
"#
    );
    Agent::with_config(root, name, http, 0, &cfg, &[])
}

fn ready_nodes(server: &Agent) -> usize {
    server.get("/v1/nodes").as_array().map(|n| n.iter().filter(|n| n["Status"] == "ready").count()).unwrap_or(0)
}

#[test]
fn clients_register_and_lost_allocations_are_replaced() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let mut clients: Vec<Agent> = (1..=3).map(|i| client(root.path(), &format!("client{i}"), server.rpc)).collect();
    wait_for("three ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 3).then_some(()));
    let nodes = server.cli(&["node", "status"]);
    assert_eq!(nodes.code, 0);
    assert_eq!(nodes.stdout.matches("ready").count(), 3, "{nodes:?}");
    let members = server.cli(&["server", "members"]);
    assert!(members.stdout.contains("server1.global") && members.stdout.contains("alive"), "{members:?}");
    // A client agent answers API calls by forwarding to its server.
    let via_client = clients[0].cli(&["node", "status"]);
    assert_eq!(via_client.stdout.matches("ready").count(), 3, "{via_client:?}");

    let marker = format!("c{}", std::process::id());
    let job = job_file(root.path(), "spread.nomad", &raw_exec_job("spread", 3, &marker));
    let run = server.cli(&["job", "run", &job]);
    assert_eq!(run.code, 0, "{run:?}");
    wait_for("three running", Duration::from_secs(20), || {
        (server.alloc_ids("spread", "running").len() == 3).then_some(())
    });

    // Logs of an allocation on another node come through the server.
    let id = server.alloc_ids("spread", "running")[0].clone();
    wait_for("forwarded logs", Duration::from_secs(10), || {
        server.cli(&["alloc", "logs", &id]).stdout.contains(&format!("tick {marker}")).then_some(())
    });

    // Stop the client that runs the most allocations.
    let allocs = server.allocs("spread");
    let victim_node = allocs[0]["NodeID"].as_str().unwrap().to_string();
    let victim_name = allocs[0]["NodeName"].as_str().unwrap().to_string();
    let on_victim = allocs.iter().filter(|a| a["NodeID"] == victim_node.as_str()).count();
    let idx = clients.iter().position(|c| c.name == victim_name).unwrap();
    clients[idx].kill();
    wait_for("node to go down", Duration::from_secs(20), || {
        (server.get(&format!("/v1/node/{victim_node}"))["Status"] == "down").then_some(())
    });
    wait_for("replacements running elsewhere", Duration::from_secs(30), || {
        let all = server.allocs("spread");
        let running_elsewhere = all
            .iter()
            .filter(|a| {
                a["DesiredStatus"] == "run" && a["ClientStatus"] == "running" && a["NodeID"] != victim_node.as_str()
            })
            .count();
        (running_elsewhere == 3).then_some(())
    });
    let lost = server.allocs("spread").iter().filter(|a| a["ClientStatus"] == "lost").count();
    assert_eq!(lost, on_victim, "lost allocations are reported as lost: {:#?}", server.allocs("spread"));
    let status = server.cli(&["job", "status", "spread"]);
    assert!(status.stdout.contains("lost"), "{status:?}");
    assert_eq!(server.cli(&["job", "stop", "-purge", "spread"]).code, 0);
}

#[test]
fn system_jobs_cover_every_node_including_late_joiners() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let _c1 = client(root.path(), "sys1", server.rpc);
    let _c2 = client(root.path(), "sys2", server.rpc);
    wait_for("two ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 2).then_some(()));
    let marker = format!("s{}", std::process::id());
    let text = raw_exec_job("everywhere", 1, &marker).replacen(
        "datacenters = [\"dc1\"]",
        "datacenters = [\"dc1\"]\n  type = \"system\"",
        1,
    );
    let job = job_file(root.path(), "system.nomad", &text);
    let run = server.cli(&["job", "run", &job]);
    assert_eq!(run.code, 0, "{run:?}");
    wait_for("one per node", Duration::from_secs(20), || {
        (server.alloc_ids("everywhere", "running").len() == 2).then_some(())
    });

    let _c3 = client(root.path(), "sys3", server.rpc);
    wait_for("the late joiner gets one too", Duration::from_secs(30), || {
        (server.alloc_ids("everywhere", "running").len() == 3).then_some(())
    });
    let nodes: std::collections::BTreeSet<String> =
        server.allocs("everywhere").iter().map(|a| a["NodeID"].as_str().unwrap().to_string()).collect();
    assert_eq!(nodes.len(), 3, "one allocation on each node");
    assert_eq!(server.cli(&["job", "stop", "-purge", "everywhere"]).code, 0);
}

/// The state index `path` answers with (`X-Nomad-Index`).
fn state_index(agent: &Agent, path: &str) -> u64 {
    let url = format!("http://127.0.0.1:{}{path}", agent.http);
    let resp = reqwest::blocking::get(url).expect("the server answers");
    resp.headers()["X-Nomad-Index"].to_str().unwrap().parse().unwrap()
}

/// Clients with running allocations heartbeat (registered once, no
/// re-registration) and an idle cluster writes nothing: the state index
/// stays where it is while a dozen heartbeats go by.
#[test]
fn an_idle_cluster_heartbeats_without_writing() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let clients: Vec<Agent> = (1..=2).map(|i| client(root.path(), &format!("idle{i}"), server.rpc)).collect();
    wait_for("two ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 2).then_some(()));
    let marker = format!("i{}", std::process::id());
    let job = job_file(root.path(), "idle.nomad", &raw_exec_job("idle", 2, &marker));
    let run = server.cli(&["job", "run", &job]);
    assert_eq!(run.code, 0, "{run:?}");

    let before = (state_index(&server, "/v1/nodes"), state_index(&server, "/v1/allocations"));
    // min_heartbeat_ttl is 3 s: each client beats every 1 to 1.5 s.
    std::thread::sleep(Duration::from_secs(12));
    let after = (state_index(&server, "/v1/nodes"), state_index(&server, "/v1/allocations"));
    assert_eq!(after, before, "an idle cluster wrote to its state");
    for c in &clients {
        let log = c.log();
        assert_eq!(log.matches("node registered").count(), 1, "{} registered again:\n{log}", c.name);
        assert!(!log.contains("cannot reach servers"), "{}: {log}", c.name);
    }
    assert_eq!(ready_nodes(&server), 2);
    assert_eq!(server.cli(&["job", "stop", "-purge", "idle"]).code, 0);
}

/// A counter of an agent's `/v1/metrics`.
fn counter(agent: &Agent, name: &str) -> u64 {
    let metrics = agent.get("/v1/metrics");
    let found = metrics["Counters"].as_array().and_then(|c| c.iter().find(|c| c["Name"] == name).cloned());
    found.and_then(|c| c["Count"].as_u64()).unwrap_or(0)
}

/// `raw_exec_job` placed on the client whose `meta.node` is `node`.
fn pinned_job(id: &str, count: u32, marker: &str, node: &str) -> String {
    raw_exec_job(id, count, marker).replacen(
        "group \"g\" {",
        &format!(
            "constraint {{\n    attribute = \"${{meta.node}}\"\n    value     = \"{node}\"\n  }}\n  group \"g\" {{"
        ),
        1,
    )
}

/// Clients follow their allocations by index: a write wakes only the
/// client whose allocations it changes, which then fetches those
/// allocations and no others; a client's own status reports wake nobody.
#[test]
fn a_write_reaches_only_the_client_whose_allocations_it_changes() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let (one, two) = (client(root.path(), "sync1", server.rpc), client(root.path(), "sync2", server.rpc));
    wait_for("two ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 2).then_some(()));
    let marker = format!("y{}", std::process::id());
    let first = job_file(root.path(), "first.nomad", &pinned_job("first", 2, &marker, "sync1"));
    assert_eq!(server.cli(&["job", "run", &first]).code, 0);
    let figures =
        |c: &Agent| (counter(c, "berth.client.allocations.wakeups"), counter(c, "berth.client.allocations.fetched"));
    let (one_before, two_before) = (figures(&one), figures(&two));
    assert_eq!(one_before.1, 2, "the first client fetched its two allocations");
    assert_eq!(two_before, (0, 0), "the other client was never woken and fetched nothing");

    // A new job on the first client: it fetches that allocation only.
    let second = job_file(root.path(), "second.nomad", &pinned_job("second", 1, &marker, "sync1"));
    assert_eq!(server.cli(&["job", "run", &second]).code, 0);
    // Status reports and heartbeats go on for a while; they wake nobody.
    std::thread::sleep(Duration::from_secs(3));
    let one_after = figures(&one);
    assert_eq!(one_after.1 - one_before.1, 1, "fetched only the new allocation");
    assert_eq!(figures(&two), two_before, "the other client was not woken");

    // Stopping one allocation: the client fetches it and its replacement.
    let alloc = server.alloc_ids("first", "running").pop().unwrap();
    assert_eq!(server.cli(&["alloc", "stop", &alloc]).code, 0);
    wait_for("a replacement", Duration::from_secs(20), || {
        (server.alloc_ids("first", "running").len() == 2 && !server.alloc_ids("first", "running").contains(&alloc))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(figures(&one).1 - one_after.1, 2, "the stopped allocation and its replacement");
    assert_eq!(figures(&two), two_before, "the other client was not woken");
    assert!(counter(&server, "berth.server.node_allocations.sent") >= figures(&one).1);
    assert_eq!(server.cli(&["job", "stop", "-purge", "first"]).code, 0);
    assert_eq!(server.cli(&["job", "stop", "-purge", "second"]).code, 0);
}

/// `/v1/agent/health` and the leader headers tell the truth: a client
/// agent is healthy while its server answers its heartbeats and says so
/// when it stops; nodes report the free disk they place ephemeral disks on.
#[test]
fn agent_health_and_leader_headers_follow_the_servers() {
    let root = tempfile::tempdir().unwrap();
    let mut server = server(root.path());
    let one = client(root.path(), "health1", server.rpc);
    wait_for("a ready node", Duration::from_secs(20), || (ready_nodes(&server) == 1).then_some(()));
    let get = |agent: &Agent, path: &str| {
        let resp = reqwest::blocking::get(format!("http://127.0.0.1:{}{path}", agent.http)).unwrap();
        let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let headers = (header("X-Nomad-KnownLeader"), header("X-Nomad-LastContact"));
        (resp.status().as_u16(), headers, resp.json::<serde_json::Value>().unwrap_or_default())
    };
    let (status, _, body) = get(&server, "/v1/agent/health");
    assert_eq!((status, &body["server"]["ok"]), (200, &serde_json::json!(true)), "{body}");
    let (status, _, body) = get(&one, "/v1/agent/health");
    assert_eq!((status, body["client"]["ok"].as_bool()), (200, Some(true)), "{body}");
    assert!(body.get("server").is_none(), "a client agent has no server part: {body}");
    let (_, (known_self, contact), _) = get(&one, "/v1/agent/self");
    assert_eq!(known_self, "true");
    assert!(contact.parse::<u64>().unwrap() < 3000, "last contact {contact} ms");

    let node = &server.get("/v1/nodes")[0];
    let node = server.get(&format!("/v1/node/{}", node["ID"].as_str().unwrap()));
    let free: u64 = node["Attributes"]["unique.storage.bytesfree"].as_str().unwrap().parse().unwrap();
    assert!(free > 0, "{node}");
    assert_eq!(node["NodeResources"]["Disk"]["DiskMB"].as_u64(), Some(free >> 20), "{node}");

    // The server goes away: within a TTL (3 s here) the client says so.
    server.kill();
    let body = wait_for("the client to report losing its servers", Duration::from_secs(20), || {
        let (status, _, body) = get(&one, "/v1/agent/health");
        (status == 500).then_some(body)
    });
    assert_eq!(body["client"]["ok"], false, "{body}");
    assert!(body["client"]["message"].as_str().unwrap().contains("no answer from the servers"), "{body}");
    let (_, (known, _), _) = get(&one, "/v1/agent/self");
    assert_eq!(known, "false");
}

/// Live allocations of `job` running on each node, by node ID.
fn running_by_node(server: &Agent, job: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for a in server.allocs(job) {
        if a["DesiredStatus"] == "run" && a["ClientStatus"] == "running" {
            *out.entry(a["NodeID"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    out
}

#[test]
fn a_drain_moves_allocations_at_the_migrate_pace_and_leaves_the_node_ineligible() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let _clients: Vec<Agent> = (1..=2).map(|i| client(root.path(), &format!("client{i}"), server.rpc)).collect();
    wait_for("two ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 2).then_some(()));
    let id_of = |name: &str| -> String {
        let nodes = server.get("/v1/nodes");
        let node = nodes.as_array().unwrap().iter().find(|n| n["Name"] == name).unwrap().clone();
        node["ID"].as_str().unwrap().to_string()
    };
    let (one, two) = (id_of("client1"), id_of("client2"));
    let ineligible = server.cli(&["node", "eligibility", "-disable", &two[..8]]);
    assert_eq!(ineligible.code, 0, "{ineligible:?}");
    assert!(ineligible.stdout.contains("ineligible for scheduling"), "{ineligible:?}");

    let marker = format!("d{}", std::process::id());
    let spec = raw_exec_job("paced", 3, &marker).replacen(
        "    count = 3\n",
        "    count = 3\n    migrate {\n      max_parallel = 1\n      min_healthy_time = \"2s\"\n    }\n",
        1,
    );
    let run = server.cli(&["job", "run", &job_file(root.path(), "paced.nomad", &spec)]);
    assert_eq!(run.code, 0, "{run:?}");
    wait_for("three running on client1", Duration::from_secs(30), || {
        (running_by_node(&server, "paced").get(&one) == Some(&3)).then_some(())
    });
    assert_eq!(server.cli(&["node", "eligibility", "-enable", &two]).code, 0);

    let drain = server.cli(&["node", "drain", "-enable", "-yes", "-detach", "-deadline", "5m", &one]);
    assert_eq!(drain.code, 0, "{drain:?}");
    assert!(drain.stdout.contains("drain strategy set"), "{drain:?}");
    let refused = server.cli(&["node", "eligibility", "-enable", &one]);
    assert!(refused.code != 0 && refused.stderr.contains("while it is draining"), "{refused:?}");
    wait_for("the drain to finish", Duration::from_secs(90), || {
        let node = server.get(&format!("/v1/node/{one}"));
        (node["DrainStrategy"].is_null() && running_by_node(&server, "paced").get(&two) == Some(&3)).then_some(())
    });
    // max_parallel = 1: each replacement is made only once the one before
    // has run min_healthy_time (2 s; started times are whole seconds).
    let mut made: Vec<i64> = server
        .allocs("paced")
        .iter()
        .filter(|a| a["NodeID"] == two.as_str())
        .map(|a| a["CreateTime"].as_i64().unwrap())
        .collect();
    made.sort();
    let gaps: Vec<i64> = made.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    assert!(gaps.len() == 2 && gaps.iter().all(|ms| *ms >= 1000), "replacements not paced: gaps {gaps:?} ms");
    let node = server.get(&format!("/v1/node/{one}"));
    assert_eq!((node["Drain"].as_bool(), node["SchedulingEligibility"].as_str()), (Some(false), Some("ineligible")));
    assert_eq!(node["LastDrain"]["Status"], "complete", "{node:#}");
    let migrated =
        server.allocs("paced").iter().filter(|a| a["DesiredDescription"] == "alloc is being migrated").count();
    assert_eq!(migrated, 3);
    let status = server.cli(&["node", "status", &one]);
    assert!(status.stdout.contains("Node drain complete"), "{status:?}");

    // Back again, all at once: -force, followed to the end.
    assert_eq!(server.cli(&["node", "eligibility", "-enable", &one]).code, 0);
    let forced = server.cli(&["node", "drain", "-enable", "-yes", "-force", &two]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(forced.stdout.matches("marked for migration").count(), 3, "{forced:?}");
    assert!(forced.stdout.contains(&format!("Drain complete for node {two}")), "{forced:?}");
    assert!(forced.stdout.contains("have stopped"), "{forced:?}");
    wait_for("three running on client1 again", Duration::from_secs(30), || {
        (running_by_node(&server, "paced").get(&one) == Some(&3)).then_some(())
    });
    let undrain = server.cli(&["node", "drain", "-disable", &two]);
    assert!(undrain.code == 0 && undrain.stdout.contains("drain strategy unset"), "{undrain:?}");
    assert_eq!(server.get(&format!("/v1/node/{two}"))["SchedulingEligibility"], "eligible");
    assert_eq!(server.cli(&["job", "stop", "-purge", "paced"]).code, 0);
}

/// A client that stops answering (SIGSTOP: its tasks keep running) with an
/// allocation whose group has `disconnect { lost_after }`: the node turns
/// disconnected, the allocation unknown, a replacement runs elsewhere; when
/// the client answers again, `keep_original` keeps the original and stops
/// the replacement.
#[test]
fn a_disconnected_client_keeps_its_allocation_as_unknown_and_gets_it_back() {
    let root = tempfile::tempdir().unwrap();
    let server = server(root.path());
    let clients: Vec<Agent> = (1..=2).map(|i| client(root.path(), &format!("client{i}"), server.rpc)).collect();
    wait_for("two ready nodes", Duration::from_secs(20), || (ready_nodes(&server) == 2).then_some(()));
    let marker = format!("dc{}", std::process::id());
    let spec = raw_exec_job("keep", 1, &marker).replacen(
        "count = 1",
        "count = 1\n    disconnect {\n      lost_after = \"5m\"\n      reconcile  = \"keep_original\"\n    }",
        1,
    );
    let run = server.cli(&["job", "run", &job_file(root.path(), "keep.nomad", &spec)]);
    assert_eq!(run.code, 0, "{run:?}");
    let original = wait_for("running", Duration::from_secs(20), || server.alloc_ids("keep", "running").pop());
    let alloc = server.get(&format!("/v1/allocation/{original}"));
    let node = alloc["NodeID"].as_str().unwrap().to_string();
    let out = clients.iter().find(|c| c.name == alloc["NodeName"].as_str().unwrap()).unwrap();
    let pid = nix::unistd::Pid::from_raw(out.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    /// Lets the client run again, also when the test fails.
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    let resumed = Resume(pid);

    wait_for("the node to turn disconnected", Duration::from_secs(20), || {
        (server.get(&format!("/v1/node/{node}"))["Status"] == "disconnected").then_some(())
    });
    let replacement = wait_for("unknown, and a replacement running elsewhere", Duration::from_secs(30), || {
        let a = server.get(&format!("/v1/allocation/{original}"));
        let running = server.alloc_ids("keep", "running");
        (a["ClientStatus"] == "unknown" && a["DesiredStatus"] == "run" && running.len() == 1)
            .then(|| running[0].clone())
            .filter(|r| *r != original)
    });
    let status = server.cli(&["alloc", "status", &original]);
    assert!(status.stdout.contains("unknown"), "{status:?}");
    let summary = server.get("/v1/job/keep/summary");
    assert_eq!(summary["Summary"]["g"]["Unknown"], 1, "{summary}");

    drop(resumed);
    wait_for("the original kept and the replacement stopped", Duration::from_secs(30), || {
        let a = server.get(&format!("/v1/allocation/{original}"));
        let r = server.get(&format!("/v1/allocation/{replacement}"));
        (a["ClientStatus"] == "running" && a["DesiredStatus"] == "run" && r["DesiredStatus"] == "stop").then_some(())
    });
    assert_eq!(server.get(&format!("/v1/node/{node}"))["Status"], "ready");
    assert_eq!(server.cli(&["job", "stop", "-purge", "keep"]).code, 0);
}
