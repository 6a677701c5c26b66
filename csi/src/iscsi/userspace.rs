//! The userspace initiator, for kernels without `iscsi_tcp`: libiscsi in
//! `qemu-storage-daemon` logs in to the target and exports the LUN as a
//! file through FUSE; the file is attached to a loop device, which the
//! mount helpers then treat like any disk.
//!
//! Per volume a directory under the state dir holds the export file, the
//! daemon's pid file and (mode 0600) the CHAP secret, which reaches the
//! daemon as a file so it never shows in `ps`. The daemon is started with
//! `--daemonize`: it returns once the export is ready, and, in its own
//! session, outlives a restart of the agent, so mounted volumes stay
//! usable. Detach detaches the loop device, stops the daemon (which logs
//! out and removes the FUSE mount) and removes the directory.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::command::{Cmd, HostRunner, Runner};
use super::{file_name, initiator_name, Attacher, Attachment, Deadline, IscsiError, IscsiTarget, Via};

/// The userspace attacher.
#[derive(Debug)]
pub struct Userspace<R: Runner = HostRunner> {
    runner: R,
    dir: PathBuf,
    initiator: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IscsiError + '_ {
    move |source| IscsiError::io(path, source)
}

/// Whether `pid` is a running qemu-storage-daemon of the volume directory
/// `dir` (not a recycled pid, not another volume's daemon).
fn is_daemon(pid: i32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains("qemu-storage-daemon") && cmdline.contains(&*dir.to_string_lossy())
    })
}

impl<R: Runner> Userspace<R> {
    /// An attacher keeping its per-volume directories under `dir`.
    pub fn new(runner: R, dir: impl Into<PathBuf>) -> Self {
        Self { runner, dir: dir.into(), initiator: initiator_name() }
    }

    /// The same attacher logging in as initiator `name` (an IQN).
    pub fn named(self, name: impl Into<String>) -> Self {
        Self { initiator: name.into(), ..self }
    }

    fn losetup(&self, args: &[&str], file: &Path) -> Result<String, IscsiError> {
        let cmd = Cmd::new("losetup", args).arg(file.to_string_lossy());
        Ok(self.runner.check(&cmd, &[])?.stdout)
    }

