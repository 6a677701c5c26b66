//! `berth install` and `berth uninstall`: put Berth on an Ubuntu/Debian
//! node as a systemd service, with what a NAS-backed client needs.
//!
//! Install, step by step, each done only when needed (so a second run
//! changes nothing and says so): the binary at `/usr/local/bin/berth`, the
//! unit `berth.service`, configs in `/etc/berth.d/` that are missing (an
//! existing file is never overwritten), `/var/lib/berth` (0700), the apt
//! packages (`open-iscsi`, `multipath-tools`, `lsscsi`, `sg3-utils`,
//! `ca-certificates` for an https DSM, and `docker.io` when there is no
//! Docker), a default `/etc/multipath.conf`
//! when there is none, an initiator name when there is none, and the units
//! enabled (and started, on a running systemd). What it created is listed
//! in `/var/lib/berth/install.json`; uninstall removes exactly that
//! (configs and data only with `--purge`), stopping the service first.
//!
//! `--root DIR` installs into another root (a chroot: packages through
//! `chroot DIR apt-get`, units enabled with `systemctl --root`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The unit file.
pub const UNIT: &str = include_str!("../../systemd/berth.service");
const SERVER_HCL: &str = include_str!("../../systemd/berth.d/server.hcl");
const CLIENT_HCL: &str = include_str!("../../systemd/berth.d/client.hcl");
const SYNOLOGY_HCL: &str = include_str!("../../systemd/berth.d/synology.hcl");
/// multipath defaults for a NAS: maps only for LUNs seen on several
/// paths, friendly names, and local disks left alone.
pub const MULTIPATH_CONF: &str = "# Written by berth install (only because none existed).\ndefaults {\n    \
     user_friendly_names yes\n    find_multipaths yes\n}\nblacklist {\n    devnode \"^(ram|raw|loop|fd|md|dm-|sr|scd|st|zram|nbd)[0-9]*\"\n}\n";
const PACKAGES: [&str; 5] = ["open-iscsi", "multipath-tools", "lsscsi", "sg3-utils", "ca-certificates"];
const UNITS: [&str; 3] = ["iscsid.service", "multipathd.service", "berth.service"];

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Write the server config.
    pub server: bool,
    /// Write the client config.
    pub client: bool,
    /// The servers a client joins (`host:port`).
    pub servers: Vec<String>,
    /// democratic-csi YAML for the built-in Synology plugin.
    pub synology: Option<PathBuf>,
    /// The root to install into (`/`).
    pub root: PathBuf,
    /// The binary to install (this one by default).
    pub binary: PathBuf,
    /// Skip apt.
    pub no_packages: bool,
    /// Do not start services.
    pub no_start: bool,
}

/// What install made, so that uninstall removes exactly that.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    files: Vec<PathBuf>,
    configs: Vec<PathBuf>,
    enabled: Vec<String>,
    packages: Vec<String>,
}

/// The steps' report.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step.
    pub lines: Vec<String>,
    /// How many steps changed something.
    pub changes: usize,
}

impl Report {
    fn changed(&mut self, line: String) {
        self.changes += 1;
        self.lines.push(format!("  changed: {line}"));
    }
    fn kept(&mut self, line: String) {
        self.lines.push(format!("  ok:      {line}"));
    }
    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out.push_str(&if self.changes == 0 {
            "Nothing to change: already installed.\n".to_owned()
        } else {
            format!("{} change(s) made.\n", self.changes)
        });
        out
    }
}

fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn run(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Writes `content` at `path` with `mode` unless it already holds exactly that.
fn write_file(report: &mut Report, path: &Path, shown: &str, content: &[u8], mode: u32) -> Result<bool, String> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        let current = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
        if current == mode {
            report.kept(format!("{shown} is up to date"));
            return Ok(false);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let temporary = path.with_extension("berth-new");
    std::fs::write(&temporary, content).map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))?;
    report.changed(format!("wrote {shown}"));
    Ok(true)
}

/// Writes a config only when missing: an existing one is the user's.
fn write_config(
    report: &mut Report,
    manifest: &mut Manifest,
    root: &Path,
    name: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), String> {
    let shown = format!("/etc/berth.d/{name}");
    let path = at(root, &shown);
    if path.exists() {
        report.kept(format!("{shown} exists (never overwritten)"));
        return Ok(());
    }
    write_file(report, &path, &shown, content, mode)?;
    manifest.configs.push(PathBuf::from(shown));
    Ok(())
}

fn manifest_path(root: &Path) -> PathBuf {
    at(root, "/var/lib/berth/install.json")
}

