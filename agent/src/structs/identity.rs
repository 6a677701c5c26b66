//! Workload identities: a task's `identity` blocks (Nomad's
//! `WorkloadIdentity`), with Nomad's defaults and checks. The servers sign
//! each as a JWT for the task; where the task finds it is said here.

use serde::{Deserialize, Serialize};

/// The name of a task's default identity.
pub const DEFAULT_IDENTITY: &str = "default";
/// The audience of the default identity when none is given.
pub const DEFAULT_AUDIENCE: &str = "nomadproject.io";

/// One `identity` block of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct WorkloadIdentity {
    pub name: String,
    pub audience: Vec<String>,
    /// Put the token in the task's environment.
    pub env: bool,
    /// Write the token into the task's secrets directory.
    pub file: bool,
    /// Where `file` writes it, relative to the task directory (default
    /// `secrets/nomad_token`, or `secrets/nomad_<name>.jwt`).
    pub filepath: String,
    /// What a renewed token does to the running task: `noop` (the file is
    /// rewritten), `restart` or `signal`.
    pub change_mode: String,
    pub change_signal: String,
    /// Nanoseconds the token is valid; 0 is no expiry.
    #[serde(rename = "TTL")]
    pub ttl: i64,
}

impl WorkloadIdentity {
    /// Whether this is the task's default identity.
    pub fn is_default(&self) -> bool {
        self.name.is_empty() || self.name == DEFAULT_IDENTITY
    }

    /// Nomad's defaults: the default identity's name and audience.
    pub fn canonicalize(&mut self) {
        if self.name.is_empty() {
            self.name = DEFAULT_IDENTITY.into();
        }
        if self.is_default() && self.audience.is_empty() {
            self.audience = vec![DEFAULT_AUDIENCE.into()];
        }
    }

    /// The environment variable `env` sets: `NOMAD_TOKEN`, or
    /// `NOMAD_TOKEN_<name>`.
    pub fn env_var(&self) -> String {
        if self.is_default() {
            "NOMAD_TOKEN".into()
        } else {
            format!("NOMAD_TOKEN_{}", self.name)
        }
    }

    /// The file `file` writes, relative to the task directory.
    pub fn file_path(&self) -> String {
        match (self.filepath.is_empty(), self.is_default()) {
            (false, _) => self.filepath.clone(),
            (true, true) => "secrets/nomad_token".into(),
            (true, false) => format!("secrets/nomad_{}.jwt", self.name),
        }
    }

    /// What Nomad's validation says is wrong with it.
    pub fn problems(&self) -> Vec<String> {
        let what = format!("identity {:?}", self.name);
        let mut out = Vec::new();
        if !self.is_default() && self.audience.is_empty() {
            out.push(format!("{what}: an alternate identity must have an audience (aud)"));
        }
        if self.ttl < 0 {
            out.push(format!("{what}: ttl must not be negative"));
        }
        match self.change_mode.as_str() {
            "" | "noop" | "restart" => {}
            "signal" if self.change_signal.is_empty() => {
                out.push(format!("{what}: change_mode \"signal\" needs a change_signal"))
            }
            "signal" => {}
            other => {
                out.push(format!("{what}: change_mode must be \"noop\", \"restart\" or \"signal\", not {other:?}"))
            }
        }
        if !self.filepath.is_empty() && (self.filepath.starts_with('/') || self.filepath.split('/').any(|p| p == ".."))
        {
            out.push(format!("{what}: filepath {:?} must stay inside the task directory", self.filepath));
        }
        out
    }
}
