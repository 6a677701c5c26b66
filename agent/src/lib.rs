//! Berth: a storage-first, Nomad-compatible workload orchestrator.
//!
//! The crate holds the `berth` binary's parts: the jobspec and agent-config
//! parsers, the server (state store, scheduler, plan applier), the client
//! (fingerprint, allocation and task runners, drivers), the HTTP API, the
//! CLI, `doctor` (node checks) and `install` (systemd service set-up). `main.rs` is only the entry point.

pub mod agent;
pub mod cli;
pub mod client;
pub mod doctor;
pub mod hclspan;
pub mod http;
pub mod install;
pub mod jobspec;
pub mod server;
pub mod structs;
pub mod telemetry;
pub mod util;
pub mod wire;

/// The agent's version, reported in fingerprints and `agent/self`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
