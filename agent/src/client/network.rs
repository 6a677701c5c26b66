//! The network hook: gives a `mode = "bridge"` allocation its network
//! namespace and connects it to the node's bridge with its ports mapped,
//! or, for `mode = "cni/<name>"`, runs the operator's CNI network of that
//! name on it; undoes both once its tasks have stopped. The namespace is
//! held by a driver when one of the group's drivers must own it (docker's
//! pause container), and is a bare named namespace otherwise (raw_exec).
//! `none` gets a namespace with only loopback; `host` needs nothing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use cni::external::{self, Attachment};
use cni::netns::NetNs;
use cni::{AllocNetwork, BridgeNetwork, PortMapping};
use futures::FutureExt;

use super::driver::{Driver, TaskNetwork};
use super::hook::{AllocHook, GroupNetwork, HookError, HookResources, HookResult};
use crate::structs::Allocation;

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

/// Where external (`cni/<name>`) networks come from and keep their state.
#[derive(Debug, Clone)]
pub struct ExternalCni {
    /// `cni_config_dir`.
    pub config_dir: PathBuf,
    /// `cni_path`.
    pub plugin_path: Vec<PathBuf>,
    /// Where namespaces are mounted.
    pub netns_dir: PathBuf,
    /// Cached ADD results.
    pub cache_dir: PathBuf,
}

impl ExternalCni {
    fn netns_name(alloc_id: &str) -> String {
        format!("cni-{alloc_id}")
    }

    fn isolated_netns_name(alloc_id: &str) -> String {
        format!("none-{alloc_id}")
    }

    fn attachment(&self, alloc: &Allocation, netns: PathBuf) -> Attachment {
        Attachment {
            container_id: alloc.id.clone(),
            netns,
            ifname: cni::bridge::CONTAINER_IFNAME.into(),
            cni_path: self.plugin_path.clone(),
            ports: port_mappings(alloc),
            args: cni_args(alloc),
        }
    }
}

