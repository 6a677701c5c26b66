//! The task shim: `berth task-shim SPEC.json`, a small synchronous process
//! that owns one task process so the task outlives agent restarts.
//!
//! It starts its own session, starts the task in a new process group with
//! the given environment, copies the task's stdout/stderr into rotating log
//! files, and when the task exits writes its exit status to `exit_file`
//! (atomically). It reports `pid <N>` (or `error <why>`) on its stdout and
//! then closes it, so the agent learns the task's PID without waiting.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::logs::{RotatingWriter, Rotation};

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

fn write_exit(path: &Path, status: &ExitStatus) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(status).map_err(io::Error::other)?)?;
    fs::rename(tmp, path)
}

/// Reads a recorded exit status, if the task has exited.
pub fn read_exit(path: &Path) -> Option<ExitStatus> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

fn resolve_user(name: &str) -> io::Result<(u32, u32)> {
    let user = nix::unistd::User::from_name(name)
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("user {name:?} does not exist")))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Moves the shim (and so the task it starts) into the namespace file `path`.
fn enter_netns(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering network namespace {}: {e}", path.display())))
}

/// The PATH of a task whose environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn spawn_task(spec: &ShimSpec) -> io::Result<std::process::Child> {
    if let Some(ns) = &spec.netns {
        enter_netns(ns)?;
    }
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args).env_clear();
    // A task that sets no PATH gets the usual one, as a shell would give it:
    // tools such as CSI plugins run helpers (losetup, mkfs) by name.
    if !spec.env.contains_key("PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !spec.user.is_empty() {
        let (uid, gid) = resolve_user(&spec.user)?;
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("failed to start {:?}: {e}", spec.command)))
}

fn pump(mut from: impl io::Read + Send + 'static, mut to: RotatingWriter) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = to.flush();
    })
}

/// Runs the shim; returns the process exit code.
pub fn run(spec_path: &Path) -> i32 {
    let spec: ShimSpec = match fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            println!("error reading shim spec {}: {e}", spec_path.display());
            return 1;
        }
    };
    let _ = nix::unistd::setsid();
    let writers = RotatingWriter::open(&spec.log_dir, &spec.task, "stdout", spec.rotation)
        .and_then(|o| Ok((o, RotatingWriter::open(&spec.log_dir, &spec.task, "stderr", spec.rotation)?)));
    let (out_w, err_w) = match writers {
        Ok(w) => w,
        Err(e) => {
            println!("error opening log files in {}: {e}", spec.log_dir.display());
            return 1;
        }
    };
    let mut child = match spawn_task(&spec) {
        Ok(c) => c,
        Err(e) => {
            let status = ExitStatus { exit_code: -1, signal: 0, error: e.to_string() };
            let _ = write_exit(&spec.exit_file, &status);
            println!("error {e}");
            return 1;
        }
    };
    println!("pid {}", child.id());
    let _ = io::stdout().flush();
    // Detach from the agent: our stdout was its pipe.
    if let Ok(devnull) = fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&devnull);
        let _ = nix::unistd::dup2_stderr(&devnull);
    }
    let pumps = [child.stdout.take().map(|s| pump(s, out_w)), child.stderr.take().map(|s| pump(s, err_w))];
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = write_exit(&spec.exit_file, &ExitStatus { exit_code: -1, signal: 0, error: e.to_string() });
                return 1;
            }
        }
    };
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    let exit = ExitStatus {
        exit_code: status.code().unwrap_or(0) as i64,
        signal: status.signal().unwrap_or(0) as i64,
        error: String::new(),
    };
    match write_exit(&spec.exit_file, &exit) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}
