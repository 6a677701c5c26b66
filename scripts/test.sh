#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs what
# is missing, checks formatting and lints, then runs unit and end-to-end
# tests (real agents, real processes) and a short benchmark smoke run.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_toolchain
export CARGO_TERM_COLOR=never
# python-nomad: an existing Nomad API client library the API tests drive.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  apt_install python3 python3-pip
fi
# grpcio: a CSI client that sends the socket path as HTTP/2 authority.
if [ ! -d target/pydeps/nomad ] || [ ! -d target/pydeps/grpc ]; then
  log "installing python-nomad and grpcio into target/pydeps"
  python3 -m pip install -q --disable-pip-version-check --target target/pydeps --break-system-packages python-nomad grpcio
fi
# The Docker engine, a MySQL client and the local test images for the
# docker driver's tests.
ensure_docker
apt_install mariadb-client
# Bridge networking tests and benchmark: iproute2 (ip netns), iptables, nftables (nft, to inspect port maps),
# busybox (httpd/nc in test tasks) and, only as the benchmark's baseline,
# Debian's CNI reference plugins (berth itself never runs them).
apt_install iproute2 iptables nftables busybox-static containernetworking-plugins
# CSI node-side helpers: loop devices, blkid, mkfs/fsck/resize for ext4
# and XFS (the expansion test grows XFS online, which needs no
# CAP_SYS_RESOURCE).
apt_install util-linux e2fsprogs xfsprogs
# Synology tests: dsm-sim exports LUNs through tgt, and the node attaches
# them with the userspace initiator (this kernel has no iscsi_tcp).
ensure_iscsi_userspace
# Installer tests: systemd-analyze verify, and booting the installed root
# with systemd-nspawn -b.
apt_install systemd systemd-container
./scripts/build-test-images.sh
# The node VM (Debian's kernel under QEMU) for the kernel iSCSI and
# multipath tests: qemu-system-x86 and the cached image.
./scripts/node-vm-image.sh >/dev/null
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --locked --workspace -- --test-threads=2
log "benchmark smoke runs (scheduler: 500 nodes x 10,000 placements; agent: 10 allocations; network: 20 allocations; CSI: 10 volumes; scale: 10 clients x 30 allocations; Synology: 3 volumes; kernel iSCSI: 3 volumes; jobspec: 100 groups; checks: 100 for 5 s)"
BERTH_BENCH_NODES=500 BERTH_BENCH_JOBS=10 cargo bench --locked -p berth --bench scheduler
BERTH_BENCH_ROUNDS=5 cargo bench --locked -p berth --bench jobspec
BERTH_BENCH_QUICK=1 cargo bench --locked -p berth --bench agent
BERTH_BENCH_CHECKS=100 BERTH_BENCH_WINDOW_SECS=5 cargo bench --locked -p berth --bench checks
BERTH_BENCH_QUICK=1 cargo bench --locked -p berth --bench docker
BERTH_BENCH_CLIENTS=10 BERTH_BENCH_ALLOCS=30 BERTH_BENCH_IDLE_SECS=10 cargo bench --locked -p berth --bench scale
BERTH_BENCH_VOLUMES=3 cargo bench --locked -p berth --bench synology
cargo build --release --locked -p nodevm
BERTH_BENCH_VOLUMES=3 cargo bench --locked -p berth --bench kernel_iscsi
BERTH_BENCH_ALLOCS=20 cargo bench --locked -p berth-cni --bench netsetup
BERTH_BENCH_VOLUMES=10 cargo bench --locked -p berth-csi --bench lifecycle
