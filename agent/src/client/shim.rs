//! The task shim: a small static program (`agent/shim/shim.c`, built by
//! build.rs and written into the client's data dir) that owns one task
//! process so the task outlives agent restarts. Starting one costs an exec
//! of a few hundred KiB, not of the agent's own binary.
//!
//! It starts its own session, starts the task in a new process group with
//! the given environment, copies the task's stdout/stderr into rotating log
//! files (the layout `logs` reads), and when the task exits writes its exit
//! status to `exit_file` (atomically). It reports `pid <N>` (or `error
//! <why>`) on its stdout and then closes it, so the agent learns the task's
//! PID without waiting. This module holds the agent's side: the spec, its
//! encoding for the shim, the binary, and the recorded exit status.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::logs::Rotation;

/// The shim program, built by build.rs.
const SHIM_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-task-shim"));

/// The argument a shim is started with (and known by in `/proc`).
pub const SHIM_ARG: &str = "task-shim";

/// Everything the shim needs to run a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    /// Program to run.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// User to run as (empty: the agent's user).
    pub user: String,
    /// Directory of the log files.
    pub log_dir: PathBuf,
    /// Task name (log file prefix).
    pub task: String,
    /// Log rotation.
    pub rotation: Rotation,
    /// Where the exit status is written.
    pub exit_file: PathBuf,
    /// Network namespace to run the task in (bridge mode).
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// How a task ended, as the shim records it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExitStatus {
    /// Exit code (0 when killed by a signal).
    pub exit_code: i64,
    /// Terminating signal, 0 if none.
    pub signal: i64,
    /// Why the task could not be run, if it could not.
    pub error: String,
}

/// Reads a recorded exit status, if the task has exited.
pub fn read_exit(path: &Path) -> Option<ExitStatus> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes the shim program into `dir` (once per content: a running shim
/// keeps the file it was started from) and returns its path.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("berth-task-shim");
    if fs::read(&path).is_ok_and(|b| b == SHIM_BINARY) {
        return Ok(path);
    }
    fs::create_dir_all(dir)?;
    let tmp = dir.join(".berth-task-shim.tmp");
    fs::write(&tmp, SHIM_BINARY)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

fn resolve_user(name: &str) -> io::Result<(u32, u32)> {
    let user = nix::unistd::User::from_name(name)
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("user {name:?} does not exist")))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// The spec as the shim reads it: NUL-terminated key and value strings
/// (see `shim.c`), the user resolved to numeric IDs here.
pub fn encode(spec: &ShimSpec) -> io::Result<Vec<u8>> {
    let (uid, gid) = match spec.user.as_str() {
        "" => (String::new(), String::new()),
        name => resolve_user(name).map(|(u, g)| (u.to_string(), g.to_string()))?,
    };
    let text = |p: &Path| {
        p.to_str().map(str::to_string).ok_or_else(|| io::Error::other(format!("path {} is not UTF-8", p.display())))
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("command", spec.command.clone()),
        ("cwd", text(&spec.cwd)?),
        ("uid", uid),
        ("gid", gid),
        ("log_dir", text(&spec.log_dir)?),
        ("task", spec.task.clone()),
        ("max_files", spec.rotation.max_files.to_string()),
        ("max_file_bytes", spec.rotation.max_file_bytes.max(1).to_string()),
        ("exit_file", text(&spec.exit_file)?),
        ("netns", spec.netns.as_deref().map(text).transpose()?.unwrap_or_default()),
    ];
    pairs.extend(spec.args.iter().map(|a| ("arg", a.clone())));
    pairs.extend(spec.env.iter().map(|(k, v)| ("env", format!("{k}={v}"))));
    let mut out = Vec::new();
    for (key, value) in pairs {
        if value.contains('\0') {
            return Err(io::Error::other(format!("the task's {key} {value:?} holds a NUL byte")));
        }
        for part in [key.as_bytes(), value.as_bytes()] {
            out.extend_from_slice(part);
            out.push(0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::client::logs::{log_indexes, LogReader};

    /// Runs `spec` under the installed shim; its first line and the exit
    /// status it records.
    fn run(dir: &Path, spec: &ShimSpec) -> (String, Option<ExitStatus>) {
        let shim = install(&dir.join("bin")).unwrap();
        let spec_path = dir.join("spec");
        fs::write(&spec_path, encode(spec).unwrap()).unwrap();
        let mut child =
            Command::new(shim).arg(SHIM_ARG).arg(&spec_path).stdout(Stdio::piped()).spawn().expect("the shim starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        child.wait().unwrap();
        (line.trim().to_string(), read_exit(&spec.exit_file))
    }

    fn spec(dir: &Path, script: &str) -> ShimSpec {
        ShimSpec {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: [("GREETING".to_string(), "hello there".to_string())].into(),
            cwd: dir.to_path_buf(),
            user: String::new(),
            log_dir: dir.join("logs"),
            task: "t".into(),
            rotation: Rotation { max_files: 2, max_file_bytes: 16 },
            exit_file: dir.join("exit.json"),
            netns: None,
        }
    }

    #[test]
    fn the_shim_runs_the_task_with_its_environment_rotates_its_logs_and_records_its_exit() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo \"$GREETING from $(pwd)\"; echo PATH=$PATH; echo oops >&2; exit 3";
        let (line, exit) = run(dir.path(), &spec(dir.path(), script));
        assert!(line.starts_with("pid "), "{line}");
        assert_eq!(exit, Some(ExitStatus { exit_code: 3, signal: 0, error: String::new() }));
        let logs = dir.path().join("logs");
        let out = String::from_utf8(LogReader::new(&logs, "t", "stdout").read_from(0, 1 << 20).unwrap()).unwrap();
        let path_line = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n";
        let full = format!("hello there from {}\n{path_line}", dir.path().display());
        assert!(full.ends_with(&out) && out.len() >= 16, "the newest two 16-byte files hold the end: {out:?}");
        let kept = log_indexes(&logs, "t", "stdout");
        assert_eq!(kept.len(), 2, "max_files: {kept:?}");
        assert!(kept.iter().all(|i| fs::metadata(logs.join(format!("t.stdout.{i}"))).unwrap().len() <= 16));
        assert_eq!(fs::read_to_string(logs.join("t.stderr.0")).unwrap(), "oops\n");

        // Started again, it continues the newest file; a signal is recorded.
        let (_, exit) = run(dir.path(), &spec(dir.path(), "kill -TERM $$"));
        assert_eq!(exit.map(|e| (e.exit_code, e.signal)), Some((0, 15)));
        assert_eq!(log_indexes(&logs, "t", "stdout"), kept);
    }

    #[test]
    fn a_task_that_cannot_start_is_an_error_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ShimSpec { command: "/nonexistent/task".into(), ..spec(dir.path(), "") };
        let (line, exit) = run(dir.path(), &missing);
        let why = "failed to start \"/nonexistent/task\": No such file or directory (os error 2)";
        assert_eq!(line, format!("error {why}"));
        assert_eq!(exit, Some(ExitStatus { exit_code: -1, signal: 0, error: why.into() }));

        let nobody = ShimSpec { user: "no-such-user-berth".into(), ..spec(dir.path(), "") };
        let e = encode(&nobody).unwrap_err();
        assert!(e.to_string().contains("\"no-such-user-berth\" does not exist"), "{e}");
    }
}
