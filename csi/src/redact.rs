//! `Debug` for the request messages that carry secrets (fields marked
//! `csi_secret` in the proto): every field is printed except the secret
//! values, which show as their number of entries. `build.rs` turns the
//! generated `Debug` off for exactly these messages, so a `?request` in a log
//! line cannot leak credentials. Each impl destructures the whole message, so
//! a field added to the proto fails to compile here until it is listed.

use std::collections::HashMap;
use std::fmt;

use crate::v1::{
    ControllerExpandVolumeRequest, ControllerModifyVolumeRequest, ControllerPublishVolumeRequest,
    ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    DeleteVolumeRequest, GetSnapshotRequest, ListSnapshotsRequest, NodeExpandVolumeRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, ValidateVolumeCapabilitiesRequest,
};

/// Stands in for a secrets map in `Debug` output.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.0)
    }
}

fn redacted(secrets: &HashMap<String, String>) -> Redacted {
    Redacted(secrets.len())
}

macro_rules! debug_without_secrets {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $ty { secrets, $($field),* } = self;
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), $field))*
                    .field("secrets", &redacted(secrets))
                    .finish()
            }
        }
    )*};
}

debug_without_secrets! {
    CreateVolumeRequest {
        name,
        capacity_range,
        volume_capabilities,
        parameters,
        volume_content_source,
        accessibility_requirements,
        mutable_parameters,
    }
    DeleteVolumeRequest { volume_id }
    ControllerPublishVolumeRequest { volume_id, node_id, volume_capability, readonly, volume_context }
    ControllerUnpublishVolumeRequest { volume_id, node_id }
    ValidateVolumeCapabilitiesRequest { volume_id, volume_context, volume_capabilities, parameters, mutable_parameters }
    ControllerModifyVolumeRequest { volume_id, mutable_parameters }
    CreateSnapshotRequest { source_volume_id, name, parameters }
    DeleteSnapshotRequest { snapshot_id }
    ListSnapshotsRequest { max_entries, starting_token, source_volume_id, snapshot_id }
    GetSnapshotRequest { snapshot_id }
    ControllerExpandVolumeRequest { volume_id, capacity_range, volume_capability }
    NodeStageVolumeRequest { volume_id, publish_context, staging_target_path, volume_capability, volume_context }
    NodePublishVolumeRequest {
        volume_id,
        publish_context,
        staging_target_path,
        target_path,
        volume_capability,
        readonly,
        volume_context,
    }
    NodeExpandVolumeRequest { volume_id, volume_path, capacity_range, staging_target_path, volume_capability }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed() {
        let request = NodeStageVolumeRequest {
            volume_id: "vol-1".to_owned(),
            staging_target_path: "/staging/vol-1".to_owned(),
            secrets: HashMap::from([("password".to_owned(), "hunter2".to_owned())]),
            ..Default::default()
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("vol-1"), "{printed}");
        assert!(printed.contains("/staging/vol-1"), "{printed}");
        assert!(printed.contains("secrets: <1 redacted>"), "{printed}");
    }
}
