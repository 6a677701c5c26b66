//! Berth's Synology support.
//!
//! * [`dsm`]: the DSM Web API client Berth provisions iSCSI volumes with
//!   (LUNs, targets, mappings, snapshots, clones, volume capacity).
//! * [`sim`]: `dsm-sim`, a simulated DSM serving the same API subset, for
//!   tests and for trying Berth without a NAS.
//!
//! * [`config`]: the driver configuration, democratic-csi's `synology-iscsi`
//!   YAML accepted unchanged.
//! * [`provisioner`]: `berth.synology`, the CSI Identity and Controller
//!   services built on the client, served on a unix socket.
//!
//! This crate knows nothing of jobs or allocations; the node side (iSCSI
//! login and mount) lives in `csi`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod dsm;
pub mod provisioner;
pub mod sim;
