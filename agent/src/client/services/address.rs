//! Where a service or a check is reached, by `address_mode`: `host` (and
//! `auto`) is the node's address with the host port, `alloc` and `driver`
//! the allocation's own address (bridge or CNI) with the port inside it
//! (`to`); a port given as a number is taken as it is.

use crate::structs::{address_mode, AllocatedPort, Allocation, Node, Service, ServiceCheck};

/// What an allocation's addresses are made of.
#[derive(Debug, Clone)]
pub struct Places {
    node_ip: String,
    alloc_ip: Option<String>,
    ports: Vec<AllocatedPort>,
}

impl Places {
    /// The node's address, the allocation's (when its network gave it
    /// one) and its ports.
    pub fn new(alloc: &Allocation, node: &Node, alloc_ip: Option<String>) -> Self {
        let node_ip = node.attributes.get("unique.network.ip-address").cloned().unwrap_or_else(|| "127.0.0.1".into());
        Places { node_ip, alloc_ip, ports: alloc.allocated_resources.shared.ports.clone() }
    }

    /// Address and port of `label` in `mode`; an empty label is port 0.
    fn resolve(&self, mode: &str, label: &str) -> Result<(String, u16), String> {
        let inside = matches!(mode, address_mode::ALLOC | address_mode::DRIVER);
        let alloc_ip = || {
            self.alloc_ip.clone().ok_or_else(|| {
                format!("address_mode {mode:?} needs an allocation network of its own (network mode \"bridge\" or cni)")
            })
        };
        if label.is_empty() {
            let ip = if inside { alloc_ip()? } else { self.node_ip.clone() };
            return Ok((ip, 0));
        }
        if let Ok(number) = label.parse::<u16>() {
            let ip = if inside { alloc_ip()? } else { self.node_ip.clone() };
            return Ok((ip, number));
        }
        let port = self
            .ports
            .iter()
            .find(|p| p.label == label)
            .ok_or_else(|| format!("port {label:?} is not allocated to this allocation"))?;
        if inside {
            let to = u16::try_from(port.to).ok().filter(|to| *to > 0).unwrap_or(port.value);
            return Ok((alloc_ip()?, to));
        }
        let ip = if port.host_ip.is_empty() { self.node_ip.clone() } else { port.host_ip.clone() };
        Ok((ip, port.value))
    }

    /// Where the service is advertised: its `address` if given.
    pub fn service(&self, service: &Service) -> Result<(String, u16), String> {
        let (ip, port) = self.resolve(&service.address_mode, &service.port_label)?;
        Ok((if service.address.is_empty() { ip } else { service.address.clone() }, port))
    }

    /// Where the check probes: its own port (else the service's) in its
    /// own `address_mode`.
    pub fn check(&self, service: &Service, check: &ServiceCheck) -> Result<(String, u16), String> {
        let label = if check.port_label.is_empty() { &service.port_label } else { &check.port_label };
        self.resolve(&check.address_mode, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(alloc_ip: Option<&str>) -> Places {
        Places {
            node_ip: "192.168.1.10".into(),
            alloc_ip: alloc_ip.map(str::to_string),
            ports: vec![AllocatedPort { label: "db".into(), value: 25123, to: 6379, host_ip: "192.168.1.10".into() }],
        }
    }

    #[test]
    fn address_modes_pick_the_host_or_the_allocation_side() {
        let service = |mode: &str, port: &str| Service {
            address_mode: mode.into(),
            port_label: port.into(),
            ..Default::default()
        };
        let bridge = places(Some("172.26.64.5"));
        assert_eq!(bridge.service(&service("auto", "db")).unwrap(), ("192.168.1.10".into(), 25123));
        assert_eq!(bridge.service(&service("host", "db")).unwrap(), ("192.168.1.10".into(), 25123));
        assert_eq!(bridge.service(&service("alloc", "db")).unwrap(), ("172.26.64.5".into(), 6379));
        assert_eq!(bridge.service(&service("driver", "8080")).unwrap(), ("172.26.64.5".into(), 8080));
        let host = places(None);
        let e = host.service(&service("alloc", "db")).unwrap_err();
        assert!(e.contains("needs an allocation network"), "{e}");
        assert!(host.service(&service("host", "web")).unwrap_err().contains("\"web\" is not allocated"));
        let mut fixed = service("auto", "db");
        fixed.address = "redis.lan".into();
        assert_eq!(host.service(&fixed).unwrap(), ("redis.lan".into(), 25123));
        let check = ServiceCheck { address_mode: "alloc".into(), ..Default::default() };
        assert_eq!(bridge.check(&service("auto", "db"), &check).unwrap(), ("172.26.64.5".into(), 6379));
    }
}
