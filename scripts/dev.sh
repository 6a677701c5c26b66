#!/usr/bin/env bash
# Builds berth and runs a dev agent (server + client on 127.0.0.1:4646, an
# embedded state store in a throw-away data dir). Installs and starts
# Debian's Docker engine if none runs, and builds the local test images. Extra arguments go to
# `berth agent`, e.g. `scripts/dev.sh -data-dir /tmp/berth` to keep state.
# `scripts/dev.sh --synology` also starts dsm-sim (a simulated Synology NAS
# on 127.0.0.1:5000 exporting its LUNs over iSCSI on 127.0.0.1:3260, or
# 13260 when the system's tgt.service holds 3260) and gives the agent the
# built-in Synology plugin (examples/agent-synology.hcl).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_toolchain
# The Docker engine and the local images the examples use (no registry).
./scripts/build-test-images.sh
# What the built-in local CSI plugin runs: losetup, blkid, mkfs, fsck, resize.
apt_install util-linux e2fsprogs xfsprogs
synology=()
if [ "${1:-}" = "--synology" ]; then
  shift
  ensure_iscsi_userspace
  log "building berth and dsm-sim (release)"
  cargo build --release --locked -p berth -p berth-synology
  state=/var/tmp/berth-dsm-sim
  mkdir -p "$state"
  # Installing tgt starts Debian's/Ubuntu's tgt.service on 3260: then the
  # simulator exports on 13260 (a tgtd of an earlier dsm-sim, control port
  # 3260, is its own and is taken over).
  port=3260
  if ss -ltnH 'sport = :3260' 2>/dev/null | grep -q . && ! tgtadm -C 3260 --mode sys --op show >/dev/null 2>&1; then
    port=13260
    log "port 3260 is taken by another iSCSI target (tgt.service?): dsm-sim exports on 127.0.0.1:$port"
  fi
  sed "s/127.0.0.1:3260/127.0.0.1:$port/" examples/synology-iscsi.yaml >"$state/synology-iscsi.yaml"
  sed "s#examples/synology-iscsi.yaml#$state/synology-iscsi.yaml#" examples/agent-synology.hcl >"$state/agent-synology.hcl"
  log "starting dsm-sim on 127.0.0.1:5000 (iSCSI portal 127.0.0.1:$port, state in $state)"
  DSM_SIM_PASSWORD=secret target/release/dsm-sim --listen 127.0.0.1:5000 --state-dir "$state/nas" \
    --account admin --portal "127.0.0.1:$port" >/var/tmp/berth-dsm-sim.log 2>&1 &
  trap 'kill %1 2>/dev/null' EXIT
  sleep 1
  if ! kill -0 %1 2>/dev/null; then
    log "dsm-sim did not start:"; cat /var/tmp/berth-dsm-sim.log >&2; exit 1
  fi
  synology=(-config "$state/agent-synology.hcl")
else
  log "building berth (release)"
  cargo build --release --locked -p berth
fi
log "starting the dev agent; use target/release/berth in another shell (Ctrl-C stops it)"
target/release/berth agent -dev "${synology[@]}" "$@"
