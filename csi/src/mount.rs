//! Node-side helpers every block-backed volume shares (the local plugin's
//! image files now, iSCSI LUNs next): read a device's filesystem signature,
//! format only a device that has none (never one holding data), check and
//! mount it at a staging path with mount options, bind-mount the staging
//! path to per-allocation publish targets (read-only where asked; the
//! device itself onto a file for raw block access), grow the
//! filesystem after an expansion, and report usage. Each step tolerates
//! having been done already, so a retried or resumed stage/publish is safe.
//!
//! Mounting and unmounting use the kernel directly (nix); blkid, mkfs,
//! fsck and the resize tools are run as the distribution ships them.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Failures of node-side volume operations, each naming the device or path.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A tool could not be run or reported failure.
    #[error("{tool} {target}: {detail}")]
    Tool {
        /// The command.
        tool: String,
        /// The device or path it worked on.
        target: String,
        /// What it said.
        detail: String,
    },
    /// A mount system call failed.
    #[error("{op} {target}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The path.
        target: String,
        /// The OS error.
        source: nix::Error,
    },
    /// The request cannot be honoured safely.
    #[error("{0}")]
    Refused(String),
}

/// Result of this module's operations.
pub type Result<T, E = MountError> = std::result::Result<T, E>;

fn run(tool: &str, args: &[&str], target: &Path) -> Result<std::process::Output> {
    Command::new(tool).args(args).output().map_err(|e| MountError::Tool {
        tool: tool.into(),
        target: target.display().to_string(),
        detail: format!("could not run: {e}"),
    })
}

fn tool_failed(tool: &str, target: &Path, out: &std::process::Output) -> MountError {
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    MountError::Tool {
        tool: tool.into(),
        target: target.display().to_string(),
        detail: if text.is_empty() { format!("exited with {}", out.status) } else { text },
    }
}

/// The filesystem (or other) signature on `device`, e.g. `ext4`; `None`
/// when the device is blank.
pub fn signature(device: &Path) -> Result<Option<String>> {
    let d = device.display().to_string();
    let out = run("blkid", &["-p", "-o", "value", "-s", "TYPE", &d], device)?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())),
        // blkid -p: 2 = nothing found.
        Some(2) => {
            // A partition table or RAID member has no TYPE but is not blank.
            let pt = run("blkid", &["-p", "-o", "value", "-s", "PTTYPE", &d], device)?;
            let pttype = String::from_utf8_lossy(&pt.stdout).trim().to_string();
            Ok((!pttype.is_empty()).then(|| format!("partition table ({pttype})")))
        }
        _ => Err(tool_failed("blkid", device, &out)),
    }
}

/// Makes `fs_type` on `device` only if the device is blank; returns the
/// filesystem the device carries afterwards. A device that already holds a
/// filesystem keeps it, whatever was asked: data is never formatted over.
pub fn format_if_blank(device: &Path, fs_type: &str) -> Result<String> {
    if let Some(existing) = signature(device)? {
        return Ok(existing);
    }
    let d = device.display().to_string();
    let mkfs = format!("mkfs.{fs_type}");
    let args: Vec<&str> = match fs_type {
        "ext2" | "ext3" | "ext4" => vec!["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", &d],
        "xfs" => vec!["-q", &d],
        other => {
            return Err(MountError::Refused(format!("fs_type {other:?} is not supported (ext2, ext3, ext4, xfs)")))
        }
    };
    let out = run(&mkfs, &args, device)?;
    if !out.status.success() {
        return Err(tool_failed(&mkfs, device, &out));
    }
    Ok(fs_type.to_string())
}

/// The mount source of `target` if it is a mount point (from mountinfo).
pub fn mounted_source(target: &Path) -> Option<String> {
    let target = target.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let mount_point = fields.get(4)?;
        if Path::new(&unescape(mount_point)) != target {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        fields.get(sep + 2).map(|s| unescape(s))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn flags_of(options: &[String], read_only: bool) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other.to_string()),
        }
    }
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    (flags, data.join(","))
}

/// Checks (ext*: `e2fsck -p`) and mounts `device` at `target` with
/// `options` (as in a volume's `mount_flags`). Already mounted there: done.
pub fn mount_device(device: &Path, target: &Path, fs_type: &str, options: &[String], read_only: bool) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| MountError::Tool {
        tool: "mkdir".into(),
        target: target.display().to_string(),
        detail: e.to_string(),
    })?;
    let dev = device.canonicalize().unwrap_or_else(|_| device.to_path_buf());
    if let Some(src) = mounted_source(target) {
        if Path::new(&src) == dev {
            return Ok(());
        }
        return Err(MountError::Refused(format!(
            "{} is already a mount of {src}, not of {}",
            target.display(),
            device.display()
        )));
    }
    if fs_type.starts_with("ext") {
        let d = device.display().to_string();
        let out = run("e2fsck", &["-p", &d], device)?;
        // 0: clean, 1: errors corrected; anything else needs a human.
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(tool_failed("e2fsck", device, &out));
        }
    }
    let (flags, data) = flags_of(options, read_only);
    mount(Some(&dev), target, Some(fs_type), flags, (!data.is_empty()).then_some(data.as_str())).map_err(|source| {
        MountError::Sys { op: "mounting", target: format!("{} on {}", device.display(), target.display()), source }
    })
}

