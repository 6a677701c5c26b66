//! The simulator's iSCSI side: every target with mapped LUNs is exported
//! through a `tgtd` of the simulator's own (Debian's `tgt`), each LUN
//! backed by its sparse file, so initiators log in and read and write the
//! data the simulated NAS holds.
//!
//! The daemon listens on the configured portal; its control socket is
//! numbered by the portal's port (`tgtadm -C <port mod 32768>`, tgtd's
//! range), so several simulators run side by side. A daemon left by a crashed run on the
//! same port is taken over (its targets cleared). After each SAN call the
//! export is reconciled with the state ([`TgtExport::sync`]): targets and
//! LUNs added or removed, CHAP accounts bound. `max_sessions` is honoured
//! by [`TgtExport::enforce_max_sessions`]: sessions beyond a target's limit
//! are closed, newest first, as DSM refuses the extra login.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi::iscsi::{Cmd, HostRunner, Runner};

use super::error::SimError;

/// How long a LUN's removal waits for its commands in flight.
const LUN_ACTIVE_WAIT: Duration = Duration::from_secs(5);

/// The tgtd control port (`tgtadm -C N`) of the simulator serving `portal`.
pub fn control_port(portal: SocketAddr) -> u16 {
    portal.port() & 0x7fff
}

/// One target as it should be exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExportedTarget {
    pub iqn: String,
    /// LUN number → (backing file, size when exported).
    pub luns: BTreeMap<u32, (PathBuf, u64)>,
    /// CHAP user and secret the initiator must present.
    pub chap: Option<(String, String)>,
    /// Mutual CHAP: the user and secret the target presents to the initiator.
    pub mutual: Option<(String, String)>,
}

/// A logged-in initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub nexus: u64,
    pub initiator: String,
    pub ip: String,
}

/// The tgtd the simulator runs and what it exports now.
pub(crate) struct TgtExport {
    control: u16,
    tgtd: Option<Child>,
    runner: HostRunner,
    exported: BTreeMap<u32, ExportedTarget>,
    /// Targets at their session limit: only these initiators may log in.
    restricted: BTreeMap<u32, Vec<String>>,
}

