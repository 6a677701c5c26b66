//! `berth doctor`: checks what a node needs and explains each problem with
//! its fix. Kernel support (iSCSI or the userspace initiator's tools,
//! dm-multipath, bridge, veth, br_netfilter, netfilter), the iptables
//! backend, Docker, iscsid and the initiator name, the multipath config,
//! the configured NAS (reachable, credentials accepted; never printed),
//! the data dir's permissions, the agent's ports, and the clock against
//! the servers. Read-only: it changes nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use csi::iscsi::{kernel_has_iscsi, kernel_module, on_path, userspace_initiator_available};
use serde::Serialize;

use crate::agent::config::AgentConfig;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, with a limitation worth knowing.
    Warn,
    /// Broken: the fix says what to do.
    Fail,
    /// Does not apply to this node's configuration.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked, e.g. `kernel: iscsi_tcp`.
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub fix: String,
}

fn finding(check: &str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check: check.to_owned(), status, detail: detail.into(), fix: fix.into() }
}

/// Runs every check against the agent configuration at `config_paths`.
/// Without a configuration (berth not installed yet) every check that
/// needs none still runs, with the defaults an install would use; with a
/// broken one, the checks that read it are skipped and the rest run.
pub async fn run(config_paths: &[PathBuf]) -> Vec<Finding> {
    let missing: Vec<&PathBuf> = config_paths.iter().filter(|p| !p.exists()).collect();
    let (config, first) = if !missing.is_empty() && missing.len() == config_paths.len() {
        let shown = missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let detail = format!("no agent config at {shown}: berth is not installed on this node yet");
        let fix = "install it (berth install --server, or --client --servers ADDR; add --synology FILE for a NAS), \
                   or point at the config with -config DIR; the checks below use the defaults an install writes";
        (Some(AgentConfig::default()), finding("agent config", Status::Warn, detail, fix))
    } else {
        match AgentConfig::load(config_paths) {
            Ok(config) => {
                let loaded = config_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
                (Some(config), finding("agent config", Status::Pass, format!("{loaded} loaded"), ""))
            }
            Err(e) => (None, finding("agent config", Status::Fail, e.to_string(), "fix the file named above")),
        }
    };
    let mut out = vec![first];
    out.extend(kernel_checks());
    out.push(iptables_backend());
    out.push(port_map());
    out.push(docker().await);
    out.extend(iscsi_node());
    out.push(multipath_config());
    match config {
        Some(config) => {
            out.push(nas(&config).await);
            out.push(data_dir(&config));
            out.extend(ports(&config).await);
            out.extend(clock(&config).await);
        }
        None => {
            for check in ["NAS", "data dir", "ports", "clock"] {
                out.push(finding(check, Status::Skip, "the agent config did not load (see above)", ""));
            }
        }
    }
    out
}

