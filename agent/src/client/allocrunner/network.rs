//! The network hook: gives a `mode = "bridge"` allocation its network
//! namespace and connects it to the node's bridge with its ports mapped;
//! undoes both once its tasks have stopped. The namespace is held by a
//! driver when one of the group's drivers must own it (docker's pause
//! container), and is a bare named namespace otherwise (raw_exec).
//! `host` and `none` need nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use cni::{AllocNetwork, BridgeNetwork, PortMapping};
use futures::FutureExt;

use super::hooks::{AllocHook, HookResources, HookResult};
use crate::client::driver::{Driver, TaskNetwork};
use crate::structs::Allocation;

/// An allocation's bridge network, as tasks see it.
#[derive(Debug, Clone)]
pub struct GroupNetwork {
    /// Address, gateway, veth and mappings.
    pub alloc: AllocNetwork,
    /// The namespace the tasks join.
    pub task: TaskNetwork,
}

/// The allocation's network mode (`host` when none is given).
pub fn network_mode(alloc: &Allocation) -> String {
    let from_alloc = alloc.allocated_resources.shared.networks.first().map(|n| n.mode.clone());
    let from_group = || alloc.group().and_then(|tg| tg.networks.first().map(|n| n.mode.clone()));
    let mode = from_alloc.filter(|m| !m.is_empty()).or_else(from_group).unwrap_or_default();
    if mode.is_empty() {
        "host".into()
    } else {
        mode
    }
}

/// The port mappings of a bridge-mode allocation: each granted host port to
/// its `to` port (the same port when `to` is unset).
pub fn port_mappings(alloc: &Allocation) -> Vec<PortMapping> {
    alloc
        .allocated_resources
        .shared
        .ports
        .iter()
        .map(|p| PortMapping { host_port: p.value, container_port: if p.to > 0 { p.to as u16 } else { p.value } })
        .collect()
}

/// Sets up and tears down bridge networking.
pub struct NetworkHook {
    net: Arc<BridgeNetwork>,
    drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    current: parking_lot::Mutex<Option<Arc<GroupNetwork>>>,
}

impl NetworkHook {
    /// A hook on the node's bridge network.
    pub fn new(net: Arc<BridgeNetwork>, drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>) -> Self {
        NetworkHook { net, drivers, current: Default::default() }
    }

    /// The drivers of the allocation's tasks, each once.
    fn group_drivers(&self, alloc: &Allocation) -> Vec<Arc<dyn Driver>> {
        let mut names: Vec<String> =
            alloc.group().map(|tg| tg.tasks.iter().map(|t| t.driver.clone()).collect()).unwrap_or_default();
        names.sort();
        names.dedup();
        names.iter().filter_map(|n| self.drivers.get(n).cloned()).collect()
    }

    async fn setup(&self, alloc: &Allocation) -> Result<GroupNetwork, String> {
        let mut task = None;
        for d in self.group_drivers(alloc) {
            if let Some(t) = d.create_network(&alloc.id).await.map_err(|e| e.to_string())? {
                task = Some(t);
                break;
            }
        }
        let ns = match &task {
            Some(t) => self.net.adopt_netns(&alloc.id, &t.netns),
            None => self.net.create_netns(&alloc.id),
        }
        .map_err(|e| e.to_string())?;
        let holder = task.and_then(|t| t.holder);
        let network = self.net.setup(&alloc.id, &ns, &port_mappings(alloc)).await.map_err(|e| e.to_string())?;
        Ok(GroupNetwork { alloc: network, task: TaskNetwork { netns: ns.path().to_path_buf(), holder } })
    }

    async fn teardown(&self, alloc: &Allocation) -> Result<(), String> {
        let known = self.current.lock().take();
        let ports = known.as_ref().map(|n| n.alloc.ports.clone());
        let result = self.net.release(&alloc.id, ports.as_deref()).await.map_err(|e| e.to_string());
        for d in self.group_drivers(alloc) {
            d.destroy_network(&alloc.id).await;
        }
        result
    }
}

impl AllocHook for NetworkHook {
    fn name(&self) -> &'static str {
        "network"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move {
            match network_mode(alloc).as_str() {
                "host" | "none" => Ok(()),
                "bridge" => match self.setup(alloc).await {
                    Ok(n) => {
                        let n = Arc::new(n);
                        *self.current.lock() = Some(n.clone());
                        res.network = Some(n);
                        Ok(())
                    }
                    Err(e) => {
                        let _ = self.teardown(alloc).await;
                        Err(e)
                    }
                },
                other if other.starts_with("cni/") => {
                    Err(format!("network mode {other:?}: external CNI networks are not supported by this client"))
                }
                other => Err(format!("unknown network mode {other:?} (use host, bridge or none)")),
            }
        }
        .boxed()
    }

    fn postrun<'a>(&'a self, alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            if network_mode(alloc) != "bridge" {
                return Ok(());
            }
            self.teardown(alloc).await
        }
        .boxed()
    }
}
