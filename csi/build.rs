//! Compiles `proto/csi.proto` into Rust at build time: `protox` parses it (no
//! `protoc` binary needed; it ships the google/protobuf files the proto
//! imports) and `tonic-prost-build` generates the messages plus the client and
//! server code for the Identity, Controller and Node services.

use std::error::Error;

/// Request messages with a `secrets` field. Their `Debug` is not generated:
/// `src/redact.rs` implements it without the secret values.
const WITH_SECRETS: &[&str] = &[
    ".csi.v1.CreateVolumeRequest",
    ".csi.v1.DeleteVolumeRequest",
    ".csi.v1.ControllerPublishVolumeRequest",
    ".csi.v1.ControllerUnpublishVolumeRequest",
    ".csi.v1.ValidateVolumeCapabilitiesRequest",
    ".csi.v1.ControllerModifyVolumeRequest",
    ".csi.v1.CreateSnapshotRequest",
    ".csi.v1.DeleteSnapshotRequest",
    ".csi.v1.ListSnapshotsRequest",
    ".csi.v1.GetSnapshotRequest",
    ".csi.v1.ControllerExpandVolumeRequest",
    ".csi.v1.NodeStageVolumeRequest",
    ".csi.v1.NodePublishVolumeRequest",
    ".csi.v1.NodeExpandVolumeRequest",
];

fn main() -> Result<(), Box<dyn Error>> {
    let proto = "proto/csi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A plugin answers UNIMPLEMENTED for RPCs it does not offer; servers
        // written with these traits only implement what they advertise.
        .generate_default_stubs(true)
        .skip_debug(WITH_SECRETS)
        .compile_fds(descriptors)?;
    Ok(())
}
