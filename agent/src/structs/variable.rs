//! Nomad Variables as the API carries them: a path in a namespace holding
//! string items, with its indexes and an optional lock. What the servers
//! store is encrypted (`server::variables`); these are the plain shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Items are limited to this many bytes (keys and values) in total.
pub const MAX_VARIABLE_SIZE: usize = 65536;

/// A variable's metadata: what `/v1/vars` lists and a conflict shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VariableMetadata {
    pub namespace: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<VariableLock>,
    pub create_index: u64,
    pub create_time: i64,
    pub modify_index: u64,
    pub modify_time: i64,
}

/// A variable with its items in the clear.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Variable {
    #[serde(flatten)]
    pub meta: VariableMetadata,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, String>,
}

impl std::fmt::Debug for Variable {
    /// Item values are secrets: only their keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable").field("meta", &self.meta).field("items", &self.items.keys()).finish()
    }
}

/// A lock held on a variable: its ID (the holder's proof), how long it
/// lives without a renewal, and how long the variable stays unlockable
/// after the lock expires. Durations in JSON are Go strings (`"15s"`);
/// numbers (nanoseconds) are read too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VariableLock {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "TTL", serialize_with = "go_duration", deserialize_with = "any_duration")]
    pub ttl: i64,
    #[serde(serialize_with = "go_duration", deserialize_with = "any_duration")]
    pub lock_delay: i64,
}

/// Nomad's lock TTL bounds and defaults.
pub const MIN_LOCK_TTL: i64 = 10_000_000_000;
pub const MAX_LOCK_TTL: i64 = 24 * 3600 * 1_000_000_000;
pub const DEFAULT_LOCK_TTL: i64 = 15_000_000_000;
pub const DEFAULT_LOCK_DELAY: i64 = 15_000_000_000;

fn go_duration<S: Serializer>(nanos: &i64, s: S) -> Result<S::Ok, S::Error> {
    if *nanos == 0 {
        s.serialize_str("")
    } else {
        s.serialize_str(&crate::util::format_duration(*nanos))
    }
}

fn any_duration<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Nanos(i64),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(0),
        Some(Raw::Nanos(n)) => Ok(n),
        Some(Raw::Text(t)) if t.is_empty() => Ok(0),
        Some(Raw::Text(t)) => crate::util::parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

impl VariableLock {
    /// Fills a fresh ID and the default TTL and delay.
    pub fn canonicalize(&mut self) {
        if self.id.is_empty() {
            self.id = crate::util::new_id();
        }
        if self.ttl == 0 {
            self.ttl = DEFAULT_LOCK_TTL;
        }
        if self.lock_delay == 0 {
            self.lock_delay = DEFAULT_LOCK_DELAY;
        }
    }

    /// Nomad's bounds: a TTL from 10 s to 24 h, no negative delay.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < 0 || self.lock_delay < 0 {
            return Err("Lock delay and TTL must be positive".into());
        }
        if !(MIN_LOCK_TTL..=MAX_LOCK_TTL).contains(&self.ttl) {
            return Err("TTL must be between 10 seconds and 24 hours".into());
        }
        Ok(())
    }
}

/// The size Nomad limits: every key and value, in bytes.
pub fn items_size(items: &BTreeMap<String, String>) -> usize {
    items.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Nomad's path rule: 1 to 128 of `a-zA-Z0-9-_~/`, and under `nomad/` only
/// `nomad/jobs…`, `nomad/sentinel…` and `nomad/job-templates/<name>`.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("variable requires path".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_~/".contains(c);
    if path.len() > 128 || !path.chars().all(allowed) {
        return Err(format!("invalid path {path:?}"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts[0] != "nomad" {
        return Ok(());
    }
    match parts.get(1) {
        None => Err("\"nomad\" is a reserved top-level directory path, but you may write variables to \"nomad/jobs\", \"nomad/job-templates\", \"nomad/sentinel\", or below".into()),
        Some(&"jobs") | Some(&"sentinel") => Ok(()),
        Some(&"job-templates") if parts.len() == 3 => Ok(()),
        Some(&"job-templates") => Err("\"nomad/job-templates\" is a reserved directory path, but you may write variables at the level below it, for example, \"nomad/job-templates/template-name\"".into()),
        Some(_) => Err("only paths at \"nomad/jobs\" or \"nomad/job-templates\" and below are valid paths under the top-level \"nomad\" directory".into()),
    }
}

/// The paths a task may read without an ACL policy (Nomad's implicit
/// workload policy): `nomad/jobs`, and its job's, group's and task's own.
pub fn workload_may_read(path: &str, job: &str, group: &str, task: &str) -> bool {
    let own = [
        "nomad/jobs".to_string(),
        format!("nomad/jobs/{job}"),
        format!("nomad/jobs/{job}/{group}"),
        format!("nomad/jobs/{job}/{group}/{task}"),
    ];
    own.iter().any(|p| p == path)
}

/// A root key's metadata, as `/v1/operator/keyring/keys` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootKeyMeta {
    #[serde(rename = "KeyID")]
    pub key_id: String,
    pub algorithm: String,
    pub create_time: i64,
    pub create_index: u64,
    pub modify_index: u64,
    /// `active` (encrypts and signs) or `inactive` (decrypts and verifies).
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_nomads_rules() {
        for ok in ["a", "nomad/jobs", "nomad/jobs/web/g/t", "nomad/job-templates/x", "team~a/b_c-d"] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "nomad", "nomad/other", "nomad/job-templates", "a b", "ü", &"x".repeat(129)] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locks_read_go_durations_and_nanoseconds() {
        let lock: VariableLock = serde_json::from_str(r#"{"ID":"x","TTL":"20s","LockDelay":5000000000}"#).unwrap();
        assert_eq!((lock.ttl, lock.lock_delay), (20_000_000_000, 5_000_000_000));
        let out = serde_json::to_value(&lock).unwrap();
        assert_eq!((out["TTL"].as_str(), out["LockDelay"].as_str()), (Some("20s"), Some("5s")));
        let mut fresh = VariableLock::default();
        fresh.canonicalize();
        assert!(!fresh.id.is_empty() && fresh.validate().is_ok());
        assert!(VariableLock { ttl: 1_000_000_000, ..fresh }.validate().is_err());
    }

    #[test]
    fn a_variables_debug_output_hides_its_values() {
        let v = Variable { items: BTreeMap::from([("password".into(), "hunter2".into())]), ..Default::default() };
        let shown = format!("{v:?}");
        assert!(shown.contains("password") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn workloads_read_their_own_paths() {
        assert!(workload_may_read("nomad/jobs/web", "web", "g", "t"));
        assert!(workload_may_read("nomad/jobs/web/g/t", "web", "g", "t"));
        assert!(!workload_may_read("nomad/jobs/db", "web", "g", "t"));
        assert!(!workload_may_read("nomad/jobs/web/other", "web", "g", "t"));
    }
}