    fn loop_devices(&self, export: &Path) -> Result<Vec<PathBuf>, IscsiError> {
        let out = self.losetup(&["--list", "--noheadings", "--output", "NAME", "--associated"], export)?;
        Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from).collect())
    }

    /// Starts the daemon for `target` through `portal`; returns its pid.
    fn start_daemon(
        &self,
        dir: &Path,
        portal: &str,
        target: &IscsiTarget,
        deadline: Deadline,
    ) -> Result<i32, IscsiError> {
        let (export, pid_file) = (dir.join("export"), dir.join("qsd.pid"));
        std::fs::File::create(&export).map_err(io(&export))?;
        let mut blockdev = format!(
            "driver=iscsi,node-name=lun,transport=tcp,portal={portal},target={},lun={},initiator-name={}",
            target.iqn, target.lun, self.initiator
        );
        let mut cmd = Cmd::new("qemu-storage-daemon", &["--daemonize", "--pidfile"]).arg(pid_file.to_string_lossy());
        if let Some(chap) = &target.chap {
            if chap.mutual.is_some() {
                tracing::warn!(iqn = %target.iqn, "the userspace initiator cannot check the target's mutual CHAP secret; logging in with one-way CHAP");
            }
            let secret = dir.join("chap-secret");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&secret)
                .map_err(io(&secret))?;
            std::io::Write::write_all(&mut file, chap.password.as_bytes()).map_err(io(&secret))?;
            cmd = cmd.arg("--object").arg(format!("secret,id=chap,file={}", secret.display()));
            blockdev.push_str(&format!(",user={},password-secret=chap", chap.username));
        }
        let export_opt = format!("type=fuse,id=export,node-name=lun,mountpoint={},writable=on", export.display());
        let cmd = cmd.arg("--blockdev").arg(blockdev).arg("--export").arg(export_opt).timeout(deadline.remaining());
        self.runner.check(&cmd, &[])?;
        let pid = std::fs::read_to_string(&pid_file).map_err(io(&pid_file))?;
        pid.trim().parse().map_err(|_| IscsiError::Context(format!("{}: not a pid: {pid:?}", pid_file.display())))
    }

    /// Stops the daemon `pid` of `dir` (TERM, then KILL after 10 s) and
    /// waits for it.
    fn stop_daemon(pid: i32, dir: &Path) {
        if !is_daemon(pid, dir) {
            return;
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let started = Instant::now();
        while is_daemon(pid, dir) {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn attach_via(
        &self,
        dir: &Path,
        portal: &str,
        target: &IscsiTarget,
        deadline: Deadline,
    ) -> Result<Attachment, IscsiError> {
        let pid = self.start_daemon(dir, portal, target, deadline)?;
        let attachment = Attachment {
            device: PathBuf::new(),
            iqn: target.iqn.clone(),
            via: Via::Userspace { dir: dir.to_path_buf(), pid },
        };
        let export = dir.join("export");
        match self.losetup(&["--find", "--show"], &export) {
            Ok(device) => Ok(Attachment { device: PathBuf::from(device.trim()), ..attachment }),
            Err(error) => {
                let _ = self.detach(&attachment, deadline);
                Err(error)
            }
        }
    }
}

impl<R: Runner> Attacher for Userspace<R> {
    fn plan(&self, name: &str, target: &IscsiTarget) -> Attachment {
        let via = Via::Userspace { dir: self.dir.join(file_name(name)), pid: 0 };
        Attachment { device: PathBuf::new(), iqn: target.iqn.clone(), via }
    }

    fn attach(&self, name: &str, target: &IscsiTarget, deadline: Deadline) -> Result<Attachment, IscsiError> {
        let dir = self.dir.join(file_name(name));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        // One path is enough: the first portal that logs in serves.
        let mut failures = Vec::new();
        for portal in &target.portals {
            match self.attach_via(&dir, portal, target, deadline) {
                Ok(attachment) => {
                    tracing::info!(
                        volume = %name, iqn = %target.iqn, portal = %portal, device = %attachment.device.display(),
                        "iSCSI LUN attached through the userspace initiator"
                    );
                    return Ok(attachment);
                }
                Err(error) => failures.push(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(failures.into_iter().next().unwrap_or_else(|| IscsiError::Context("no portal".into())))
    }

    fn detach(&self, attachment: &Attachment, _deadline: Deadline) -> Result<(), IscsiError> {
        let Via::Userspace { dir, pid } = &attachment.via else {
            return Err(IscsiError::Context(format!("{} was not attached by the userspace initiator", attachment.iqn)));
        };
        let export = dir.join("export");
        if export.exists() {
            for device in self.loop_devices(&export)? {
                self.runner.check(&Cmd::new("losetup", &["--detach"]).arg(device.to_string_lossy()), &[])?;
            }
        }
        // The recorded daemon, and the one its pid file names (an attach
        // interrupted before it could record it).
        let started = std::fs::read_to_string(dir.join("qsd.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok());
        for pid in [Some(*pid).filter(|p| *p > 0), started].into_iter().flatten() {
            Self::stop_daemon(pid, dir);
        }
        if crate::mount::mounted_source(&export).is_some() {
            // The daemon died without unmounting its export.
            nix::mount::umount2(&export, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| IscsiError::io(&export, e.into()))?;
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(IscsiError::io(dir, e)),
            _ => {}
        }
        tracing::info!(iqn = %attachment.iqn, "iSCSI LUN detached (userspace initiator)");
        Ok(())
    }

    /// The FUSE export keeps the size the LUN had at login: a grown LUN is
    /// seen only once the volume is staged again, which the caller is told.
    fn rescan(&self, attachment: &Attachment, _deadline: Deadline) -> Result<(), IscsiError> {
        Err(IscsiError::Context(format!(
            "{}: the userspace initiator sees the new size of a LUN only when it is staged again",
            attachment.iqn
        )))
    }
}
