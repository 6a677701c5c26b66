//! `berth install` / `uninstall` in a fresh Debian root (the debootstrapped
//! root of the local test image, exported from Docker), used as a chroot:
//! the files, modes, packages and enabled units it produces, a second run
//! that changes nothing, an edited config kept, and uninstall removing what
//! install added. Also `systemd-analyze verify` on the unit. Packages come
//! from Debian's mirror (apt in the chroot).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::berth;

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/berth.service")).unwrap();
    // Checked as written, with only the binary's path pointing at this build.
    let unit = unit.replace("/usr/local/bin/berth", berth());
    std::fs::write(dir.path().join("berth.service"), unit).unwrap();
    let (ok, out) = sh(&format!("systemd-analyze verify {}/berth.service", dir.path().display()));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
}

#[test]
fn install_into_a_fresh_root_is_idempotent_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (ok, out) = sh(&format!(
        "cid=$(docker create berth-test/mariadb) && docker export $cid | tar -x -C {} ; r=$?; docker rm $cid >/dev/null; exit $r",
        root.display()
    ));
    assert!(ok, "exporting the test image's root: {out}");
    assert!(!root.join("usr/local/bin/berth").exists() && !root.join("etc/iscsi").exists(), "not fresh");

    let yaml = dir.path().join("synology-iscsi.yaml");
    std::fs::write(
        &yaml,
        "driver: synology-iscsi\nhttpConnection:\n  host: nas.lan\n  username: berth\n  passwordFile: /etc/berth.d/dsm-password\n\
         iscsi:\n  targetPortal: \"nas.lan:3260\"\n  baseiqn: \"iqn.2000-01.com.synology:nas.\"\n",
    )
    .unwrap();
    let root_arg = format!("--root={}", root.display());
    let install = || {
        let r = common::cli(&[
            "install",
            "--client",
            "--servers",
            "10.0.0.1:4647,10.0.0.2:4647",
            "--synology",
            &yaml.display().to_string(),
            &root_arg,
            "--no-start",
        ]);
        assert_eq!(r.code, 0, "berth install: {r:?}");
        r.stdout
    };

    let first = install();
    assert!(first.contains("change(s) made"), "{first}");
    assert_eq!(std::fs::read(root.join("usr/local/bin/berth")).unwrap(), std::fs::read(berth()).unwrap());
    assert_eq!(mode(&root.join("usr/local/bin/berth")), 0o755);
    assert_eq!(mode(&root.join("var/lib/berth")), 0o700);
    assert_eq!(mode(&root.join("etc/berth.d/synology-iscsi.yaml")), 0o600, "the NAS config is root-only");
    let client = std::fs::read_to_string(root.join("etc/berth.d/client.hcl")).unwrap();
    assert!(client.contains("servers = [\"10.0.0.1:4647\", \"10.0.0.2:4647\"]"), "{client}");
    let synology = std::fs::read_to_string(root.join("etc/berth.d/synology.hcl")).unwrap();
    assert!(synology.contains("/etc/berth.d/synology-iscsi.yaml"));
    assert!(std::fs::read_to_string(root.join("etc/multipath.conf")).unwrap().contains("find_multipaths yes"));
    let initiator = std::fs::read_to_string(root.join("etc/iscsi/initiatorname.iscsi")).unwrap();
    assert!(initiator.contains("InitiatorName=iqn."), "{initiator}");
    for unit in ["berth.service", "iscsid.service", "multipathd.service"] {
        let (_, state) = sh(&format!("systemctl --root={} is-enabled {unit}", root.display()));
        assert_eq!(state.trim(), "enabled", "{unit}");
    }
    for package in ["open-iscsi", "multipath-tools", "lsscsi", "sg3-utils", "ca-certificates", "docker.io"] {
        let (ok, out) =
            sh(&format!("dpkg-query --admindir={}/var/lib/dpkg -W -f='${{Status}}' {package}", root.display()));
        assert!(ok && out.contains("install ok installed"), "{package}: {out}");
    }

    let second = install();
    assert!(second.ends_with("Nothing to change: already installed.\n"), "{second}");
    std::fs::write(root.join("etc/berth.d/client.hcl"), "# edited by hand\n").unwrap();
    let third = install();
    assert!(third.contains("Nothing to change"), "{third}");
    assert_eq!(std::fs::read_to_string(root.join("etc/berth.d/client.hcl")).unwrap(), "# edited by hand\n");

    let r = common::cli(&["uninstall", &root_arg]);
    assert_eq!(r.code, 0, "{r:?}");
    for gone in ["usr/local/bin/berth", "etc/systemd/system/berth.service", "etc/multipath.conf"] {
        assert!(!root.join(gone).exists(), "{gone} left by uninstall");
    }
    let (_, state) = sh(&format!("systemctl --root={} is-enabled berth.service", root.display()));
    assert_ne!(state.trim(), "enabled", "berth.service still enabled");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/berth.service");
    assert!(wants.symlink_metadata().is_err(), "enablement link left");
    assert!(root.join("etc/berth.d/synology-iscsi.yaml").exists() && root.join("var/lib/berth").exists(), "kept");
    let r = common::cli(&["uninstall", "--purge", &root_arg]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!root.join("var/lib/berth").exists(), "--purge removes the data dir");
    assert!(!root.join("etc/berth.d").exists(), "--purge removes the configs install wrote");

    boot_with_systemd(&root);
}

