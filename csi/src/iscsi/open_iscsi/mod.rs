//! The kernel initiator, driven through `iscsiadm`, with nothing left
//! behind and no single try allowed to outlive the caller's deadline.
//!
//! Attach, per portal: the target's node record is created with explicit
//! settings (`node.startup=manual`, so nothing logs in again by itself;
//! one login try per `--login`, so the retries are berth's; for a path of a
//! multipath map a short `replacement_timeout`, so I/O fails over instead
//! of waiting two minutes; CHAP and mutual CHAP when the secrets carry
//! them); then login, retried with backoff while the portal does not
//! answer or iscsid restarts, at once refused for CHAP, a few times for a
//! target that refuses the initiator (whose cause a sendtargets discovery
//! then names). The LUN's device is looked up as udev links it
//! (`/dev/disk/by-path`, IPv6 without brackets) or as sysfs lists it (no
//! udev needed, host-name portals), the session rescanned while it does
//! not appear. With several portals, or one that multipathd claims
//! (`multipath -c`), the device used is the multipath map holding every
//! path, waited for (and asked for once) so that no single path of a
//! multipath device is ever mounted.
//!
//! Detach flushes the map (`fail_if_no_path` first, so a dead NAS cannot
//! hang it) or the device's buffers, logs out of each portal (by the
//! session the kernel lists, when the record is gone), deletes the node
//! records, and checks that no session is left: a target the NAS deleted
//! first still ends with nothing re-logging in. A failed attach undoes
//! itself the same way.

mod iscsiadm;
mod sysfs;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::command::{Cmd, CmdOutput, HostRunner, Runner};
use super::{Attacher, Attachment, Deadline, IscsiError, IscsiTarget, LoginFailure, Via};
use iscsiadm::{LoginStep, NO_OBJECTS};

/// `node.session.timeo.replacement_timeout` for paths of a multipath map:
/// how long a dead path holds I/O before dm-multipath moves it over.
const MULTIPATH_REPLACEMENT_TIMEOUT: &str = "5";
/// How often a refused login (exit 19) is tried before giving up.
const REFUSED_TRIES: u32 = 3;
/// The longest pause between two tries of one step.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The open-iscsi attacher.
#[derive(Debug)]
pub struct OpenIscsi<R: Runner = HostRunner> {
    runner: R,
    /// Where `dev/`, `sys/` and `run/` are looked up (`/`; a test's tree).
    root: PathBuf,
    /// Pause between looks at sysfs, and the first retry's backoff.
    poll: Duration,
    /// How long a logged-in path waits for its device before (each)
    /// rescan of the session.
    rescan_after: Duration,
    /// How long multipathd gets to build a map before `multipath` is run.
    map_nudge_after: Duration,
}

impl<R: Runner> OpenIscsi<R> {
    /// The attacher on this host.
    pub fn new(runner: R) -> Self {
        Self::with_root(runner, "/")
    }

    /// The attacher reading devices and sysfs below `root`.
    pub fn with_root(runner: R, root: impl Into<PathBuf>) -> Self {
        Self {
            runner,
            root: root.into(),
            poll: Duration::from_millis(100),
            rescan_after: Duration::from_secs(3),
            map_nudge_after: Duration::from_secs(5),
        }
    }

    /// Runs `cmd`, limited to what is left of `deadline`.
    fn run(&self, cmd: &Cmd, deadline: Deadline) -> Result<CmdOutput, IscsiError> {
        self.runner.run(&cmd.clone().timeout(deadline.remaining().max(Duration::from_millis(100))))
    }

