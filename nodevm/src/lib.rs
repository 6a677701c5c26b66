//! A real Linux node for tests that need what this host's kernel lacks
//! (the kernel iSCSI initiator, dm-multipath): Debian's own kernel and a
//! debootstrapped root (`scripts/node-vm-image.sh`) booted under QEMU, with
//! commands run inside and only the host ports a test forwards reachable.
//!
//! * `image`: the cached image, built on first use.
//! * `vm`: [`NodeVm`], one booted guest: exec, bridged connections to
//!   guest sockets, a crash reboot, teardown with nothing left behind.
//! * `proxy`: [`Proxy`], a host TCP relay a test can cut, to take a
//!   portal away or make it stop answering.
//! * `protocol`: what the host and the guest agent (`nodevm agent`) say.
//!
//! The guest reaches the host only at the addresses given in
//! [`VmConfig::forward`] (QEMU's user network with `restrict=on`); the host
//! reaches the guest through the agent's one forwarded port.

mod image;
pub mod protocol;
mod proxy;
mod vm;

pub use image::Image;
pub use proxy::{Proxy, ProxyMode};
pub use vm::{Accel, NodeVm, Output, UnixForward, VmConfig, HOST_IP};

use std::path::PathBuf;

/// Why a VM could not be built, booted or used.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The image could not be built or found.
    #[error("node VM image: {0}")]
    Image(String),
    /// QEMU could not be started or exited early.
    #[error("QEMU: {detail}\n--- console (last lines) ---\n{console}")]
    Qemu {
        /// What went wrong.
        detail: String,
        /// The end of the guest's console.
        console: String,
    },
    /// The guest agent did not answer.
    #[error("guest agent: {detail}\n--- console (last lines) ---\n{console}")]
    Agent {
        /// What went wrong.
        detail: String,
        /// The end of the guest's console.
        console: String,
    },
    /// A command in the guest failed.
    #[error("in the VM, `{script}` exited with {code}{timed_out}:\nstdout: {stdout}\nstderr: {stderr}",
        timed_out = if *timed_out { " (timed out)" } else { "" })]
    Failed {
        /// The script.
        script: String,
        /// Its exit code.
        code: i32,
        /// Whether the timeout killed it.
        timed_out: bool,
        /// Its output.
        stdout: String,
        /// Its error output.
        stderr: String,
    },
    /// A host file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path or address.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl VmError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