impl TgtExport {
    /// Starts (or takes over) the tgtd for `portal`, logging to `log`.
    pub fn start(portal: SocketAddr, log: &Path) -> Result<Self, SimError> {
        let mut export = Self {
            control: control_port(portal),
            tgtd: None,
            runner: HostRunner { timeout: Duration::from_secs(20) },
            exported: BTreeMap::new(),
            restricted: BTreeMap::new(),
        };
        if export.alive() {
            tracing::info!(control = export.control, "taking over a tgtd left by an earlier run");
            export.clear()?;
            return Ok(export);
        }
        // Another iSCSI target (Debian's and Ubuntu's tgt.service listens on
        // 3260 once tgt is installed) would take every login meant for us.
        // (Checked both ways: a listener on 0.0.0.0 does not always stop a bind to 127.0.0.1.)
        let holder = listener_of(portal.port());
        if let Some(why) = match std::net::TcpListener::bind(portal) {
            Err(e) => Some(e.to_string()),
            Ok(_) => holder.as_ref().map(|_| "it listens on that port".to_owned()),
        } {
            let holder = holder.unwrap_or_else(|| "another process".to_owned());
            return Err(SimError::Tgt(format!(
                "portal {portal} is taken by {holder} ({why}), so initiators would log in to it, not to dsm-sim: stop \
                 it (for Debian's tgt: systemctl disable --now tgt) or give dsm-sim another --portal, e.g. \
                 127.0.0.1:3261"
            )));
        }
        std::fs::create_dir_all("/var/run/tgtd").map_err(SimError::io("create", "/var/run/tgtd"))?;
        let log_file = std::fs::File::create(log).map_err(SimError::io("create", log))?;
        let err_file = log_file.try_clone().map_err(SimError::io("open", log))?;
        let child = Command::new("tgtd")
            .args(["-f", "-C", &export.control.to_string(), "--iscsi", &format!("portal={portal}")])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| SimError::Tgt(format!("cannot start tgtd (apt install tgt): {e}")))?;
        export.tgtd = Some(child);
        let started = Instant::now();
        while !export.alive() {
            if let Some(Ok(Some(status))) = export.tgtd.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                return Err(SimError::Tgt(format!("tgtd for portal {portal} exited with {status}: {}", log.trim())));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(SimError::Tgt(format!("tgtd for portal {portal} did not answer within 10 s")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%portal, "exporting LUNs over iSCSI through tgtd");
        Ok(export)
    }

    fn tgtadm(&self, args: &[&str]) -> Cmd {
        Cmd::new("tgtadm", &["-C", &self.control.to_string(), "--lld", "iscsi"]).args_from(args)
    }

    fn run(&self, cmd: &Cmd) -> Result<String, SimError> {
        let out = self.runner.check(cmd, &[]).map_err(|e| SimError::Tgt(e.to_string()))?;
        Ok(out.stdout)
    }

    fn alive(&self) -> bool {
        self.runner.run(&self.tgtadm(&["--mode", "sys", "--op", "show"])).is_ok_and(|out| out.code == 0)
    }

    /// Removes every target of the daemon.
    fn clear(&mut self) -> Result<(), SimError> {
        let listing = self.run(&self.tgtadm(&["--mode", "target", "--op", "show"]))?;
        for tid in listing.lines().filter_map(|l| l.strip_prefix("Target ")?.split(':').next()?.parse::<u32>().ok()) {
            self.delete_target(tid)?;
        }
        self.exported.clear();
        self.restricted.clear();
        Ok(())
    }

    fn add_target(&self, tid: &str, target: &ExportedTarget) -> Result<(), SimError> {
        self.run(&self.tgtadm(&["--mode", "target", "--op", "new", "--tid", tid, "--targetname", &target.iqn]))?;
        self.run(&self.tgtadm(&["--mode", "target", "--op", "bind", "--tid", tid, "--initiator-address", "ALL"]))?;
        if let Some((user, secret)) = &target.chap {
            self.account(tid, user, secret, false)?;
        }
        if let Some((user, secret)) = &target.mutual {
            self.account(tid, user, secret, true)?;
        }
        Ok(())
    }

    /// A CHAP account bound to target `tid`: incoming (the initiator's) or
    /// outgoing (the target's, for mutual CHAP).
    fn account(&self, tid: &str, user: &str, secret: &str, outgoing: bool) -> Result<(), SimError> {
        let account = self.tgtadm(&["--mode", "account", "--op", "new", "--user", user, "--password"]);
        // An account of the same name from an earlier target may exist.
        let _ = self.run(&self.tgtadm(&["--mode", "account", "--op", "delete", "--user", user]));
        self.run(&account.secret_arg(secret))?;
        let bind = self.tgtadm(&["--mode", "account", "--op", "bind", "--tid", tid, "--user", user]);
        self.run(&if outgoing { bind.arg("--outgoing") } else { bind })?;
        Ok(())
    }

    /// Removes target `tid`, closing its sessions first as DSM does (tgtd
    /// left with a session of a deleted target stops answering logins).
    fn delete_target(&mut self, tid: u32) -> Result<(), SimError> {
        self.restricted.remove(&tid);
        let sessions = self.sessions()?;
        for session in sessions.get(&tid).into_iter().flatten() {
            self.close_session(tid, session.nexus)?;
        }
        self.run(&self.tgtadm(&["--mode", "target", "--op", "delete", "--force", "--tid", &tid.to_string()]))?;
        Ok(())
    }

    fn close_session(&self, tid: u32, nexus: u64) -> Result<(), SimError> {
        let (tid, sid) = (tid.to_string(), nexus.to_string());
        self.run(&self.tgtadm(&["--mode", "conn", "--op", "delete", "--tid", &tid, "--sid", &sid, "--cid", "0"]))?;
        Ok(())
    }

    fn add_lun(&self, tid: &str, lun: u32, file: &Path) -> Result<(), SimError> {
        let lun = lun.to_string();
        let file = file.to_string_lossy();
        let cmd = self.tgtadm(&["--mode", "logicalunit", "--op", "new", "--tid", tid, "--lun", &lun]);
        self.run(&cmd.arg("--backing-store").arg(file.as_ref()))?;
        Ok(())
    }

    /// Removes a LUN from a target. tgtd refuses while the LUN has
    /// commands in flight ("this logical unit is still active"), as it has
    /// for a moment whenever an initiator writes to it (a mounted
    /// filesystem being resized online): that refusal is waited out.
    fn delete_lun(&self, tid: &str, lun: u32) -> Result<(), SimError> {
        let lun = lun.to_string();
        let cmd = self.tgtadm(&["--mode", "logicalunit", "--op", "delete", "--tid", tid, "--lun", &lun]);
        let deadline = Instant::now() + LUN_ACTIVE_WAIT;
        loop {
            match self.run(&cmd) {
                Err(SimError::Tgt(e)) if e.contains("still active") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map(drop),
            }
        }
    }

    /// Makes the export match `wanted` (target id → target).
    pub fn sync(&mut self, wanted: BTreeMap<u32, ExportedTarget>) -> Result<(), SimError> {
        if wanted == self.exported {
            return Ok(());
        }
        let current = std::mem::take(&mut self.exported);
        for (tid, old) in &current {
            let tid_text = tid.to_string();
            match wanted.get(tid) {
                Some(new) if new.iqn == old.iqn && new.chap == old.chap && new.mutual == old.mutual => {
                    for (lun, backing) in &old.luns {
                        if new.luns.get(lun) != Some(backing) {
                            self.delete_lun(&tid_text, *lun)?;
                        }
                    }
                    for (lun, backing) in &new.luns {
                        if old.luns.get(lun) != Some(backing) {
                            self.add_lun(&tid_text, *lun, &backing.0)?;
                        }
                    }
                }
                _ => self.delete_target(*tid)?,
            }
        }
        for (tid, new) in &wanted {
            let reused = current
                .get(tid)
                .is_some_and(|old| old.iqn == new.iqn && old.chap == new.chap && old.mutual == new.mutual);
            if !reused {
                let tid_text = tid.to_string();
                self.add_target(&tid_text, new)?;
                for (lun, (file, _)) in &new.luns {
                    self.add_lun(&tid_text, *lun, file)?;
                }
            }
        }
        self.exported = wanted;
        Ok(())
    }

    /// The sessions logged in to each exported target.
    pub fn sessions(&self) -> Result<BTreeMap<u32, Vec<Session>>, SimError> {
        let listing = self.run(&self.tgtadm(&["--mode", "target", "--op", "show"]))?;
        Ok(parse_sessions(&listing))
    }

    /// Holds each target to its session limit (target id → max sessions,
    /// 0 unlimited), as DSM refuses a login beyond it: a target at its
    /// limit admits only the initiators logged in (an access list by
    /// initiator name), and sessions beyond it (logins that raced in) are
    /// closed, newest first; returns how many it closed.
    pub fn enforce_max_sessions(&mut self, limits: &BTreeMap<u32, u64>) -> Result<usize, SimError> {
        let mut closed = 0;
        for (tid, mut sessions) in self.sessions()? {
            let limit = usize::try_from(limits.get(&tid).copied().unwrap_or(0)).unwrap_or(usize::MAX);
            sessions.sort_by_key(|s| s.nexus);
            for extra in sessions.iter().skip(if limit == 0 { usize::MAX } else { limit }) {
                self.close_session(tid, extra.nexus)?;
                tracing::info!(target = %tid, initiator = %extra.initiator, "session over max_sessions closed");
                closed += 1;
            }
            let admitted: Vec<String> = if limit > 0 && sessions.len() >= limit {
                let mut names: Vec<String> = sessions.iter().take(limit).map(|s| s.initiator.clone()).collect();
                names.sort();
                names
            } else {
                Vec::new()
            };
            self.admit(tid, admitted)?;
        }
        Ok(closed)
    }

    /// Lets only `initiators` log in to `tid`, or everyone when empty.
    fn admit(&mut self, tid: u32, initiators: Vec<String>) -> Result<(), SimError> {
        let current = self.restricted.get(&tid).cloned().unwrap_or_default();
        if current == initiators {
            return Ok(());
        }
        let tid_text = tid.to_string();
        let acl = |op: &str, kind: &str, value: &str| {
            self.tgtadm(&["--mode", "target", "--op", op, "--tid", &tid_text, kind, value])
        };
        if current.is_empty() {
            for name in &initiators {
                self.run(&acl("bind", "--initiator-name", name))?;
            }
            self.run(&acl("unbind", "--initiator-address", "ALL"))?;
        } else {
            self.run(&acl("bind", "--initiator-address", "ALL"))?;
            for name in &current {
                let _ = self.run(&acl("unbind", "--initiator-name", name));
            }
            for name in &initiators {
                self.run(&acl("bind", "--initiator-name", name))?;
            }
            if !initiators.is_empty() {
                self.run(&acl("unbind", "--initiator-address", "ALL"))?;
            }
        }
        if initiators.is_empty() {
            self.restricted.remove(&tid);
        } else {
            self.restricted.insert(tid, initiators);
        }
        Ok(())
    }
}

impl Drop for TgtExport {
    fn drop(&mut self) {
        if let Some(mut child) = self.tgtd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The process listening on TCP `port`, as `name (pid N)`: the socket's
/// inode from /proc/net/tcp{,6}, then the process holding it.
fn listener_of(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok())?;
            (local_port == port && fields.get(3) == Some(&"0A")).then(|| fields.get(9).map(|i| (*i).to_owned()))?
        })
    })?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|process| {
        let pid = process.file_name().to_str()?.parse::<u32>().ok()?;
        let holds = std::fs::read_dir(process.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == socket.as_str()));
        let name = std::fs::read_to_string(process.path().join("comm")).ok()?;
        holds.then(|| format!("{} (pid {pid})", name.trim()))
    })
}