    /// Runs `cmd` until it ends with 0 or one of `also_ok`, retrying while
    /// iscsid is unreachable or its database busy, until `deadline`.
    fn iscsiadm(&self, cmd: &Cmd, also_ok: &[i32], deadline: Deadline) -> Result<CmdOutput, IscsiError> {
        let mut delay = self.poll;
        loop {
            let out = self.run(cmd, deadline)?;
            if out.code == 0 || also_ok.contains(&out.code) {
                return Ok(out);
            }
            let unreachable = iscsiadm::iscsid_unreachable(out.code);
            if !(unreachable || out.code == iscsiadm::IDBM) || deadline.remaining() < delay {
                if unreachable {
                    return Err(IscsiError::Iscsid { command: cmd.to_string(), stderr: out.stderr.trim().to_owned() });
                }
                return out.expect(cmd, also_ok);
            }
            tracing::debug!(command = %cmd, code = out.code, "iscsiadm failed; retrying");
            sleep(delay);
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// The target's node record on `portal`, with berth's settings;
    /// returns the time one login try may take.
    fn create_record(
        &self,
        portal: &str,
        target: &IscsiTarget,
        multipath: bool,
        deadline: Deadline,
    ) -> Result<Duration, IscsiError> {
        let iqn = &target.iqn;
        self.iscsiadm(&iscsiadm::node(iqn, portal, &["-o", "new"]), &[], deadline)?;
        // One login try at a time, short enough that several fit before
        // the deadline and that a try never outlives it (a session still
        // logging in cannot be logged out).
        let login_timeout = (deadline.remaining() / 3).as_secs().clamp(2, 15);
        let mut settings = vec![
            iscsiadm::set(iqn, portal, "node.startup").arg("manual"),
            iscsiadm::set(iqn, portal, "node.session.initial_login_retry_max").arg("1"),
            iscsiadm::set(iqn, portal, "node.conn[0].timeo.login_timeout").arg(login_timeout.to_string()),
        ];
        if multipath {
            settings.push(
                iscsiadm::set(iqn, portal, "node.session.timeo.replacement_timeout").arg(MULTIPATH_REPLACEMENT_TIMEOUT),
            );
        }
        if let Some(chap) = &target.chap {
            settings.push(iscsiadm::set(iqn, portal, "node.session.auth.authmethod").arg("CHAP"));
            settings.push(iscsiadm::set(iqn, portal, "node.session.auth.username").arg(&chap.username));
            settings.push(iscsiadm::set(iqn, portal, "node.session.auth.password").secret_arg(&chap.password));
            if let Some((user, secret)) = &chap.mutual {
                settings.push(iscsiadm::set(iqn, portal, "node.session.auth.username_in").arg(user));
                settings.push(iscsiadm::set(iqn, portal, "node.session.auth.password_in").secret_arg(secret));
            }
        }
        for setting in &settings {
            self.iscsiadm(setting, &[], deadline)?;
        }
        Ok(Duration::from_secs(login_timeout))
    }

    /// Logs in through `portal`, retrying what may pass until `deadline`;
    /// a try that could not end before it (each may take `try_time`) is
    /// not started, so none is left logging in.
    fn login(
        &self,
        portal: &str,
        target: &IscsiTarget,
        try_time: Duration,
        deadline: Deadline,
    ) -> Result<(), IscsiError> {
        let cmd = iscsiadm::node(&target.iqn, portal, &["--login"]);
        let started = Instant::now();
        let (mut attempts, mut refusals, mut delay) = (0, 0, Duration::from_millis(500));
        loop {
            attempts += 1;
            let out = self.run(&cmd, deadline)?;
            let failure = |reason: LoginFailure, out: &CmdOutput| {
                let said = if out.code == -1 { "no answer before the deadline" } else { out.stderr.trim() };
                IscsiError::Login {
                    portal: portal.to_owned(),
                    iqn: target.iqn.clone(),
                    reason,
                    detail: if said.is_empty() { String::new() } else { format!(": {said}") },
                    attempts,
                    waited: started.elapsed(),
                }
            };
            let reason = match iscsiadm::login_step(out.code) {
                LoginStep::Done => return Ok(()),
                LoginStep::Fail(reason) => return Err(failure(reason, &out)),
                LoginStep::Refused => {
                    refusals += 1;
                    let reason = match target.chap.as_ref().and_then(|c| c.mutual.as_ref()) {
                        Some(_) => LoginFailure::RefusedMutualChap,
                        None => LoginFailure::Refused,
                    };
                    if refusals >= REFUSED_TRIES {
                        return Err(self.refused(portal, target, failure(reason, &out), deadline));
                    }
                    reason
                }
                LoginStep::Retry => LoginFailure::NoAnswer,
            };
            if deadline.remaining() < delay + try_time {
                if iscsiadm::iscsid_unreachable(out.code) {
                    return Err(IscsiError::Iscsid { command: cmd.to_string(), stderr: out.stderr.trim().to_owned() });
                }
                return Err(failure(reason, &out));
            }
            tracing::info!(iqn = %target.iqn, portal, code = out.code, attempts, "iSCSI login failed; retrying");
            sleep(delay);
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// A refused login, explained when the portal does not offer the
    /// target at all.
    fn refused(&self, portal: &str, target: &IscsiTarget, refusal: IscsiError, deadline: Deadline) -> IscsiError {
        match self.offered(portal, deadline.within(Duration::from_secs(20))) {
            Some(offered) if !offered.contains(&target.iqn) => IscsiError::NotOffered {
                portal: portal.to_owned(),
                iqn: target.iqn.clone(),
                offered: offered.join(", "),
            },
            _ => refusal,
        }
    }

    /// The targets `portal` offers (a sendtargets discovery that writes no
    /// node records; the discovery record is kept only if it existed), or
    /// `None` when the portal does not answer.
    fn offered(&self, portal: &str, deadline: Deadline) -> Option<Vec<String>> {
        let existed = self.run(&iscsiadm::discoverydb(portal, &[]), deadline).is_ok_and(|o| o.code == 0);
        if !existed && !self.run(&iscsiadm::discoverydb(portal, &["-o", "new"]), deadline).is_ok_and(|o| o.code == 0) {
            return None;
        }
        let discovered = self.run(&iscsiadm::discoverydb(portal, &["--discover", "-o", "nonpersistent"]), deadline);
        if !existed {
            let _ = self.run(&iscsiadm::discoverydb(portal, &["-o", "delete"]), deadline);
        }
        let out = discovered.ok().filter(|o| o.code == 0)?;
        Some(out.stdout.lines().filter_map(|l| l.split_whitespace().nth(1)).map(str::to_owned).collect())
    }

    /// The LUN's device through `portal`: udev's by-path link, else what
    /// sysfs lists for the session.
    fn find_device(&self, portal: &str, target: &IscsiTarget) -> Option<PathBuf> {
        let link = self.root.join("dev/disk/by-path").join(sysfs::by_path_name(portal, &target.iqn, target.lun));
        if let Ok(device) = link.canonicalize() {
            return Some(device);
        }
        let session = sysfs::session(&self.root, &target.iqn, portal)?;
        sysfs::lun_device(&self.root, session.id, target.lun).filter(|d| d.exists())
    }

    /// Waits for the LUN's device after login, rescanning the session
    /// while it does not show.
    fn wait_for_device(&self, portal: &str, target: &IscsiTarget, deadline: Deadline) -> Result<PathBuf, IscsiError> {
        let started = Instant::now();
        let mut rescanned = Instant::now();
        loop {
            if let Some(device) = self.find_device(portal, target) {
                return Ok(device);
            }
            if deadline.passed() {
                return Err(IscsiError::NoDevice {
                    what: format!("LUN {} of {} through portal {portal} (logged in)", target.lun, target.iqn),
                    waited: started.elapsed(),
                    hint: "; is the LUN mapped on the target? (iscsiadm -m session -P 3 lists what it offers)".into(),
                });
            }
            if rescanned.elapsed() >= self.rescan_after {
                tracing::info!(iqn = %target.iqn, portal, lun = target.lun, "LUN not seen yet; rescanning the session");
                let _ = self.run(&iscsiadm::node(&target.iqn, portal, &["-R"]), deadline);
                rescanned = Instant::now();
            }
            sleep(self.poll);
        }
    }

    /// Whether multipathd runs: its pid file names a live process.
    fn multipathd_running(&self) -> bool {
        ["run/multipathd.pid", "run/multipathd/multipathd.pid"].iter().any(|file| {
            std::fs::read_to_string(self.root.join(file))
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(|pid| self.root.join(format!("proc/{pid}")).exists())
        })
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

    /// The multipath map over `devices`, when there must be one: several
    /// paths, or one path multipathd claims. Waited for until it holds
    /// every path and its `/dev/mapper` node exists.
    fn multipath(&self, devices: &[PathBuf], deadline: Deadline) -> Result<Option<String>, IscsiError> {
        let paths: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
        let several = devices.len() > 1;
        if !self.multipathd_running() {
            if several {
                return Err(IscsiError::NoDevice {
                    what: format!("a multipath map over {}", paths.join(", ")),
                    waited: Duration::ZERO,
                    hint: "; several portals need dm-multipath, and multipathd is not running \
                           (systemctl enable --now multipathd)"
                        .into(),
                });
            }
            return Ok(None);
        }
        if !several {
            let check = Cmd::new("multipath", &["-c"]).arg(devices[0].to_string_lossy());
            if self.run(&check, deadline)?.code != 0 {
                return Ok(None);
            }
        }
        let started = Instant::now();
        let mut nudged = false;
        loop {
            let maps: Vec<Option<String>> = devices.iter().map(|d| self.holder_map(d)).collect();
            if let Some(Some(map)) = maps.first() {
                if maps.iter().all(|m| m.as_ref() == Some(map)) && self.root.join("dev/mapper").join(map).exists() {
                    return Ok(Some(map.clone()));
                }
            }
            if deadline.passed() {
                return Err(IscsiError::NoDevice {
                    what: format!("a multipath map over {}", paths.join(", ")),
                    waited: started.elapsed(),
                    hint: "; check /etc/multipath.conf (find_multipaths, blacklist) and multipath -ll".into(),
                });
            }
            if !nudged && started.elapsed() >= self.map_nudge_after {
                tracing::info!(paths = %paths.join(", "), "no multipath map yet; asking multipath for one");
                let nudge = paths.iter().fold(Cmd::new("multipath", &[]), |cmd, path| cmd.arg(path.as_str()));
                let _ = self.run(&nudge, deadline);
                nudged = true;
            }
            sleep(self.poll);
        }
    }

    fn attach_all(&self, target: &IscsiTarget, via: &mut Via, deadline: Deadline) -> Result<PathBuf, IscsiError> {
        let Via::OpenIscsi { portals, multipath, .. } = via else {
            unreachable!("open-iscsi attaches record open-iscsi attachments")
        };
        let several = target.portals.len() > 1;
        let mut devices = Vec::new();
        for portal in &target.portals {
            portals.push(portal.clone());
            let try_time = self.create_record(portal, target, several, deadline)?;
            self.login(portal, target, try_time, deadline)?;
            let device = self.wait_for_device(portal, target, deadline)?;
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
        *multipath = self.multipath(&devices, deadline)?;
        Ok(match multipath {
            Some(map) => self.root.join("dev/mapper").join(map),
            None => devices.swap_remove(0),
        })
    }

    /// Flushes what is written to the attachment's device: the multipath
    /// map is told to fail I/O once no path is left (a dead NAS must not
    /// hang the flush) and removed; a plain device has its buffers flushed.
    fn flush(&self, attachment: &Attachment, multipath: Option<&String>, deadline: Deadline) -> Result<(), IscsiError> {
        // A map the attachment did not record (an attach cut short after
        // multipathd made it) is found through the sessions' disks.
        let Via::OpenIscsi { portals, .. } = &attachment.via else { return Ok(()) };
        let found = multipath.cloned().or_else(|| {
            portals.iter().find_map(|portal| {
                let session = sysfs::session(&self.root, &attachment.iqn, portal)?;
                sysfs::session_devices(&self.root, session.id).iter().find_map(|d| self.holder_map(d))
            })
        });
        if let Some(map) = found.as_ref() {
            if !self.root.join("dev/mapper").join(map).exists() {
                return Ok(());
            }
            let _ = self.run(&Cmd::new("dmsetup", &["message", map, "0", "fail_if_no_path"]), deadline);
            let flush = Cmd::new("multipath", &["-f", map]);
            let mut delay = self.poll;
            loop {
                let out = self.run(&flush, deadline)?;
                // multipath -f answers 0, or 1 once the map is gone.
                if out.code == 0 || !self.root.join("dev/mapper").join(map).exists() {
                    return Ok(());
                }
                if deadline.remaining() < delay {
                    return out.expect(&flush, &[]).map(|_| ());
                }
                tracing::info!(map = %map, error = %out.stderr.trim(), "multipath map busy; flushing again");
                sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
        let device = &attachment.device;
        if !device.as_os_str().is_empty() && device.exists() {
            let out = self.run(&Cmd::new("blockdev", &["--flushbufs"]).arg(device.to_string_lossy()), deadline)?;
            if out.code != 0 {
                tracing::warn!(device = %device.display(), error = %out.stderr.trim(), "could not flush the device's buffers");
            }
        }
        Ok(())
    }

    /// Logs out of `iqn` through `portal` until the kernel lists no such
    /// session: by the node record, else by the session's number (a record
    /// deleted by hand; a session still logging in, which refuses the
    /// logout until its attempt ends).
    fn logout(&self, iqn: &str, portal: &str, deadline: Deadline) -> Result<(), IscsiError> {
        let by_record = iscsiadm::node(iqn, portal, &["--logout"]);
        let mut delay = self.poll;
        loop {
            let last = match self.iscsiadm(&by_record, &[NO_OBJECTS], deadline) {
                Ok(_) => String::new(),
                Err(e @ IscsiError::Spawn { .. }) => return Err(e),
                Err(e) => e.to_string(),
            };
            let Some(session) = sysfs::session(&self.root, iqn, portal) else { return Ok(()) };
            let by_id = iscsiadm::session_logout(session.id);
            let out = self.run(&by_id, deadline)?;
            if sysfs::session(&self.root, iqn, portal).is_none() {
                return Ok(());
            }
            if deadline.remaining() < delay {
                let said = if out.stderr.trim().is_empty() { last } else { out.stderr.trim().to_owned() };
                return Err(IscsiError::Deadline {
                    step: format!("logging out of {iqn} at {portal}"),
                    waited: Duration::ZERO,
                    last: format!("session {} is still there: {said}", session.id),
                });
            }
            tracing::info!(iqn, portal, session = session.id, "session still there after logout; trying again");
            sleep(delay);
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

impl<R: Runner> Attacher for OpenIscsi<R> {
    fn plan(&self, _name: &str, target: &IscsiTarget) -> Attachment {
        let via = Via::OpenIscsi { portals: target.portals.clone(), discovery_created: Vec::new(), multipath: None };
        Attachment { device: PathBuf::new(), iqn: target.iqn.clone(), via }
    }

    fn attach(&self, name: &str, target: &IscsiTarget, deadline: Deadline) -> Result<Attachment, IscsiError> {
        let mut via = Via::OpenIscsi { portals: Vec::new(), discovery_created: Vec::new(), multipath: None };
        // A quarter of the time (at most 10 s) is kept for undoing a failure.
        match self.attach_all(target, &mut via, deadline.leaving(4, Duration::from_secs(10))) {
            Ok(device) => {
                tracing::info!(volume = %name, iqn = %target.iqn, device = %device.display(), "iSCSI LUN attached");
                Ok(Attachment { device, iqn: target.iqn.clone(), via })
            }
            Err(error) => {
                let partial = Attachment { device: PathBuf::new(), iqn: target.iqn.clone(), via };
                if let Err(undo) = self.detach(&partial, deadline.within(Duration::from_secs(30))) {
                    tracing::warn!(volume = %name, error = %undo, "could not undo a failed iSCSI attach");
                }
                Err(error)
            }
        }
    }

    fn detach(&self, attachment: &Attachment, deadline: Deadline) -> Result<(), IscsiError> {
        let Via::OpenIscsi { portals, discovery_created, multipath } = &attachment.via else {
            return Err(IscsiError::Context(format!("{} was not attached by open-iscsi", attachment.iqn)));
        };
        // Every step is tried, so one that fails leaves as little as
        // possible behind; the first failure is reported.
        self.flush(attachment, multipath.as_ref(), deadline)?;
        let iqn = &attachment.iqn;
        let mut first_failure = None;
        for portal in portals {
            let logged_out = self.logout(iqn, portal, deadline);
            let deleted = self.iscsiadm(&iscsiadm::node(iqn, portal, &["-o", "delete"]), &[NO_OBJECTS], deadline);
            for failure in [logged_out.err(), deleted.err()].into_iter().flatten() {
                first_failure.get_or_insert(failure);
            }
        }
        for portal in discovery_created {
            if let Err(failure) =
                self.iscsiadm(&iscsiadm::discoverydb(portal, &["-o", "delete"]), &[NO_OBJECTS], deadline)
            {
                first_failure.get_or_insert(failure);
            }
        }
        if let Some(failure) = first_failure {
            return Err(failure);
        }
        tracing::info!(iqn = %iqn, "iSCSI LUN detached");
        Ok(())
    }

    fn release_vanished(&self, attachment: &Attachment, deadline: Deadline) -> bool {
        let Via::OpenIscsi { portals, multipath, .. } = &attachment.via else { return false };
        let mut vanished = false;
        for portal in portals {
            // A session can look logged in for seconds after its target went
            // (until a ping times out), so the portal is asked either way.
            let Some(session) = sysfs::session(&self.root, &attachment.iqn, portal) else { continue };
            let offered = self.offered(portal, deadline.within(Duration::from_secs(20)));
            if offered.is_some_and(|offered| !offered.contains(&attachment.iqn)) {
                tracing::warn!(
                    iqn = %attachment.iqn, portal, session = session.id,
                    "the NAS no longer has this target: ending its session, writes still waiting for it fail"
                );
                if let Err(e) = self.logout(&attachment.iqn, portal, deadline) {
                    tracing::warn!(session = session.id, error = %e, "could not end the session of a vanished target");
                }
                vanished = true;
            }
        }
        if let (true, Some(map)) = (vanished, multipath) {
            let _ = self.run(&Cmd::new("dmsetup", &["message", map, "0", "fail_if_no_path"]), deadline);
        }
        vanished
    }

    fn rescan(&self, attachment: &Attachment, deadline: Deadline) -> Result<(), IscsiError> {
        let Via::OpenIscsi { portals, multipath, .. } = &attachment.via else {
            return Err(IscsiError::Context(format!("{} was not attached by open-iscsi", attachment.iqn)));
        };
        for portal in portals {
            self.iscsiadm(&iscsiadm::node(&attachment.iqn, portal, &["-R"]), &[], deadline)?;
        }
        if let Some(map) = multipath {
            self.runner.check(&Cmd::new("multipathd", &["resize", "map", map]).timeout(deadline.remaining()), &[])?;
        }
        Ok(())
    }
}
