//! The Variables table: each variable as stored, encrypted (its items are
//! ciphertext under a root key the state store never holds), by namespace
//! and path, with the indexes every write gives it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ns_key, Tables, WriteBatch};
use crate::structs::VariableMetadata;

/// A variable at rest: metadata in the clear, items sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StoredVariable {
    #[serde(flatten)]
    pub meta: VariableMetadata,
    /// The root key that sealed `data`.
    #[serde(rename = "KeyID")]
    pub key_id: String,
    /// Nonce and ciphertext of the items' JSON, base64.
    pub data: String,
}

/// Stored variables by `ns_key(namespace, path)`, so that a namespace's
/// paths are contiguous and in order.
pub(super) type VariableTable = BTreeMap<String, Arc<StoredVariable>>;

impl Tables {
    /// One variable.
    pub fn variable(&self, ns: &str, path: &str) -> Option<Arc<StoredVariable>> {
        self.variables.get(&ns_key(ns, path)).cloned()
    }

    /// The variables of `ns` (every namespace for `None`) whose path starts
    /// with `prefix`, ordered by namespace and path.
    pub fn variables_with_prefix<'a>(
        &'a self,
        ns: Option<&'a str>,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a Arc<StoredVariable>> + 'a {
        let range = match ns {
            Some(ns) => self.variables.range(ns_key(ns, "")..),
            None => self.variables.range::<String, _>(..),
        };
        range
            .map(|(_, v)| v)
            .take_while(move |v| ns.is_none_or(|ns| v.meta.namespace == ns))
            .filter(move |v| v.meta.path.starts_with(prefix))
    }

    /// Every variable.
    pub fn variables(&self) -> impl Iterator<Item = &Arc<StoredVariable>> {
        self.variables.values()
    }

    /// Gives a batch's variables their indexes and times.
    pub(super) fn index_variables(&self, batch: &mut WriteBatch, index: u64, now: i64) {
        for v in &mut batch.variables {
            match self.variable(&v.meta.namespace, &v.meta.path) {
                Some(old) => {
                    v.meta.create_index = old.meta.create_index;
                    v.meta.create_time = old.meta.create_time;
                }
                None => {
                    v.meta.create_index = index;
                    v.meta.create_time = now;
                }
            }
            v.meta.modify_index = index;
            v.meta.modify_time = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::StateStore;

    fn var(ns: &str, path: &str) -> StoredVariable {
        StoredVariable {
            meta: VariableMetadata { namespace: ns.into(), path: path.into(), ..Default::default() },
            key_id: "k".into(),
            data: "sealed".into(),
        }
    }

    #[test]
    fn variables_keep_their_create_index_and_list_by_namespace_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            let vars = vec![var("default", "nomad/jobs/web"), var("default", "app/a"), var("other", "nomad/jobs/x")];
            store.apply(WriteBatch { variables: vars, ..Default::default() }).unwrap();
            store.apply(WriteBatch { variables: vec![var("default", "app/a")], ..Default::default() }).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let snap = store.snapshot();
        let a = snap.variable("default", "app/a").unwrap();
        assert_eq!((a.meta.create_index, a.meta.modify_index), (1, 2));
        let paths = |ns: Option<&str>, prefix: &str| -> Vec<String> {
            snap.variables_with_prefix(ns, prefix).map(|v| v.meta.path.clone()).collect()
        };
        assert_eq!(paths(Some("default"), ""), ["app/a", "nomad/jobs/web"]);
        assert_eq!(paths(Some("default"), "nomad/"), ["nomad/jobs/web"]);
        assert_eq!(paths(None, "nomad/jobs"), ["nomad/jobs/web", "nomad/jobs/x"]);
        store
            .apply(WriteBatch { delete_variables: vec![("default".into(), "app/a".into())], ..Default::default() })
            .unwrap();
        assert!(store.snapshot().variable("default", "app/a").is_none());
        drop(store);
        assert!(StateStore::open(dir.path()).unwrap().snapshot().variable("default", "app/a").is_none());
    }
}
