//! The attacher at the command boundary, against a played kernel: the
//! exact iscsiadm commands and their order, retries, the device found
//! through udev's links or sysfs alone, multipath maps, and the cleanup.
//! (`agent/tests/kernel_iscsi.rs` runs the same code against Debian's real
//! kernel in a VM.)

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::super::{Chap, CmdOutput, Deadline, IscsiError, IscsiTarget, LoginFailure};
use super::*;

const IQN: &str = "iqn.2000-01.com.synology:nas.pvc-1";

/// Plays iscsiadm, multipath and the kernel: records every command (as
/// printed, secrets redacted); a login makes the session in sysfs, its
/// disk and (with udev) the by-path link; a logout removes them.
#[derive(Debug, Default)]
struct Kernel {
    root: PathBuf,
    log: Mutex<Vec<String>>,
    /// Exit codes the next logins answer with (then 0).
    login_codes: Mutex<VecDeque<i32>>,
    /// Whether udev makes by-path links.
    udev: bool,
    /// multipathd's map name, when it runs and builds one.
    multipath_name: Option<&'static str>,
    /// What `multipath -c` answers for a single path.
    claimed: bool,
    /// Targets the sendtargets discovery lists.
    offered: Vec<&'static str>,
    sessions: Mutex<Vec<String>>,
}

impl Kernel {
    fn session_dir(&self, id: usize) -> PathBuf {
        self.root.join(format!("sys/class/iscsi_session/session{id}"))
    }

    fn login(&self, iqn: &str, portal: &str) {
        let mut sessions = self.sessions.lock().unwrap();
        let id = sessions.len() + 1;
        sessions.push(portal.to_owned());
        let disk = format!("sd{}", (b'a' + id as u8) as char);
        let dir = self.session_dir(id);
        std::fs::create_dir_all(dir.join(format!("device/target{id}:0:0/{id}:0:0:1/block/{disk}"))).unwrap();
        std::fs::write(dir.join("targetname"), iqn).unwrap();
        let connection = self.root.join(format!("sys/class/iscsi_connection/connection{id}:0"));
        std::fs::create_dir_all(&connection).unwrap();
        let (host, port) = sysfs::split_portal(portal);
        std::fs::write(connection.join("persistent_address"), host).unwrap();
        std::fs::write(connection.join("persistent_port"), port.to_string()).unwrap();
        let device = self.root.join("dev").join(&disk);
        std::fs::write(&device, "").unwrap();
        if self.udev {
            let link = self.root.join("dev/disk/by-path").join(sysfs::by_path_name(portal, iqn, 1));
            std::os::unix::fs::symlink(&device, link).unwrap();
        }
        if let Some(name) = self.multipath_name {
            std::fs::create_dir_all(self.root.join(format!("sys/block/{disk}/holders/dm-3"))).unwrap();
            std::fs::create_dir_all(self.root.join("sys/block/dm-3/dm")).unwrap();
            std::fs::write(self.root.join("sys/block/dm-3/dm/name"), name).unwrap();
            std::fs::write(self.root.join("dev/mapper").join(name), "").unwrap();
        }
    }

    fn logout(&self, portal: &str) -> bool {
        let sessions = self.sessions.lock().unwrap();
        let Some(index) = sessions.iter().position(|p| p == portal) else { return false };
        let _ = std::fs::remove_dir_all(self.session_dir(index + 1));
        true
    }
}

impl Runner for Kernel {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, IscsiError> {
        assert!(cmd.timeout.is_some_and(|t| t <= Duration::from_secs(60)), "{cmd} runs without the deadline");
        self.log.lock().unwrap().push(cmd.to_string());
        let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
        let answer = |code: i32, stdout: &str| Ok(CmdOutput { code, stdout: stdout.to_owned(), stderr: String::new() });
        match (cmd.program.as_str(), args.as_slice()) {
            ("iscsiadm", ["-m", "node", "-T", iqn, "-p", portal, "--login"]) => {
                match self.login_codes.lock().unwrap().pop_front() {
                    Some(code) => answer(code, ""),
                    None => {
                        self.login(iqn, portal);
                        answer(0, "")
                    }
                }
            }
            ("iscsiadm", ["-m", "node", "-T", _, "-p", portal, "--logout"]) => {
                answer(if self.logout(portal) { 0 } else { NO_OBJECTS }, "")
            }
            ("iscsiadm", ["-m", "discoverydb", "-t", "sendtargets", "-p", _]) => answer(NO_OBJECTS, ""),
            ("iscsiadm", ["-m", "discoverydb", "-t", "sendtargets", "-p", portal, "--discover", ..]) => {
                let listed: Vec<String> = self.offered.iter().map(|iqn| format!("{portal},1 {iqn}")).collect();
                answer(0, &listed.join("\n"))
            }
            ("iscsiadm", ["-m", "session", "-r", id, "-u"]) => {
                let _ = std::fs::remove_dir_all(self.session_dir(id.parse().unwrap()));
                answer(0, "")
            }
            ("multipath", ["-c", _]) => answer(if self.claimed { 0 } else { 1 }, ""),
            ("multipath", ["-f", map]) => {
                let _ = std::fs::remove_file(self.root.join("dev/mapper").join(map));
                answer(0, "")
            }
            _ => answer(0, ""),
        }
    }
}

