//! The command line: Nomad's command tree and flags (single-dash long flags
//! such as `-dev` and `-address=...` are accepted as Nomad spells them),
//! dispatched to the agent or to the HTTP API.

mod alloc;
mod api;
mod children;
mod cluster;
mod deployment;
mod drain;
mod format;
mod import;
mod job;
mod lookup;
mod monitor;
mod operator;
mod scale;
mod service;
mod tables;
mod var;
mod volume;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::agent::AgentOptions;
use api::{resolve_address, ApiClient};

/// Berth: a storage-first, Nomad-compatible workload orchestrator.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every API command takes.
#[derive(Debug, Args, Clone, Default)]
struct ApiFlags {
    /// Address of the agent's HTTP API (env BERTH_ADDR, then NOMAD_ADDR).
    #[arg(long, global = true)]
    address: Option<String>,
    /// Accepted for Nomad compatibility; berth has one region per cluster.
    #[arg(long, global = true, hide = true)]
    region: Option<String>,
    /// Accepted for Nomad compatibility; berth uses the default namespace.
    #[arg(long, global = true, hide = true)]
    namespace: Option<String>,
    /// Accepted for Nomad compatibility; berth has no ACLs.
    #[arg(long, global = true, hide = true)]
    token: Option<String>,
    /// Accepted for Nomad compatibility; output is never coloured.
    #[arg(long = "no-color", global = true, hide = true)]
    no_color: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a berth agent (server, client or both).
    Agent(AgentArgs),
    /// Interacts with jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with allocations.
    Alloc {
        #[command(subcommand)]
        command: AllocCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with servers.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with the native service registry.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with Nomad Variables.
    Var {
        #[command(subcommand)]
        command: var::VarCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Cluster operations (the root keyring).
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with deployments.
    Deployment {
        #[command(subcommand)]
        command: DeploymentCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with evaluations.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Streams the logs of a task (alias of `alloc logs`).
    Logs {
        #[command(flatten)]
        args: LogsArgs,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Shows jobs, or the object an ID prefix names.
    Status {
        /// ID prefix of a job, allocation, node or evaluation.
        id: Option<String>,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Alias of `job run`.
    Run {
        #[command(flatten)]
        args: RunArgs,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Alias of `job plan`.
    Plan {
        #[command(flatten)]
        args: FileArgs,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Alias of `job stop`.
    Stop {
        #[command(flatten)]
        args: StopArgs,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Alias of `job init`.
    Init(InitArgs),
    /// Alias of `job validate`.
    Validate(FileArgs),
    /// Alias of `job inspect`.
    Inspect {
        /// Job ID or prefix.
        id: String,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with CSI volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Interacts with CSI plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Runs a built-in CSI plugin (in a job's task with a `csi_plugin` block).
    #[command(name = "csi-plugin")]
    CsiPlugin {
        #[command(subcommand)]
        plugin: CsiPluginCommand,
    },
    /// Checks this node (kernel, iptables, Docker, iSCSI, multipath, the
    /// NAS, data dir, ports, clock) and says how to fix what fails.
    Doctor {
        /// Agent config file or directory (repeatable).
        #[arg(long = "config", default_value = "/etc/berth.d")]
        config: Vec<PathBuf>,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Installs berth as a systemd service with what a NAS-backed node needs.
    Install(InstallArgs),
    /// Stops and removes what `install` added (configs and data with --purge).
    Uninstall {
        /// Also remove the configs install wrote and /var/lib/berth.
        #[arg(long)]
        purge: bool,
        /// The root to uninstall from.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Prints the version.
    Version,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Dev mode: server and client in one process on 127.0.0.1, throw-away data dir.
    #[arg(long)]
    dev: bool,
    /// Config file or directory (repeatable).
    #[arg(long)]
    config: Vec<PathBuf>,
    /// Data directory.
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// Address to bind the listeners to.
    #[arg(long)]
    bind: Option<String>,
    /// Log level (TRACE, DEBUG, INFO, WARN, ERROR).
    #[arg(long = "log-level")]
    log_level: Option<String>,
    /// Node name.
    #[arg(long)]
    node: Option<String>,
    /// Datacenter.
    #[arg(long)]
    dc: Option<String>,
    /// Servers a client joins (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Enable the server.
    #[arg(long)]
    server: bool,
    /// Enable the client.
    #[arg(long)]
    client: bool,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Writes an example job file.
    Init(InitArgs),
    /// Submits a job and monitors its evaluation.
    Run(RunArgs),
    /// Dry-runs a job: diff and scheduler result.
    Plan(FileArgs),
    /// Shows jobs or one job.
    Status {
        /// Job ID or prefix.
        id: Option<String>,
        /// Only the job's summary block.
        #[arg(long)]
        short: bool,
        /// Full IDs and times.
        #[arg(long)]
        verbose: bool,
    },
    /// Stops a job.
    Stop(StopArgs),
    /// Checks a job file without submitting it.
    Validate(FileArgs),
    /// Prints a registered job as JSON.
    Inspect {
        /// Job ID or prefix.
        id: String,
    },
    /// Dispatches a parameterized job with a payload and meta.
    Dispatch {
        /// Meta key=value for the child (repeatable).
        #[arg(long)]
        meta: Vec<String>,
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Put into the child's ID: `<job>/dispatch-<prefix>-<time>-<hex>`.
        #[arg(long = "id-prefix-template", default_value = "")]
        id_prefix_template: String,
        /// Dispatch only once per token: a second dispatch with it answers
        /// the child the first one made.
        #[arg(long = "idempotency-token", default_value = "")]
        idempotency_token: String,
        /// Parameterized job ID or prefix.
        id: String,
        /// Payload file, or - for stdin.
        input: Option<String>,
    },
    /// Changes a group's count: `job scale <job> [<group>] <count>`.
    Scale {
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Job ID or prefix.
        id: String,
        /// The group (optional when the job has one), then the count.
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Periodic job actions.
    Periodic {
        #[command(subcommand)]
        command: PeriodicCommand,
    },
    /// Shows the job's versions.
    History {
        /// With each version's diff against the one before.
        #[arg(short = 'p')]
        diffs: bool,
        /// Only this version.
        #[arg(long)]
        version: Option<u64>,
        /// Job ID or prefix.
        id: String,
    },
    /// Registers an earlier version's specification as the job's next.
    Revert {
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Job ID or prefix.
        id: String,
        /// The version to go back to.
        version: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PeriodicCommand {
    /// Launches a periodic job now.
    Force {
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Periodic job ID or prefix.
        id: String,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Write the short example.
    #[arg(long)]
    short: bool,
    /// File to write (default example.nomad.hcl).
    file: Option<String>,
}

#[derive(Debug, Args)]
struct FileArgs {
    /// Job file, or - for stdin.
    file: String,
    /// Variable assignment name=value (repeatable).
    #[arg(long)]
    var: Vec<String>,
    /// File of variable values, HCL or JSON (repeatable; later files win,
    /// -var wins over all, NOMAD_VAR_<name> loses to all).
    #[arg(long)]
    var_file: Vec<String>,
    /// The file is API JSON.
    #[arg(long)]
    json: bool,
    /// Accepted for compatibility: HCL1-era forms are always understood.
    #[arg(long)]
    hcl1: bool,
    /// More output.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Do not monitor the evaluation.
    #[arg(long)]
    detach: bool,
    /// Only register if the job's modify index matches (0: only if new).
    #[arg(long = "check-index")]
    check_index: Option<u64>,
    /// Print the job as API JSON instead of submitting it.
    #[arg(long)]
    output: bool,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// Job ID or prefix.
    id: String,
    /// Remove the job from the state entirely.
    #[arg(long)]
    purge: bool,
    /// Do not monitor the evaluation.
    #[arg(long)]
    detach: bool,
    /// Do not ask for confirmation on a prefix match.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Subcommand)]
enum AllocCommand {
    /// Shows an allocation.
    Status {
        /// Allocation ID or prefix.
        id: String,
        /// Tasks table only.
        #[arg(long)]
        short: bool,
        /// Full IDs and placement metrics.
        #[arg(long)]
        verbose: bool,
        /// Detailed resource usage of each task.
        #[arg(long)]
        stats: bool,
    },
    /// Prints or follows a task's logs.
    Logs(LogsArgs),
    /// Sends a signal to an allocation's tasks (all of them unless one is
    /// named).
    Signal {
        /// The signal (Nomad's default: SIGKILL).
        #[arg(short = 's', default_value = "SIGKILL")]
        signal: String,
        /// Task name, as a flag.
        #[arg(long = "task")]
        task_flag: Option<String>,
        /// Allocation ID or prefix.
        alloc: String,
        /// Task name.
        task: Option<String>,
    },
    /// Restarts an allocation's tasks in place (all of them unless one is
    /// named), outside their restart policy.
    Restart {
        /// Task name, as a flag.
        #[arg(long = "task")]
        task_flag: Option<String>,
        /// Every task, whether running or not.
        #[arg(long = "all-tasks")]
        all_tasks: bool,
        /// Allocation ID or prefix.
        alloc: String,
        /// Task name.
        task: Option<String>,
    },
    /// Stops an allocation; the scheduler places a replacement.
    Stop {
        /// Print the evaluation ID and return at once.
        #[arg(long)]
        detach: bool,
        /// Allocation ID or prefix.
        alloc: String,
    },
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// Allocation ID or prefix.
    alloc: String,
    /// Task name (optional when the group has one task).
    task: Option<String>,
    /// Task name, as a flag.
    #[arg(long = "task")]
    task_flag: Option<String>,
    /// Show stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// Accepted for compatibility: stdout is the default.
    #[arg(long)]
    stdout: bool,
    /// Follow the output.
    #[arg(short = 'f')]
    follow: bool,
    /// Show only the end of the output.
    #[arg(long)]
    tail: bool,
    /// Lines to show with -tail.
    #[arg(short = 'n', default_value_t = 10)]
    lines: usize,
    /// Bytes to show with -tail.
    #[arg(short = 'c')]
    bytes: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Shows nodes or one node.
    Status {
        /// Node ID or prefix.
        id: Option<String>,
        /// Full IDs, addresses and versions.
        #[arg(long)]
        verbose: bool,
        /// The node of the agent being asked.
        #[arg(long = "self")]
        self_node: bool,
    },
    /// Drains a node: moves its allocations elsewhere, at each group's
    /// migrate pace, and keeps new ones off it.
    Drain(NodeDrainArgs),
    /// Marks a node eligible or ineligible for new allocations.
    Eligibility {
        #[arg(long)]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[arg(long = "self")]
        self_node: bool,
        /// Node ID or prefix.
        id: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct NodeDrainArgs {
    /// Start a drain.
    #[arg(long)]
    enable: bool,
    /// Cancel a drain (the node becomes eligible unless -keep-ineligible).
    #[arg(long)]
    disable: bool,
    /// Follow a running drain.
    #[arg(long)]
    monitor: bool,
    /// How long the drain may take before what is left is stopped.
    #[arg(long, default_value = "1h")]
    deadline: String,
    /// Stop everything now (a deadline of now).
    #[arg(long)]
    force: bool,
    /// Wait as long as allocations take to move.
    #[arg(long)]
    no_deadline: bool,
    /// Leave system jobs' allocations on the node.
    #[arg(long)]
    ignore_system: bool,
    /// With -disable: leave the node ineligible.
    #[arg(long)]
    keep_ineligible: bool,
    /// Return once the drain is set, without following it.
    #[arg(long)]
    detach: bool,
    /// Enable without asking.
    #[arg(long)]
    yes: bool,
    /// A message recorded with the drain.
    #[arg(short = 'm')]
    message: Option<String>,
    /// `key=value` recorded with the drain (repeatable).
    #[arg(long)]
    meta: Vec<String>,
    #[arg(long = "self")]
    self_node: bool,
    /// Node ID or prefix.
    id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Creates a volume in its plugin's provider and registers it (or expands it).
    Create {
        /// Volume specification file (HCL or JSON), or - for stdin.
        file: String,
    },
    /// Registers a volume that exists in the provider.
    Register {
        /// Volume specification file (HCL or JSON), or - for stdin.
        file: String,
    },
    /// Shows volumes or one volume, with who holds its claims.
    Status {
        /// Volume ID.
        id: Option<String>,
        /// Full IDs and topologies.
        #[arg(long)]
        verbose: bool,
        /// Accepted for compatibility: only CSI volumes exist.
        #[arg(long = "type")]
        volume_type: Option<String>,
    },
    /// Deletes a volume in the provider, then deregisters it.
    Delete {
        /// Volume ID.
        id: String,
        /// Secret key=value for the plugin (repeatable).
        #[arg(long)]
        secret: Vec<String>,
        /// Accepted for compatibility: only CSI volumes exist.
        #[arg(long = "type")]
        volume_type: Option<String>,
    },
    /// Forgets a volume (it stays in the provider).
    Deregister {
        /// Volume ID.
        id: String,
        /// Also drop the claims of stopped allocations.
        #[arg(long)]
        force: bool,
    },
    /// Releases the claims stopped allocations hold on a node.
    Detach {
        /// Volume ID.
        id: String,
        /// Node ID or prefix.
        node: String,
    },
    /// Snapshots.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Writes a `volume register` spec for each volume a Synology NAS
    /// already holds (made by democratic-csi or berth), read with the
    /// synology-iscsi YAML; talks to the NAS, not to an agent.
    #[command(name = "import-synology")]
    ImportSynology {
        /// democratic-csi's synology-iscsi YAML for the NAS.
        #[arg(long = "driver-config-file")]
        driver_config_file: std::path::PathBuf,
        /// Write `<id>.hcl` files here (else print them).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The plugin_id the specs name.
        #[arg(long = "plugin-id", default_value = "synology")]
        plugin_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Snapshots a volume.
    Create {
        /// Volume ID.
        volume: String,
        /// Snapshot name.
        name: Option<String>,
    },
    /// Lists a plugin's snapshots.
    List {
        /// Plugin ID.
        #[arg(long)]
        plugin: String,
        /// Only snapshots of this volume.
        #[arg(long)]
        volume: Option<String>,
    },
    /// Deletes a snapshot.
    Delete {
        /// Plugin ID.
        plugin: String,
        /// Snapshot ID.
        snapshot: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Shows plugins or one plugin.
    Status {
        /// Plugin ID.
        id: Option<String>,
        /// Accepted for compatibility: only CSI plugins exist.
        #[arg(long = "type")]
        plugin_type: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CsiPluginCommand {
    /// Volumes as directories or loop-attached image files on this node.
    Local {
        /// Socket to serve on (default: $CSI_ENDPOINT).
        #[arg(long)]
        endpoint: Option<String>,
        /// Where volumes, snapshots and node records are kept.
        #[arg(long = "state-dir")]
        state_dir: PathBuf,
        /// This node's ID for topology (default: the host name).
        #[arg(long = "node-id")]
        node_id: Option<String>,
    },
    /// iSCSI LUNs on a Synology NAS (democratic-csi's synology-iscsi YAML).
    Synology(SynologyPluginArgs),
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// Write the server config (the default when neither role is given).
    #[arg(long)]
    server: bool,
    /// Write the client config.
    #[arg(long)]
    client: bool,
    /// Servers a client joins, comma-separated host:port.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// democratic-csi's synology-iscsi YAML for the built-in Synology plugin.
    #[arg(long)]
    synology: Option<PathBuf>,
    /// Install into this root (a chroot) instead of /.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The binary to install (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Do not install apt packages.
    #[arg(long = "no-packages")]
    no_packages: bool,
    /// Do not start services.
    #[arg(long = "no-start")]
    no_start: bool,
}

#[derive(Debug, Args)]
struct SynologyPluginArgs {
    /// Socket to serve on (default: $CSI_ENDPOINT).
    #[arg(long)]
    endpoint: Option<String>,
    /// democratic-csi's `synology-iscsi` driver config file, unchanged.
    #[arg(long = "driver-config-file")]
    driver_config_file: PathBuf,
    /// Where the node keeps its staging records and userspace-initiator files.
    #[arg(long = "state-dir", default_value = "/var/lib/berth/csi-synology")]
    state_dir: PathBuf,
    /// This node's ID (default: the host name).
    #[arg(long = "node-id")]
    node_id: Option<String>,
    /// iSCSI initiator: auto, open-iscsi or userspace.
    #[arg(long, default_value = "auto")]
    initiator: csi::iscsi::Initiator,
    /// Serve only Identity and Controller (a controller-only deployment).
    #[arg(long = "controller-only")]
    controller_only: bool,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Lists the registered services and their tags.
    List,
    /// Shows the instances of one service, with their checks.
    Info {
        /// Every field of each instance.
        #[arg(long)]
        verbose: bool,
        /// Service name.
        name: String,
    },
    /// Removes one registration (its client registers it again while it runs).
    Delete {
        /// Service name.
        name: String,
        /// Registration ID.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeploymentCommand {
    /// Lists deployments.
    List {
        /// Full IDs.
        #[arg(long)]
        verbose: bool,
    },
    /// Shows a deployment.
    Status {
        /// With its allocations and full IDs.
        #[arg(long)]
        verbose: bool,
        /// Deployment ID or prefix.
        id: String,
    },
    /// Promotes the canaries of a deployment (all groups unless -group).
    Promote {
        /// A group to promote (repeatable).
        #[arg(long)]
        group: Vec<String>,
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Deployment ID or prefix.
        id: String,
    },
    /// Marks a deployment failed (rolling back when it auto-reverts).
    Fail {
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Deployment ID or prefix.
        id: String,
    },
    /// Pauses a deployment: nothing more is replaced until it resumes.
    Pause {
        /// Deployment ID or prefix.
        id: String,
    },
    /// Resumes a paused deployment.
    Resume {
        /// Do not monitor the evaluation.
        #[arg(long)]
        detach: bool,
        /// Deployment ID or prefix.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Lists the servers.
    Members,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Shows an evaluation.
    Status {
        /// Evaluation ID or prefix.
        id: String,
    },
}

/// Rewrites Nomad's single-dash long flags (`-dev`, `-address=x`) into
/// clap's `--dev`; short flags (`-f`, `-n`), `-` and negative numbers stay,
/// and so does everything after `--` and the child command of `var lock`
/// (`berth var lock locks/a ls -la`).
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    /// `var lock`'s flags that take the next argument as their value.
    const LOCK_VALUE_FLAGS: &[&str] = &["ttl", "delay", "backoff", "shell", "address", "region", "namespace", "token"];
    let mut out: Vec<OsString> = Vec::new();
    let mut passthrough = false;
    // For `var lock`: positionals seen after `lock`, and whether the next
    // argument is a flag's value.
    let mut lock_positionals: Option<usize> = None;
    let mut value_next = false;
    for arg in args {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if passthrough || s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        if let Some(seen) = lock_positionals.as_mut() {
            if value_next {
                value_next = false;
            } else if let Some(flag) = s.strip_prefix('-').map(|f| f.trim_start_matches('-')) {
                value_next = !flag.contains('=') && LOCK_VALUE_FLAGS.contains(&flag);
            } else {
                *seen += 1;
                if *seen == 2 {
                    passthrough = true;
                    out.push(arg);
                    continue;
                }
            }
        }
        let long_single = s.starts_with('-') && !s.starts_with("--") && s.len() > 2 && s[1..].parse::<f64>().is_err();
        let starts_lock = s == "lock" && out.len() == 2 && out[1] == "var";
        out.push(if long_single { OsString::from(format!("-{s}")) } else { arg });
        if starts_lock {
            lock_positionals = Some(0);
        }
    }
    out
}

fn input<'a>(args: &'a FileArgs) -> job::JobInput<'a> {
    job::JobInput { file: &args.file, vars: &args.var, var_files: &args.var_file, json: args.json }
}

/// `node drain`'s flags as the request wants them.
fn drain_args(a: &NodeDrainArgs) -> Result<drain::DrainArgs, String> {
    if a.force && a.no_deadline {
        return Err("-force and -no-deadline are mutually exclusive".into());
    }
    let deadline = match (a.force, a.no_deadline) {
        (true, _) => -1,
        (_, true) => 0,
        _ => crate::util::parse_duration(&a.deadline).map_err(|e| format!("Failed to parse deadline: {e}"))?,
    };
    let mut meta = std::collections::BTreeMap::new();
    for pair in &a.meta {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("Error parsing -meta {pair:?}: want key=value"))?;
        meta.insert(k.to_string(), v.to_string());
    }
    if let Some(message) = &a.message {
        meta.insert("message".into(), message.clone());
    }
    Ok(drain::DrainArgs {
        enable: a.enable,
        disable: a.disable,
        deadline,
        ignore_system: a.ignore_system,
        keep_ineligible: a.keep_ineligible,
        detach: a.detach,
        monitor: a.monitor,
        yes: a.yes,
        meta,
    })
}

fn client(flags: &ApiFlags) -> ApiClient {
    ApiClient::new(&resolve_address(flags.address.as_deref()))
}

fn agent_options(a: AgentArgs) -> AgentOptions {
    AgentOptions {
        dev: a.dev,
        configs: a.config,
        data_dir: a.data_dir,
        bind: a.bind,
        log_level: a.log_level,
        node: a.node,
        datacenter: a.dc,
        servers: a.servers,
        server: a.server,
        client: a.client,
    }
}

async fn logs(api: &ApiClient, a: &LogsArgs) -> i32 {
    let opts = alloc::LogsOptions {
        task: a.task_flag.as_deref().or(a.task.as_deref()),
        stderr: a.stderr,
        follow: a.follow,
        tail: a.tail,
        lines: a.lines,
        bytes: a.bytes,
    };
    alloc::logs(api, &a.alloc, opts).await
}

/// True when the command is a long-running server: the agent or a
/// built-in CSI plugin (multi-threaded runtime).
pub fn is_agent(cli: &Cli) -> bool {
    matches!(cli.command, Command::Agent(_) | Command::CsiPlugin { .. })
}

/// Prints an install/uninstall report; 1 on failure.
fn report_steps(what: &str, result: Result<crate::install::Report, String>) -> i32 {
    match result {
        Ok(report) => {
            print!("{}", report.render());
            0
        }
        Err(e) => {
            eprintln!("Error: {what}: {e}");
            1
        }
    }
}

/// The socket a built-in plugin serves on: `--endpoint` or `$CSI_ENDPOINT`.
fn plugin_endpoint(endpoint: Option<String>) -> Result<String, String> {
    endpoint
        .or_else(|| std::env::var("CSI_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .ok_or_else(|| "--endpoint is required (or set CSI_ENDPOINT)".to_owned())
}

/// `--node-id`, or the host name.
fn plugin_node_id(node_id: Option<String>) -> String {
    node_id.unwrap_or_else(|| {
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn plugin_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `csi-plugin local`: serves until SIGTERM or SIGINT.
async fn csi_plugin_local(endpoint: Option<String>, state_dir: PathBuf, node_id: Option<String>) -> i32 {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).with_ansi(false).init();
    let endpoint = match plugin_endpoint(endpoint) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let config = csi::local::LocalConfig { state_dir, node_id: plugin_node_id(node_id) };
    let plugin = match csi::local::LocalPlugin::open(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error starting the local CSI plugin: {e}");
            return 1;
        }
    };
    match csi::local::serve(plugin, &endpoint, plugin_shutdown()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error serving the local CSI plugin: {e}");
            1
        }
    }
}

/// `csi-plugin synology`: the Synology provisioner (controller and iSCSI
/// node) configured by democratic-csi's YAML; serves until SIGTERM or SIGINT.
async fn csi_plugin_synology(args: SynologyPluginArgs) -> i32 {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).with_ansi(false).init();
    let started = async {
        let endpoint = plugin_endpoint(args.endpoint)?;
        let file = &args.driver_config_file;
        let yaml = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let driver =
            synology::config::DriverConfig::from_yaml(&yaml).map_err(|e| format!("{}: {e}", file.display()))?;
        let provisioner =
            synology::provisioner::Provisioner::from_config(&driver).map_err(|e| format!("{}: {e}", file.display()))?;
        let node = if args.controller_only {
            None
        } else {
            let attacher = args.initiator.attacher(&args.state_dir, None);
            let node = csi::iscsi::IscsiNode::new(plugin_node_id(args.node_id), &args.state_dir, attacher)
                .map_err(|e| e.to_string())?;
            Some(node)
        };
        Ok::<_, String>((endpoint, provisioner, node))
    };
    let (endpoint, provisioner, node) = match started.await {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("Error starting the Synology CSI plugin: {e}");
            return 1;
        }
    };
    match synology::provisioner::serve(provisioner, node, &endpoint, plugin_shutdown()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error serving the Synology CSI plugin: {e}");
            1
        }
    }
}

/// Runs a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Agent(a) => match crate::agent::run(agent_options(a)).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("==> Error starting agent: {e:#}");
                1
            }
        },
        Command::Job { command, api } => {
            let api = client(&api);
            match command {
                JobCommand::Init(a) => job::init(a.short, a.file.as_deref()),
                JobCommand::Run(a) => job::run(&api, &input(&a.file), a.detach, a.check_index, a.output).await,
                JobCommand::Plan(a) => job::plan(&api, &input(&a), a.verbose).await,
                JobCommand::Status { id, short, verbose } => job::status(&api, id.as_deref(), short, verbose).await,
                JobCommand::Stop(a) => job::stop(&api, &a.id, a.purge, a.detach, a.yes).await,
                JobCommand::Validate(a) => job::validate(&input(&a)),
                JobCommand::Inspect { id } => job::inspect(&api, &id).await,
                JobCommand::Dispatch { meta, detach, id, input, id_prefix_template, idempotency_token } => {
                    let how = children::Dispatch { meta, detach, id_prefix_template, idempotency_token };
                    children::dispatch(&api, &id, input.as_deref(), how).await
                }
                JobCommand::Scale { detach, id, args } => scale::scale(&api, &id, &args, detach).await,
                JobCommand::Periodic { command: PeriodicCommand::Force { detach, id } } => {
                    children::periodic_force(&api, &id, detach).await
                }
                JobCommand::History { diffs, version, id } => deployment::history(&api, &id, diffs, version).await,
                JobCommand::Revert { detach, id, version } => deployment::revert(&api, &id, version, detach).await,
            }
        }
        Command::Alloc { command, api } => {
            let api = client(&api);
            match command {
                AllocCommand::Status { id, short, verbose, stats } => {
                    alloc::status(&api, &id, alloc::StatusView { short, verbose, stats }).await
                }
                AllocCommand::Logs(a) => logs(&api, &a).await,
                AllocCommand::Signal { signal, task_flag, alloc: id, task } => {
                    alloc::signal(&api, &id, task_flag.as_deref().or(task.as_deref()), &signal).await
                }
                AllocCommand::Restart { task_flag, all_tasks, alloc: id, task } => {
                    alloc::restart(&api, &id, task_flag.as_deref().or(task.as_deref()), all_tasks).await
                }
                AllocCommand::Stop { detach, alloc: id } => alloc::stop(&api, &id, detach).await,
            }
        }
        Command::Logs { args, api } => logs(&client(&api), &args).await,
        Command::Node { command: NodeCommand::Status { id, verbose, self_node }, api } => {
            cluster::node_status(&client(&api), id.as_deref(), verbose, self_node).await
        }
        Command::Node { command: NodeCommand::Drain(a), api } => match drain_args(&a) {
            Ok(args) => drain::drain(&client(&api), a.id.as_deref(), a.self_node, &args).await,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Command::Node { command: NodeCommand::Eligibility { enable, disable, self_node, id }, api } => {
            drain::eligibility(&client(&api), id.as_deref(), self_node, enable, disable).await
        }
        Command::Service { command, api } => {
            let api = client(&api);
            match command {
                ServiceCommand::List => service::list_services(&api).await,
                ServiceCommand::Info { verbose, name } => service::info(&api, &name, verbose).await,
                ServiceCommand::Delete { name, id } => service::delete(&api, &name, &id).await,
            }
        }
        Command::Var { command, api } => var::run(&client(&api), command).await,
        Command::Operator { command, api } => operator::run(&client(&api), command).await,
        Command::Deployment { command, api } => {
            use deployment::Change;
            let api = client(&api);
            match command {
                DeploymentCommand::List { verbose } => deployment::list_deployments(&api, verbose).await,
                DeploymentCommand::Status { verbose, id } => deployment::status(&api, &id, verbose).await,
                DeploymentCommand::Promote { group, detach, id } => {
                    deployment::change(&api, &id, Change::Promote(group), detach).await
                }
                DeploymentCommand::Fail { detach, id } => deployment::change(&api, &id, Change::Fail, detach).await,
                DeploymentCommand::Pause { id } => deployment::change(&api, &id, Change::Pause, true).await,
                DeploymentCommand::Resume { detach, id } => deployment::change(&api, &id, Change::Resume, detach).await,
            }
        }
        Command::Server { command: ServerCommand::Members, api } => cluster::server_members(&client(&api)).await,
        Command::Eval { command: EvalCommand::Status { id }, api } => cluster::eval_status(&client(&api), &id).await,
        Command::Status { id, api } => cluster::status(&client(&api), id.as_deref()).await,
        Command::Run { args, api } => {
            job::run(&client(&api), &input(&args.file), args.detach, args.check_index, args.output).await
        }
        Command::Plan { args, api } => job::plan(&client(&api), &input(&args), args.verbose).await,
        Command::Stop { args, api } => job::stop(&client(&api), &args.id, args.purge, args.detach, args.yes).await,
        Command::Init(a) => job::init(a.short, a.file.as_deref()),
        Command::Validate(a) => job::validate(&input(&a)),
        Command::Inspect { id, api } => job::inspect(&client(&api), &id).await,
        Command::Volume { command, api } => {
            let api = client(&api);
            match command {
                VolumeCommand::Create { file } => volume::submit(&api, &file, true).await,
                VolumeCommand::Register { file } => volume::submit(&api, &file, false).await,
                VolumeCommand::Status { id, verbose, .. } => volume::status(&api, id.as_deref(), verbose).await,
                VolumeCommand::Delete { id, secret, .. } => volume::delete(&api, &id, &secret).await,
                VolumeCommand::Deregister { id, force } => volume::deregister(&api, &id, force).await,
                VolumeCommand::Detach { id, node } => volume::detach(&api, &id, &node).await,
                VolumeCommand::ImportSynology { driver_config_file, dir, plugin_id } => {
                    import::synology(&driver_config_file, dir.as_deref(), &plugin_id).await
                }
                VolumeCommand::Snapshot { command } => match command {
                    SnapshotCommand::Create { volume, name } => {
                        volume::snapshot_create(&api, &volume, name.as_deref()).await
                    }
                    SnapshotCommand::List { plugin, volume } => {
                        volume::snapshot_list(&api, &plugin, volume.as_deref()).await
                    }
                    SnapshotCommand::Delete { plugin, snapshot } => {
                        volume::snapshot_delete(&api, &plugin, &snapshot).await
                    }
                },
            }
        }
        Command::Plugin { command: PluginCommand::Status { id, .. }, api } => {
            volume::plugin_status(&client(&api), id.as_deref()).await
        }
        Command::CsiPlugin { plugin: CsiPluginCommand::Local { endpoint, state_dir, node_id } } => {
            csi_plugin_local(endpoint, state_dir, node_id).await
        }
        Command::CsiPlugin { plugin: CsiPluginCommand::Synology(args) } => csi_plugin_synology(args).await,
        Command::Doctor { config, json } => {
            let findings = crate::doctor::run(&config).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default());
            } else {
                print!("{}", crate::doctor::render(&findings));
            }
            crate::doctor::exit_code(&findings)
        }
        Command::Install(args) => {
            let binary = match args.binary.map(Ok).unwrap_or_else(std::env::current_exe) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("Error: cannot find this binary: {e}");
                    return 1;
                }
            };
            let options = crate::install::InstallOptions {
                server: args.server,
                client: args.client,
                servers: args.servers,
                synology: args.synology,
                root: args.root,
                binary,
                no_packages: args.no_packages,
                no_start: args.no_start,
            };
            report_steps("install", crate::install::install(&options))
        }
        Command::Uninstall { purge, root } => report_steps("uninstall", crate::install::uninstall(&root, purge)),
        Command::Version => {
            println!("Berth v{}", crate::VERSION);
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from)).into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn single_dash_long_flags() {
        assert_eq!(norm(&["berth", "agent", "-dev"]), ["berth", "agent", "--dev"]);
        assert_eq!(
            norm(&["berth", "job", "run", "-check-index=5", "-var", "a=-1", "x.hcl"]),
            ["berth", "job", "run", "--check-index=5", "--var", "a=-1", "x.hcl"]
        );
        assert_eq!(norm(&["berth", "logs", "-f", "-n", "5", "-"]), ["berth", "logs", "-f", "-n", "5", "-"]);
        assert_eq!(norm(&["berth", "x", "-5", "--", "-raw"]), ["berth", "x", "-5", "--", "-raw"]);
        // `var lock`'s child keeps its own flags.
        assert_eq!(
            norm(&["berth", "var", "lock", "-ttl", "20s", "-verbose", "locks/a", "ls", "-la", "-color"]),
            ["berth", "var", "lock", "--ttl", "20s", "--verbose", "locks/a", "ls", "-la", "-color"]
        );
        let cli = Cli::try_parse_from(norm(&["berth", "var", "lock", "-shell=false", "locks/a", "ls", "-la"])).unwrap();
        let Command::Var { command: var::VarCommand::Lock { shell, path, child, .. }, .. } = cli.command else {
            panic!("not var lock")
        };
        assert_eq!((shell, path.as_str(), child), (false, "locks/a", vec!["ls".to_string(), "-la".to_string()]));
    }

    #[test]
    fn command_tree_parses() {
        let cli = Cli::try_parse_from(norm(&["berth", "job", "stop", "-purge", "-address=http://x:1", "web"])).unwrap();
        assert!(matches!(cli.command, Command::Job { command: JobCommand::Stop(StopArgs { purge: true, .. }), .. }));
        let cli = Cli::try_parse_from(norm(&["berth", "alloc", "logs", "-stderr", "-tail", "-n", "3", "abcd", "web"]))
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Alloc { command: AllocCommand::Logs(LogsArgs { stderr: true, lines: 3, .. }), .. }
        ));
        assert!(Cli::try_parse_from(norm(&["berth", "node", "status", "-self"])).is_ok());
    }
}
