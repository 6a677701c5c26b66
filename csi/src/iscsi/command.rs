//! The one way the iSCSI code touches the host's tools: a [`Runner`] runs a
//! [`Cmd`] and returns its exit code and output. [`HostRunner`] runs real
//! programs with a timeout; tests put a recorder here to check the exact
//! commands, their order and the cleanup without a kernel initiator.

use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::IscsiError;

/// One program with its arguments; arguments marked secret print as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program, looked up on PATH.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    secret: Vec<usize>,
    /// Longest it may run, when shorter than the runner's own limit (what
    /// is left of the caller's deadline).
    pub timeout: Option<Duration>,
}

impl Cmd {
    /// `program` with `args`.
    pub fn new(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            secret: Vec::new(),
            timeout: None,
        }
    }

    /// Limits how long it may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends `args`.
    pub fn args_from(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Appends an argument that is never printed.
    pub fn secret_arg(mut self, arg: impl Into<String>) -> Self {
        self.secret.push(self.args.len());
        self.args.push(arg.into());
        self
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for (index, arg) in self.args.iter().enumerate() {
            let shown = if self.secret.contains(&index) { "<redacted>" } else { arg };
            write!(f, " {shown}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({self})")
    }
}

/// How a command ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit code; -1 when killed (by a signal or the timeout).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// `Ok(self)` when the exit code is 0 or one of `also_ok`, else
    /// [`IscsiError::Failed`] naming `cmd`.
    pub fn expect(self, cmd: &Cmd, also_ok: &[i32]) -> Result<Self, IscsiError> {
        if self.code == 0 || also_ok.contains(&self.code) {
            Ok(self)
        } else {
            Err(IscsiError::Failed { command: cmd.to_string(), code: self.code, stderr: self.stderr.trim().to_owned() })
        }
    }
}

/// Runs commands.
pub trait Runner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to its end; only a failure to start it is an error.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, IscsiError>;

    /// Runs `cmd` and requires exit code 0 or one of `also_ok`.
    fn check(&self, cmd: &Cmd, also_ok: &[i32]) -> Result<CmdOutput, IscsiError> {
        self.run(cmd)?.expect(cmd, also_ok)
    }
}

/// Runs real programs, killing any that outlives the timeout.
#[derive(Clone, Debug)]
pub struct HostRunner {
    /// Longest a command may run (iscsiadm's own login timeout is 15 s per
    /// attempt).
    pub timeout: Duration,
}

impl Default for HostRunner {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(60) }
    }
}

impl Runner for HostRunner {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, IscsiError> {
        tracing::debug!(command = %cmd, "running");
        let spawn_error = |source| IscsiError::Spawn { command: cmd.to_string(), source };
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        // Both pipes are drained by threads so a chatty program cannot block.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let started = Instant::now();
        let timeout = cmd.timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let status = loop {
            if let Some(status) = child.try_wait().map_err(spawn_error)? {
                break Some(status);
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = stdout.join().unwrap_or_default();
        let mut stderr = stderr.join().unwrap_or_default();
        let code = match status {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                stderr.push_str(&format!(" (killed after {timeout:?})"));
                -1
            }
        };
        Ok(CmdOutput { code, stdout, stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_programs_and_hides_secrets() {
        let runner = HostRunner { timeout: Duration::from_millis(300) };
        let cmd = Cmd::new("sh", &["-c", "echo out; echo err >&2; exit 3"]);
        let out = runner.run(&cmd).unwrap();
        assert_eq!((out.code, out.stdout.trim(), out.stderr.trim()), (3, "out", "err"));
        assert!(runner.check(&cmd, &[3]).is_ok());
        assert!(runner.check(&cmd, &[]).unwrap_err().to_string().contains("exited with 3: err"));
        let slow = runner.run(&Cmd::new("sleep", &["5"])).unwrap();
        assert_eq!(slow.code, -1);
        let secret = Cmd::new("iscsiadm", &["-v"]).secret_arg("hunter2");
        assert_eq!(secret.to_string(), "iscsiadm -v <redacted>");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(runner.run(&Cmd::new("/nonexistent/program", &[])).is_err());
    }
}
