//! `service list|info|delete` and the "Nomad Service Checks" section of
//! `alloc status`, with Nomad's layouts; berth adds each instance's check
//! status to `service info`.

use std::collections::BTreeMap;

use super::api::ApiClient;
use super::format::{kv, list};
use crate::structs::{check_status, CheckQueryResult, ServiceRegistration};
use crate::util::short_id;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamespaceServices {
    services: Vec<ServiceStub>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceStub {
    service_name: String,
    tags: Vec<String>,
}

/// `service list`.
pub async fn list_services(api: &ApiClient) -> i32 {
    let listed: Vec<NamespaceServices> = match api.get("/v1/services").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error listing service registrations: {e}");
            return 1;
        }
    };
    let mut rows = vec!["Service Name|Tags".to_string()];
    for ns in &listed {
        for s in &ns.services {
            rows.push(format!("{}|[{}]", s.service_name, s.tags.join(",")));
        }
    }
    if rows.len() == 1 {
        println!("No service registrations found");
    } else {
        println!("{}", list(&rows));
    }
    0
}

/// How a registration's checks stand, in a word.
fn checks_summary(r: &ServiceRegistration) -> String {
    if r.checks.is_empty() {
        return "-".into();
    }
    let worst = [check_status::FAILURE, check_status::WARNING, check_status::PENDING]
        .into_iter()
        .find(|s| r.checks.iter().any(|c| c.status == *s))
        .unwrap_or(check_status::SUCCESS);
    let passing = r.checks.iter().filter(|c| c.status == check_status::SUCCESS).count();
    format!("{worst} ({passing}/{} passing)", r.checks.len())
}

/// `service info [-verbose] <name>`.
pub async fn info(api: &ApiClient, name: &str, verbose: bool) -> i32 {
    let path =
        format!("/v1/service/{}", percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC));
    let instances: Vec<ServiceRegistration> = match api.get(&path).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error listing service registrations: {e}");
            return 1;
        }
    };
    if instances.is_empty() {
        eprintln!("No service registrations with prefix {name:?} found");
        return 1;
    }
    if verbose {
        let blocks: Vec<String> = instances
            .iter()
            .map(|r| {
                let mut rows = vec![
                    format!("ID|{}", r.id),
                    format!("Service Name|{}", r.service_name),
                    format!("Namespace|{}", r.namespace),
                    format!("Job ID|{}", r.job_id),
                    format!("Alloc ID|{}", r.alloc_id),
                    format!("Node ID|{}", r.node_id),
                    format!("Datacenter|{}", r.datacenter),
                    format!("Address|{}:{}", r.address, r.port),
                    format!("Tags|[{}]", r.tags.join(",")),
                ];
                rows.extend(r.checks.iter().map(|c| format!("Check {:?}|{} {}", c.check, c.status, c.output)));
                kv(&rows)
            })
            .collect();
        println!("{}", blocks.join("\n\n"));
        return 0;
    }
    let mut rows = vec!["Job ID|Address|Tags|Node ID|Alloc ID|Checks".to_string()];
    for r in &instances {
        rows.push(format!(
            "{}|{}:{}|[{}]|{}|{}|{}",
            r.job_id,
            r.address,
            r.port,
            r.tags.join(","),
            short_id(&r.node_id),
            short_id(&r.alloc_id),
            checks_summary(r)
        ));
    }
    println!("{}", list(&rows));
    0
}

/// `service delete <name> <id>`.
pub async fn delete(api: &ApiClient, name: &str, id: &str) -> i32 {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    match api.delete::<serde_json::Value>(&format!("/v1/service/{}/{}", enc(name), enc(id))).await {
        Ok(_) => {
            println!("Successfully deleted service registration");
            0
        }
        Err(e) => {
            eprintln!("Error deleting service registration: {e}");
            1
        }
    }
}

/// `alloc status`'s "Nomad Service Checks" section; empty without checks.
pub async fn alloc_checks_section(api: &ApiClient, alloc_id: &str) -> String {
    let Ok(results) = api.get::<BTreeMap<String, CheckQueryResult>>(&format!("/v1/allocation/{alloc_id}/checks")).await
    else {
        return String::new();
    };
    if results.is_empty() {
        return String::new();
    }
    let mut rows = vec!["Service|Task|Name|Mode|Status".to_string()];
    let mut sorted: Vec<&CheckQueryResult> = results.values().collect();
    sorted.sort_by(|a, b| (&a.service, &a.task, &a.check).cmp(&(&b.service, &b.task, &b.check)));
    for c in sorted {
        let task = if c.task.is_empty() { "(group)" } else { c.task.as_str() };
        rows.push(format!("{}|{}|{}|{}|{}", c.service, task, c.check, c.mode, c.status));
    }
    format!("Nomad Service Checks:\n{}", list(&rows))
}
