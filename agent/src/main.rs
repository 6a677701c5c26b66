//! Entry point of the `berth` binary: normalizes Nomad-style flags and runs
//! the command on a tokio runtime (multi-threaded for the agent,
//! single-threaded for CLI commands).

use clap::Parser;

fn main() {
    let args = berth::cli::normalize_args(std::env::args_os());
    let cli = berth::cli::Cli::parse_from(args);
    let runtime = if berth::cli::is_agent(&cli) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let code = match runtime {
        Ok(rt) => rt.block_on(berth::cli::run(cli)),
        Err(e) => {
            eprintln!("Error starting the runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}
