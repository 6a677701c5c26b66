//! Nomad-compatible API types shared by the server, the client, the HTTP
//! API and the CLI. Everything here is plain data with serde derives; the
//! JSON shape (PascalCase, upper-case acronyms, nanosecond times) is what
//! existing Nomad clients send and expect.

mod alloc;
pub mod artifact;
mod canonicalize;
mod deployment;
mod disconnect;
mod drain;
mod identity;
mod job;
mod node;
mod periodic;
mod placement;
mod service;
mod template;
mod variable;
mod volume;

pub use alloc::*;
pub use canonicalize::ValidationIssue;
pub use deployment::*;
pub use disconnect::{reconcile, AllocState, DisconnectStrategy};
pub use drain::*;
pub use identity::*;
pub use job::*;
pub use node::*;
pub use periodic::{Schedule, ScheduleError};
pub use placement::{Affinity, ScalingPolicy, Spread, SpreadTarget, DEFAULT_WEIGHT};
pub use service::*;
pub use template::{ChangeScript, Template, WaitConfig, VAULT_GRACE_DEPRECATED};
pub use variable::*;
pub use volume::*;
