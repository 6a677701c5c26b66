//! A task `template` block: its fields in Nomad's JSON shape, Nomad's
//! defaults for it and what validation refuses.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::artifact::in_allocation;

const SECOND: i64 = 1_000_000_000;

/// A `template` block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Template {
    pub source_path: String,
    pub dest_path: String,
    pub embedded_tmpl: String,
    pub change_mode: String,
    pub change_signal: String,
    pub change_script: Option<ChangeScript>,
    /// Render once and never again, whatever changes.
    pub once: bool,
    /// Nanoseconds of random wait before a change is acted on (default 5 s).
    pub splay: Option<i64>,
    pub perms: String,
    /// Owner of the rendered file; unset or negative keeps the agent's.
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub left_delim: String,
    pub right_delim: String,
    pub envvars: bool,
    /// Deprecated by Nomad and ignored; kept so a job round-trips.
    pub vault_grace: i64,
    pub wait: Option<WaitConfig>,
    /// Indexing a missing map key is an error instead of `<no value>`.
    #[serde(rename = "ErrMissingKey")]
    pub err_missing_key: bool,
}

/// `change_script { ... }`: what `change_mode = "script"` runs in the task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChangeScript {
    pub command: String,
    pub args: Vec<String>,
    /// Nanoseconds (default 5 s).
    pub timeout: i64,
    pub fail_on_error: bool,
    pub run_on_first_render: bool,
}

/// `wait { min max }`: how long a change must settle before a re-render.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitConfig {
    /// Nanoseconds.
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// Nomad's deprecation warning for `vault_grace`.
pub const VAULT_GRACE_DEPRECATED: &str =
    "VaultGrace has been deprecated as of Nomad 0.11 and ignored since Vault 0.5. \
     Please remove VaultGrace / vault_grace from template block.";

impl Template {
    /// Fills Nomad's defaults.
    pub fn canonicalize(&mut self) {
        for (field, default) in [
            (&mut self.change_mode, "restart"),
            (&mut self.perms, "0644"),
            (&mut self.left_delim, "{{"),
            (&mut self.right_delim, "}}"),
        ] {
            if field.is_empty() {
                *field = default.to_string();
            }
        }
        if self.change_signal.is_empty() && self.change_mode == "signal" {
            self.change_signal = "SIGHUP".into();
        }
        self.change_signal = self.change_signal.to_ascii_uppercase();
        self.splay.get_or_insert(5 * SECOND);
        if let Some(script) = &mut self.change_script {
            if script.timeout == 0 {
                script.timeout = 5 * SECOND;
            }
        }
    }

    /// What Nomad's validation refuses, and what berth cannot do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.dest_path.is_empty() {
            out.push("template has no destination".into());
        } else if !self.dest_path.contains("${")
            && in_allocation(Path::new("/alloc"), "task", &self.dest_path).is_none()
        {
            out.push(format!("template destination {:?} escapes the allocation directory", self.dest_path));
        }
        if self.embedded_tmpl.is_empty() && self.source_path.is_empty() {
            out.push("template needs data or source".into());
        }
        match self.change_mode.as_str() {
            "" | "restart" | "noop" => {}
            "signal" => {
                if self.envvars {
                    out.push("template change_mode \"signal\" cannot be used with env = true".into());
                }
            }
            "script" => match &self.change_script {
                None => out.push("template change_mode \"script\" needs a change_script block".into()),
                Some(s) if s.command.is_empty() => out.push("template change_script needs a command".into()),
                Some(s) if s.run_on_first_render => out.push(
                    "template change_script run_on_first_render: berth cannot run a command inside a task yet \
                     (no task exec); run it from the task's own entrypoint instead"
                        .into(),
                ),
                Some(_) => {}
            },
            other => out.push(format!("template change_mode {other:?} is not restart, signal, script or noop")),
        }
        if self.splay.is_some_and(|s| s < 0) {
            out.push("template splay must not be negative".into());
        }
        if !self.perms.is_empty() && parse_perms(&self.perms).is_none() {
            out.push(format!("template perms {:?} is not an octal file mode", self.perms));
        }
        if let Some(WaitConfig { min: Some(min), max: Some(max) }) = &self.wait {
            if min > max {
                out.push(format!(
                    "template wait min {} is greater than max {}",
                    crate::util::format_duration(*min),
                    crate::util::format_duration(*max)
                ));
            }
        }
        out
    }

    /// The rendered file's mode.
    pub fn mode(&self) -> Option<u32> {
        parse_perms(if self.perms.is_empty() { "0644" } else { &self.perms })
    }
}

/// An octal mode of at most 12 bits (`644`, `0644`).
fn parse_perms(perms: &str) -> Option<u32> {
    u32::from_str_radix(perms, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let mut t = Template {
            dest_path: "local/x".into(),
            embedded_tmpl: "x".into(),
            change_mode: "signal".into(),
            ..Template::default()
        };
        t.canonicalize();
        assert_eq!((t.change_signal.as_str(), t.splay, t.perms.as_str()), ("SIGHUP", Some(5 * SECOND), "0644"));
        assert!(t.problems().is_empty(), "{:?}", t.problems());
        t.envvars = true;
        t.perms = "0999".into();
        t.wait = Some(WaitConfig { min: Some(10 * SECOND), max: Some(SECOND) });
        t.dest_path = "../../x".into();
        let problems = t.problems().join("\n");
        for want in ["env = true", "octal", "wait min 10s is greater than max 1s", "escapes"] {
            assert!(problems.contains(want), "{want}: {problems}");
        }
        t = Template {
            dest_path: "x".into(),
            embedded_tmpl: "x".into(),
            change_mode: "script".into(),
            envvars: false,
            ..Template::default()
        };
        assert!(t.problems().join("").contains("needs a change_script"));
        t.change_script = Some(ChangeScript { command: "/bin/reload".into(), ..ChangeScript::default() });
        t.canonicalize();
        assert_eq!(t.change_script.as_ref().map(|s| s.timeout), Some(5 * SECOND));
        assert!(t.problems().is_empty(), "{:?}", t.problems());
    }
}