/// Bind-mounts `source` at `target` (a directory it creates), read-only if
/// asked. Already bound there: done.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| MountError::Tool {
        tool: "mkdir".into(),
        target: target.display().to_string(),
        detail: e.to_string(),
    })?;
    bind_at(source, target, read_only)
}

/// Bind-mounts the block device `device` onto the file `target` (created
/// if missing; its directory must exist), read-only if asked: how a volume
/// is published for raw block access. Already bound there: done.
pub fn bind_device(device: &Path, target: &Path, read_only: bool) -> Result<()> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(target).map_err(|e| {
        MountError::Tool { tool: "create".into(), target: target.display().to_string(), detail: e.to_string() }
    })?;
    bind_at(device, target, read_only)
}

fn bind_at(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    if mounted_source(target).is_some() {
        return Ok(());
    }
    let sys = |op| move |source| MountError::Sys { op, target: target.display().to_string(), source };
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys("bind-mounting"))?;
    if read_only {
        // A bind mount takes read-only only on a remount.
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(sys("remounting read-only")(e));
        }
    }
    Ok(())
}

/// How often [`unmount`] tries again, 50 ms apart, while the mount is busy.
const UNMOUNT_BUSY_TRIES: u32 = 20;

/// Unmounts `target` if it is a mount point and removes it: the directory,
/// or the file of a block publish. A mount still busy after a second is an
/// error.
pub fn unmount(target: &Path) -> Result<()> {
    if mounted_source(target).is_some() {
        // A holder that is letting go (a probe of a just-written device, a
        // process on its way out) makes the mount busy for a moment.
        let mut busy_tries = 0;
        loop {
            match umount2(target, MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) if busy_tries < UNMOUNT_BUSY_TRIES => {
                    busy_tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                done => {
                    done.map_err(|source| MountError::Sys {
                        op: "unmounting",
                        target: target.display().to_string(),
                        source,
                    })?;
                    break;
                }
            }
        }
    }
    let removed = match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(target),
        Ok(_) => std::fs::remove_file(target),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(MountError::Tool { tool: "remove".into(), target: target.display().to_string(), detail: e.to_string() })
        }
    }
}

/// Grows the filesystem on `device`, mounted at `mount_path`, to fill it.
pub fn grow(device: &Path, mount_path: &Path) -> Result<()> {
    let fs = signature(device)?.unwrap_or_default();
    let (tool, arg): (&str, PathBuf) = match fs.as_str() {
        "ext2" | "ext3" | "ext4" => ("resize2fs", device.to_path_buf()),
        "xfs" => ("xfs_growfs", mount_path.to_path_buf()),
        other => {
            return Err(MountError::Refused(format!("cannot grow a {other:?} filesystem on {}", device.display())))
        }
    };
    let out = run(tool, &[&arg.display().to_string()], device)?;
    if !out.status.success() {
        return Err(tool_failed(tool, device, &out));
    }
    Ok(())
}

/// Grows the ext filesystem on an unmounted `device` (checked first, as
/// resize2fs requires): for nodes where online growth is not allowed (a
/// process without CAP_SYS_RESOURCE).
pub fn grow_offline(device: &Path) -> Result<()> {
    let d = device.display().to_string();
    let out = run("e2fsck", &["-f", "-p", &d], device)?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(tool_failed("e2fsck", device, &out));
    }
    let out = run("resize2fs", &[&d], device)?;
    if !out.status.success() {
        return Err(tool_failed("resize2fs", device, &out));
    }
    Ok(())
}

/// Usage of the filesystem mounted at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
    /// Total inodes.
    pub total_inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
}

/// Usage of the filesystem holding `path` (statvfs).
pub fn usage(path: &Path) -> Result<Usage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|source| MountError::Sys {
        op: "reading usage of",
        target: path.display().to_string(),
        source,
    })?;
    let frag = s.fragment_size();
    Ok(Usage {
        total_bytes: s.blocks() * frag,
        available_bytes: s.blocks_available() * frag,
        used_bytes: (s.blocks() - s.blocks_free()) * frag,
        total_inodes: s.files(),
        free_inodes: s.files_free(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) = flags_of(&["noatime".into(), "discard".into(), "nodev".into()], true);
        assert!(flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_RDONLY));
        assert_eq!(data, "discard");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
