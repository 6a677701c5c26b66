//! Nomad Variables on the servers: writes with check-and-set, deletes,
//! and locks (acquire, renew, release; a lock not renewed within its TTL
//! is released and the variable cannot be locked again for its lock
//! delay), each one state-store batch. Items are sealed with the keyring's
//! active root key on the way in, bound to their namespace and path, and
//! opened on the way out; the state store only ever holds ciphertext.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine;

use super::state::{ns_key, StoredVariable, Tables, WriteBatch};
use super::{Server, ServerError};
use crate::structs::{items_size, validate_path, Variable, VariableLock, VariableMetadata, MAX_VARIABLE_SIZE};

/// What a write asks for (Nomad's `VarOp`, with the check index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarOp {
    /// Create or replace.
    Set,
    /// Replace only if the stored modify index is this (0: only create).
    Cas(u64),
    /// Remove.
    Delete,
    /// Remove only if the stored modify index is this.
    DeleteCas(u64),
    /// Take the lock (creating the variable if needed).
    LockAcquire,
    /// Extend the lock's TTL.
    LockRenew,
    /// Give the lock up.
    LockRelease,
}

/// The result of a write: done (with the variable as it now is, none
/// after a delete), or refused because of what is stored (a check index
/// that does not match, a lock held by someone else), with that.
#[derive(Debug)]
pub enum Applied {
    /// Written (or nothing to write).
    Done(Option<Variable>),
    /// Refused; the stored variable (metadata only when there is none, or
    /// it is locked).
    Conflict(Variable),
}

/// When each held lock expires, and until when an expired one keeps its
/// variable unlockable, by `ns_key`.
#[derive(Debug, Default)]
pub struct LockTimers {
    expires: HashMap<String, (Instant, String)>,
    delayed: HashMap<String, Instant>,
}

fn aad(ns: &str, path: &str) -> Vec<u8> {
    format!("{ns}/{path}").into_bytes()
}

fn nanos(d: i64) -> Duration {
    Duration::from_nanos(d.max(0) as u64)
}

impl Server {
    /// Seals `items` for `meta`'s namespace and path.
    fn seal(&self, meta: VariableMetadata, items: &BTreeMap<String, String>) -> Result<StoredVariable, ServerError> {
        let plain = serde_json::to_vec(items).map_err(|e| ServerError::BadRequest(e.to_string()))?;
        let (key_id, sealed) = self.keyring.encrypt(&aad(&meta.namespace, &meta.path), &plain)?;
        Ok(StoredVariable { meta, key_id, data: base64::engine::general_purpose::STANDARD.encode(sealed) })
    }

