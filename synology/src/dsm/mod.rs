//! The DSM Web API client: what Berth asks of a Synology NAS to provision
//! iSCSI volumes, and nothing else.
//!
//! * [`DsmClient`] (`client`): login, the shared session, re-login and one
//!   retry on 105/106/119, bounded concurrency, per-call timeouts.
//! * `params`: DSM's parameter encoding (strings JSON-quoted).
//! * `codes` and [`DsmError`] (`error`): DSM error codes and their meanings.
//! * `lun`, `snapshot`, `target`, `volume`: the operations, as methods of
//!   [`DsmClient`], and the shapes DSM answers with.
//!
//! The client knows DSM, not CSI: volume ids, templates and idempotency
//! rules belong to the provisioner built on top of it.

mod client;
mod codes;
mod config;
mod error;
mod lenient;
mod lun;
mod params;
mod snapshot;
mod target;
mod volume;

pub use client::DsmClient;
pub use codes::login_hint;
pub use config::{DsmConfig, Password};
pub use error::DsmError;
pub use lun::{DevAttrib, Lun, LunCreate, LunType};
pub use snapshot::{Snapshot, SnapshotCreate};
pub use target::{Iqn, MappedLun, Target, TargetAuth, TargetCreate, MAX_IQN_BYTES};
pub use volume::VolumeCapacity;
