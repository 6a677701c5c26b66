//! `node status`, `server members`, `eval status` and `status`.

use super::api::ApiClient;
use super::format;
use super::monitor::print_failures;
use super::tables::alloc_table;
use crate::structs::{Evaluation, Node};
use crate::util::{pretty_time_ago, short_id};
use crate::wire::stubs::{AllocListStub, NodeListStub};

/// `node status [-verbose] [-self] [ID]`.
pub async fn node_status(api: &ApiClient, id: Option<&str>, verbose: bool, self_node: bool) -> i32 {
    let id = if self_node {
        match super::lookup::self_node_id(api).await {
            Ok(id) => Some(id),
            Err(code) => return code,
        }
    } else {
        id.map(str::to_string)
    };
    let nodes: Vec<NodeListStub> = match api.get(&format!("/v1/nodes?prefix={}", id.as_deref().unwrap_or(""))).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("Error querying node status: {e}");
            return 1;
        }
    };
    let Some(prefix) = id else {
        if nodes.is_empty() {
            println!("No nodes registered");
            return 0;
        }
        let mut rows = vec![if verbose {
            "ID|Node Pool|DC|Name|Class|Address|Version|Drain|Eligibility|Status"
        } else {
            "ID|Node Pool|DC|Name|Class|Drain|Eligibility|Status"
        }
        .to_string()];
        for n in &nodes {
            let class = if n.node_class.is_empty() { "<none>" } else { &n.node_class };
            rows.push(if verbose {
                format!(
                    "{}|{}|{}|{}|{class}|{}|{}|{}|{}|{}",
                    n.id,
                    n.node_pool,
                    n.datacenter,
                    n.name,
                    n.address,
                    n.version,
                    n.drain,
                    n.scheduling_eligibility,
                    n.status
                )
            } else {
                format!(
                    "{}|{}|{}|{}|{class}|{}|{}|{}",
                    short_id(&n.id),
                    n.node_pool,
                    n.datacenter,
                    n.name,
                    n.drain,
                    n.scheduling_eligibility,
                    n.status
                )
            });
        }
        println!("{}", format::list(&rows));
        return 0;
    };
    let node_id = match super::lookup::pick_node(&nodes, &prefix) {
        Ok(id) => id,
        Err(code) => return code,
    };
    let node: Node = match api.get(&format!("/v1/node/{node_id}")).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("Error querying node info: {e}");
            return 1;
        }
    };
    let healthy: Vec<&String> = node.drivers.iter().filter(|(_, d)| d.detected && d.healthy).map(|(k, _)| k).collect();
    let host_vols: Vec<&String> = node.host_volumes.keys().collect();
    println!(
        "{}",
        format::kv(&[
            format!("ID|{}", if verbose { node.id.clone() } else { short_id(&node.id).to_string() }),
            format!("Name|{}", node.name),
            format!("Node Pool|{}", node.node_pool),
            format!("Class|{}", if node.node_class.is_empty() { "<none>" } else { &node.node_class }),
            format!("DC|{}", node.datacenter),
            format!("Drain|{}", node.drain),
            format!("Eligibility|{}", node.scheduling_eligibility),
            format!("Status|{}", node.status),
            "CSI Controllers|<none>".to_string(),
            "CSI Drivers|<none>".to_string(),
            format!(
                "Host Volumes|{}",
                if host_vols.is_empty() {
                    "<none>".to_string()
                } else {
                    host_vols.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                }
            ),
            format!("Drivers|{}", healthy.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")),
        ])
    );
    println!("\nDrivers");
    let mut rows = vec!["Driver|Detected|Healthy|Message|Time".to_string()];
    for (name, d) in &node.drivers {
        rows.push(format!("{name}|{}|{}|{}|{}", d.detected, d.healthy, d.health_description, d.update_time));
    }
    println!("{}", format::list(&rows));
    println!("\nNode Events");
    let mut rows = vec!["Time|Subsystem|Message".to_string()];
    for e in node.events.iter().rev() {
        rows.push(format!("{}|{}|{}", e.timestamp, e.subsystem, e.message));
    }
    println!("{}", format::list(&rows));
    let allocs: Vec<AllocListStub> = api.get(&format!("/v1/node/{node_id}/allocations")).await.unwrap_or_default();
    let (cpu, mem) = allocs
        .iter()
        .filter(|a| a.desired_status == "run" && matches!(a.client_status.as_str(), "pending" | "running"))
        .filter_map(|a| a.allocated_resources.as_ref())
        .flat_map(|r| r.tasks.values())
        .fold((0, 0), |(c, m), t| (c + t.cpu.cpu_shares, m + t.memory.memory_mb));
    println!("\nAllocated Resources");
    println!(
        "{}",
        format::list(&[
            "CPU|Memory|Alloc Count".to_string(),
            format!(
                "{cpu}/{} MHz|{mem} MiB/{} MiB|{}",
                node.node_resources.cpu.cpu_shares,
                node.node_resources.memory.memory_mb,
                allocs.len()
            ),
        ])
    );
    println!("\nAllocations");
    if allocs.is_empty() {
        println!("No allocations placed");
    } else {
        println!("{}", alloc_table(&allocs, false));
    }
    0
}

