//! Bridge networking end to end: real agents, real namespaces, veth, the
//! bridge and iptables on this host. Each test uses a bridge name and
//! subnet of its own (`bt<hex>`), removes what an earlier crashed run left,
//! and the tests run one at a time since they read host-wide state
//! (`ip link`, `iptables-save`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{free_port, job_file, mysql, wait_for, Agent};

static HOST: Mutex<()> = Mutex::new(());

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Serializes the tests and removes what an earlier, crashed run left on
/// test bridges.
fn host() -> std::sync::MutexGuard<'static, ()> {
    let guard = HOST.lock().unwrap_or_else(|e| e.into_inner());
    remove_leftovers(&regex::Regex::new(r"\bbt[0-9a-f]{6}\b").unwrap());
    guard
}

/// Removes namespaces, rules, nftables tables, veths and
/// bridges of the test bridges `names` matches.
fn remove_leftovers(names: &regex::Regex) {
    for ns in sh("ip netns list | awk '{print $1}'").lines() {
        if ns.starts_with("bt") && names.is_match(ns) {
            sh(&format!("ip netns del {ns}"));
        }
    }
    for table in ["nat", "filter"] {
        let saved = sh(&format!("iptables-save -t {table}"));
        let doomed: Vec<&str> =
            saved.lines().filter(|l| l.starts_with("-A ") && l.contains("berth") && names.is_match(l)).collect();
        if doomed.is_empty() {
            continue;
        }
        let mut script = format!("*{table}\n");
        for rule in &doomed {
            script.push_str(&rule.replacen("-A ", "-D ", 1));
            script.push('\n');
        }
        script.push_str("COMMIT\n");
        iptables_restore(&script);
    }
    for table in sh("nft list tables ip | awk '{print $3}'").lines() {
        if table.starts_with("berth-bt") && names.is_match(table) {
            sh(&format!("nft delete table ip {table}"));
        }
    }
    for l in sh("ip -o link show type bridge | awk -F': ' '{print $2}'").lines() {
        if l.len() == 8 && l.starts_with("bt") && names.is_match(l) {
            for port in sh(&format!("ip -o link show master {l} | awk -F': ' '{{print $2}}' | cut -d@ -f1")).lines() {
                sh(&format!("ip link del {port}"));
            }
            sh(&format!("ip link del {l}"));
        }
    }
}

/// Removes an allocation's containers (task and pause) when dropped.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        sh(&format!("docker ps -aq --filter name={} | xargs -r docker rm -f", self.0));
    }
}

/// Applies an `iptables-restore --noflush` script.
fn iptables_restore(script: &str) {
    let mut child =
        Command::new("iptables-restore").arg("--noflush").stdin(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    child.wait().unwrap();
}

/// A bridge name and a /24 subnet no route on this host uses; dropping it
/// removes the bridge and its rules.
struct TestBridge {
    name: String,
    subnet: String,
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        remove_leftovers(&regex::Regex::new(&format!(r"\b{}\b", self.name)).unwrap());
    }
}

fn unique_bridge() -> TestBridge {
    let routes = sh("ip -4 route show table main");
    for i in 0..250u32 {
        let n = (std::process::id() + i) % 250;
        if !routes.contains(&format!("10.213.{n}.")) {
            let name = format!("bt{:06x}", (std::process::id() * 251 + i) & 0xff_ffff);
            return TestBridge { name, subnet: format!("10.213.{n}.0/24") };
        }
    }
    panic!("no free 10.213.x.0/24 subnet");
}

fn bridge_agent(root: &Path, name: &str, bridge: &str, subnet: &str) -> Agent {
    Agent::dev_with(
        root,
        name,
        &format!("client {{\n  bridge_network_name = \"{bridge}\"\n  bridge_network_subnet = \"{subnet}\"\n}}\n"),
    )
}

/// The node's first global IPv4 address outside the test bridges.
fn node_address() -> String {
    sh("ip -4 -o addr show scope global | grep -v ' bt' | awk '{print $4}' | cut -d/ -f1 | head -1")
}