/// Sessions per target id from `tgtadm --mode target --op show`.
fn parse_sessions(listing: &str) -> BTreeMap<u32, Vec<Session>> {
    let mut sessions: BTreeMap<u32, Vec<Session>> = BTreeMap::new();
    let mut tid = None;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Target ") {
            tid = rest.split(':').next().and_then(|t| t.parse::<u32>().ok());
            if let Some(tid) = tid {
                sessions.entry(tid).or_default();
            }
        } else if let (Some(tid), Some(nexus)) = (tid, line.strip_prefix("I_T nexus: ")) {
            let nexus = nexus.trim().parse().unwrap_or(0);
            sessions.entry(tid).or_default().push(Session { nexus, initiator: String::new(), ip: String::new() });
        } else if let Some(session) = tid.and_then(|tid| sessions.get_mut(&tid)).and_then(|s| s.last_mut()) {
            if let Some(initiator) = line.strip_prefix("Initiator: ") {
                session.initiator = initiator.split_whitespace().next().unwrap_or_default().to_owned();
            } else if let Some(ip) = line.strip_prefix("IP Address: ") {
                session.ip = ip.trim().to_owned();
            }
        }
    }
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_portal_another_process_serves_is_refused_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let portal = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let error = TgtExport::start(portal, &dir.path().join("tgtd.log")).err().expect("refused");
        let message = error.to_string();
        assert!(message.contains(&format!("portal {portal} is taken by")), "{message}");
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert!(message.contains("systemctl disable --now tgt"), "{message}");
    }

    #[test]
    fn reads_sessions_from_the_target_listing() {
        let listing = "Target 1: iqn.2000-01.com.synology:sim.a\n    System information:\n        Driver: iscsi\n    \
                       I_T nexus information:\n        I_T nexus: 3\n            Initiator: iqn.x:a alias: none\n            \
                       Connection: 0\n                IP Address: 127.0.0.1\n    LUN information:\n        LUN: 0\n\
                       Target 2: iqn.2000-01.com.synology:sim.b\n    I_T nexus information:\n";
        let sessions = parse_sessions(listing);
        assert_eq!(sessions[&1], [Session { nexus: 3, initiator: "iqn.x:a".into(), ip: "127.0.0.1".into() }]);
        assert!(sessions[&2].is_empty());
    }
}