fn setup(kernel: Kernel) -> (tempfile::TempDir, OpenIscsi<Kernel>) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["dev/disk/by-path", "dev/mapper", "sys/block", "run", "proc/4242"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    if kernel.multipath_name.is_some() {
        std::fs::write(dir.path().join("run/multipathd.pid"), "4242\n").unwrap();
    }
    let kernel = Kernel { root: dir.path().to_path_buf(), ..kernel };
    let mut attacher = OpenIscsi::with_root(kernel, dir.path());
    attacher.poll = Duration::from_millis(5);
    attacher.rescan_after = Duration::from_millis(50);
    attacher.map_nudge_after = Duration::from_millis(50);
    (dir, attacher)
}

fn target(portals: &[&str], chap: Option<Chap>) -> IscsiTarget {
    IscsiTarget { portals: portals.iter().map(|p| (*p).to_owned()).collect(), iqn: IQN.to_owned(), lun: 1, chap }
}

fn take_log(attacher: &OpenIscsi<Kernel>) -> Vec<String> {
    std::mem::take(&mut *attacher.runner.log.lock().unwrap())
}

fn soon() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

#[test]
fn one_portal_with_mutual_chap_attaches_and_detaches_leaving_no_records() {
    let (dir, attacher) = setup(Kernel { udev: true, ..Kernel::default() });
    let chap = Chap { username: "berth".into(), password: "s3cret".into(), mutual: Some(("nas".into(), "n4s".into())) };
    let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], Some(chap)), soon()).unwrap();
    assert_eq!(attachment.device, dir.path().join("dev/sdb"));
    let node = format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260");
    let expected_attach = [
        format!("{node} -o new"),
        format!("{node} -o update -n node.startup -v manual"),
        format!("{node} -o update -n node.session.initial_login_retry_max -v 1"),
        format!("{node} -o update -n node.conn[0].timeo.login_timeout -v 2"),
        format!("{node} -o update -n node.session.auth.authmethod -v CHAP"),
        format!("{node} -o update -n node.session.auth.username -v berth"),
        format!("{node} -o update -n node.session.auth.password -v <redacted>"),
        format!("{node} -o update -n node.session.auth.username_in -v nas"),
        format!("{node} -o update -n node.session.auth.password_in -v <redacted>"),
        format!("{node} --login"),
    ];
    assert_eq!(take_log(&attacher), expected_attach);
    attacher.detach(&attachment, soon()).unwrap();
    let expected_detach = [
        format!("blockdev --flushbufs {}", dir.path().join("dev/sdb").display()),
        format!("{node} --logout"),
        format!("{node} -o delete"),
    ];
    assert_eq!(take_log(&attacher), expected_detach);
}

#[test]
fn logins_are_retried_until_they_pass_but_chap_failures_are_not() {
    let (_dir, attacher) = setup(Kernel { udev: true, ..Kernel::default() });
    attacher.runner.login_codes.lock().unwrap().extend([8, 20, 4]);
    attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), Deadline::after(Duration::from_secs(20))).unwrap();
    assert_eq!(take_log(&attacher).iter().filter(|c| c.ends_with("--login")).count(), 4);

    let (_dir, attacher) = setup(Kernel::default());
    attacher.runner.login_codes.lock().unwrap().extend([24, 0]);
    let error = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), soon()).unwrap_err();
    assert!(matches!(error, IscsiError::Login { reason: LoginFailure::Chap, attempts: 1, .. }), "{error}");
    assert!(error.to_string().contains("CHAP authentication failed"), "{error}");
    let log = take_log(&attacher);
    assert_eq!(log.iter().filter(|c| c.ends_with("--login")).count(), 1);
    assert!(log.last().unwrap().ends_with("-o delete"), "the record is removed again: {log:#?}");

    // A portal that never accepts: the deadline ends it, naming portal and target.
    let (_dir, attacher) = setup(Kernel::default());
    attacher.runner.login_codes.lock().unwrap().extend([8; 64]);
    let started = std::time::Instant::now();
    let error = attacher
        .attach("pvc-1", &target(&["10.0.0.5:3260"], None), Deadline::after(Duration::from_secs(2)))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let message = error.to_string();
    assert!(
        message.contains(IQN) && message.contains("10.0.0.5:3260") && message.contains("did not accept"),
        "{message}"
    );
}

