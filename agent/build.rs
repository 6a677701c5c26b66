//! Builds the static `pause` binary that the agent imports as its pause
//! image (see `src/client/driver/pause.rs`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("pause");
    let compiler = cc::Build::new().opt_level_str("s").get_compiler();
    let status = compiler
        .to_command()
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg("pause/pause.c")
        .status()
        .expect("running the C compiler for pause/pause.c");
    assert!(status.success(), "building pause/pause.c failed (needs gcc and static libc: libc6-dev)");
}
