//! `node drain` and `node eligibility`: start, cancel and follow a node
//! drain, and mark a node (in)eligible for new placements, with Nomad's
//! flags and messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::api::ApiClient;
use super::lookup;
use crate::structs::{DrainSpec, Node};
use crate::util::{now_rfc3339, short_id};
use crate::wire::node::{NodeDrainRequest, NodeEligibilityRequest, NodeUpdateResponse};
use crate::wire::stubs::AllocListStub;

/// What `node drain` was asked.
#[derive(Debug, Clone, Default)]
pub struct DrainArgs {
    pub enable: bool,
    pub disable: bool,
    /// Nanoseconds; `-force` is -1, `-no-deadline` 0.
    pub deadline: i64,
    pub ignore_system: bool,
    pub keep_ineligible: bool,
    pub detach: bool,
    pub monitor: bool,
    /// Enable without asking.
    pub yes: bool,
    pub meta: BTreeMap<String, String>,
}

/// Which node the command is about: `-self` or an ID prefix.
async fn target(api: &ApiClient, id: Option<&str>, self_node: bool) -> Result<String, i32> {
    match (id, self_node) {
        (_, true) => lookup::self_node_id(api).await,
        (Some(prefix), false) => lookup::resolve_node(api, prefix).await,
        (None, false) => {
            eprintln!("Node ID must be specified if -self isn't being used");
            Err(1)
        }
    }
}

fn say(message: &str) {
    println!("{}: {message}", now_rfc3339());
}

/// `node drain [-enable|-disable|-monitor] [-deadline D|-force|-no-deadline]
/// [-ignore-system] [-keep-ineligible] [-detach] [-self] [ID]`.
pub async fn drain(api: &ApiClient, id: Option<&str>, self_node: bool, args: &DrainArgs) -> i32 {
    if [args.enable, args.disable, args.monitor].iter().filter(|f| **f).count() != 1 {
        eprintln!("Either the '-enable', '-disable' or '-monitor' flag must be set");
        return 1;
    }
    let node_id = match target(api, id, self_node).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    if args.monitor {
        return monitor(api, &node_id).await;
    }
    if args.enable && !args.yes {
        eprint!("Are you sure you want to enable drain mode for node {node_id:?}? [y/N] ");
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || !matches!(answer.trim(), "y" | "yes") {
            eprintln!("Cancelling node drain");
            return 0;
        }
    }
    let request = NodeDrainRequest {
        drain_spec: args
            .enable
            .then_some(DrainSpec { deadline: args.deadline, ignore_system_jobs: args.ignore_system }),
        mark_eligible: args.disable && !args.keep_ineligible,
        meta: args.meta.clone(),
    };
    if let Err(e) = api.put::<_, NodeUpdateResponse>(&format!("/v1/node/{node_id}/drain"), &request).await {
        eprintln!("Error updating drain specification: {e}");
        return 1;
    }
    if args.disable {
        println!("Node {node_id:?} drain strategy unset");
        return 0;
    }
    if args.detach {
        println!("Node {node_id:?} drain strategy set");
        return 0;
    }
    say("Ctrl-C to stop monitoring: will not cancel the node drain");
    say(&format!("Node {node_id:?} drain strategy set"));
    monitor(api, &node_id).await
}

/// Follows a drain until it ends and the node's allocations have stopped:
/// each allocation marked for migration, each status change, the end.
async fn monitor(api: &ApiClient, node_id: &str) -> i32 {
    let mut marked: BTreeSet<String> = BTreeSet::new();
    let mut statuses: BTreeMap<String, String> = BTreeMap::new();
    let mut drain_ended = false;
    loop {
        let node: Node = match api.get(&format!("/v1/node/{node_id}")).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("Error monitoring node: {e}");
                return 1;
            }
        };
        let allocs: Vec<AllocListStub> = api.get(&format!("/v1/node/{node_id}/allocations")).await.unwrap_or_default();
        for a in &allocs {
            if a.desired_transition.should_migrate() && marked.insert(a.id.clone()) {
                say(&format!("Alloc {:?} marked for migration", short_id(&a.id)));
            }
            let previous = statuses.insert(a.id.clone(), a.client_status.clone());
            if let Some(before) = previous.filter(|before| *before != a.client_status) {
                say(&format!("Alloc {:?} status {before} -> {}", short_id(&a.id), a.client_status));
            }
        }
        if !drain_ended && node.drain_strategy.is_none() {
            drain_ended = true;
            let canceled = node.last_drain.as_ref().is_some_and(|d| d.status == crate::structs::drain_status::CANCELED);
            if canceled {
                say(&format!("Drain canceled for node {node_id}"));
                return 0;
            }
            say(&format!("Drain complete for node {node_id}"));
        }
        let running = allocs.iter().any(|a| {
            a.desired_transition.should_migrate() && !matches!(a.client_status.as_str(), "complete" | "failed" | "lost")
        });
        if drain_ended && !running {
            say(&format!("All allocations on node {node_id:?} have stopped"));
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `node eligibility -enable|-disable [-self] [ID]`.
pub async fn eligibility(api: &ApiClient, id: Option<&str>, self_node: bool, enable: bool, disable: bool) -> i32 {
    if enable == disable {
        eprintln!("Either the '-enable' or '-disable' flag must be set");
        return 1;
    }
    let node_id = match target(api, id, self_node).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let request = NodeEligibilityRequest { eligibility: if enable { "eligible" } else { "ineligible" }.into() };
    match api.put::<_, NodeUpdateResponse>(&format!("/v1/node/{node_id}/eligibility"), &request).await {
        Ok(_) if enable => println!("Node {node_id:?} scheduling eligibility set: eligible for scheduling"),
        Ok(_) => println!("Node {node_id:?} scheduling eligibility set: ineligible for scheduling"),
        Err(e) => {
            eprintln!("Error updating scheduling eligibility: {e}");
            return 1;
        }
    }
    0
}
