//! The kernel initiator, driven through `iscsiadm` so that nothing is left
//! behind: per portal, a sendtargets discovery that writes no node records
//! (`-o nonpersistent`; the discovery record itself is created only when
//! missing and then remembered), the target's node record created with
//! explicit settings (`node.startup=manual`, CHAP when configured), login,
//! and the wait for `/dev/disk/by-path/ip-<portal>-iscsi-<iqn>-lun-<n>`.
//! With several portals, or multipathd running, the device used is the
//! multipath map over the paths (`/dev/mapper/<name>`).
//!
//! Detach flushes the map (`multipath -f`), logs out of each portal,
//! deletes the node records and the discovery records berth created, so
//! `/etc/iscsi/nodes` never holds stale entries. A failed attach undoes
//! what it did the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::command::{Cmd, HostRunner, Runner};
use super::{Attacher, Attachment, IscsiError, IscsiTarget, Via};

/// iscsiadm's exit code for "no records / no session found".
const NO_OBJECTS: i32 = 21;
/// iscsiadm's exit code for "session already exists".
const ALREADY_LOGGED_IN: i32 = 15;

/// The open-iscsi attacher.
#[derive(Debug)]
pub struct OpenIscsi<R: Runner = HostRunner> {
    runner: R,
    /// Where `dev/`, `sys/` and `run/` are looked up (`/`; a test's tree).
    root: PathBuf,
    /// How long a device may take to appear after login.
    device_wait: Duration,
}

impl<R: Runner> OpenIscsi<R> {
    /// The attacher on this host.
    pub fn new(runner: R) -> Self {
        Self::with_root(runner, "/", Duration::from_secs(30))
    }

    /// The attacher reading devices and sysfs below `root`.
    pub fn with_root(runner: R, root: impl Into<PathBuf>, device_wait: Duration) -> Self {
        Self { runner, root: root.into(), device_wait }
    }

    fn iscsiadm(args: &[&str]) -> Cmd {
        Cmd::new("iscsiadm", args)
    }

    fn node(iqn: &str, portal: &str, args: &[&str]) -> Cmd {
        let mut cmd = Self::iscsiadm(&["-m", "node", "-T", iqn, "-p", portal]);
        cmd.args.extend(args.iter().map(|a| (*a).to_owned()));
        cmd
    }

    fn discoverydb(portal: &str, args: &[&str]) -> Cmd {
        let mut cmd = Self::iscsiadm(&["-m", "discoverydb", "-t", "sendtargets", "-p", portal]);
        cmd.args.extend(args.iter().map(|a| (*a).to_owned()));
        cmd
    }

    fn set(iqn: &str, portal: &str, name: &str) -> Cmd {
        Self::node(iqn, portal, &["-o", "update", "-n", name, "-v"])
    }

    /// Discovery on `portal`; records in `via` whether berth created the
    /// discovery record; fails unless the portal offers `iqn`.
    fn discover(&self, portal: &str, iqn: &str, discovery_created: &mut Vec<String>) -> Result<(), IscsiError> {
        if self.runner.run(&Self::discoverydb(portal, &[]))?.code != 0 {
            self.runner.check(&Self::discoverydb(portal, &["-o", "new"]), &[])?;
            discovery_created.push(portal.to_owned());
        }
        let out = self.runner.check(&Self::discoverydb(portal, &["--discover", "-o", "nonpersistent"]), &[])?;
        let offered: Vec<&str> = out.stdout.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
        if offered.contains(&iqn) {
            Ok(())
        } else {
            Err(IscsiError::NotOffered { portal: portal.to_owned(), iqn: iqn.to_owned(), offered: offered.join(", ") })
        }
    }

    /// Node record with explicit settings, then login.
    fn login(&self, portal: &str, target: &IscsiTarget) -> Result<(), IscsiError> {
        let iqn = &target.iqn;
        self.runner.check(&Self::node(iqn, portal, &["-o", "new"]), &[])?;
        self.runner.check(&Self::set(iqn, portal, "node.startup").arg("manual"), &[])?;
        if let Some(chap) = &target.chap {
            self.runner.check(&Self::set(iqn, portal, "node.session.auth.authmethod").arg("CHAP"), &[])?;
            self.runner.check(&Self::set(iqn, portal, "node.session.auth.username").arg(&chap.username), &[])?;
            self.runner.check(&Self::set(iqn, portal, "node.session.auth.password").secret_arg(&chap.password), &[])?;
        }
        self.runner.check(&Self::node(iqn, portal, &["--login"]), &[ALREADY_LOGGED_IN])?;
        Ok(())
    }