/// A bridge-mode raw_exec job: busybox httpd on port 8080 inside the
/// namespace, mapped from `static`; at start the task fetches `/` from
/// `egress` (`host port`) and prints what it got.
fn web_job(id: &str, host_port: u16, egress: &str) -> String {
    format!(
        r#"job "{id}" {{
  datacenters = ["dc1"]
  group "web" {{
    network {{
      mode = "bridge"
      port "http" {{
        static = {host_port}
        to     = 8080
      }}
      port "alt" {{
        to = 8080
      }}
    }}
    task "httpd" {{
      driver = "raw_exec"
      template {{
        data        = "hello from {{{{ env \"NOMAD_ALLOC_ID\" }}}}"
        destination = "local/www/index.html"
      }}
      config {{
        command = "/bin/sh"
        args = ["-c", "echo alloc-ip=$NOMAD_ALLOC_IP_http port=$NOMAD_PORT_http host-port=$NOMAD_HOST_PORT_http; echo egress=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {egress} | tail -n 1); exec /bin/busybox httpd -f -p 8080 -h local/www"]
      }}
      resources {{
        cpu    = 50
        memory = 32
      }}
    }}
  }}
}}
"#
    )
}

/// An HTTP/1.0 responder on `addr` that answers every request with `body`.
fn serve_host(addr: &str, body: &'static str) -> u16 {
    let l = TcpListener::bind(addr).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

/// The body of `GET /` from `addr`, if it answers 200.
fn http_get(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `GET /` from inside a namespace, with busybox nc.
fn http_get_in(netns: &str, host: &str, port: u16) -> String {
    sh(&format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ip netns exec {netns} /bin/busybox nc -w 3 {host} {port} | tail -n 1"
    ))
}

/// Everything an allocation network could leak, as text.
fn host_state(agent: &Agent, bridge: &str) -> String {
    let links = sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort");
    let netns = sh("ip netns list | awk '{print $1}' | sort");
    let ipam = sh(&format!("ls -A {}/client/networks/{bridge} 2>/dev/null | sort", agent.dir.display()));
    let rules = sh("iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//' | grep -i berth");
    format!("links:\n{links}\nnetns:\n{netns}\nipam:\n{ipam}\nrules:\n{rules}")
}

fn alloc_ip(bridge: &str, alloc: &str) -> String {
    sh(&format!("ip netns exec {bridge}-{alloc} ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1"))
}

fn running_alloc(agent: &Agent, job: &str) -> String {
    wait_for(&format!("{job} running"), Duration::from_secs(30), || agent.alloc_ids(job, "running").pop())
}

fn logs(agent: &Agent, alloc: &str) -> String {
    agent.cli(&["alloc", "logs", alloc, "httpd"]).stdout
}

/// Runs and stops a job once, so the bridge and berth's shared chains (made
/// on first use, kept like a CNI bridge) exist before a "before" snapshot.
fn warm_up(agent: &Agent, root: &Path, bridge: &str) {
    let job = job_file(root, "warm.nomad", &web_job("warm", free_port(), "127.0.0.1 1"));
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    running_alloc(agent, "warm");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "warm"]).code, 0);
    wait_for("warm-up allocation gone", Duration::from_secs(30), || agent.allocs("warm").is_empty().then_some(()));
    wait_for("warm-up network removed", Duration::from_secs(10), || {
        sh("ip netns list").lines().all(|l| !l.starts_with(&format!("{bridge}-"))).then_some(())
    });
}

