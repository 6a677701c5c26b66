//! Network setup + teardown of one allocation: berth's built-in networker
//! versus Debian's CNI reference plugins (loopback, bridge + host-local,
//! firewall, portmap, in the shape Nomad generates) run per the CNI
//! protocol by the `external` executor, in the same run, each inside a
//! throw-away namespace that plays the host. Both sides include creating
//! and deleting the allocation's namespace and map one port. Latency is
//! per allocation, from an idle node, as the orchestrator waits for it
//! (berth defers part of teardown to a background task, and makes spare
//! namespaces once set-ups pause; both are done before the next one
//! starts); the back-to-back run counts that background work too, until it
//! is all done.
//!
//! Run with `cargo bench -p berth-cni --bench netsetup` (root).
//! `BERTH_BENCH_ALLOCS` sets the number of allocations (default 200).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cni::external::{self, Attachment};
use cni::netns::NetNs;
use cni::{BridgeConfig, BridgeNetwork, PortMapping};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (p(0.5), p(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_ALLOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").is_file(),
        "needs Debian's containernetworking-plugins in /usr/lib/cni"
    );
    common::in_fresh_host(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let ports = vec![PortMapping { host_port: 8080, container_port: 80 }];

        let net = BridgeNetwork::open(BridgeConfig {
            name: "berth0".into(),
            subnet: "172.26.64.0/20".parse().unwrap(),
            ipam_dir: dir.path().join("berth-ipam"),
            netns_dir: dir.path().join("netns"),
        })
        .await
        .unwrap();
        // Latency: each allocation set up and torn down on an idle node, as
        // each reference one is (its DEL is synchronous).
        let mut berth = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("alloc-{i}");
            let t = Instant::now();
            let ns = net.create_netns(&id).unwrap();
            let a = net.setup(&id, &ns, &ports).await.unwrap();
            net.teardown(&a).await.unwrap();
            berth.push(t.elapsed());
            net.settled().await;
        }
        // Throughput: back to back, until the background part of every
        // teardown (rules, namespace, conntrack walk, address) is done.
        let berth_start = Instant::now();
        for i in 0..n {
            let id = format!("burst-{i}");
            let ns = net.create_netns(&id).unwrap();
            let a = net.setup(&id, &ns, &ports).await.unwrap();
            net.teardown(&a).await.unwrap();
        }
        net.settled().await;
        let berth_total = berth_start.elapsed();

        let conf =
            external::load(&common::nomad_style_conflist(dir.path(), "cniref0", "172.27.64.0/20"), "refnet").unwrap();
        let netns_dir = dir.path().join("netns");
        let cache = dir.path().join("cache");
        let mut reference = Vec::with_capacity(n);
        let reference_start = Instant::now();
        for i in 0..n {
            let id = format!("ref-{i}");
            let t = Instant::now();
            let ns = NetNs::create(&netns_dir, &id).unwrap();
            let att = Attachment {
                container_id: id.clone(),
                netns: ns.path().to_path_buf(),
                ifname: "eth0".into(),
                cni_path: vec!["/usr/lib/cni".into()],
                ports: ports.clone(),
                args: vec![],
            };
            external::add(&conf, &att, &cache).await.unwrap();
            external::del(&conf, &att, &cache).await.unwrap();
            NetNs::delete(&netns_dir, &id).unwrap();
            reference.push(t.elapsed());
        }
        let reference_total = reference_start.elapsed();

        let (bm, bp) = stats(berth);
        let (rm, rp) = stats(reference);
        println!("allocations, each side:                 {n}");
        println!("berth built-in setup+teardown:  median {:7.2} ms   p99 {:7.2} ms", ms(bm), ms(bp));
        println!("reference CNI plugins:          median {:7.2} ms   p99 {:7.2} ms", ms(rm), ms(rp));
        let ratio = rm.as_secs_f64() / bm.as_secs_f64();
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "speed-up (reference / berth):   median {ratio:.1}x   p99 {:.1}x   (target median <= 2 ms: {})",
            rp.as_secs_f64() / bp.as_secs_f64(),
            met(bm <= Duration::from_millis(2))
        );
        let burst = reference_total.as_secs_f64() / berth_total.as_secs_f64();
        println!(
            "{n} back to back, all work done: berth {:7.1} ms   reference {:7.1} ms   ratio {burst:.1}x   (target >= 30x: {})",
            ms(berth_total),
            ms(reference_total),
            met(burst >= 30.0)
        );
    });
}
