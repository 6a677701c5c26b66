//! What holds a local volume's data: a directory or an image file.

use serde::{Deserialize, Serialize};

/// What holds a volume's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backing {
    /// A directory on the state directory's filesystem; capacity is
    /// recorded, not enforced.
    Directory,
    /// A sparse image file holding a filesystem (or raw blocks), attached
    /// through a loop device on the node.
    Image,
}

impl Backing {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::Image => "image",
        }
    }

    /// The name of the data inside a volume or snapshot directory.
    pub(super) fn content_name(self) -> &'static str {
        match self {
            Self::Directory => "data",
            Self::Image => "image.img",
        }
    }
}