fn kernel_checks() -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(if kernel_has_iscsi() {
        finding("kernel: iscsi_tcp", Status::Pass, "the kernel iSCSI initiator is available", "")
    } else if userspace_initiator_available() {
        finding(
            "kernel: iscsi_tcp",
            Status::Warn,
            "this kernel has no iSCSI initiator module; volumes attach through the userspace initiator \
             (qemu-storage-daemon + libiscsi, FUSE, loop) instead",
            "nothing needed; for the kernel initiator install the kernel's extra modules \
             (linux-modules-extra-$(uname -r) on Ubuntu)",
        )
    } else {
        finding(
            "kernel: iscsi_tcp",
            Status::Fail,
            "this kernel has no iSCSI initiator module and the userspace initiator's tools are missing",
            "apt install qemu-utils qemu-block-extra fuse3 (userspace initiator), or the kernel's extra modules",
        )
    });
    out.push(if kernel_module("dm-multipath") {
        finding("kernel: dm-multipath", Status::Pass, "available", "")
    } else {
        finding(
            "kernel: dm-multipath",
            Status::Warn,
            "no dm-multipath module: NAS volumes use a single path",
            "only needed for several portals: install the kernel's extra modules",
        )
    });
    // Tried in a throw-away network namespace (`unshare --net`), which
    // vanishes with the command: nothing on the host is touched, and
    // built-in features without a /sys/module entry are found too.
    let probes: [(&str, &str, &[&str], bool); 5] = [
        ("bridge", "bridge networking", &["ip", "link", "add", "berth-doctor", "type", "bridge"], false),
        (
            "veth",
            "bridge networking",
            &["ip", "link", "add", "berth-d0", "type", "veth", "peer", "name", "berth-d1"],
            false,
        ),
        ("br_netfilter", "port mapping between tasks on one bridge", &[], Path::new("/proc/sys/net/bridge").exists()),
        ("nf_nat", "port mapping and masquerade", &["iptables", "-t", "nat", "-S"], false),
        (
            "nf_conntrack",
            "port mapping and masquerade",
            &[],
            Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists(),
        ),
    ];
    for (module, why, probe, present) in probes {
        let works = present
            || kernel_module(module)
            || (!probe.is_empty()
                && std::process::Command::new("unshare")
                    .arg("--net")
                    .args(probe)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()));
        out.push(if works {
            finding(&format!("kernel: {module}"), Status::Pass, "available", "")
        } else {
            finding(
                &format!("kernel: {module}"),
                Status::Fail,
                format!("missing; needed for {why}"),
                format!("modprobe {module}, or install the kernel's modules package"),
            )
        });
    }
    out
}

/// Creates berth's nftables port map (table, nat chains, the fib/map DNAT
/// rule) in a throw-away network namespace, with the code the bridge
/// network uses: nothing on the host is touched.
fn port_map() -> Finding {
    let tried = std::thread::spawn(|| -> cni::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| cni::NetError::Io { op: "creating a network namespace".into(), source: e.into() })?;
        cni::portmap::PortMap::open("doctor")?.ensure_table()
    })
    .join();
    match tried {
        Err(_) => finding("kernel: nf_tables", Status::Fail, "the probe thread panicked", ""),
        Ok(Ok(())) => finding("kernel: nf_tables", Status::Pass, "port maps work (nat chains, fib, maps)", ""),
        Ok(Err(e)) => finding(
            "kernel: nf_tables",
            Status::Fail,
            format!("berth's port map cannot be created: {e}"),
            "modprobe nf_tables nft_fib_ipv4 nft_nat, or install the kernel's modules package",
        ),
    }
}

fn iptables_backend() -> Finding {
    match std::process::Command::new("iptables").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let backend = if version.contains("nf_tables") { "nf_tables" } else { "legacy" };
            finding("iptables", Status::Pass, format!("{version} (backend {backend})"), "")
        }
        _ => finding("iptables", Status::Fail, "iptables is not installed", "apt install iptables"),
    }
}

async fn docker() -> Finding {
    let connected = bollard::Docker::connect_with_local_defaults();
    let version = match connected {
        Ok(docker) => tokio::time::timeout(Duration::from_secs(5), docker.version()).await,
        Err(e) => return finding("docker", Status::Warn, format!("cannot connect: {e}"), "apt install docker.io"),
    };
    match version {
        Ok(Ok(v)) => finding("docker", Status::Pass, format!("engine {} reachable", v.version.unwrap_or_default()), ""),
        Ok(Err(e)) => finding(
            "docker",
            Status::Warn,
            format!("the engine does not answer: {e}; docker tasks cannot run"),
            "apt install docker.io && systemctl enable --now docker",
        ),
        Err(_) => finding("docker", Status::Warn, "the engine did not answer within 5 s", "systemctl restart docker"),
    }
}

/// Whether a process with command name `name` runs.
fn process_running(name: &str) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries.flatten().any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
    })
}