fn load_manifest(root: &Path) -> Manifest {
    std::fs::read(manifest_path(root)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn installed(root: &Path, package: &str) -> bool {
    Command::new("dpkg-query")
        .arg(format!("--admindir={}", at(root, "/var/lib/dpkg").display()))
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `apt-get ARGS` in `root` (chrooted, with /proc, /sys and /dev bound in
/// for the packages' scripts, unmounted afterwards).
fn apt(root: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if root == Path::new("/") {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).arg("apt-get");
        c
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if root == Path::new("/") {
        return run("apt-get", &mut cmd).map(drop);
    }
    let mut mounted = Vec::new();
    for (what, fstype) in [("proc", Some("proc")), ("sys", Some("sysfs")), ("dev", None)] {
        let target = at(root, what);
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let result = match fstype {
            Some(fstype) => {
                nix::mount::mount(Some(fstype), &target, Some(fstype), nix::mount::MsFlags::empty(), None::<&str>)
            }
            None => nix::mount::mount(
                Some(Path::new("/dev")),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
                None::<&str>,
            ),
        };
        result.map_err(|e| format!("mounting {} for apt: {e}", target.display()))?;
        mounted.push(target);
    }
    // The root resolves names as this host does while apt runs.
    let resolv = at(root, "/etc/resolv.conf");
    let created = !resolv.exists() && std::fs::File::create(&resolv).is_ok();
    if resolv.exists()
        && nix::mount::mount(
            Some(Path::new("/etc/resolv.conf")),
            &resolv,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .is_ok()
    {
        mounted.push(resolv);
    }
    let result = run("apt-get in the root", &mut cmd).map(drop);
    for target in mounted.iter().rev() {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    }
    if created {
        let _ = std::fs::remove_file(at(root, "/etc/resolv.conf"));
    }
    result
}

fn systemctl(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("systemctl");
    if root != Path::new("/") {
        cmd.arg(format!("--root={}", root.display()));
    }
    cmd.args(args);
    cmd
}

/// Whether this is the running system with systemd as init.
fn live_systemd(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

/// Installs; see the module docs. Errors name the step; what was done
/// before a failure is recorded for uninstall all the same.
pub fn install(options: &InstallOptions) -> Result<Report, String> {
    let root = options.root.as_path();
    let mut report = Report::default();
    let mut manifest = load_manifest(root);
    let result = install_steps(options, &mut report, &mut manifest);
    if report.changes > 0 {
        let path = manifest_path(root);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    result.map(|()| report)
}

fn install_steps(options: &InstallOptions, report: &mut Report, manifest: &mut Manifest) -> Result<(), String> {
    let root = options.root.as_path();
    let (server, client) = match (options.server, options.client) {
        (false, false) => (true, false),
        chosen => chosen,
    };
    let needs_nas = client || server;

    let data = at(root, "/var/lib/berth");
    match std::fs::metadata(&data) {
        Ok(meta) if meta.permissions().mode() & 0o777 == 0o700 => report.kept("/var/lib/berth (0700)".into()),
        _ => {
            std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", data.display()))?;
            report.changed("/var/lib/berth created with mode 0700".into());
        }
    }
    let binary = std::fs::read(&options.binary).map_err(|e| format!("{}: {e}", options.binary.display()))?;
    if write_file(report, &at(root, "/usr/local/bin/berth"), "/usr/local/bin/berth", &binary, 0o755)? {
        remember(&mut manifest.files, "/usr/local/bin/berth");
    }
    let unit_path = "/etc/systemd/system/berth.service";
    if write_file(report, &at(root, unit_path), unit_path, UNIT.as_bytes(), 0o644)? {
        remember(&mut manifest.files, unit_path);
    }
    if server {
        write_config(report, manifest, root, "server.hcl", SERVER_HCL.as_bytes(), 0o644)?;
    }
    if client {
        let servers: Vec<String> = options.servers.iter().map(|s| format!("\"{s}\"")).collect();
        let text = CLIENT_HCL.replace("[\"192.168.1.10:4647\"]", &format!("[{}]", servers.join(", ")));
        write_config(report, manifest, root, "client.hcl", text.as_bytes(), 0o644)?;
    }
    if let Some(file) = &options.synology {
        let yaml = std::fs::read(file).map_err(|e| format!("--synology {}: {e}", file.display()))?;
        let text = String::from_utf8_lossy(&yaml);
        synology::config::DriverConfig::from_yaml(&text).map_err(|e| format!("--synology {}: {e}", file.display()))?;
        write_config(report, manifest, root, "synology-iscsi.yaml", &yaml, 0o600)?;
        write_config(report, manifest, root, "synology.hcl", SYNOLOGY_HCL.as_bytes(), 0o644)?;
    }

    if needs_nas && !options.no_packages {
        let mut wanted: Vec<&str> = PACKAGES.to_vec();
        if !at(root, "/usr/bin/docker").exists() && !at(root, "/usr/bin/dockerd").exists() {
            wanted.push("docker.io");
        }
        let missing: Vec<&str> = wanted.into_iter().filter(|p| !installed(root, p)).collect();
        if missing.is_empty() {
            report.kept("packages installed".into());
        } else {
            apt(root, &["update", "-qq"])?;
            let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
            args.extend(&missing);
            apt(root, &args)?;
            manifest.packages.extend(missing.iter().map(|p| (*p).to_owned()));
            report.changed(format!("installed {}", missing.join(" ")));
        }
    }
    if at(root, "/etc/multipath.conf").exists() {
        report.kept("/etc/multipath.conf exists (never overwritten)".into());
    } else {
        write_file(report, &at(root, "/etc/multipath.conf"), "/etc/multipath.conf", MULTIPATH_CONF.as_bytes(), 0o644)?;
        remember(&mut manifest.files, "/etc/multipath.conf");
    }
    initiator_name(report, manifest, root)?;

    for unit in UNITS {
        let known = at(root, &format!("/etc/systemd/system/{unit}")).exists()
            || at(root, &format!("/lib/systemd/system/{unit}")).exists()
            || at(root, &format!("/usr/lib/systemd/system/{unit}")).exists();
        if !known {
            report.kept(format!("{unit}: not installed here, skipped"));
            continue;
        }
        let state = systemctl(root, &["is-enabled", unit])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if state == "enabled" {
            report.kept(format!("{unit} enabled"));
        } else {
            run(&format!("enabling {unit}"), &mut systemctl(root, &["enable", unit]))?;
            remember(&mut manifest.enabled, unit);
            report.changed(format!("enabled {unit}"));
        }
    }
    if live_systemd(root) && !options.no_start {
        run("systemctl daemon-reload", &mut systemctl(root, &["daemon-reload"]))?;
        for unit in UNITS {
            let active = systemctl(root, &["is-active", "--quiet", unit]).status().is_ok_and(|s| s.success());
            if active {
                report.kept(format!("{unit} running"));
            } else if systemctl(root, &["start", unit]).status().is_ok_and(|s| s.success()) {
                report.changed(format!("started {unit}"));
            } else {
                report.kept(format!("{unit} could not be started: see `systemctl status {unit}`"));
            }
        }
    }
    Ok(())
}

fn remember(list: &mut Vec<impl PartialEq + From<&'static str>>, item: &'static str) {
    let item = item.into();
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Sets `/etc/iscsi/initiatorname.iscsi` when it names no initiator.
fn initiator_name(report: &mut Report, manifest: &mut Manifest, root: &Path) -> Result<(), String> {
    let path = at(root, "/etc/iscsi/initiatorname.iscsi");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let has_name =
        current.lines().any(|l| l.trim().strip_prefix("InitiatorName=").is_some_and(|n| !n.trim().is_empty()));
    if has_name {
        report.kept("/etc/iscsi/initiatorname.iscsi names an initiator".into());
        return Ok(());
    }
    let host = std::fs::read_to_string(at(root, "/etc/hostname")).unwrap_or_default();
    let host: String = host.trim().to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let suffix: u32 = rand::random();
    let name =
        format!("InitiatorName=iqn.2026-11.dev.berth:{}-{suffix:08x}\n", if host.is_empty() { "node" } else { &host });
    write_file(report, &path, "/etc/iscsi/initiatorname.iscsi", name.as_bytes(), 0o600)?;
    remember(&mut manifest.files, "/etc/iscsi/initiatorname.iscsi");
    Ok(())
}

/// Stops and removes what install added (configs and data too with
/// `purge`); packages stay, as other software may use them.
pub fn uninstall(root: &Path, purge: bool) -> Result<Report, String> {
    let mut report = Report::default();
    let manifest = load_manifest(root);
    if live_systemd(root)
        && systemctl(root, &["is-active", "--quiet", "berth.service"]).status().is_ok_and(|s| s.success())
    {
        run("stopping berth", &mut systemctl(root, &["stop", "berth.service"]))?;
        report.changed("stopped berth.service".into());
    }
    for unit in &manifest.enabled {
        if systemctl(root, &["disable", unit]).status().is_ok_and(|s| s.success()) {
            report.changed(format!("disabled {unit}"));
        }
    }
    let mut paths: Vec<&PathBuf> = manifest.files.iter().collect();
    if purge {
        paths.extend(manifest.configs.iter());
    }
    for file in paths {
        let path = at(root, &file.display().to_string());
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            report.changed(format!("removed {}", file.display()));
        }
    }
    if live_systemd(root) {
        let _ = systemctl(root, &["daemon-reload"]).status();
    }
    if purge {
        for dir in ["/var/lib/berth", "/etc/berth.d"] {
            let path = at(root, dir);
            let empty_config_dir =
                dir == "/etc/berth.d" && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            if path.exists() && (dir == "/var/lib/berth" || empty_config_dir) {
                std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                report.changed(format!("removed {dir}"));
            }
        }
    } else {
        report.kept("configs in /etc/berth.d and data in /var/lib/berth kept (--purge removes them)".into());
    }
    if !manifest.packages.is_empty() {
        report.kept(format!("packages kept: {}", manifest.packages.join(" ")));
    }
    Ok(report)
}
