//! [`SimError`]: why the simulator could not start, load or save its state,
//! or manage a LUN's backing file. Each names the path or address involved.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A simulator failure outside the DSM protocol itself.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("DSM simulator server failed: {0}")]
    Serve(#[source] io::Error),
    /// A file or directory in the state dir could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`create`, `read`, `rename`, …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state file is not valid JSON for the simulator's state.
    #[error("state file {path} is corrupt: {source}")]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// `cp --sparse=always` failed.
    #[error("cp --sparse=always {from} {to} failed: {detail}")]
    Copy {
        /// Source file.
        from: PathBuf,
        /// Destination file.
        to: PathBuf,
        /// Exit status and stderr.
        detail: String,
    },
    /// tgtd could not be started or tgtadm refused a change.
    #[error("iSCSI export through tgt: {0}")]
    Tgt(String),
}

impl SimError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
