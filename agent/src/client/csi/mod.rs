//! CSI on the client: the plugin registry and supervisor (`manager`), the
//! alloc hooks that run plugin tasks (`plugin_hook`) and mount volumes for
//! the tasks that use them (`volume_hook`), and the plugin calls the
//! servers ask this node to make (`calls`), and the plugins built into the
//! agent (`builtin`: the Synology provisioner).
//!
//! Directory layout under `<data_dir>/client/csi/`, as in Nomad:
//! `plugins/<alloc>/csi.sock`, `<type>/<plugin>/staging/<ns>/<vol>/<usage>`,
//! `<type>/<plugin>/per-alloc/<alloc>/<vol>/<usage>`, plus `mounts/<alloc>.json`,
//! what each allocation has mounted (so teardown works after a restart).

pub mod builtin;
pub mod calls;
pub mod manager;
pub mod plugin_hook;
pub mod volume_hook;

use csi::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::v1::VolumeCapability;

use crate::structs::{access_mode, attachment_mode, CsiMountOptions, CsiVolumeCapability};

pub use calls::ClusterPluginCalls;
pub use manager::CsiManager;

/// The name of the volume hook, whose postrun success ends the claims.
pub const VOLUME_HOOK: &str = "csi_volumes";

/// A csi.v1 capability from Nomad's access/attachment mode names.
pub fn capability(c: &CsiVolumeCapability, mount: Option<&CsiMountOptions>) -> VolumeCapability {
    let mode = match c.access_mode.as_str() {
        access_mode::SINGLE_NODE_READER => Mode::SingleNodeReaderOnly,
        access_mode::MULTI_NODE_READER => Mode::MultiNodeReaderOnly,
        access_mode::MULTI_NODE_SINGLE_WRITER => Mode::MultiNodeSingleWriter,
        access_mode::MULTI_NODE_MULTI_WRITER => Mode::MultiNodeMultiWriter,
        _ => Mode::SingleNodeWriter,
    };
    let access_type = if c.attachment_mode == attachment_mode::BLOCK_DEVICE {
        AccessType::Block(BlockVolume {})
    } else {
        AccessType::Mount(MountVolume {
            fs_type: mount.map(|m| m.fs_type.clone()).unwrap_or_default(),
            mount_flags: mount.map(|m| m.mount_flags.clone()).unwrap_or_default(),
            volume_mount_group: String::new(),
        })
    };
    VolumeCapability { access_mode: Some(AccessMode { mode: mode as i32 }), access_type: Some(access_type) }
}