fn iscsi_node() -> Vec<Finding> {
    if !kernel_has_iscsi() {
        let skipped = "the userspace initiator is used on this node";
        return vec![
            finding("iscsid", Status::Skip, skipped, ""),
            finding("initiator name", Status::Skip, skipped, ""),
        ];
    }
    let mut out = Vec::new();
    out.push(if !on_path("iscsiadm") {
        finding("iscsid", Status::Fail, "open-iscsi is not installed", "apt install open-iscsi (or berth install)")
    } else if process_running("iscsid") {
        finding("iscsid", Status::Pass, "running", "")
    } else {
        finding("iscsid", Status::Fail, "not running", "systemctl enable --now iscsid")
    });
    let name = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi").ok().and_then(|text| {
        text.lines().find_map(|l| l.trim().strip_prefix("InitiatorName=").map(|n| n.trim().to_owned()))
    });
    out.push(match name.filter(|n| !n.is_empty() && !n.contains("GenerateName")) {
        Some(name) => finding("initiator name", Status::Pass, name, ""),
        None => finding(
            "initiator name",
            Status::Fail,
            "/etc/iscsi/initiatorname.iscsi has no InitiatorName",
            "echo \"InitiatorName=$(iscsi-iname)\" > /etc/iscsi/initiatorname.iscsi (berth install does this)",
        ),
    });
    out
}

fn multipath_config() -> Finding {
    if Path::new("/etc/multipath.conf").exists() {
        finding("multipath config", Status::Pass, "/etc/multipath.conf exists", "")
    } else {
        finding(
            "multipath config",
            Status::Warn,
            "no /etc/multipath.conf: multipathd (if installed) uses its defaults",
            "berth install writes a default (find_multipaths yes, user_friendly_names yes)",
        )
    }
}

async fn nas(config: &AgentConfig) -> Finding {
    let Some(block) = config.plugins.get("synology") else {
        return finding("NAS", Status::Skip, "no plugin \"synology\" in the agent config", "");
    };
    let plugin = match crate::client::csi::builtin::SynologyPlugin::from_config(block) {
        Ok(plugin) => plugin,
        Err(e) => return finding("NAS", Status::Fail, e, "fix the driver config file"),
    };
    let dsm_config = match plugin.driver.dsm_config(|key| std::env::var(key).ok()) {
        Ok(mut c) => {
            c.call_timeout = Duration::from_secs(5);
            c
        }
        Err(e) => return finding("NAS", Status::Fail, e.to_string(), "set the password (passwordFile)"),
    };
    let url = dsm_config.base_url.clone();
    let client = match synology::dsm::DsmClient::new(dsm_config) {
        Ok(client) => client,
        Err(e) => return finding("NAS", Status::Fail, e.to_string(), "fix httpConnection"),
    };
    let volume = plugin.driver.volume_path();
    match client.volume_capacity(&volume).await {
        Ok(_) => finding("NAS", Status::Pass, format!("{url} accepted the credentials; {volume} answers"), ""),
        Err(e) if e.code().is_some_and(|c| (400..=411).contains(&c)) => finding(
            "NAS",
            Status::Fail,
            format!("{url} refused the credentials: {e}"),
            format!(
                "check httpConnection.username and the password in {} (a DSM administrator account)",
                plugin.driver_config_file.display()
            ),
        ),
        Err(e) => finding(
            "NAS",
            Status::Fail,
            format!("{url}: {e}"),
            "check httpConnection.host, port and protocol, and that DSM is up",
        ),
    }
}

fn data_dir(config: &AgentConfig) -> Finding {
    let dir = config.data_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/berth"));
    let shown = dir.display().to_string();
    match std::fs::metadata(&dir) {
        Err(_) => finding(
            "data dir",
            Status::Warn,
            format!("{shown} does not exist yet"),
            format!("install -d -m 0700 {shown} (berth install does this)"),
        ),
        Ok(meta) if meta.uid() != 0 => {
            finding("data dir", Status::Fail, format!("{shown} is not owned by root"), format!("chown root: {shown}"))
        }
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => finding(
            "data dir",
            Status::Fail,
            format!(
                "{shown} is writable by others (mode {:o}): it holds node secrets",
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 0700 {shown}"),
        ),
        Ok(_) => finding("data dir", Status::Pass, format!("{shown} owned by root, not writable by others"), ""),
    }
}

async fn ports(config: &AgentConfig) -> Vec<Finding> {
    let wanted = [
        ("http", config.http_port.unwrap_or(4646)),
        ("rpc", config.rpc_port.unwrap_or(4647)),
        ("serf", config.serf_port.unwrap_or(4648)),
    ];
    let mut out = Vec::new();
    for (name, port) in wanted {
        let check = format!("port {port} ({name})");
        out.push(match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(_) => finding(&check, Status::Pass, "free", ""),
            Err(_) if name != "serf" && berth_answers(port).await => {
                finding(&check, Status::Pass, "in use by a running berth agent", "")
            }
            Err(e) => finding(
                &check,
                Status::Fail,
                format!("in use by another program: {e}"),
                format!("find it with `ss -ltnp 'sport = :{port}'`, or set ports {{ {name} = … }}"),
            ),
        });
    }
    out
}

