//! The bridge network against the real kernel: namespaces, veth, bridge,
//! iptables, nftables and conntrack. Each test runs in a fresh network namespace of
//! its own that plays the host, so it neither sees nor touches the real
//! host's interfaces and rules, and leaves nothing behind when it ends.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

mod common;

use cni::netns::NetNs;
use cni::{BridgeConfig, BridgeNetwork, PortMapping};
use common::{in_fresh_host, sh};

fn config(dir: &Path, name: &str, subnet: &str) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        subnet: subnet.parse().unwrap(),
        ipam_dir: dir.join("ipam"),
        netns_dir: dir.join("netns"),
    }
}

/// A one-shot TCP server inside `ns` that answers `reply` to each client.
fn serve(ns: &NetNs, port: u16, reply: &'static str) {
    let l = ns.run(move || TcpListener::bind(("0.0.0.0", port)).unwrap()).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(reply.as_bytes());
        }
    });
}

fn fetch(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Everything the network could leak, as text.
fn host_state(dir: &Path) -> String {
    let links = sh("ip -o link show | awk -F': ' '{print $2}' | sort");
    let rules = sh("iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'");
    let mappings = sh("nft -s list ruleset");
    let ns: Vec<String> = NetNs::list(&dir.join("netns"), "");
    let mut ipam: Vec<String> = std::fs::read_dir(dir.join("ipam"))
        .map(|rd| {
            rd.flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap())
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    ipam.sort();
    format!("links:\n{links}\nnetns: {ns:?}\nipam: {ipam:?}\nrules:\n{rules}\nnftables:\n{mappings}")
}

/// Sets up and tears down one allocation, so the bridge and berth's shared
/// chains (made on first use, kept afterwards) exist before a "before" snapshot.
async fn warm_up(net: &BridgeNetwork, ports: &[PortMapping]) {
    let ns = net.create_netns("warm").unwrap();
    let w = net.setup("warm", &ns, ports).await.unwrap();
    net.teardown(&w).await.unwrap();
    net.settled().await;
}

/// Waits for the background part of teardowns, then compares the host.
async fn settled_state_is(net: &BridgeNetwork, dir: &Path, before: &str) {
    net.settled().await;
    assert_eq!(host_state(dir), before);
}

#[test]
fn mapped_ports_peers_and_egress_work_and_teardown_leaves_nothing() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::open(config(dir.path(), "bt0", "172.30.0.0/24")).await.unwrap();
        warm_up(&net, &[]).await;
        let before = host_state(dir.path());

        let ns_a = net.create_netns("a").unwrap();
        let a = net.setup("a", &ns_a, &[PortMapping { host_port: 8080, container_port: 80 }]).await.unwrap();
        let ns_b = net.create_netns("b").unwrap();
        let b = net.setup("b", &ns_b, &[]).await.unwrap();
        assert_ne!(a.ip, b.ip);
        assert_eq!(a.gateway, Ipv4Addr::new(172, 30, 0, 1));
        serve(&ns_a, 80, "hello from a");

        // Host-side: loopback and the node's address.
        assert_eq!(fetch("127.0.0.1:8080".parse().unwrap()), "hello from a");
        assert_eq!(fetch("10.99.0.1:8080".parse().unwrap()), "hello from a");
        // A peer reaches a by its bridge address and by the mapped port.
        let a_ip = a.ip;
        assert_eq!(ns_b.run(move || fetch(SocketAddr::from((a_ip, 80)))).unwrap(), "hello from a");
        assert_eq!(ns_b.run(|| fetch("10.99.0.1:8080".parse().unwrap())).unwrap(), "hello from a");
        // Hairpin: a reaches itself through its own mapped port.
        assert_eq!(ns_a.run(|| fetch("10.99.0.1:8080".parse().unwrap())).unwrap(), "hello from a");
        // Egress to a host-side listener.
        let host_listener = TcpListener::bind("10.99.0.1:9000").unwrap();
        std::thread::spawn(move || {
            let (mut s, peer) = host_listener.accept().unwrap();
            let _ = s.write_all(peer.ip().to_string().as_bytes());
        });
        let seen_as = ns_a.run(|| fetch("10.99.0.1:9000".parse().unwrap())).unwrap();
        assert_eq!(seen_as, a.ip.to_string(), "traffic to a local address keeps its source");

        net.teardown(&a).await.unwrap();
        net.teardown(&b).await.unwrap();
        settled_state_is(&net, dir.path(), &before).await;
        assert!(TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), Duration::from_millis(500)).is_err());
    });
}

