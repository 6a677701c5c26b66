//! Names: the LUN (and target) name a CSI volume name maps to, the target
//! IQN, and the snapshot id format.
//!
//! The LUN name is democratic-csi's `iscsiName`, lowercase(`namePrefix` +
//! name + `nameSuffix`), so volumes democratic-csi created keep their names.
//! DSM takes only `[a-z0-9.:-]` in LUN names (`_` answers 18990503); when a
//! name holds anything else, every such character becomes `-` and
//! `-<8 hex>` (FNV-1a of the unsanitised name) is appended, so `a_b` and
//! `a-b` never share a LUN. The LUN name is the CSI `volume_id`, and the
//! target has the same name and IQN `baseiqn` + LUN name: DeleteVolume finds
//! both from the id alone, with no state kept by Berth.

use tonic::Status;

use crate::dsm::{Iqn, MAX_IQN_BYTES};

/// The longest LUN name Berth makes (DSM accepts 200, errs at 255).
pub(crate) const MAX_LUN_NAME: usize = 200;

/// The LUN name for CSI volume `name`, or INVALID_ARGUMENT.
pub(crate) fn lun_name(prefix: &str, name: &str, suffix: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let full = format!("{prefix}{name}{suffix}").to_lowercase();
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-');
    let lun = if full.chars().all(legal) {
        full
    } else {
        let cleaned: String = full.chars().map(|c| if legal(c) { c } else { '-' }).collect();
        format!("{cleaned}-{:08x}", fnv1a(full.as_bytes()))
    };
    if lun.len() > MAX_LUN_NAME {
        return Err(Status::invalid_argument(format!(
            "LUN name {lun:?} (namePrefix + name + nameSuffix) is {} characters, more than the {MAX_LUN_NAME} DSM \
             accepts",
            lun.len()
        )));
    }
    Ok(lun)
}

/// The target IQN for LUN `lun`, at most 223 bytes, or INVALID_ARGUMENT.
pub(crate) fn target_iqn(base_iqn: &str, lun: &str) -> Result<Iqn, Status> {
    Iqn::new(format!("{base_iqn}{lun}")).map_err(|e| {
        Status::invalid_argument(format!(
            "{e}; shorten iscsi.baseiqn, namePrefix, nameSuffix or the name (limit {MAX_IQN_BYTES})"
        ))
    })
}

/// democratic-csi's snapshot id: `/lun/<lun uuid>/<snapshot uuid>`.
pub(crate) fn snapshot_id(lun_uuid: &str, snapshot_uuid: &str) -> String {
    format!("/lun/{lun_uuid}/{snapshot_uuid}")
}

/// `(lun uuid, snapshot uuid)` of a snapshot id; `None` if malformed.
pub(crate) fn parse_snapshot_id(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("/lun/")?;
    let (lun, snapshot) = rest.split_once('/')?;
    (!lun.is_empty() && !snapshot.is_empty() && !snapshot.contains('/')).then_some((lun, snapshot))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_democratic_csi_and_dsm_rules() {
        assert_eq!(lun_name("k8s-", "PVC-1", "").unwrap(), "k8s-pvc-1");
        let a = lun_name("", "a_b", "").unwrap();
        let b = lun_name("", "a b", "").unwrap();
        assert!(a.starts_with("a-b-") && b.starts_with("a-b-") && a != b, "{a} {b}");
        assert_eq!(lun_name("", "a-b", "").unwrap(), "a-b");
        assert!(lun_name("", "", "").is_err());
        assert!(lun_name("", &"x".repeat(201), "").is_err());
        let base = "iqn.2000-01.com.synology:csi.";
        assert!(target_iqn(base, &"x".repeat(MAX_IQN_BYTES - base.len())).is_ok());
        let err = target_iqn(base, &"x".repeat(MAX_IQN_BYTES - base.len() + 1)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("223"), "{}", err.message());
    }

    #[test]
    fn snapshot_ids_round_trip() {
        let id = snapshot_id("l-1", "s-2");
        assert_eq!(parse_snapshot_id(&id), Some(("l-1", "s-2")));
        assert_eq!(parse_snapshot_id("snap"), None);
        assert_eq!(parse_snapshot_id("/lun//x"), None);
    }
}
