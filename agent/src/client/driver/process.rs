//! Processes run through the task shim: launch, wait (pidfd), signal the
//! task's process group, stop with a kill timeout, and recognise a live
//! shim after an agent restart.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{DriverError, ExitResult};
use crate::client::shim::{self, ShimSpec};

/// The persisted state of a shim-managed task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessState {
    /// The task's PID (also its process group).
    pub pid: i32,
    /// The shim's PID.
    pub shim_pid: i32,
    /// Where the shim records the exit status.
    pub exit_file: PathBuf,
}

/// Starts `spec` under a new `shim` and returns once the task has a PID.
pub async fn launch(shim: &Path, spec: &ShimSpec, private_dir: &Path) -> Result<ProcessState, DriverError> {
    let io = |op: &str| {
        let op = op.to_string();
        move |source| DriverError::Io { op, source }
    };
    std::fs::create_dir_all(private_dir).map_err(io("creating task private dir"))?;
    let _ = std::fs::remove_file(&spec.exit_file);
    let spec_path = private_dir.join("shim.spec");
    let data = shim::encode(spec).map_err(|e| DriverError::Start(e.to_string()))?;
    std::fs::write(&spec_path, data).map_err(io("writing shim spec"))?;
    let mut child = tokio::process::Command::new(shim)
        .arg(shim::SHIM_ARG)
        .arg(&spec_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io("starting the task shim"))?;
    let shim_pid = child.id().unwrap_or(0) as i32;
    let stdout = child.stdout.take().ok_or_else(|| DriverError::Start("shim has no stdout".into()))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await.map_err(io("reading from the task shim"))?;
    // Reap the shim whenever it exits; its exit status is in the exit file.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let line = line.trim();
    if let Some(pid) = line.strip_prefix("pid ") {
        let pid = pid.parse().map_err(|_| DriverError::Start(format!("task shim said {line:?}")))?;
        return Ok(ProcessState { pid, shim_pid, exit_file: spec.exit_file.clone() });
    }
    let why = line.strip_prefix("error ").unwrap_or(line);
    Err(DriverError::Start(if why.is_empty() {
        "task shim exited without starting the task".into()
    } else {
        why.into()
    }))
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// True if `pid` is a berth task shim (guards against PID reuse).
fn is_shim(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == shim::SHIM_ARG.as_bytes()))
        .unwrap_or(false)
}

/// Resolves when the task has exited, with its status.
pub async fn wait(state: &ProcessState) -> ExitResult {
    if let Some(fd) = pidfd_open(state.shim_pid).filter(|_| is_shim(state.shim_pid)) {
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open
        // and refers to the same pidfd for the AsyncFd's whole lifetime.
        if let Ok(async_fd) = unsafe { tokio::io::unix::AsyncFd::register(fd) } {
            let _ = async_fd.readable().await;
        }
    }
    // The shim writes the exit file just before it exits.
    for _ in 0..50 {
        if let Some(s) = shim::read_exit(&state.exit_file) {
            return ExitResult {
                exit_code: s.exit_code,
                signal: s.signal,
                error: (!s.error.is_empty()).then_some(s.error),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ExitResult {
        exit_code: -1,
        signal: 0,
        error: Some("task shim exited without recording the task's exit status".into()),
    }
}

/// Sends a signal to the task's process group.
pub fn signal(state: &ProcessState, sig: Signal) -> Result<(), DriverError> {
    killpg(Pid::from_raw(state.pid), sig)
        .map_err(|e| DriverError::Io { op: format!("sending {sig} to task {}", state.pid), source: e.into() })
}

/// Stops the task: `sig`, then SIGKILL to the group after `timeout`.
pub async fn stop(state: &ProcessState, sig: Signal, timeout: Duration) {
    if !running(state) {
        return;
    }
    let _ = signal(state, sig);
    if tokio::time::timeout(timeout, wait(state)).await.is_err() {
        let _ = signal(state, Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), wait(state)).await;
    }
}

/// True while the shim (and so the task) is alive.
pub fn running(state: &ProcessState) -> bool {
    shim::read_exit(&state.exit_file).is_none() && is_shim(state.shim_pid)
}