#[test]
fn restart_readopts_running_allocations_and_gc_removes_the_rest() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "bt1", "172.30.1.0/24");
        let first = BridgeNetwork::open(cfg.clone()).await.unwrap();
        warm_up(&first, &[]).await;
        let before = host_state(dir.path());
        let ns_keep = first.create_netns("keep").unwrap();
        let keep = first.setup("keep", &ns_keep, &[PortMapping { host_port: 8081, container_port: 81 }]).await.unwrap();
        let ns_gone = first.create_netns("gone").unwrap();
        first.setup("gone", &ns_gone, &[PortMapping { host_port: 8082, container_port: 82 }]).await.unwrap();
        serve(&ns_keep, 81, "still here");
        drop(first);

        // "Agent restart": a new instance, the same node.
        let second = BridgeNetwork::open(cfg).await.unwrap();
        let live: HashSet<String> = ["keep".to_string()].into();
        let report = second.gc(&live).await.unwrap();
        assert_eq!(report.removed, vec!["gone".to_string()]);
        let ns_keep = second.create_netns("keep").unwrap();
        let again = second.setup("keep", &ns_keep, &keep.ports).await.unwrap();
        assert_eq!(again, keep, "same address, veth and mappings after re-adoption");
        assert_eq!(fetch("127.0.0.1:8081".parse().unwrap()), "still here");
        second.teardown(&again).await.unwrap();
        settled_state_is(&second, dir.path(), &before).await;
    });
}

#[test]
fn two_hundred_setups_and_teardowns_leak_nothing() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::open(config(dir.path(), "bt2", "172.30.2.0/24")).await.unwrap();
        warm_up(&net, &[PortMapping { host_port: 7000, container_port: 7000 }]).await;
        let before = host_state(dir.path());
        let mut seen = HashSet::new();
        for i in 0..200 {
            let id = format!("loop-{i}");
            let ns = net.create_netns(&id).unwrap();
            let n = net
                .setup(&id, &ns, &[PortMapping { host_port: 7000 + (i % 50) as u16, container_port: 80 }])
                .await
                .unwrap();
            seen.insert(n.ip);
            net.teardown(&n).await.unwrap();
        }
        // Round-robin IPAM walks the /24 instead of reusing one address.
        assert!(seen.len() > 100, "{} distinct addresses", seen.len());
        settled_state_is(&net, dir.path(), &before).await;
    });
}

#[test]
fn a_foreign_link_or_an_overlapping_route_is_refused_at_open() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        sh("ip link add taken0 type veth peer name taken0p");
        let err = BridgeNetwork::open(config(dir.path(), "taken0", "172.30.3.0/24")).await.err().unwrap().to_string();
        assert!(err.contains("\"taken0\" is already used by a veth interface"), "{err}");
        let err = BridgeNetwork::open(config(dir.path(), "bt3", "10.99.0.0/16")).await.err().unwrap().to_string();
        assert!(err.contains("overlaps the route to 10.99.0.0/24 via node0"), "{err}");
        let err = BridgeNetwork::open(config(dir.path(), "bt3", "172.30.3.7/24")).await.err().unwrap().to_string();
        assert!(err.contains("not a network address"), "{err}");
    });
}

#[test]
fn a_host_port_given_to_a_new_allocation_is_taken_over_and_kept_when_the_old_one_goes() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::open(config(dir.path(), "bt4", "172.30.4.0/24")).await.unwrap();
        let port = [PortMapping { host_port: 8090, container_port: 90 }];
        let ns_old = net.create_netns("old").unwrap();
        let old = net.setup("old", &ns_old, &port).await.unwrap();
        serve(&ns_old, 90, "old");
        assert_eq!(fetch("127.0.0.1:8090".parse().unwrap()), "old");
        // The scheduler handed the port on before the old allocation's
        // network was gone (its teardown still queued).
        let ns_new = net.create_netns("new").unwrap();
        let new = net.setup("new", &ns_new, &port).await.unwrap();
        serve(&ns_new, 90, "new");
        assert_eq!(fetch("127.0.0.1:8090".parse().unwrap()), "new");
        net.teardown(&old).await.unwrap();
        net.settled().await;
        assert_eq!(fetch("127.0.0.1:8090".parse().unwrap()), "new", "the old teardown left the new mapping");
        let map = sh("nft -s list map ip berth-bt4 hostports");
        assert!(map.contains(&format!("tcp . 8090 : {} . 90", new.ip)), "{map}");
        assert!(!map.contains(&old.ip.to_string()), "{map}");
        net.teardown(&new).await.unwrap();
        net.settled().await;
        assert!(!sh("nft -s list map ip berth-bt4 hostports").contains("8090"));
    });
}

#[test]
fn a_half_made_pair_from_an_interrupted_setup_is_replaced() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::open(config(dir.path(), "bt5", "172.30.5.0/24")).await.unwrap();
        let ns = net.create_netns("half").unwrap();
        // What a setup cut short leaves: the namespace's end exists, the host's does not.
        sh(&format!("nsenter --net={} ip link add eth0 type veth peer name eth0p", ns.path().display()));
        let a = net.setup("half", &ns, &[PortMapping { host_port: 8095, container_port: 95 }]).await.unwrap();
        serve(&ns, 95, "whole again");
        assert_eq!(fetch("127.0.0.1:8095".parse().unwrap()), "whole again");
        let links = sh(&format!("nsenter --net={} ip -o link show", ns.path().display()));
        assert!(!links.contains("eth0p"), "the stale pair is gone: {links}");
        net.teardown(&a).await.unwrap();
        net.settled().await;
    });
}