    /// Opens a stored variable.
    pub fn open_variable(&self, stored: &StoredVariable) -> Result<Variable, ServerError> {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&stored.data)
            .map_err(|_| ServerError::from(super::keyring::KeyringError::Undecryptable(stored.key_id.clone())))?;
        let plain = self.keyring.decrypt(&stored.key_id, &aad(&stored.meta.namespace, &stored.meta.path), &sealed)?;
        let items = serde_json::from_slice(&plain)
            .map_err(|_| ServerError::from(super::keyring::KeyringError::Undecryptable(stored.key_id.clone())))?;
        Ok(Variable { meta: stored.meta.clone(), items })
    }

    /// One variable in the clear.
    pub fn read_variable(&self, snap: &Tables, ns: &str, path: &str) -> Result<Option<Variable>, ServerError> {
        snap.variable(ns, path).map(|v| self.open_variable(&v)).transpose()
    }

    /// Applies one write to the variable at `input`'s namespace and path.
    pub fn apply_variable(&self, op: VarOp, mut input: Variable) -> Result<(u64, Applied), ServerError> {
        if input.meta.namespace.is_empty() {
            input.meta.namespace = "default".into();
        }
        if input.meta.namespace == "*" {
            return Err(ServerError::BadRequest("can not target wildcard (\"*\")namespace".into()));
        }
        validate_path(&input.meta.path).map_err(ServerError::BadRequest)?;
        if items_size(&input.items) > MAX_VARIABLE_SIZE {
            return Err(ServerError::BadRequest("variables are limited to 64KiB in total size".into()));
        }
        if matches!(op, VarOp::Set | VarOp::Cas(_)) && input.items.is_empty() {
            return Err(ServerError::BadRequest("variable missing required Items object".into()));
        }
        if op == VarOp::LockAcquire {
            let lock = input.meta.lock.get_or_insert_with(VariableLock::default);
            lock.canonicalize();
            lock.validate().map_err(ServerError::BadRequest)?;
        }
        let key = ns_key(&input.meta.namespace, &input.meta.path);
        let (index, mut applied) = self.state.commit(|snap| self.variable_write(snap, op, &key, &input))?;
        if let Applied::Done(Some(v)) = &mut applied {
            // The indexes are the commit's.
            if let Some(stored) = self.state.snapshot().variable(&v.meta.namespace, &v.meta.path) {
                v.meta = stored.meta.clone();
            }
        }
        let mut timers = self.variable_locks.lock();
        match (&applied, op) {
            (Applied::Done(Some(v)), VarOp::LockAcquire | VarOp::LockRenew) => {
                if let Some(lock) = &v.meta.lock {
                    timers.expires.insert(key, (Instant::now() + nanos(lock.ttl), lock.id.clone()));
                }
            }
            (Applied::Done(_), VarOp::LockRelease | VarOp::Delete | VarOp::DeleteCas(_)) => {
                timers.expires.remove(&key);
            }
            _ => {}
        }
        Ok((index, applied))
    }

    fn variable_write(
        &self,
        snap: &Tables,
        op: VarOp,
        key: &str,
        input: &Variable,
    ) -> Result<(WriteBatch, Applied), ServerError> {
        let (ns, path) = (&input.meta.namespace, &input.meta.path);
        let existing = self.read_variable(snap, ns, path)?;
        let blank = || Variable {
            meta: VariableMetadata { namespace: ns.clone(), path: path.clone(), ..Default::default() },
            ..Default::default()
        };
        let conflict = |v: Variable| Ok((WriteBatch::default(), Applied::Conflict(v)));
        let held_by_other = |v: &Variable| {
            v.meta.lock.as_ref().is_some_and(|l| input.meta.lock.as_ref().is_none_or(|mine| mine.id != l.id))
        };
        let check = match op {
            VarOp::Cas(i) | VarOp::DeleteCas(i) => Some(i),
            _ => None,
        };
        match (check, &existing) {
            (Some(0), None) if op == VarOp::DeleteCas(0) => return Ok((WriteBatch::default(), Applied::Done(None))),
            (Some(0), None) => {}
            (Some(0), Some(v)) => return conflict(v.clone()),
            (Some(_), None) => return conflict(blank()),
            (Some(i), Some(v)) if v.meta.modify_index != i => return conflict(v.clone()),
            _ => {}
        }
        let mut batch = WriteBatch::default();
        match op {
            VarOp::Set | VarOp::Cas(_) => {
                let lock = match &existing {
                    Some(v) if held_by_other(v) => return conflict(blank()),
                    Some(v) => v.meta.lock.clone(),
                    None => None,
                };
                if let Some(v) = existing.as_ref().filter(|v| v.items == input.items) {
                    return Ok((batch, Applied::Done(Some(v.clone()))));
                }
                let meta = VariableMetadata { lock, ..input.meta.clone() };
                batch.variables.push(self.seal(meta, &input.items)?);
            }
            VarOp::Delete | VarOp::DeleteCas(_) => match &existing {
                None => return Ok((batch, Applied::Done(None))),
                Some(v) if held_by_other(v) => return conflict(blank()),
                Some(_) => {
                    batch.delete_variables.push((ns.clone(), path.clone()));
                    return Ok((batch, Applied::Done(None)));
                }
            },
            VarOp::LockAcquire => {
                if existing.as_ref().is_some_and(held_by_other) || self.lock_delayed(key) {
                    return conflict(blank());
                }
                let items = match &existing {
                    Some(v) if input.items.is_empty() => v.items.clone(),
                    _ => input.items.clone(),
                };
                let meta = VariableMetadata { lock: input.meta.lock.clone(), ..input.meta.clone() };
                batch.variables.push(self.seal(meta, &items)?);
            }
            VarOp::LockRenew | VarOp::LockRelease => {
                let v = existing.ok_or_else(|| ServerError::NotFound("variable doesn't exist".into()))?;
                let Some(held) = &v.meta.lock else {
                    return Err(ServerError::BadRequest("variable doesn't hold a lock".into()));
                };
                if input.meta.lock.as_ref().is_none_or(|mine| mine.id != held.id) {
                    let mut shown = blank();
                    shown.meta.lock = Some(VariableLock::default());
                    return conflict(shown);
                }
                if op == VarOp::LockRenew {
                    return Ok((batch, Applied::Done(Some(v))));
                }
                let meta = VariableMetadata { lock: None, ..v.meta.clone() };
                batch.variables.push(self.seal(meta, &v.items)?);
            }
        }
        let written = batch.variables.first().map(|s| Variable { meta: s.meta.clone(), items: BTreeMap::new() });
        let items = match op {
            VarOp::LockAcquire | VarOp::LockRelease => None,
            _ => Some(input.items.clone()),
        };
        Ok((batch, Applied::Done(written.map(|w| Variable { items: items.unwrap_or_default(), ..w }))))
    }

    fn lock_delayed(&self, key: &str) -> bool {
        self.variable_locks.lock().delayed.get(key).is_some_and(|until| *until > Instant::now())
    }

    /// Starts the TTL of every lock found in the state (after a restart,
    /// holders get a full TTL to renew).
    pub(super) fn arm_variable_locks(&self) {
        let snap = self.state.snapshot();
        let mut timers = self.variable_locks.lock();
        for v in snap.variables() {
            if let Some(lock) = &v.meta.lock {
                let key = ns_key(&v.meta.namespace, &v.meta.path);
                timers.expires.insert(key, (Instant::now() + nanos(lock.ttl), lock.id.clone()));
            }
        }
    }

    /// Releases the locks whose TTL passed without a renewal and starts
    /// their lock delay.
    pub fn expire_variable_locks(&self) -> Result<(), ServerError> {
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let mut timers = self.variable_locks.lock();
            timers.delayed.retain(|_, until| *until > now);
            let gone: Vec<(String, String)> = timers
                .expires
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(k, (_, id))| (k.clone(), id.clone()))
                .collect();
            for (k, _) in &gone {
                timers.expires.remove(k);
            }
            gone
        };
        for (key, lock_id) in expired {
            let (_, delay) = self.state.commit(|snap| {
                let mut batch = WriteBatch::default();
                let Some((ns, path)) = key.split_once('\u{0}') else { return Ok((batch, None)) };
                let Some(v) = self.read_variable(snap, ns, path)? else { return Ok((batch, None)) };
                let Some(lock) = v.meta.lock.clone().filter(|l| l.id == lock_id) else { return Ok((batch, None)) };
                let meta = VariableMetadata { lock: None, ..v.meta.clone() };
                batch.variables.push(self.seal(meta, &v.items)?);
                Ok::<_, ServerError>((batch, Some(lock.lock_delay)))
            })?;
            if let Some(delay) = delay {
                tracing::info!(variable = %key.replace('\u{0}', "/"), "variable lock expired without a renewal");
                self.variable_locks.lock().delayed.insert(key, now + nanos(delay));
            }
        }
        Ok(())
    }

    pub(super) async fn variable_lock_monitor(server: std::sync::Arc<Server>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Err(e) = server.expire_variable_locks() {
                tracing::error!(error = %e, "expiring variable locks");
            }
        }
    }

    /// Re-seals every variable not under the active root key (`keyring
    /// rotate -full`); returns how many.
    pub fn rekey_variables(&self) -> Result<usize, ServerError> {
        let active = self.keyring.active_key_id();
        let (_, count) = self.state.commit(|snap| {
            let mut batch = WriteBatch::default();
            for stored in snap.variables().filter(|v| v.key_id != active) {
                let v = self.open_variable(stored)?;
                batch.variables.push(self.seal(v.meta, &v.items)?);
            }
            let n = batch.variables.len();
            Ok::<_, ServerError>((batch, n))
        })?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::StateStore;
    use crate::server::ServerConfig;
    use std::sync::Arc;

    fn var(path: &str, items: &[(&str, &str)]) -> Variable {
        Variable {
            meta: VariableMetadata { path: path.into(), ..Default::default() },
            items: items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn done(r: (u64, Applied)) -> Option<Variable> {
        match r.1 {
            Applied::Done(v) => v,
            Applied::Conflict(c) => panic!("unexpected conflict with {c:?}"),
        }
    }

    fn conflict(r: (u64, Applied)) -> Variable {
        match r.1 {
            Applied::Conflict(v) => v,
            Applied::Done(v) => panic!("expected a conflict, wrote {v:?}"),
        }
    }

    #[tokio::test]
    async fn check_and_set_writes_and_deletes() {
        let server = Server::start_with_state(Arc::new(StateStore::in_memory()), ServerConfig::default());
        let first = done(server.apply_variable(VarOp::Cas(0), var("nomad/jobs/web", &[("pw", "a")])).unwrap()).unwrap();
        assert_eq!(first.items["pw"], "a");
        // cas=0 on an existing variable, or a stale index: refused, showing what is there.
        let shown = conflict(server.apply_variable(VarOp::Cas(0), var("nomad/jobs/web", &[("pw", "b")])).unwrap());
        assert_eq!((shown.meta.modify_index, shown.items["pw"].as_str()), (first.meta.modify_index, "a"));
        conflict(
            server
                .apply_variable(VarOp::Cas(first.meta.modify_index + 7), var("nomad/jobs/web", &[("pw", "b")]))
                .unwrap(),
        );
        let second = done(
            server.apply_variable(VarOp::Cas(first.meta.modify_index), var("nomad/jobs/web", &[("pw", "b")])).unwrap(),
        )
        .unwrap();
        assert_eq!(second.meta.create_index, first.meta.create_index);
        assert!(second.meta.modify_index > first.meta.modify_index);
        // The same items again write nothing.
        let (index, _) = server.apply_variable(VarOp::Set, var("nomad/jobs/web", &[("pw", "b")])).unwrap();
        assert_eq!(index, second.meta.modify_index);
        conflict(server.apply_variable(VarOp::DeleteCas(first.meta.modify_index), var("nomad/jobs/web", &[])).unwrap());
        done(server.apply_variable(VarOp::DeleteCas(second.meta.modify_index), var("nomad/jobs/web", &[])).unwrap());
        assert!(server.read_variable(&server.state.snapshot(), "default", "nomad/jobs/web").unwrap().is_none());

        for (bad, why) in [("nomad", "reserved"), ("a b", "invalid path")] {
            let e = server.apply_variable(VarOp::Set, var(bad, &[("k", "v")])).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = server.apply_variable(VarOp::Set, var("x", &[])).unwrap_err().to_string();
        assert!(e.contains("Items"), "{e}");
        let big = "x".repeat(MAX_VARIABLE_SIZE);
        let e = server.apply_variable(VarOp::Set, var("x", &[("k", &big)])).unwrap_err().to_string();
        assert!(e.contains("64KiB"), "{e}");
    }

    #[tokio::test]
    async fn items_are_ciphertext_in_the_state_and_survive_a_key_rotation() {
        let server = Server::start_with_state(Arc::new(StateStore::in_memory()), ServerConfig::default());
        server.apply_variable(VarOp::Set, var("app", &[("password", "hunter2")])).unwrap();
        let stored = server.state.snapshot().variable("default", "app").unwrap();
        let raw = serde_json::to_string(&*stored).unwrap();
        assert!(!raw.contains("hunter2") && !raw.contains("password"), "{raw}");
        let old_key = stored.key_id.clone();
        server.keyring.rotate().unwrap();
        let snap = server.state.snapshot();
        assert_eq!(server.read_variable(&snap, "default", "app").unwrap().unwrap().items["password"], "hunter2");
        assert_eq!(server.rekey_variables().unwrap(), 1);
        let rekeyed = server.state.snapshot().variable("default", "app").unwrap();
        assert_ne!(rekeyed.key_id, old_key);
        assert_eq!(rekeyed.meta.create_index, stored.meta.create_index);
        assert_eq!(server.open_variable(&rekeyed).unwrap().items["password"], "hunter2");
    }

    #[tokio::test]
    async fn locks_exclude_others_until_released_or_expired_then_delay() {
        let server = Server::start_with_state(Arc::new(StateStore::in_memory()), ServerConfig::default());
        let mut want = var("locks/leader", &[("holder", "a")]);
        want.meta.lock = Some(VariableLock { ttl: 10_000_000_000, lock_delay: 60_000_000_000, ..Default::default() });
        let held = done(server.apply_variable(VarOp::LockAcquire, want.clone()).unwrap()).unwrap();
        let lock = held.meta.lock.clone().expect("the holder learns its lock");
        assert!(!lock.id.is_empty());
        // Another acquirer, a writer and a deleter without the lock ID are refused.
        conflict(server.apply_variable(VarOp::LockAcquire, want.clone()).unwrap());
        conflict(server.apply_variable(VarOp::Set, var("locks/leader", &[("holder", "b")])).unwrap());
        conflict(server.apply_variable(VarOp::Delete, var("locks/leader", &[])).unwrap());
        let mut mine = var("locks/leader", &[("holder", "a2")]);
        mine.meta.lock = Some(VariableLock { id: lock.id.clone(), ..Default::default() });
        done(server.apply_variable(VarOp::Set, mine.clone()).unwrap());
        done(server.apply_variable(VarOp::LockRenew, mine.clone()).unwrap());
        let released = done(server.apply_variable(VarOp::LockRelease, mine.clone()).unwrap()).unwrap();
        assert!(released.meta.lock.is_none());
        let e = server.apply_variable(VarOp::LockRelease, mine.clone()).unwrap_err().to_string();
        assert!(e.contains("doesn't hold a lock"), "{e}");

        // An expired lock is released, and the lock delay keeps it free.
        let held = done(server.apply_variable(VarOp::LockAcquire, want.clone()).unwrap()).unwrap();
        let key = ns_key("default", "locks/leader");
        server.variable_locks.lock().expires.get_mut(&key).unwrap().0 = Instant::now();
        server.expire_variable_locks().unwrap();
        let after = server.read_variable(&server.state.snapshot(), "default", "locks/leader").unwrap().unwrap();
        assert!(after.meta.lock.is_none(), "expired");
        assert_eq!(after.items["holder"], "a", "the items stay");
        conflict(server.apply_variable(VarOp::LockAcquire, want.clone()).unwrap());
        let mut stale = mine.clone();
        stale.meta.lock = held.meta.lock;
        assert!(server.apply_variable(VarOp::LockRenew, stale).is_err(), "an expired lock is not renewed");
    }
}
