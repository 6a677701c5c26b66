#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs what
# is missing, checks formatting and lints, then runs unit and end-to-end
# tests (real agents, real processes) and a short benchmark smoke run.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_toolchain
export CARGO_TERM_COLOR=never
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --locked --workspace -- --test-threads=2
log "benchmark smoke run (scheduler)"
BERTH_BENCH_QUICK=1 cargo bench --locked -p berth --bench scheduler