#[test]
fn bridge_job_ports_peers_egress_and_clean_teardown() {
    let _host = host();
    let root = tempfile::tempdir().unwrap();
    let tb = unique_bridge();
    let bridge = tb.name.clone();
    let agent = bridge_agent(root.path(), "br1", &bridge, &tb.subnet);
    warm_up(&agent, root.path(), &bridge);
    let before = host_state(&agent, &bridge);

    let node = node_address();
    let egress_port = serve_host("0.0.0.0:0", "egress-ok");
    let (p1, p2) = (free_port(), free_port());
    let egress = format!("{node} {egress_port}");
    let j1 = job_file(root.path(), "web1.nomad", &web_job("web1", p1, &egress));
    let j2 = job_file(root.path(), "web2.nomad", &web_job("web2", p2, &egress));
    assert_eq!(agent.cli(&["job", "run", &j1]).code, 0);
    assert_eq!(agent.cli(&["job", "run", &j2]).code, 0);
    let a1 = running_alloc(&agent, "web1");
    let a2 = running_alloc(&agent, "web2");

    // Mapped from loopback and from the node's address.
    let hello = format!("hello from {a1}");
    let got = wait_for("web1 on 127.0.0.1", Duration::from_secs(15), || http_get(&format!("127.0.0.1:{p1}")));
    assert_eq!(got, hello);
    assert_eq!(http_get(&format!("{node}:{p1}")).as_deref(), Some(hello.as_str()));
    // A dynamic port, mapped the same way.
    let a = agent.get(&format!("/v1/allocation/{a1}"));
    let dynamic = a["AllocatedResources"]["Shared"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Label"] == "alt")
        .and_then(|p| p["Value"].as_u64())
        .expect("a dynamic port for \"alt\"");
    assert_eq!(http_get(&format!("127.0.0.1:{dynamic}")).as_deref(), Some(hello.as_str()));

    // The task runs in the allocation's namespace, with its address in env.
    let ip1 = alloc_ip(&bridge, &a1);
    assert!(ip1.starts_with("10.213."), "{ip1:?}");
    let out = wait_for("web1 logs", Duration::from_secs(10), || {
        let l = logs(&agent, &a1);
        l.contains("egress=").then_some(l)
    });
    assert!(out.contains(&format!("alloc-ip={ip1} port=8080 host-port={p1}")), "{out}");
    // The API carries the address as Nomad's NetworkStatus.
    let status = wait_for("the allocation's NetworkStatus", Duration::from_secs(10), || {
        let a = agent.get(&format!("/v1/allocation/{a1}"));
        a["NetworkStatus"]["Address"].as_str().map(|_| a["NetworkStatus"].clone())
    });
    assert_eq!(status["Address"], ip1.as_str(), "{status}");
    assert_eq!(status["InterfaceName"], "eth0", "{status}");
    // Egress from the namespace to a host-side listener.
    assert!(out.contains("egress=egress-ok"), "{out}");

    // The second allocation reaches the first by its bridge address, and
    // through the first one's mapped port on the node's address.
    let ns2 = format!("{bridge}-{a2}");
    assert_eq!(http_get_in(&ns2, &ip1, 8080), hello);
    assert_eq!(http_get_in(&ns2, &node, p1), hello);

    // The Allocation Addresses table.
    let status = agent.cli(&["alloc", "status", &a1]);
    assert!(status.stdout.contains("Allocation Addresses (mode = \"bridge\")"), "{status:?}");
    assert!(status.stdout.contains(&format!("127.0.0.1:{p1} -> 8080")), "{status:?}");

    for j in ["web1", "web2"] {
        assert_eq!(agent.cli(&["job", "stop", "-purge", j]).code, 0);
    }
    wait_for("no trace of the allocations", Duration::from_secs(30), || {
        (host_state(&agent, &bridge) == before).then_some(())
    });
    assert!(http_get(&format!("127.0.0.1:{p1}")).is_none());
}

#[test]
fn killed_agent_readopts_networks_and_still_cleans_up() {
    let _host = host();
    let root = tempfile::tempdir().unwrap();
    let tb = unique_bridge();
    let bridge = tb.name.clone();
    let mut agent = bridge_agent(root.path(), "br2", &bridge, &tb.subnet);
    warm_up(&agent, root.path(), &bridge);
    let before = host_state(&agent, &bridge);
    let port = free_port();
    let job = job_file(root.path(), "web.nomad", &web_job("web", port, "127.0.0.1 1"));
    assert_eq!(agent.cli(&["job", "run", &job]).code, 0);
    let alloc = running_alloc(&agent, "web");
    wait_for("web on 127.0.0.1", Duration::from_secs(15), || http_get(&format!("127.0.0.1:{port}")));
    let ip = alloc_ip(&bridge, &alloc);
    let during = host_state(&agent, &bridge);

    agent.kill();
    agent.start();
    wait_for("the allocation re-adopted", Duration::from_secs(30), || {
        agent.alloc_ids("web", "running").contains(&alloc).then_some(())
    });
    assert_eq!(alloc_ip(&bridge, &alloc), ip, "same address after the restart");
    assert!(http_get(&format!("127.0.0.1:{port}")).is_some(), "mapping still works");
    assert_eq!(host_state(&agent, &bridge), during, "nothing added, nothing lost");

    assert_eq!(agent.cli(&["job", "stop", "-purge", "web"]).code, 0);
    wait_for("no trace of the allocation", Duration::from_secs(30), || {
        (host_state(&agent, &bridge) == before).then_some(())
    });
}

#[test]
fn a_bad_bridge_configuration_stops_the_agent_with_a_clear_error() {
    let _host = host();
    let root = tempfile::tempdir().unwrap();
    let run = |name: &str, client: &str| {
        let cfg = root.path().join(format!("{name}.hcl"));
        let ports = format!("ports {{\n  http = {}\n  rpc = {}\n}}\n", free_port(), free_port());
        std::fs::write(&cfg, format!("{ports}client {{\n{client}\n}}\n")).unwrap();
        let out = Command::new(common::berth())
            .args(["agent", "-dev", &format!("-config={}", cfg.display())])
            .arg(format!("-data-dir={}", root.path().join(name).display()))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
    };
    let (code, out) = run("lo", "  bridge_network_name = \"lo\"");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("bridge_network_name \"lo\" is already used by a"), "{out}");
    let route =
        sh("ip -4 route show table main | grep -v '^default' | grep -v ' bt' | awk '{print $1}' | grep / | head -1");
    assert!(!route.is_empty(), "this host has a non-default route");
    let (code, out) = run("overlap", &format!("  bridge_network_subnet = \"{route}\""));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains(&format!("bridge_network_subnet {route} overlaps the route to {route}")), "{out}");
}

