//! The native service registry's write side: a client replaces the
//! registrations of one of its allocations (with their checks' latest
//! results), an operator deletes one; and the read helpers the API shares
//! (`?choose=` rendezvous selection).

use sha2::{Digest, Sha256};

use super::state::WriteBatch;
use super::{Server, ServerError};
use crate::structs::ServiceRegistration;

impl Server {
    /// Makes `registrations` the whole set of the allocation's services:
    /// others it had are removed, unchanged ones are not rewritten. Only
    /// the node running the allocation may do this, only for registration
    /// IDs of that allocation; the servers fill in what they know (job,
    /// namespace, node, datacenter). For an allocation that has ended the
    /// registry keeps nothing (the state store drops them).
    pub fn sync_alloc_services(
        &self,
        node_id: &str,
        secret: &str,
        alloc_id: &str,
        registrations: Vec<ServiceRegistration>,
    ) -> Result<u64, ServerError> {
        let (index, ()) = self.state.commit(|snap| {
            let (node, alloc) = super::nodes::authenticated_alloc(snap, node_id, secret, alloc_id)?;
            let prefix = format!("_nomad-task-{alloc_id}-");
            if let Some(bad) = registrations.iter().find(|r| !r.id.starts_with(&prefix)) {
                return Err(ServerError::BadRequest(format!(
                    "service registration {:?} is not one of allocation {alloc_id}",
                    bad.id
                )));
            }
            let existing = snap.services_of_alloc(alloc_id);
            let wanted: Vec<String> = registrations.iter().map(|r| r.id.clone()).collect();
            let mut batch = WriteBatch::default();
            for mut r in registrations {
                r.namespace = alloc.namespace.clone();
                r.job_id = alloc.job_id.clone();
                r.alloc_id = alloc.id.clone();
                r.node_id = node.id.clone();
                r.datacenter = node.datacenter.clone();
                if !existing.iter().any(|old| old.same_as(&r)) {
                    batch.services.push(r);
                }
            }
            batch.delete_services =
                existing.iter().filter(|old| !wanted.contains(&old.id)).map(|old| old.id.clone()).collect();
            Ok((batch, ()))
        })?;
        Ok(index)
    }

    /// Removes one registration (`service delete`): it is back when its
    /// client next syncs the allocation, as in Nomad.
    pub fn delete_service(&self, namespace: &str, name: &str, id: &str) -> Result<u64, ServerError> {
        let (index, ()) = self.state.commit(|snap| {
            let found = snap
                .service_registration(id)
                .filter(|r| r.namespace == namespace && r.service_name == name)
                .ok_or_else(|| ServerError::NotFound(format!("service registration {id:?} of {name:?} not found")))?;
            Ok::<_, ServerError>((WriteBatch { delete_services: vec![found.id.clone()], ..Default::default() }, ()))
        })?;
        Ok(index)
    }
}

/// Nomad's `?choose=<n>|<key>`: a stable choice of `n` instances for the
/// asker `key`, by rendezvous hashing (each instance ranked by a hash of
/// the key and its ID), so that each asker spreads over the instances and
/// keeps its choice while they do not change.
pub fn choose(
    mut instances: Vec<ServiceRegistration>,
    parameter: &str,
) -> Result<Vec<ServiceRegistration>, ServerError> {
    let malformed =
        || ServerError::BadRequest(format!("failed to choose services: malformed choose parameter {parameter:?}"));
    let (n, key) = parameter.split_once('|').ok_or_else(malformed)?;
    let n: usize = n.parse().map_err(|_| malformed())?;
    if key.is_empty() {
        return Err(malformed());
    }
    let rank = |r: &ServiceRegistration| {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(r.id.as_bytes());
        h.finalize()
    };
    instances.sort_by_cached_key(rank);
    instances.truncate(n);
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> ServiceRegistration {
        ServiceRegistration { id: id.into(), ..Default::default() }
    }

    #[test]
    fn choose_is_stable_per_key_and_spreads_over_keys() {
        let all: Vec<_> = (0..10).map(|i| instance(&format!("s{i}"))).collect();
        let ids = |v: Vec<ServiceRegistration>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let a = ids(choose(all.clone(), "3|alloc-a").unwrap());
        assert_eq!(a.len(), 3);
        let mut shuffled = all.clone();
        shuffled.reverse();
        assert_eq!(ids(choose(shuffled, "3|alloc-a").unwrap()), a, "the order of the registry does not matter");
        let firsts: std::collections::BTreeSet<String> =
            (0..20).map(|k| ids(choose(all.clone(), &format!("1|asker-{k}")).unwrap())[0].clone()).collect();
        assert!(firsts.len() > 3, "twenty askers pick different instances: {firsts:?}");
        assert_eq!(choose(all.clone(), "20|k").unwrap().len(), 10);
        for bad in ["3", "x|k", "3|"] {
            assert!(choose(all.clone(), bad).is_err(), "{bad}");
        }
    }
}
