//! Builds the agent's two small static programs: the `pause` binary it
//! imports as its pause image (`src/client/driver/pause.rs`) and the task
//! shim it starts raw_exec tasks under (`src/client/shim.rs`).

use std::path::PathBuf;

fn build_static(source: &str, name: &str) {
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join(name);
    let compiler = cc::Build::new().opt_level_str("s").get_compiler();
    let status = compiler
        .to_command()
        .args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler for {source}: {e}"));
    assert!(status.success(), "building {source} failed (needs gcc and static libc: libc6-dev)");
}

fn main() {
    build_static("pause/pause.c", "pause");
    build_static("shim/shim.c", "berth-task-shim");
}
