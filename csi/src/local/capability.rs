//! Volume capabilities as the local plugin understands them: a request's
//! `VolumeCapability` parsed into an [`Access`] (mount with fs type and
//! flags, or raw block; plus the access mode), which backings support it,
//! and the publish rules each access mode implies. An `Access` is stored in
//! the node records, so it is serializable and compared for idempotency.

use serde::{Deserialize, Serialize};

use super::backing::Backing;
use crate::v1::volume_capability::{access_mode, AccessType};
use crate::v1::VolumeCapability;

/// How a volume is accessed: through a filesystem or as a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AccessKind {
    /// A filesystem at the staging path and bind mounts of it at targets.
    Mount {
        /// The requested filesystem; empty: the volume's own.
        fs_type: String,
        /// Mount options (may be sensitive: never logged).
        flags: Vec<String>,
    },
    /// The raw loop device bound onto target files (image volumes only).
    Block,
}

/// The CSI access modes the plugin accepts (all of them: a node-local
/// volume is only ever used on this node, so the multi-node modes simply
/// allow several publishes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Mode {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
}

impl Mode {
    /// Modes in which the volume is only ever mounted read-only.
    pub(crate) fn read_only(self) -> bool {
        matches!(self, Self::SingleNodeReaderOnly | Self::MultiNodeReaderOnly)
    }

    /// Modes that allow one writable publish at a time on the node: a
    /// second target is refused unless both publishes are read-only.
    pub(crate) fn single_writer_on_node(self) -> bool {
        matches!(self, Self::SingleNodeWriter | Self::SingleNodeSingleWriter)
    }
}

/// One requested capability: how and in which mode the volume is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Access {
    pub(crate) kind: AccessKind,
    pub(crate) mode: Mode,
}

impl Access {
    /// Parses a capability; the error says what is missing or unsupported.
    pub(crate) fn parse(capability: &VolumeCapability) -> Result<Self, String> {
        let kind = match &capability.access_type {
            None => return Err("a volume capability needs an access type (mount or block)".into()),
            Some(AccessType::Block(_)) => AccessKind::Block,
            Some(AccessType::Mount(mount)) => {
                if !mount.volume_mount_group.is_empty() {
                    return Err("volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)".into());
                }
                AccessKind::Mount { fs_type: mount.fs_type.clone(), flags: mount.mount_flags.clone() }
            }
        };
        let mode = match capability.access_mode.map(|m| m.mode()) {
            None | Some(access_mode::Mode::Unknown) => {
                return Err("a volume capability needs an access mode".into());
            }
            Some(access_mode::Mode::SingleNodeWriter) => Mode::SingleNodeWriter,
            Some(access_mode::Mode::SingleNodeReaderOnly) => Mode::SingleNodeReaderOnly,
            Some(access_mode::Mode::MultiNodeReaderOnly) => Mode::MultiNodeReaderOnly,
            Some(access_mode::Mode::MultiNodeSingleWriter) => Mode::MultiNodeSingleWriter,
            Some(access_mode::Mode::MultiNodeMultiWriter) => Mode::MultiNodeMultiWriter,
            Some(access_mode::Mode::SingleNodeSingleWriter) => Mode::SingleNodeSingleWriter,
            Some(access_mode::Mode::SingleNodeMultiWriter) => Mode::SingleNodeMultiWriter,
        };
        Ok(Self { kind, mode })
    }

    /// Whether a volume with `backing` (and, for images, filesystem
    /// `fs_type`) can be used this way. Directory volumes are plain
    /// directories: no block access, and the requested fs type is not
    /// checked (they live on whatever filesystem holds the state directory).
    pub(crate) fn supported_by(&self, backing: Backing, fs_type: Option<&str>) -> Result<(), String> {
        match (&self.kind, backing) {
            (AccessKind::Block, Backing::Directory) => {
                Err("block access needs an image volume (parameter backing=image)".into())
            }
            (AccessKind::Mount { fs_type: wanted, .. }, Backing::Image)
                if !wanted.is_empty() && Some(wanted.as_str()) != fs_type =>
            {
                Err(format!(
                    "fs_type {wanted:?} was asked for but the volume's filesystem is {:?}",
                    fs_type.unwrap_or("")
                ))
            }
            _ => Ok(()),
        }
    }

    /// The fs type a mount capability asks for, if it names one.
    pub(crate) fn fs_type(&self) -> Option<&str> {
        match &self.kind {
            AccessKind::Mount { fs_type, .. } if !fs_type.is_empty() => Some(fs_type),
            _ => None,
        }
    }

    /// The mount options of a mount capability (none for block).
    pub(crate) fn flags(&self) -> &[String] {
        match &self.kind {
            AccessKind::Mount { flags, .. } => flags,
            AccessKind::Block => &[],
        }
    }

    /// Whether the volume is mounted read-only for this access: the mode
    /// says so, or the mount flags contain `ro`.
    pub(crate) fn read_only(&self) -> bool {
        self.mode.read_only() || self.flags().iter().any(|f| f == "ro")
    }

    /// Whether both are the same kind of access (mount or block).
    pub(crate) fn same_kind(&self, other: &Access) -> bool {
        matches!(
            (&self.kind, &other.kind),
            (AccessKind::Mount { .. }, AccessKind::Mount { .. }) | (AccessKind::Block, AccessKind::Block)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn capability(access_type: Option<AccessType>, mode: access_mode::Mode) -> VolumeCapability {
        VolumeCapability { access_type, access_mode: Some(AccessMode { mode: mode as i32 }) }
    }

    #[test]
    fn parses_and_checks_support() {
        let mount = AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec!["noatime".into()],
            ..Default::default()
        });
        let access = Access::parse(&capability(Some(mount), access_mode::Mode::SingleNodeWriter)).unwrap();
        assert_eq!(access.fs_type(), Some("ext4"));
        assert!(!access.read_only() && access.mode.single_writer_on_node());
        assert!(access.supported_by(Backing::Image, Some("ext4")).is_ok());
        assert!(access.supported_by(Backing::Image, Some("xfs")).unwrap_err().contains("\"xfs\""));
        assert!(access.supported_by(Backing::Directory, None).is_ok());

        let block = capability(Some(AccessType::Block(BlockVolume {})), access_mode::Mode::MultiNodeReaderOnly);
        let access = Access::parse(&block).unwrap();
        assert!(access.read_only());
        assert!(access.supported_by(Backing::Directory, None).is_err());
        assert!(access.supported_by(Backing::Image, Some("ext4")).is_ok());

        assert!(Access::parse(&capability(None, access_mode::Mode::SingleNodeWriter)).is_err());
        let no_mode = VolumeCapability { access_type: Some(AccessType::Block(BlockVolume {})), access_mode: None };
        assert!(Access::parse(&no_mode).is_err());
    }
}
