//! Access-mode rules for CSI volume claims, shared by the scheduler (may a
//! new allocation be placed?) and the claim grant a client asks for before
//! it stages a volume (may it be mounted now?). Pure functions over the
//! allocations holding claims.

use std::sync::Arc;

use crate::structs::{access_mode, claim_state, Allocation, ClaimMode, CsiVolume, VolumeClaim};
use crate::util::short_id;

/// A claim someone else holds or is about to hold.
#[derive(Debug, Clone)]
pub struct Holder<'a> {
    /// The allocation (or planned placement) holding it.
    pub alloc_id: &'a str,
    /// Its job, for messages.
    pub job_id: &'a str,
    /// Its node.
    pub node_id: &'a str,
    /// Read or write.
    pub mode: ClaimMode,
    /// A few words on its state ("running", "stopping", "planned").
    pub state: &'a str,
}

/// How an allocation uses the volume, from its group's request.
pub fn mode_of(alloc: &Allocation, volume_id: &str) -> Option<ClaimMode> {
    alloc.csi_requests().into_iter().find(|(id, _)| id == volume_id).map(|(_, req)| {
        if req.writes() {
            ClaimMode::Write
        } else {
            ClaimMode::Read
        }
    })
}

fn describe(h: &Holder<'_>) -> String {
    format!("allocation {} (job {:?}, node {}, {})", short_id(h.alloc_id), h.job_id, short_id(h.node_id), h.state)
}

/// Why a new claim (`mode` on `node_id`) on `volume` conflicts with the
/// `holders`, or `None` when it may be taken. `access` is the requested
/// access mode, which the volume offers.
pub fn conflict(
    volume: &CsiVolume,
    access: &str,
    mode: ClaimMode,
    node_id: &str,
    holders: &[Holder<'_>],
) -> Option<String> {
    let id = &volume.id;
    let reader_only = access.ends_with("reader-only");
    if reader_only && mode == ClaimMode::Write {
        return Some(format!("CSI volume {id} is read-only ({access}): it cannot be claimed for writing"));
    }
    let single_node = access.starts_with("single-node");
    if single_node {
        if let Some(elsewhere) = holders.iter().find(|h| h.node_id != node_id) {
            return Some(format!(
                "CSI volume {id} is {access} and is claimed on another node by {}",
                describe(elsewhere)
            ));
        }
    }
    let one_writer = matches!(
        access,
        access_mode::SINGLE_NODE_WRITER | access_mode::MULTI_NODE_SINGLE_WRITER | access_mode::SINGLE_NODE_READER
    );
    if mode == ClaimMode::Write && one_writer {
        if let Some(writer) = holders.iter().find(|h| h.mode == ClaimMode::Write) {
            return Some(format!(
                "CSI volume {id} has exhausted its available writer claims: held by {}",
                describe(writer)
            ));
        }
    }
    None
}

/// A word for an allocation's state in claim messages.
pub fn state_word(a: &Allocation) -> &'static str {
    if a.client_terminal() {
        "stopped, unpublishing"
    } else if a.server_terminal() {
        "stopping"
    } else if a.client_status == crate::structs::client_status::RUNNING {
        "running"
    } else {
        "starting"
    }
}

/// The claims on a volume as `volume status` shows them.
pub fn claims_view(
    volume_id: &str,
    claimers: &[Arc<Allocation>],
    node_down: impl Fn(&str) -> bool,
) -> Vec<VolumeClaim> {
    claimers
        .iter()
        .filter_map(|a| {
            let mode = mode_of(a, volume_id)?;
            let (state, reason) = if !a.is_terminal() {
                (claim_state::TAKEN, format!("allocation is {}", a.client_status))
            } else if node_down(&a.node_id) {
                (
                    claim_state::RELEASING,
                    "node is down: released when it comes back and unpublishes, or after the claim timeout".into(),
                )
            } else {
                (claim_state::RELEASING, "allocation stopped; waiting for its node to unpublish the volume".into())
            };
            Some(VolumeClaim {
                alloc_id: a.id.clone(),
                node_id: a.node_id.clone(),
                job_id: a.job_id.clone(),
                task_group: a.task_group.clone(),
                mode,
                state: state.into(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> CsiVolume {
        CsiVolume { id: "db".into(), ..Default::default() }
    }

    fn holder<'a>(node: &'a str, mode: ClaimMode) -> Holder<'a> {
        Holder { alloc_id: "a1b2c3d4-0000", job_id: "mysql", node_id: node, mode, state: "running" }
    }

    #[test]
    fn single_node_writer_has_one_writer() {
        let v = vol();
        let snw = access_mode::SINGLE_NODE_WRITER;
        assert_eq!(conflict(&v, snw, ClaimMode::Write, "n1", &[]), None);
        let held = [holder("n1", ClaimMode::Write)];
        let why = conflict(&v, snw, ClaimMode::Write, "n1", &held).unwrap();
        assert!(why.contains("exhausted its available writer claims") && why.contains("a1b2c3d4"), "{why}");
        assert_eq!(conflict(&v, snw, ClaimMode::Read, "n1", &held), None);
        let why = conflict(&v, snw, ClaimMode::Read, "n2", &held).unwrap();
        assert!(why.contains("another node"), "{why}");
    }

    #[test]
    fn reader_modes_refuse_writers_and_multi_writer_takes_all() {
        let v = vol();
        let why = conflict(&v, access_mode::MULTI_NODE_READER, ClaimMode::Write, "n1", &[]).unwrap();
        assert!(why.contains("read-only"), "{why}");
        let readers = [holder("n1", ClaimMode::Read), holder("n2", ClaimMode::Read)];
        assert_eq!(conflict(&v, access_mode::MULTI_NODE_READER, ClaimMode::Read, "n3", &readers), None);
        let writers = [holder("n1", ClaimMode::Write), holder("n2", ClaimMode::Write)];
        assert_eq!(conflict(&v, access_mode::MULTI_NODE_MULTI_WRITER, ClaimMode::Write, "n3", &writers), None);
        assert!(conflict(&v, access_mode::MULTI_NODE_SINGLE_WRITER, ClaimMode::Write, "n3", &writers).is_some());
        assert_eq!(conflict(&v, access_mode::MULTI_NODE_SINGLE_WRITER, ClaimMode::Read, "n3", &writers), None);
    }
}
