//! The `raw_exec` driver: runs a command as a host process, without
//! isolation, through the task shim. Config: `command` (required), `args`.
//! It must be enabled with `plugin "raw_exec" { config { enabled = true } }`
//! (dev agents enable it), as in Nomad.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::process::{self, ProcessState};
use super::usage::{self, TaskUsage};
use super::{parse_signal, Driver, DriverError, ExitResult, TaskConfig, TaskHandle};
use crate::client::shim::ShimSpec;
use crate::structs::DriverInfo;
use crate::util::now_rfc3339;

/// The raw_exec driver.
pub struct RawExec {
    enabled: bool,
    /// The task shim program.
    shim: PathBuf,
}

const NAME: &str = "raw_exec";

impl RawExec {
    /// A driver that runs tasks, under `shim`, only when `enabled`.
    pub fn new(enabled: bool, shim: PathBuf) -> Self {
        RawExec { enabled, shim }
    }
}

fn config_error(reason: impl Into<String>) -> DriverError {
    DriverError::Config { driver: NAME, reason: reason.into() }
}

/// Builds the shim spec from a task's config.
fn shim_spec(cfg: &TaskConfig) -> Result<ShimSpec, DriverError> {
    let command = cfg
        .config
        .get("command")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| config_error("\"command\" is required"))?
        .to_string();
    let args = match cfg.config.get("args") {
        None => vec![],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(config_error(format!("\"args\" must be a list of strings, found {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(config_error(format!("\"args\" must be a list of strings, found {other}"))),
    };
    for key in cfg.config.keys() {
        if !matches!(key.as_str(), "command" | "args") {
            return Err(config_error(format!("unsupported option {key:?} (raw_exec takes command and args)")));
        }
    }
    Ok(ShimSpec {
        command,
        args,
        env: cfg.env.clone(),
        cwd: cfg.task_dir.clone(),
        user: cfg.user.clone(),
        log_dir: cfg.log_dir.clone(),
        task: cfg.task.clone(),
        rotation: cfg.rotation,
        exit_file: private_dir(&cfg.task_dir).join("exit.json"),
        netns: cfg.network.as_ref().map(|n| n.netns.clone()),
    })
}

fn private_dir(task_dir: &Path) -> std::path::PathBuf {
    task_dir.join("private")
}

fn state_of(handle: &TaskHandle) -> Option<ProcessState> {
    serde_json::from_value(handle.state.clone()).ok()
}

impl Driver for RawExec {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fingerprint(&self) -> BoxFuture<'_, DriverInfo> {
        let info = DriverInfo {
            detected: self.enabled,
            healthy: self.enabled,
            health_description: if self.enabled { "Healthy".into() } else { "disabled".into() },
            update_time: now_rfc3339(),
            ..Default::default()
        };
        async move { info }.boxed()
    }

    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>> {
        async move {
            if !self.enabled {
                return Err(DriverError::Disabled(NAME));
            }
            let spec = shim_spec(cfg)?;
            let state = process::launch(&self.shim, &spec, &private_dir(&cfg.task_dir)).await?;
            Ok(TaskHandle { driver: NAME.into(), state: serde_json::to_value(state).unwrap_or_default() })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult> {
        async move {
            match state_of(handle) {
                Some(s) => process::wait(&s).await,
                None => ExitResult { exit_code: -1, signal: 0, error: Some("unreadable raw_exec task handle".into()) },
            }
        }
        .boxed()
    }

    fn signal<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let sig = parse_signal(signal).ok_or_else(|| config_error(format!("unknown signal {signal:?}")))?;
            let state = state_of(handle).ok_or_else(|| config_error("unreadable task handle"))?;
            process::signal(&state, sig)
        }
        .boxed()
    }

    fn stop<'a>(&'a self, handle: &'a TaskHandle, signal: &'a str, timeout: Duration) -> BoxFuture<'a, ()> {
        async move {
            let sig = parse_signal(signal).unwrap_or(nix::sys::signal::Signal::SIGINT);
            if let Some(state) = state_of(handle) {
                process::stop(&state, sig, timeout).await;
            }
        }
        .boxed()
    }

    fn stats<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<TaskUsage, DriverError>> {
        async move {
            let state = state_of(handle).ok_or_else(|| config_error("unreadable task handle"))?;
            usage::of_process_group(state.pid)
                .ok_or_else(|| DriverError::Unreachable(format!("task process group {} is gone", state.pid)))
        }
        .boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, bool> {
        async move { state_of(handle).map(|s| process::running(&s)).unwrap_or(false) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(config: serde_json::Value) -> TaskConfig {
        TaskConfig {
            alloc_id: "a".into(),
            task: "t".into(),
            config: serde_json::from_value(config).unwrap(),
            env: Default::default(),
            task_dir: "/tmp/t".into(),
            log_dir: "/tmp/l".into(),
            rotation: Default::default(),
            user: String::new(),
            cpu: 100,
            memory_mb: 300,
            memory_max_mb: 0,
            ports: vec![],
            binds: vec![],
            kill_timeout: std::time::Duration::from_secs(5),
            events: None,
            network: None,
        }
    }

    #[test]
    fn config_errors_are_clear() {
        let e = shim_spec(&cfg(serde_json::json!({"args": ["x"]}))).unwrap_err();
        assert_eq!(e.to_string(), "invalid raw_exec config: \"command\" is required");
        let e = shim_spec(&cfg(serde_json::json!({"command": "/bin/true", "image": "x"}))).unwrap_err();
        assert!(e.to_string().contains("unsupported option \"image\""));
        let ok = shim_spec(&cfg(serde_json::json!({"command": "/bin/echo", "args": ["a", 1]}))).unwrap();
        assert_eq!(ok.args, vec!["a", "1"]);
    }
}
