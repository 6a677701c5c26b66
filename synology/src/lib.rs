//! Berth's Synology support.
//!
//! * [`dsm`]: the DSM Web API client Berth provisions iSCSI volumes with
//!   (LUNs, targets, mappings, snapshots, clones, volume capacity).
//! * [`sim`]: `dsm-sim`, a simulated DSM serving the same API subset, for
//!   tests and for trying Berth without a NAS.
//!
//! This crate knows DSM and nothing of jobs, allocations or CSI; the CSI
//! provisioner built on it comes next.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dsm;
pub mod sim;