#[test]
fn a_refused_login_names_a_target_the_portal_does_not_offer() {
    let (_dir, attacher) = setup(Kernel { offered: vec!["iqn.someone:else"], ..Kernel::default() });
    attacher.runner.login_codes.lock().unwrap().extend([19; 8]);
    let error = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), soon()).unwrap_err();
    assert!(matches!(error, IscsiError::NotOffered { .. }), "{error}");
    assert!(error.to_string().contains("iqn.someone:else"), "{error}");
    let log = take_log(&attacher);
    assert_eq!(log.iter().filter(|c| c.ends_with("--login")).count(), REFUSED_TRIES as usize);
    // The discovery record made for the diagnosis is gone again.
    let made = log.iter().position(|c| c.contains("discoverydb") && c.ends_with("-o new")).unwrap();
    assert!(log[made..].iter().any(|c| c.contains("discoverydb") && c.ends_with("-o delete")), "{log:#?}");
}

#[test]
fn without_udev_the_device_is_found_in_sysfs_and_a_missing_lun_is_rescanned_then_reported() {
    let (dir, attacher) = setup(Kernel::default());
    let attachment = attacher.attach("pvc-1", &target(&["[fd00::5]:3260"], None), soon()).unwrap();
    assert_eq!(attachment.device, dir.path().join("dev/sdb"));

    // Logged in, but LUN 2 is not on the target: rescans, then a clear error, then nothing left.
    let (_dir, attacher) = setup(Kernel::default());
    let mut missing = target(&["10.0.0.5:3260"], None);
    missing.lun = 2;
    let error = attacher.attach("pvc-1", &missing, Deadline::after(Duration::from_millis(400))).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("LUN 2 of") && message.contains("10.0.0.5:3260"), "{message}");
    let log = take_log(&attacher);
    assert!(log.iter().any(|c| c.ends_with(" -R")), "no rescan: {log:#?}");
    assert!(log.iter().any(|c| c.ends_with("--logout")) && log.last().unwrap().ends_with("-o delete"), "{log:#?}");
    assert!(sysfs::sessions(attacher.root.as_path()).is_empty());
}

#[test]
fn two_portals_use_the_map_holding_both_paths_and_detach_flushes_it_first() {
    let (dir, attacher) = setup(Kernel { udev: true, multipath_name: Some("mpatha"), ..Kernel::default() });
    let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260", "10.0.1.5:3260"], None), soon()).unwrap();
    assert_eq!(attachment.device, dir.path().join("dev/mapper/mpatha"));
    let log = take_log(&attacher);
    assert_eq!(log.iter().filter(|c| c.ends_with("--login")).count(), 2);
    assert_eq!(log.iter().filter(|c| c.contains("replacement_timeout -v 5")).count(), 2, "{log:#?}");
    attacher.rescan(&attachment, soon()).unwrap();
    assert_eq!(take_log(&attacher).last().unwrap(), "multipathd resize map mpatha");
    attacher.detach(&attachment, soon()).unwrap();
    let log = take_log(&attacher);
    assert_eq!(log[..2], ["dmsetup message mpatha 0 fail_if_no_path", "multipath -f mpatha"]);
    assert_eq!(log.iter().filter(|c| c.ends_with("--logout")).count(), 2);
    assert_eq!(log.iter().filter(|c| c.ends_with("-o delete")).count(), 2, "{log:#?}");
}

#[test]
fn one_path_is_used_alone_only_when_multipath_does_not_claim_it() {
    let (dir, attacher) =
        setup(Kernel { udev: true, multipath_name: Some("mpathb"), claimed: false, ..Kernel::default() });
    let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), soon()).unwrap();
    assert_eq!(attachment.device, dir.path().join("dev/sdb"));
    let (dir, attacher) =
        setup(Kernel { udev: true, multipath_name: Some("mpathb"), claimed: true, ..Kernel::default() });
    let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), soon()).unwrap();
    assert_eq!(attachment.device, dir.path().join("dev/mapper/mpathb"));

    // Two portals without multipathd: refused, naming the fix, and undone.
    let (_dir, attacher) = setup(Kernel { udev: true, ..Kernel::default() });
    let error = attacher.attach("pvc-1", &target(&["10.0.0.5:3260", "10.0.1.5:3260"], None), soon()).unwrap_err();
    assert!(error.to_string().contains("multipathd is not running"), "{error}");
    let log = take_log(&attacher);
    assert_eq!(log.iter().filter(|c| c.ends_with("--logout")).count(), 2, "{log:#?}");
}

#[test]
fn a_session_whose_record_is_gone_is_still_logged_out() {
    let (_dir, attacher) = setup(Kernel { udev: true, ..Kernel::default() });
    let attachment = attacher.attach("pvc-1", &target(&["10.0.0.5:3260"], None), soon()).unwrap();
    // Someone deleted the node record: logout by record finds nothing, the
    // session is found in sysfs and logged out by its number.
    attacher.runner.sessions.lock().unwrap().clear();
    take_log(&attacher);
    attacher.detach(&attachment, soon()).unwrap();
    let log = take_log(&attacher);
    assert!(log.iter().any(|c| c == "iscsiadm -m session -r 1 -u"), "{log:#?}");
    assert!(sysfs::sessions(&attacher.root).is_empty());
}
