//! The service registry's table: registrations by ID with an index by
//! allocation, and the rule every write keeps: no registration outlives
//! what it stands for (an allocation that has not ended, on a node that is
//! not down), whoever forgot to deregister it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{Tables, WriteBatch};
use crate::structs::{node_status, ServiceRegistration};

/// Registrations by ID, and their IDs by allocation.
#[derive(Debug, Default, Clone)]
pub(super) struct ServiceTable {
    by_id: BTreeMap<String, Arc<ServiceRegistration>>,
    by_alloc: HashMap<String, BTreeSet<String>>,
}

impl ServiceTable {
    pub(super) fn insert(&mut self, r: ServiceRegistration) {
        self.by_alloc.entry(r.alloc_id.clone()).or_default().insert(r.id.clone());
        self.by_id.insert(r.id.clone(), Arc::new(r));
    }

    pub(super) fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else { return };
        if let Some(ids) = self.by_alloc.get_mut(&old.alloc_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_alloc.remove(&old.alloc_id);
            }
        }
    }
}

impl Tables {
    /// Every registration, ordered by ID.
    pub fn service_registrations(&self) -> impl Iterator<Item = &Arc<ServiceRegistration>> {
        self.services.by_id.values()
    }

    /// One registration by ID.
    pub fn service_registration(&self, id: &str) -> Option<Arc<ServiceRegistration>> {
        self.services.by_id.get(id).cloned()
    }

    /// The registrations of one allocation, ordered by ID.
    pub fn services_of_alloc(&self, alloc_id: &str) -> Vec<Arc<ServiceRegistration>> {
        let ids = self.services.by_alloc.get(alloc_id).into_iter().flatten();
        ids.filter_map(|id| self.services.by_id.get(id).cloned()).collect()
    }

    /// Gives a batch's registrations their indexes and keeps the registry
    /// true to it: a registration for an allocation that has ended (or is
    /// gone, or whose node is down) is not written, and the registrations
    /// of allocations that end or are removed in the batch, or of nodes it
    /// marks down, are removed.
    pub(super) fn retire_services(&self, batch: &mut WriteBatch, index: u64) {
        let mut ended: BTreeSet<&str> = batch.delete_allocs.iter().map(String::as_str).collect();
        ended.extend(batch.allocs.iter().filter(|a| a.client_terminal()).map(|a| a.id.as_str()));
        let down: BTreeSet<&str> =
            batch.nodes.iter().filter(|n| n.status == node_status::DOWN).map(|n| n.id.as_str()).collect();
        let mut doomed: BTreeSet<String> = batch.delete_services.drain(..).collect();
        for alloc in &ended {
            doomed.extend(self.services.by_alloc.get(*alloc).into_iter().flatten().cloned());
        }
        if !down.is_empty() {
            let on_down = self.services.by_id.values().filter(|r| down.contains(r.node_id.as_str()));
            doomed.extend(on_down.map(|r| r.id.clone()));
        }
        let live = |r: &ServiceRegistration| {
            let alloc_live = match batch.allocs.iter().find(|a| a.id == r.alloc_id) {
                Some(a) => !a.client_terminal(),
                None => self.alloc(&r.alloc_id).is_some_and(|a| !a.client_terminal()),
            };
            let node_up = !down.contains(r.node_id.as_str())
                && self.node(&r.node_id).is_some_and(|n| n.status != node_status::DOWN);
            alloc_live && !ended.contains(r.alloc_id.as_str()) && node_up
        };
        batch.services.retain(|r| live(r));
        for r in &mut batch.services {
            doomed.remove(&r.id);
            r.create_index = self.service_registration(&r.id).map_or(index, |old| old.create_index);
            r.modify_index = index;
        }
        batch.delete_services = doomed.into_iter().filter(|id| self.services.by_id.contains_key(id)).collect();
    }
}

#[cfg(test)]
mod tests {
    use crate::server::state::{StateStore, WriteBatch};
    use crate::structs::{client_status, node_status, Allocation, Node, ServiceRegistration};

    fn registration(id: &str, alloc: &str) -> ServiceRegistration {
        ServiceRegistration {
            id: id.into(),
            service_name: "web".into(),
            namespace: "default".into(),
            node_id: "n1".into(),
            alloc_id: alloc.into(),
            ..Default::default()
        }
    }

    fn alloc(id: &str, status: &str) -> Allocation {
        Allocation {
            id: id.into(),
            namespace: "default".into(),
            job_id: "web".into(),
            node_id: "n1".into(),
            client_status: status.into(),
            ..Default::default()
        }
    }

    fn store_with_running_allocs() -> StateStore {
        let store = StateStore::in_memory();
        let node = Node { id: "n1".into(), status: node_status::READY.into(), ..Default::default() };
        let allocs = vec![alloc("a1", client_status::RUNNING), alloc("a2", client_status::RUNNING)];
        store.apply(WriteBatch { nodes: vec![node], allocs, ..Default::default() }).unwrap();
        let services = vec![registration("s1", "a1"), registration("s2", "a1"), registration("s3", "a2")];
        store.apply(WriteBatch { services, ..Default::default() }).unwrap();
        store
    }

    #[test]
    fn registrations_go_with_their_allocation_and_their_node() {
        let store = store_with_running_allocs();
        let first = store.snapshot().service_registration("s1").unwrap();
        assert_eq!((first.create_index, first.modify_index), (2, 2));
        // An ended allocation takes its registrations along.
        store.apply(WriteBatch { allocs: vec![alloc("a1", client_status::COMPLETE)], ..Default::default() }).unwrap();
        let snap = store.snapshot();
        assert!(snap.services_of_alloc("a1").is_empty());
        assert_eq!(snap.services_of_alloc("a2").len(), 1);
        // A late registration of an ended allocation is not written.
        store.apply(WriteBatch { services: vec![registration("s1", "a1")], ..Default::default() }).unwrap();
        assert!(store.snapshot().service_registration("s1").is_none());
        // A node marked down loses every registration on it.
        let down = Node { id: "n1".into(), status: node_status::DOWN.into(), ..Default::default() };
        store.apply(WriteBatch { nodes: vec![down], ..Default::default() }).unwrap();
        assert_eq!(store.snapshot().service_registrations().count(), 0);
    }

    #[test]
    fn a_removed_allocation_takes_its_registrations_and_an_update_keeps_the_create_index() {
        let store = store_with_running_allocs();
        let mut changed = registration("s3", "a2");
        changed.port = 8080;
        store.apply(WriteBatch { services: vec![changed], ..Default::default() }).unwrap();
        let s3 = store.snapshot().service_registration("s3").unwrap();
        assert_eq!((s3.create_index, s3.modify_index, s3.port), (2, 3, 8080));
        store.apply(WriteBatch { delete_allocs: vec!["a2".into()], ..Default::default() }).unwrap();
        let ids: Vec<String> = store.snapshot().service_registrations().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["s1", "s2"]);
    }
}
