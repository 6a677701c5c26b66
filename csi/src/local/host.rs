//! The host tools the local plugin runs besides those of [`crate::mount`]:
//! `losetup` (attach an image file to a loop device, find the devices of a
//! file, make a device see its file's new size, detach) and `cp` (copies of
//! volume data for snapshots, clones and restores). All of it blocks:
//! callers run it on the blocking pool.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::backing::Backing;

/// A host command that could not be run or failed; the message has the
/// whole command line.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The program could not be started.
    #[error("{command}: could not run: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program exited with failure.
    #[error("{command} exited with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs `program` with `flags` followed by `paths` and returns its stdout.
fn run(program: &str, flags: &[&str], paths: &[&Path]) -> Result<String, HostError> {
    let args: Vec<&OsStr> = flags.iter().map(OsStr::new).chain(paths.iter().map(|p| p.as_os_str())).collect();
    let command = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| HostError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(HostError::Failed { command, status: out.status, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The loop devices `file` is attached to (usually none or one).
pub(crate) fn loop_devices(file: &Path) -> Result<Vec<PathBuf>, HostError> {
    let out = run("losetup", &["--list", "--noheadings", "--output", "NAME", "--associated"], &[file])?;
    Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from).collect())
}

/// The loop device of `file`, attaching it to a free one if it has none.
pub(crate) fn attach(file: &Path) -> Result<PathBuf, HostError> {
    if let Some(device) = loop_devices(file)?.into_iter().next() {
        return Ok(device);
    }
    let out = run("losetup", &["--find", "--show"], &[file])?;
    Ok(PathBuf::from(out.trim()))
}

/// Makes every loop device of `file` see the file's current size.
pub(crate) fn refresh(file: &Path) -> Result<(), HostError> {
    for device in loop_devices(file)? {
        run("losetup", &["--set-capacity"], &[&device])?;
    }
    Ok(())
}

/// Detaches every loop device of `file`.
pub(crate) fn detach(file: &Path) -> Result<(), HostError> {
    for device in loop_devices(file)? {
        run("losetup", &["--detach"], &[&device])?;
    }
    Ok(())
}

/// Copies a volume's or snapshot's data from `from` to the new `to`: an
/// image file keeping its holes (`cp --sparse=always`), or a directory tree
/// keeping modes, ownership, timestamps and links (`cp -a`). A `live` source
/// may be mounted and written to: the host's caches are flushed first, so
/// the copy is crash-consistent.
pub(crate) fn copy_data(backing: Backing, from: &Path, to: &Path, live: bool) -> Result<(), HostError> {
    if live {
        nix::unistd::sync();
    }
    let flags: &[&str] = match backing {
        Backing::Image => &["--sparse=always", "--"],
        Backing::Directory => &["-a", "--"],
    };
    run("cp", flags, &[from, to]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_and_what_it_said() {
        let (from, to) = (Path::new("/nonexistent/from"), Path::new("/nonexistent/to"));
        let e = copy_data(Backing::Directory, from, to, false).unwrap_err().to_string();
        assert!(e.starts_with("cp -a -- /nonexistent/from /nonexistent/to exited with exit status: 1: "), "{e}");
        assert!(e.contains("No such file or directory"), "{e}");
    }

    #[test]
    fn a_tree_copy_keeps_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("sub/file"), b"x").unwrap();
        std::fs::set_permissions(from.join("sub/file"), std::fs::Permissions::from_mode(0o600)).unwrap();
        copy_data(Backing::Directory, &from, &dir.path().join("to"), false).unwrap();
        let meta = std::fs::metadata(dir.path().join("to/sub/file")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
