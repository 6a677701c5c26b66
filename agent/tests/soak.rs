//! The crash soak at CI size (`BERTH_SOAK_LIFECYCLES`, default 50;
//! `BERTH_SOAK_ROUNDS` job rounds, default 3; `BERTH_SOAK_SEED` replays a
//! run). `cargo bench -p berth --bench soak` runs it at full size.

mod common;
mod crash_soak;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn nothing_is_orphaned_or_lost_while_agents_crash_and_the_nas_fails() {
    let (lifecycles, rounds) = (env("BERTH_SOAK_LIFECYCLES", 50), env("BERTH_SOAK_ROUNDS", 3));
    let report = crash_soak::run(lifecycles, rounds, crash_soak::seed());
    eprintln!("{report}");
    assert_eq!((report.lifecycles, report.job_rounds), (lifecycles, rounds));
    assert_eq!(report.checksums_verified, lifecycles);
    if lifecycles >= 20 {
        assert!(report.kills > 0 && report.faults.len() >= 3, "the soak met too little chaos: {report}");
    }
}
