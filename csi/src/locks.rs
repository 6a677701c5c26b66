//! One async lock per key (a volume ID, a snapshot ID, a name being
//! created), so operations on one volume run one at a time while different
//! volumes proceed in parallel. A key's lock exists only while someone holds
//! or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Table = Mutex<HashMap<String, Arc<AsyncMutex<()>>>>;

/// The locks, by key.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    table: Arc<Table>,
}

/// A held lock; released (and forgotten if nobody waits) when dropped. It
/// is `Send`, so it can travel into the blocking task doing the work and be
/// released only when that work ends, even if the RPC was cancelled.
#[derive(Debug)]
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    table: Arc<Table>,
}

impl KeyLocks {
    /// Waits for and takes the lock of `key`.
    pub(crate) async fn lock(&self, key: String) -> KeyGuard {
        let lock = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(table.entry(key.clone()).or_default())
        };
        let guard = lock.lock_owned().await;
        KeyGuard { guard: Some(guard), key, table: Arc::clone(&self.table) }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard = None;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the table holds it: nobody holds or waits for this key.
        if table.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_entries_are_forgotten() {
        let locks = KeyLocks::default();
        let a = locks.lock("a".into()).await;
        let _b = locks.lock("b".into()).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock("a".into())).await;
        assert!(waiting.is_err(), "a second holder of the same key");
        drop(a);
        drop(locks.lock("a".into()).await);
        assert_eq!(locks.table.lock().unwrap().keys().collect::<Vec<_>>(), ["b"]);
    }
}
