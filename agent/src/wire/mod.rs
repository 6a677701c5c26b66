//! The wire contract: every type that crosses HTTP between the CLI, the
//! servers and the clients beyond Nomad's own API objects (those are in
//! [`crate::structs`]). Both ends of a call import the type from here and
//! neither imports the other, so a field renamed on one side is renamed on
//! both.

pub mod alloc;
pub mod csi;
pub mod deployment;
pub mod identity;
pub mod node;
pub mod plan;
pub mod stats;
pub mod stubs;
pub mod template;

/// Header carrying `k=v,k=v` CSI secrets on volume deletes, as in Nomad.
pub const SECRETS_HEADER: &str = "X-Nomad-CSI-Secrets";
