//! The crash soak at full size: 500 lifecycles and 20 job rounds
//! (`BERTH_SOAK_LIFECYCLES`, `BERTH_SOAK_ROUNDS`; `BERTH_SOAK_SEED`
//! replays a run). See `tests/crash_soak/mod.rs` for what it does and
//! checks; it prints the counts and the seed.
//!
//! `cargo bench -p berth --bench soak`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/crash_soak/mod.rs"]
mod crash_soak;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let report = crash_soak::run(env("BERTH_SOAK_LIFECYCLES", 500), env("BERTH_SOAK_ROUNDS", 20), crash_soak::seed());
    println!("{report}");
}