/// Removes the chains Debian's portmap plugin creates once and never
/// deletes (`CNI-HOSTPORT-*`) and the jumps to them, when dropped.
struct PortmapChains;

impl Drop for PortmapChains {
    fn drop(&mut self) {
        let saved = sh("iptables-save -t nat");
        let mut script = String::from("*nat\n");
        for rule in saved.lines().filter(|l| l.starts_with("-A ") && l.contains("CNI-HOSTPORT-")) {
            script.push_str(&rule.replacen("-A ", "-D ", 1));
            script.push('\n');
        }
        for chain in ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"] {
            if saved.contains(&format!(":{chain} ")) {
                script.push_str(&format!("-X {chain}\n"));
            }
        }
        script.push_str("COMMIT\n");
        iptables_restore(&script);
    }
}

#[test]
fn a_cni_mode_job_runs_the_operators_conflist_with_real_plugins() {
    let _host = host();
    assert!(Path::new("/usr/lib/cni/bridge").is_file(), "needs Debian's containernetworking-plugins");
    let root = tempfile::tempdir().unwrap();
    let tb = unique_bridge();
    let _portmap = PortmapChains;
    let confdir = root.path().join("cni-conf");
    std::fs::create_dir_all(&confdir).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "labnet",
        "plugins": [
            {"type": "bridge", "bridge": tb.name, "isGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": tb.subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": root.path().join("cni-ipam").display().to_string()}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    std::fs::write(confdir.join("10-labnet.conflist"), conf.to_string()).unwrap();
    let agent = Agent::dev_with(
        root.path(),
        "cni1",
        &format!("client {{\n  cni_path = \"/usr/lib/cni\"\n  cni_config_dir = \"{}\"\n}}\n", confdir.display()),
    );
    let port = free_port();
    let job = web_job("labweb", port, "127.0.0.1 1").replace("mode = \"bridge\"", "mode = \"cni/labnet\"");
    let file = job_file(root.path(), "labweb.nomad", &job);
    assert_eq!(agent.cli(&["job", "run", &file]).code, 0);
    let alloc = running_alloc(&agent, "labweb");
    let got = wait_for("labweb through portmap", Duration::from_secs(15), || http_get(&format!("127.0.0.1:{port}")));
    assert_eq!(got, format!("hello from {alloc}"));
    let out = logs(&agent, &alloc);
    let ip = sh(&format!("ip netns exec cni-{alloc} ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1"));
    assert!(out.contains(&format!("alloc-ip={ip} ")), "{out}");
    assert_eq!(agent.get(&format!("/v1/allocation/{alloc}"))["NetworkStatus"]["Address"], ip.as_str());

    assert_eq!(agent.cli(&["job", "stop", "-purge", "labweb"]).code, 0);
    wait_for("the CNI DEL ran", Duration::from_secs(30), || {
        let gone = !sh("ip netns list").contains(&alloc) && !sh("iptables-save -t nat").contains(&alloc);
        gone.then_some(())
    });
    assert!(http_get(&format!("127.0.0.1:{port}")).is_none());
    let unknown = web_job("nonet", free_port(), "127.0.0.1 1").replace("mode = \"bridge\"", "mode = \"cni/nosuch\"");
    let file = job_file(root.path(), "nonet.nomad", &unknown);
    assert_eq!(agent.cli(&["job", "run", "-detach", &file]).code, 0);
    let status = wait_for("the allocation to fail", Duration::from_secs(30), || {
        let a = agent.allocs("nonet");
        a.iter()
            .any(|a| a["ClientStatus"] == "failed")
            .then(|| agent.cli(&["alloc", "status", a[0]["ID"].as_str().unwrap()]))
    });
    assert!(status.stdout.contains("no CNI network named \"nosuch\""), "{status:?}");
}

#[test]
fn workshop_mysql_in_bridge_mode_with_the_mariadb_image() {
    let _host = host();
    let images = Command::new("docker").args(["image", "inspect", "berth-test/mariadb:latest"]).output();
    assert!(
        images.map(|o| o.status.success()).unwrap_or(false),
        "needs the Docker engine and the test images: run scripts/build-test-images.sh"
    );
    let root = tempfile::tempdir().unwrap();
    let tb = unique_bridge();
    let agent = bridge_agent(root.path(), "br3", &tb.name, &tb.subnet);
    let job = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mysql-bridge.nomad");
    let run = agent.cli(&["job", "run", &job.display().to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    let alloc = running_alloc(&agent, "mysql-bridge");
    let _containers = Containers(alloc.clone());
    wait_for("MariaDB on 127.0.0.1:3306 through the mapping", Duration::from_secs(90), || mysql("SELECT 1").ok());
    // The server sees the client through the namespace's own address.
    let ip = alloc_ip(&tb.name, &alloc);
    assert!(ip.starts_with("10.213."), "{ip:?}");
    assert_eq!(mysql("SELECT @@hostname IS NOT NULL").unwrap(), "1");
    let pause = sh(&format!("docker inspect -f '{{{{.Id}}}}' berth_init_{alloc}"));
    let mode = sh(&format!("docker inspect -f '{{{{.HostConfig.NetworkMode}}}}' mysql-server-{alloc}"));
    assert_eq!(mode, format!("container:{pause}"), "the task joins the pause container's namespace");
    assert_eq!(agent.cli(&["job", "stop", "-purge", "mysql-bridge"]).code, 0);
    wait_for("pause and task containers removed", Duration::from_secs(30), || {
        sh(&format!("docker ps -aq --filter name={alloc}")).is_empty().then_some(())
    });
    wait_for("namespace removed", Duration::from_secs(10), || (!sh("ip netns list").contains(&alloc)).then_some(()));
}

#[test]
fn mode_none_gives_a_namespace_with_only_loopback() {
    let _host = host();
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "none1");
    let job = r#"job "isolated" {
  datacenters = ["dc1"]
  type = "batch"
  group "g" {
    network {
      mode = "none"
    }
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"]
      }
    }
  }
}
"#;
    let file = job_file(root.path(), "isolated.nomad", job);
    assert_eq!(agent.cli(&["job", "run", "-detach", &file]).code, 0);
    let alloc =
        wait_for("the batch task to finish", Duration::from_secs(30), || agent.alloc_ids("isolated", "complete").pop());
    let out = agent.cli(&["alloc", "logs", &alloc, "t"]).stdout;
    assert_eq!(out.trim(), "interfaces: lo", "{out}");
    wait_for("namespace removed", Duration::from_secs(10), || (!sh("ip netns list").contains(&alloc)).then_some(()));
}