/// Installs a server into the root, boots the root with systemd
/// (`systemd-nspawn -b`) and asks the agent that `berth.service` started
/// for its nodes. Skipped, saying why, where systemd-nspawn is missing.
fn boot_with_systemd(root: &Path) {
    if !sh("command -v systemd-nspawn").0 {
        eprintln!("skipped: booting the root with systemd-nspawn -b (systemd-nspawn is not installed)");
        return;
    }
    let r = common::cli(&["install", "--server", &format!("--root={}", root.display()), "--no-start"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (http, rpc) = (common::free_port(), common::free_port());
    std::fs::write(
        root.join("etc/berth.d/zz-test.hcl"),
        format!(
            "bind_addr = \"127.0.0.1\"\nports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {}\n}}\n",
            common::free_port()
        ),
    )
    .unwrap();
    let (ok, out) = sh(&format!(
        "mount --bind /etc/resolv.conf {r}/etc/resolv.conf && chroot {r} sh -c 'DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends systemd-sysv'; s=$?; umount {r}/etc/resolv.conf; exit $s",
        r = root.display()
    ));
    assert!(ok, "systemd in the root: {out}");
    // The console (systemd's boot messages) goes to a file, shown on failure.
    let console_path = root.with_extension("console");
    let console = std::fs::File::create(&console_path).unwrap();
    let mut container = Command::new("systemd-nspawn")
        .args(["-q", "-b", "--register=no", "--keep-unit", "-D"])
        .arg(root)
        .stdin(std::process::Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console)
        .spawn()
        .unwrap();
    let address = format!("-address=http://127.0.0.1:{http}");
    // A boot on a busy 2-core machine (the other tests run beside it) can
    // take well over a minute.
    let answered = (0..360).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let r = common::cli(&["node", "status", &address]);
        (r.code == 0 && r.stdout.contains("ready")).then_some(r.stdout)
    });
    // SIGTERM asks the container's systemd to shut down.
    let _ = Command::new("kill").args(["-TERM", &container.id().to_string()]).status();
    let stopped = (0..60).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        container.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = container.kill();
        let _ = container.wait();
    }
    let journal =
        sh(&format!("journalctl -D {}/var/log/journal -u berth --no-pager 2>&1 | tail -40", root.display())).1;
    let answered = answered.unwrap_or_else(|| {
        let console = std::fs::read_to_string(&console_path).unwrap_or_default();
        panic!(
            "berth.service did not start an agent that `berth node status` answered through in 3 minutes\n--- \
             console\n{console}\n--- berth.service journal\n{journal}"
        )
    });
    assert!(answered.contains("ready"), "{answered}");
}

/// `berth doctor` on a node where berth is not installed: it says how to
/// install or which `-config` to pass, and still runs every check that
/// needs no config; a broken config skips only the checks that read it.
#[test]
fn doctor_before_the_install_explains_it_and_runs_every_other_check() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("berth.d");
    let out = common::cli(&["doctor", "-json", &format!("-config={}", absent.display())]);
    let findings: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let find = |findings: &serde_json::Value, check: &str| {
        findings.as_array().unwrap().iter().find(|f| f["check"] == check).cloned().unwrap_or_default()
    };
    let config = find(&findings, "agent config");
    assert_eq!(config["status"], "warn", "{config}");
    assert!(
        config["fix"].as_str().unwrap().contains("berth install")
            && config["fix"].as_str().unwrap().contains("-config")
    );
    for check in ["docker", "data dir", "multipath config"] {
        assert_ne!(find(&findings, check)["status"], "skip", "{check} was skipped: {findings}");
    }
    assert!(findings.as_array().unwrap().iter().any(|f| f["check"].as_str().unwrap_or("").starts_with("port")));

    std::fs::create_dir_all(&absent).unwrap();
    std::fs::write(absent.join("agent.hcl"), "client {\n  bogus_key = \n").unwrap();
    let out = common::cli(&["doctor", "-json", &format!("-config={}", absent.display())]);
    assert_eq!(out.code, 1, "{out:?}");
    let findings: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(find(&findings, "agent config")["status"], "fail");
    assert_eq!(find(&findings, "NAS")["status"], "skip");
    assert_ne!(find(&findings, "docker")["status"], "skip");
}