/// The group network's `cni { args }`, as `CNI_ARGS` pairs.
fn cni_args(alloc: &Allocation) -> Vec<(String, String)> {
    let group = alloc.job.as_ref().and_then(|j| j.task_group(&alloc.task_group));
    let cni = group.and_then(|g| g.networks.first()).and_then(|n| n.cni.as_ref());
    cni.map(|c| c.args.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// Sets up and tears down bridge and external networking.
pub struct NetworkHook {
    net: Arc<BridgeNetwork>,
    external: Arc<ExternalCni>,
    drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    current: parking_lot::Mutex<Option<Arc<GroupNetwork>>>,
}

impl NetworkHook {
    /// A hook on the node's bridge network and external CNI settings.
    pub fn new(
        net: Arc<BridgeNetwork>,
        external: Arc<ExternalCni>,
        drivers: Arc<BTreeMap<String, Arc<dyn Driver>>>,
    ) -> Self {
        NetworkHook { net, external, drivers, current: Default::default() }
    }

    /// The drivers of the allocation's tasks, each once.
    fn group_drivers(&self, alloc: &Allocation) -> Vec<Arc<dyn Driver>> {
        let mut names: Vec<String> =
            alloc.group().map(|tg| tg.tasks.iter().map(|t| t.driver.clone()).collect()).unwrap_or_default();
        names.sort();
        names.dedup();
        names.iter().filter_map(|n| self.drivers.get(n).cloned()).collect()
    }

    /// The namespace the allocation's tasks will share: a driver's (docker's
    /// pause container), mounted as `name`, or a new one made by `fresh`.
    async fn namespace(
        &self,
        alloc: &Allocation,
        dir: &std::path::Path,
        name: &str,
        fresh: impl FnOnce() -> cni::Result<NetNs>,
    ) -> Result<(NetNs, Option<String>), HookError> {
        for d in self.group_drivers(alloc) {
            if let Some(t) = d.create_network(&alloc.id).await? {
                let ns = NetNs::adopt(dir, name, &t.netns)?;
                return Ok((ns, t.holder));
            }
        }
        Ok((fresh()?, None))
    }

    async fn setup_bridge(&self, alloc: &Allocation) -> Result<GroupNetwork, HookError> {
        let cfg = self.net.config();
        let name = self.net.netns_name(&alloc.id);
        let fresh = || self.net.create_netns(&alloc.id);
        let (ns, holder) = self.namespace(alloc, &cfg.netns_dir, &name, fresh).await?;
        let network = self.net.setup(&alloc.id, &ns, &port_mappings(alloc)).await?;
        Ok(GroupNetwork { alloc: network, task: TaskNetwork { netns: ns.path().to_path_buf(), holder } })
    }

    /// `mode = "none"`: a namespace with loopback only.
    async fn setup_isolated(&self, alloc: &Allocation) -> Result<GroupNetwork, HookError> {
        let dir = &self.external.netns_dir;
        let name = ExternalCni::isolated_netns_name(&alloc.id);
        let (ns, holder) = self.namespace(alloc, dir, &name, || NetNs::create(dir, &name)).await?;
        let h = ns.netlink()?;
        cni::link::loopback_up(&h).await?;
        let alloc_net = AllocNetwork {
            id: alloc.id.clone(),
            netns: ns.path().to_path_buf(),
            ip: Ipv4Addr::LOCALHOST,
            gateway: Ipv4Addr::UNSPECIFIED,
            prefix_len: 8,
            interface: "lo".into(),
            host_veth: String::new(),
            ports: vec![],
        };
        Ok(GroupNetwork { alloc: alloc_net, task: TaskNetwork { netns: ns.path().to_path_buf(), holder } })
    }

    async fn setup_external(&self, alloc: &Allocation, name: &str) -> Result<GroupNetwork, HookError> {
        let ext = &self.external;
        let conf = external::load(&ext.config_dir, name)?;
        let ns_name = ExternalCni::netns_name(&alloc.id);
        let (ns, holder) =
            self.namespace(alloc, &ext.netns_dir, &ns_name, || NetNs::create(&ext.netns_dir, &ns_name)).await?;
        let att = ext.attachment(alloc, ns.path().to_path_buf());
        let result = external::add(&conf, &att, &ext.cache_dir).await?;
        let ip = external::result_ipv4(&result).ok_or_else(|| cni::NetError::Plugin {
            plugin: name.to_string(),
            msg: "the network gave the allocation no IPv4 address".into(),
        })?;
        let gateway =
            result["ips"][0]["gateway"].as_str().and_then(|g| g.parse().ok()).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let prefix_len = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(32);
        let alloc_net = AllocNetwork {
            id: alloc.id.clone(),
            netns: ns.path().to_path_buf(),
            ip,
            gateway,
            prefix_len,
            interface: att.ifname.clone(),
            host_veth: String::new(),
            ports: att.ports.clone(),
        };
        Ok(GroupNetwork { alloc: alloc_net, task: TaskNetwork { netns: ns.path().to_path_buf(), holder } })
    }

    async fn teardown(&self, alloc: &Allocation, mode: &str) -> Result<(), HookError> {
        self.current.lock().take();
        let result = match mode.strip_prefix("cni/") {
            Some(name) => self.teardown_external(alloc, name).await,
            None if mode == "none" => {
                Ok(NetNs::delete(&self.external.netns_dir, &ExternalCni::isolated_netns_name(&alloc.id))?)
            }
            None => Ok(self.net.release(&alloc.id).await?),
        };
        for d in self.group_drivers(alloc) {
            d.destroy_network(&alloc.id).await;
        }
        result
    }

    async fn teardown_external(&self, alloc: &Allocation, name: &str) -> Result<(), HookError> {
        let ext = &self.external;
        let ns_name = ExternalCni::netns_name(&alloc.id);
        let deleted = match external::load(&ext.config_dir, name) {
            Ok(conf) => {
                let att = ext.attachment(alloc, ext.netns_dir.join(&ns_name));
                external::del(&conf, &att, &ext.cache_dir).await
            }
            Err(e) => Err(e),
        };
        NetNs::delete(&ext.netns_dir, &ns_name)?;
        Ok(deleted?)
    }
}

impl AllocHook for NetworkHook {
    fn name(&self) -> &'static str {
        "network"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move {
            let mode = network_mode(alloc);
            let made = match mode.as_str() {
                "host" => return Ok(()),
                "none" => self.setup_isolated(alloc).await,
                "bridge" => self.setup_bridge(alloc).await,
                other => match other.strip_prefix("cni/") {
                    Some(name) if !name.is_empty() => self.setup_external(alloc, name).await,
                    _ => {
                        return Err(HookError::Unavailable(format!(
                            "unknown network mode {other:?} (use host, bridge, none or cni/<name>)"
                        )))
                    }
                },
            };
            match made {
                Ok(n) => {
                    let n = Arc::new(n);
                    *self.current.lock() = Some(n.clone());
                    res.network = Some(n);
                    Ok(())
                }
                Err(e) => {
                    let _ = self.teardown(alloc, &mode).await;
                    Err(e)
                }
            }
        }
        .boxed()
    }

    fn postrun<'a>(&'a self, alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            let mode = network_mode(alloc);
            if mode == "host" {
                return Ok(());
            }
            self.teardown(alloc, &mode).await
        }
        .boxed()
    }
}
