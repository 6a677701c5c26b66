#!/usr/bin/env bash
# Builds berth and runs a dev agent (server + client on 127.0.0.1:4646, an
# embedded state store in a throw-away data dir). Installs and starts
# Debian's Docker engine if none runs, and builds the local test images. Extra arguments go to
# `berth agent`, e.g. `scripts/dev.sh -data-dir /tmp/berth` to keep state.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_toolchain
# The Docker engine and the local images the examples use (no registry).
./scripts/build-test-images.sh
# What the built-in local CSI plugin runs: losetup, blkid, mkfs, fsck, resize.
apt_install util-linux e2fsprogs xfsprogs
log "building berth (release)"
cargo build --release --locked -p berth
log "starting the dev agent; use target/release/berth in another shell (Ctrl-C stops it)"
exec target/release/berth agent -dev "$@"