/// Whether a berth (or Nomad) agent answers HTTP on 127.0.0.1:`port`.
async fn berth_answers(port: u16) -> bool {
    crate::util::http_client_with(|b| b.timeout(Duration::from_secs(2)))
        .get(format!("http://127.0.0.1:{port}/v1/agent/self"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn clock(config: &AgentConfig) -> Vec<Finding> {
    if config.servers.is_empty() {
        return vec![finding("clock", Status::Skip, "no servers configured (this node is its own server)", "")];
    }
    let client = crate::util::http_client_with(|b| b.timeout(Duration::from_secs(3)));
    let mut out = Vec::new();
    for server in &config.servers {
        let check = format!("clock vs {server}");
        let sent = std::time::SystemTime::now();
        let reply = client.get(format!("http://{server}/v1/status/leader")).send().await;
        let received = std::time::SystemTime::now();
        let date = reply.as_ref().ok().and_then(|r| r.headers().get("date")).and_then(|d| d.to_str().ok());
        let theirs = date.and_then(httpdate);
        out.push(match (reply, theirs) {
            (Err(e), _) => finding(&check, Status::Fail, format!("server unreachable: {e}"), "check servers = [...]"),
            (Ok(_), None) => finding(&check, Status::Warn, "the server sent no Date header", ""),
            (Ok(_), Some(theirs)) => {
                let mid = sent + received.duration_since(sent).unwrap_or_default() / 2;
                let skew = match theirs.duration_since(mid) {
                    Ok(ahead) => ahead,
                    Err(behind) => behind.duration(),
                };
                // The Date header has one-second resolution.
                if skew <= Duration::from_secs(2) {
                    finding(&check, Status::Pass, format!("within {} s", skew.as_secs()), "")
                } else {
                    finding(
                        &check,
                        Status::Fail,
                        format!("{} s apart", skew.as_secs()),
                        "enable time sync: timedatectl set-ntp true",
                    )
                }
            }
        });
    }
    out
}

/// An HTTP `Date` (IMF-fixdate) as a time.
fn httpdate(text: &str) -> Option<std::time::SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(parsed.timestamp()).ok()?))
}

/// The human-readable report: one line per check, the fix under failures.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Pass => " OK ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        out.push_str(&format!("[{tag}] {}: {}\n", f.check, f.detail));
        if !f.fix.is_empty() && matches!(f.status, Status::Warn | Status::Fail) {
            out.push_str(&format!("       fix: {}\n", f.fix));
        }
    }
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    out.push_str(&if failed == 0 { "All checks passed.\n".to_owned() } else { format!("{failed} check(s) failed.\n") });
    out
}

/// 0 when nothing failed, else 1.
pub fn exit_code(findings: &[Finding]) -> i32 {
    i32::from(findings.iter().any(|f| f.status == Status::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_fixes_and_the_exit_code_follows_failures() {
        let findings = vec![
            finding("kernel: bridge", Status::Pass, "available", ""),
            finding("NAS", Status::Fail, "refused", "check the password"),
        ];
        let text = render(&findings);
        assert!(text.contains("[ OK ] kernel: bridge") && text.contains("[FAIL] NAS: refused"), "{text}");
        assert!(text.contains("fix: check the password") && text.contains("1 check(s) failed"), "{text}");
        assert_eq!(exit_code(&findings), 1);
        assert_eq!(exit_code(&findings[..1]), 0);
        assert!(httpdate("Thu, 26 Nov 2026 01:40:00 GMT").is_some());
    }
}
