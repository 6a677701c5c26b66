//! Entry point of the `berth` binary.

fn main() {}
