//! `dsm-sim`: runs the simulated Synology DSM until interrupted.
//!
//! ```text
//! dsm-sim --listen 127.0.0.1:5000 --state-dir /var/tmp/dsm --account admin --password secret
//! ```
//!
//! It stops on SIGINT or SIGTERM. Faults can be set at start with the `--fault-*` flags and changed later
//! with `curl -X POST http://ADDR/sim/faults -d '{"expire_sessions_now":true}'
//! -H 'content-type: application/json'`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use synology::dsm::Password;
use synology::sim::{AutoBlock, Dialect, Faults, Limits, SimConfig, Simulator};

/// A simulated Synology DSM (the Web API subset Berth uses).
#[derive(Parser)]
#[command(name = "dsm-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Directory holding the state and the LUN backing files.
    #[arg(long)]
    state_dir: PathBuf,
    /// The administrator account.
    #[arg(long)]
    account: String,
    /// The account's password (prefer DSM_SIM_PASSWORD to keep it out of `ps`).
    #[arg(long, env = "DSM_SIM_PASSWORD", hide_env_values = true)]
    password: String,
    /// Serve the LUNs over iSCSI on this portal, through a tgtd of the
    /// simulator's own (Debian's `tgt`). Without it, target listings report
    /// 127.0.0.1:3260 and nothing is exported.
    #[arg(long)]
    portal: Option<SocketAddr>,
    /// Idle seconds after which a session answers 106.
    #[arg(long, default_value_t = 900)]
    session_timeout: u64,
    /// Require the SynoToken on every call (DSM's CSRF protection).
    #[arg(long)]
    csrf: bool,
    /// Milliseconds a deleted LUN stays listed (DSM deletes asynchronously).
    #[arg(long, default_value_t = 1000)]
    lun_delete_delay_ms: u64,
    /// Bytes in each simulated volume (/volume1 btrfs, /volume2 ext4).
    #[arg(long, default_value_t = 1 << 40)]
    volume_size: u64,
    /// Answer the first N /webapi requests with HTTP 500.
    #[arg(long, default_value_t = 0)]
    fault_http_500_next: u32,
    /// Delay every /webapi request by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,
    /// Answer the first SAN call with this DSM error code.
    #[arg(long)]
    fault_error_code_next: Option<i64>,
    /// Auto Block: refused logins from one IP that block it (0: off).
    #[arg(long, default_value_t = 10)]
    auto_block_attempts: u32,
    /// Auto Block: the window those refusals must fall in, in seconds.
    #[arg(long, default_value_t = 300)]
    auto_block_window: u64,
    /// Auto Block: how long a blocked IP stays blocked, in seconds.
    #[arg(long, default_value_t = 86_400)]
    auto_block_expire: u64,
    /// The account has 2-factor authentication enforced (logins answer 403).
    #[arg(long)]
    two_factor: bool,
    /// The account is no administrator (SAN calls answer 105).
    #[arg(long)]
    non_admin: bool,
    /// Answer as this DSM: 7 or 6.2.
    #[arg(long, default_value = "7")]
    dsm_version: Dialect,
    /// Milliseconds a new clone stays locked, plus…
    #[arg(long, default_value_t = 300)]
    clone_lock_ms: u64,
    /// …milliseconds per GiB of data its source holds.
    #[arg(long, default_value_t = 7000)]
    clone_lock_ms_per_gib: u64,
    /// LUNs the model allows.
    #[arg(long, default_value_t = 256)]
    max_luns: usize,
    /// Targets the model allows.
    #[arg(long, default_value_t = 128)]
    max_targets: usize,
    /// Snapshots per LUN the model allows.
    #[arg(long, default_value_t = 256)]
    max_snapshots_per_lun: usize,
    /// Also serve HTTPS (self-signed certificate) on this address.
    #[arg(long)]
    https: Option<SocketAddr>,
    /// DSM's "redirect HTTP to HTTPS": plain HTTP requests are redirected
    /// (needs --https).
    #[arg(long, requires = "https")]
    redirect_http: bool,
    /// Start an empty NAS: no default target, VM disk or other tool's LUN.
    #[arg(long)]
    empty: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = SimConfig::new(args.listen, args.state_dir, args.account, Password::new(args.password));
    if let Some(portal) = args.portal {
        config.portal = portal;
        config.export_iscsi = true;
    }
    config.session_timeout = Duration::from_secs(args.session_timeout);
    config.csrf = args.csrf;
    config.lun_delete_delay = Duration::from_millis(args.lun_delete_delay_ms);
    config.volume_size = args.volume_size;
    config.auto_block = AutoBlock {
        attempts: args.auto_block_attempts,
        window: Duration::from_secs(args.auto_block_window),
        expire: Duration::from_secs(args.auto_block_expire),
    };
    config.two_factor = args.two_factor;
    config.non_admin = args.non_admin;
    config.dialect = args.dsm_version;
    config.clone_lock = Duration::from_millis(args.clone_lock_ms);
    config.clone_lock_per_gib = Duration::from_millis(args.clone_lock_ms_per_gib);
    config.limits =
        Limits { luns: args.max_luns, targets: args.max_targets, snapshots_per_lun: args.max_snapshots_per_lun };
    config.https = args.https;
    config.redirect_http = args.redirect_http;
    config.fresh_nas = !args.empty;
    config.faults = Faults {
        http_500_next: args.fault_http_500_next,
        latency_ms: args.fault_latency_ms,
        error_code_next: args.fault_error_code_next,
        ..Faults::default()
    };
    let sim = match Simulator::start(config).await {
        Ok(sim) => sim,
        Err(err) => {
            eprintln!("dsm-sim: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("dsm-sim listening on {}", sim.base_url());
    if let Some(https) = sim.https_addr() {
        println!("dsm-sim listening on https://{https} (self-signed certificate)");
    }
    if let Err(err) = stop_requested().await {
        eprintln!("dsm-sim: cannot wait for signals: {err}");
    }
    match sim.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dsm-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_requested() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
