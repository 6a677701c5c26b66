//! Helpers shared by the tests and the benchmark: a throw-away network
//! namespace that plays the host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `f` on a thread inside a new network namespace (with `lo` up and a
/// dummy "node address" 10.99.0.1/24) on a runtime of its own.
pub fn in_fresh_host<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (tests need root)");
        sh("ip link set lo up");
        sh("ip link add node0 type veth peer name node0p && ip addr add 10.99.0.1/24 dev node0 && ip link set node0p up && ip link set node0 up");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(f());
    })
    .join()
    .expect("test thread panicked");
}

/// Runs a shell command; panics unless it succeeds. Returns its stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a conflist shaped like the one Nomad generates for its bridge
/// network (network `refnet`) into `<dir>/conf` and returns that directory.
#[allow(dead_code)] // used by the external test and the benchmark, not by every test
pub fn nomad_style_conflist(dir: &Path, bridge: &str, subnet: &str) -> PathBuf {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "refnet",
        "plugins": [
            {"type": "loopback"},
            {"type": "bridge", "bridge": bridge, "ipMasq": true, "isGateway": true, "forceAddress": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": dir.join("ipam").display().to_string()}},
            {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": "REF-ADMIN"},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    let confdir = dir.join("conf");
    std::fs::create_dir_all(&confdir).unwrap();
    std::fs::write(confdir.join("10-refnet.conflist"), conf.to_string()).unwrap();
    confdir
}