    fn by_path(&self, portal: &str, target: &IscsiTarget) -> PathBuf {
        self.root.join("dev/disk/by-path").join(format!("ip-{portal}-iscsi-{}-lun-{}", target.iqn, target.lun))
    }

    /// Waits for `path` to exist and returns what it resolves to.
    fn wait_for(&self, path: &Path) -> Result<PathBuf, IscsiError> {
        let started = Instant::now();
        loop {
            if let Ok(device) = path.canonicalize() {
                return Ok(device);
            }
            if started.elapsed() > self.device_wait {
                return Err(IscsiError::NoDevice { what: path.display().to_string(), waited: self.device_wait });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn multipathd_running(&self) -> bool {
        self.root.join("run/multipathd.pid").exists() || self.root.join("run/multipathd/multipathd.pid").exists()
    }

    /// The multipath map holding `device` (a `/dev/sdX`), if any.
    fn holder_map(&self, device: &Path) -> Option<String> {
        let name = device.file_name()?;
        let holders = std::fs::read_dir(self.root.join("sys/block").join(name).join("holders")).ok()?;
        holders.flatten().find_map(|holder| {
            let dm = holder.file_name();
            let map = std::fs::read_to_string(self.root.join("sys/block").join(&dm).join("dm/name")).ok()?;
            Some(map.trim().to_owned()).filter(|m| !m.is_empty())
        })
    }

    /// The multipath map over `devices`: waited for when several paths
    /// must make one, taken if present when multipathd runs for one path
    /// (with `find_multipaths yes` a single path gets no map).
    fn multipath(&self, devices: &[PathBuf]) -> Result<Option<String>, IscsiError> {
        let must = devices.len() > 1;
        if !must && !self.multipathd_running() {
            return Ok(None);
        }
        let started = Instant::now();
        loop {
            if let Some(map) = devices.iter().find_map(|d| self.holder_map(d)) {
                return Ok(Some(map));
            }
            if !must {
                return Ok(None);
            }
            if started.elapsed() > self.device_wait {
                let paths: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
                return Err(IscsiError::NoDevice {
                    what: format!("a multipath map over {} (is multipathd running?)", paths.join(", ")),
                    waited: self.device_wait,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn attach_all(&self, target: &IscsiTarget, via: &mut Via) -> Result<PathBuf, IscsiError> {
        let Via::OpenIscsi { portals, discovery_created, multipath } = via else {
            unreachable!("open-iscsi attaches record open-iscsi attachments")
        };
        let mut devices = Vec::new();
        for portal in &target.portals {
            self.discover(portal, &target.iqn, discovery_created)?;
            portals.push(portal.clone());
            self.login(portal, target)?;
            let device = self.wait_for(&self.by_path(portal, target))?;
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
        *multipath = self.multipath(&devices)?;
        Ok(match multipath {
            Some(map) => self.root.join("dev/mapper").join(map),
            None => devices.swap_remove(0),
        })
    }
}

impl<R: Runner> Attacher for OpenIscsi<R> {
    fn attach(&self, name: &str, target: &IscsiTarget) -> Result<Attachment, IscsiError> {
        let mut via = Via::OpenIscsi { portals: Vec::new(), discovery_created: Vec::new(), multipath: None };
        match self.attach_all(target, &mut via) {
            Ok(device) => {
                tracing::info!(volume = %name, iqn = %target.iqn, device = %device.display(), "iSCSI LUN attached");
                Ok(Attachment { device, iqn: target.iqn.clone(), via })
            }
            Err(error) => {
                let partial = Attachment { device: PathBuf::new(), iqn: target.iqn.clone(), via };
                if let Err(undo) = self.detach(&partial) {
                    tracing::warn!(volume = %name, error = %undo, "could not undo a failed iSCSI attach");
                }
                Err(error)
            }
        }
    }

    fn detach(&self, attachment: &Attachment) -> Result<(), IscsiError> {
        let Via::OpenIscsi { portals, discovery_created, multipath } = &attachment.via else {
            return Err(IscsiError::Context(format!("{} was not attached by open-iscsi", attachment.iqn)));
        };
        if let Some(map) = multipath {
            if self.root.join("dev/mapper").join(map).exists() {
                self.runner.check(&Cmd::new("multipath", &["-f", map]), &[])?;
            }
        }
        let iqn = &attachment.iqn;
        for portal in portals {
            self.runner.check(&Self::node(iqn, portal, &["--logout"]), &[NO_OBJECTS])?;
            self.runner.check(&Self::node(iqn, portal, &["-o", "delete"]), &[NO_OBJECTS])?;
        }
        for portal in discovery_created {
            self.runner.check(&Self::discoverydb(portal, &["-o", "delete"]), &[NO_OBJECTS])?;
        }
        tracing::info!(iqn = %iqn, "iSCSI LUN detached");
        Ok(())
    }

    fn rescan(&self, attachment: &Attachment) -> Result<(), IscsiError> {
        let Via::OpenIscsi { portals, multipath, .. } = &attachment.via else {
            return Err(IscsiError::Context(format!("{} was not attached by open-iscsi", attachment.iqn)));
        };
        for portal in portals {
            self.runner.check(&Self::node(&attachment.iqn, portal, &["-R"]), &[])?;
        }
        if let Some(map) = multipath {
            self.runner.check(&Cmd::new("multipathd", &["resize", "map", map]), &[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::{Chap, CmdOutput};
    use super::*;

    const IQN: &str = "iqn.2000-01.com.synology:nas.pvc-1";

    /// Plays iscsiadm and multipath at the command boundary: records every
    /// command (as printed, secrets redacted) and, on login, makes the
    /// by-path link (and the multipath holder) a real kernel would.
    #[derive(Debug)]
    struct Recorder {
        root: PathBuf,
        log: Mutex<Vec<String>>,
        discovery_exists: bool,
        offered: &'static str,
        multipath_name: Option<&'static str>,
    }

    impl Runner for Recorder {
        fn run(&self, cmd: &Cmd) -> Result<CmdOutput, IscsiError> {
            self.log.lock().unwrap().push(cmd.to_string());
            let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
            let ok = |stdout: &str| Ok(CmdOutput { code: 0, stdout: stdout.to_owned(), stderr: String::new() });
            match args.as_slice() {
                ["-m", "discoverydb", "-t", "sendtargets", "-p", _] if !self.discovery_exists => {
                    Ok(CmdOutput { code: NO_OBJECTS, stderr: "No records found".into(), ..Default::default() })
                }
                ["-m", "discoverydb", "-t", "sendtargets", "-p", portal, "--discover", ..] => {
                    ok(&format!("{portal},1 {}\n{portal},1 iqn.other:x\n", self.offered))
                }
                ["-m", "node", "-T", iqn, "-p", portal, "--login"] => {
                    let index = if portal.ends_with(":3260") { "b" } else { "c" };
                    let disk = self.root.join("dev").join(format!("sd{index}"));
                    std::fs::write(&disk, "").unwrap();
                    let link = self.root.join(format!("dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-1"));
                    std::os::unix::fs::symlink(&disk, link).unwrap();
                    if let Some(name) = self.multipath_name {
                        let holders = self.root.join(format!("sys/block/sd{index}/holders/dm-3"));
                        std::fs::create_dir_all(holders).unwrap();
                        std::fs::create_dir_all(self.root.join("sys/block/dm-3/dm")).unwrap();
                        std::fs::write(self.root.join("sys/block/dm-3/dm/name"), name).unwrap();
                        std::fs::write(self.root.join("dev/mapper").join(name), "").unwrap();
                    }
                    ok("")
                }
                _ => ok(""),
            }
        }
    }

    fn setup(discovery_exists: bool, multipath_name: Option<&'static str>) -> (tempfile::TempDir, OpenIscsi<Recorder>) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["dev/disk/by-path", "dev/mapper", "sys/block"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let recorder = Recorder {
            root: dir.path().to_path_buf(),
            log: Mutex::default(),
            discovery_exists,
            offered: IQN,
            multipath_name,
        };
        let attacher = OpenIscsi::with_root(recorder, dir.path(), Duration::from_millis(300));
        (dir, attacher)
    }

    fn target(portals: &[&str], chap: bool) -> IscsiTarget {
        IscsiTarget {
            portals: portals.iter().map(|p| (*p).to_owned()).collect(),
            iqn: IQN.to_owned(),
            lun: 1,
            chap: chap.then(|| Chap { username: "berth".into(), password: "s3cret".into() }),
        }
    }

    fn take_log(attacher: &OpenIscsi<Recorder>) -> Vec<String> {
        std::mem::take(&mut *attacher.runner.log.lock().unwrap())
    }

    #[test]
    fn one_portal_with_chap_attaches_and_detaches_leaving_no_records() {
        let (dir, attacher) = setup(false, None);
        let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], true)).unwrap();
        assert_eq!(attachment.device, dir.path().join("dev/sdb"));
        let p = "10.0.0.5:3260";
        let node = format!("iscsiadm -m node -T {IQN} -p {p}");
        let expected_attach = [
            format!("iscsiadm -m discoverydb -t sendtargets -p {p}"),
            format!("iscsiadm -m discoverydb -t sendtargets -p {p} -o new"),
            format!("iscsiadm -m discoverydb -t sendtargets -p {p} --discover -o nonpersistent"),
            format!("{node} -o new"),
            format!("{node} -o update -n node.startup -v manual"),
            format!("{node} -o update -n node.session.auth.authmethod -v CHAP"),
            format!("{node} -o update -n node.session.auth.username -v berth"),
            format!("{node} -o update -n node.session.auth.password -v <redacted>"),
            format!("{node} --login"),
        ];
        assert_eq!(take_log(&attacher), expected_attach);
        attacher.detach(&attachment).unwrap();
        let expected_detach = [
            format!("{node} --logout"),
            format!("{node} -o delete"),
            format!("iscsiadm -m discoverydb -t sendtargets -p {p} -o delete"),
        ];
        assert_eq!(take_log(&attacher), expected_detach);
    }

    #[test]
    fn existing_discovery_record_is_kept_and_two_portals_use_the_multipath_map() {
        let (dir, attacher) = setup(true, Some("mpatha"));
        let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260", "10.0.1.5:3261"], false)).unwrap();
        assert_eq!(attachment.device, dir.path().join("dev/mapper/mpatha"));
        let log = take_log(&attacher);
        assert!(!log.iter().any(|c| c.contains("discoverydb") && c.ends_with("-o new")), "{log:#?}");
        assert_eq!(log.iter().filter(|c| c.ends_with("--login")).count(), 2);
        attacher.rescan(&attachment).unwrap();
        assert_eq!(take_log(&attacher).last().unwrap(), "multipathd resize map mpatha");
        attacher.detach(&attachment).unwrap();
        let log = take_log(&attacher);
        assert_eq!(log[0], "multipath -f mpatha");
        assert_eq!(log.iter().filter(|c| c.ends_with("--logout")).count(), 2);
        assert_eq!(log.iter().filter(|c| c.ends_with("-o delete")).count(), 2, "node records only: {log:#?}");
    }

    #[test]
    fn a_failed_attach_undoes_what_it_did() {
        let (_dir, mut attacher) = setup(false, None);
        attacher.runner.offered = "iqn.someone:else";
        let error = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], false)).unwrap_err();
        assert!(error.to_string().contains("does not offer target"), "{error}");
        let log = take_log(&attacher);
        assert_eq!(log.last().unwrap(), "iscsiadm -m discoverydb -t sendtargets -p 10.0.0.5:3260 -o delete");
        assert!(!log.iter().any(|c| c.contains("--login")));

        // Two portals but no multipath map: the paths are logged out again.
        let (_dir, attacher) = setup(true, None);
        let error = attacher.attach("pvc-1", &target(&["10.0.0.5:3260", "10.0.1.5:3261"], false)).unwrap_err();
        assert!(error.to_string().contains("multipath map"), "{error}");
        let log = take_log(&attacher);
        assert_eq!(log.iter().filter(|c| c.ends_with("--logout")).count(), 2, "{log:#?}");
        assert_eq!(log.iter().filter(|c| c.ends_with("-o delete")).count(), 2, "{log:#?}");
    }
}