/// `server members`.
pub async fn server_members(api: &ApiClient) -> i32 {
    let v: serde_json::Value = match api.get("/v1/agent/members").await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error querying servers: {e}");
            return 1;
        }
    };
    let leader: String = api.get("/v1/status/leader").await.unwrap_or_default();
    let mut rows = vec!["Name|Address|Port|Status|Leader|Raft Version|Build|Datacenter|Region".to_string()];
    for m in v["Members"].as_array().into_iter().flatten() {
        let tags = &m["Tags"];
        let rpc = format!("{}:{}", m["Addr"].as_str().unwrap_or_default(), tags["port"].as_str().unwrap_or_default());
        rows.push(format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            m["Name"].as_str().unwrap_or_default(),
            m["Addr"].as_str().unwrap_or_default(),
            m["Port"],
            m["Status"].as_str().unwrap_or_default(),
            rpc == leader,
            tags["raft_vsn"].as_str().unwrap_or_default(),
            tags["build"].as_str().unwrap_or_default(),
            tags["dc"].as_str().unwrap_or_default(),
            tags["region"].as_str().unwrap_or_default(),
        ));
    }
    println!("{}", format::list(&rows));
    0
}

/// `eval status ID`.
pub async fn eval_status(api: &ApiClient, prefix: &str) -> i32 {
    let e: Evaluation = match api.get(&format!("/v1/evaluation/{prefix}")).await {
        Ok(e) => e,
        Err(err) if err.is_not_found() => {
            eprintln!("No evaluation(s) with prefix or id {prefix:?} found");
            return 1;
        }
        Err(err) => {
            eprintln!("Error querying evaluation: {err}");
            return 1;
        }
    };
    println!(
        "{}",
        format::kv(&[
            format!("ID|{}", short_id(&e.id)),
            format!("Create Time|{}", pretty_time_ago(e.create_time)),
            format!("Modify Time|{}", pretty_time_ago(e.modify_time)),
            format!("Status|{}", e.status),
            format!(
                "Status Description|{}",
                if e.status_description.is_empty() { "<none>" } else { &e.status_description }
            ),
            format!("Type|{}", e.eval_type),
            format!("TriggeredBy|{}", e.triggered_by),
            format!("Job ID|{}", e.job_id),
            format!("Namespace|{}", e.namespace),
            format!("Priority|{}", e.priority),
            format!("Placement Failures|{}", !e.failed_tg_allocs.is_empty()),
        ])
    );
    if !e.failed_tg_allocs.is_empty() {
        println!("\nFailed Placements");
        print_failures(&e.failed_tg_allocs, "");
    }
    0
}

/// `status [ID]`: jobs, or whatever object the prefix names.
pub async fn status(api: &ApiClient, id: Option<&str>) -> i32 {
    let Some(prefix) = id else { return super::job::status(api, None, false, false).await };
    let jobs: Vec<crate::wire::stubs::JobListStub> =
        api.get(&format!("/v1/jobs?prefix={prefix}")).await.unwrap_or_default();
    if !jobs.is_empty() {
        return super::job::status(api, Some(prefix), false, false).await;
    }
    let even = &prefix[..prefix.len() - prefix.len() % 2];
    let allocs: Vec<AllocListStub> = api.get(&format!("/v1/allocations?prefix={even}")).await.unwrap_or_default();
    if allocs.iter().any(|a| a.id.starts_with(prefix)) {
        return super::alloc::status(api, prefix, Default::default()).await;
    }
    let nodes: Vec<NodeListStub> = api.get(&format!("/v1/nodes?prefix={prefix}")).await.unwrap_or_default();
    if !nodes.is_empty() {
        return node_status(api, Some(prefix), false, false).await;
    }
    let evals: Vec<Evaluation> = api.get(&format!("/v1/evaluations?prefix={prefix}")).await.unwrap_or_default();
    if !evals.is_empty() {
        return eval_status(api, prefix).await;
    }
    eprintln!("No matches returned for query {prefix:?}");
    1
}
