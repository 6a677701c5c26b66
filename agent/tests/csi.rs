//! CSI end to end: a dev agent runs the built-in local plugin as a
//! raw_exec job (the `berth` binary itself), volumes are created from spec
//! files, and real MariaDB / busybox containers mount them. Volumes are
//! sparse image files on loop devices with real filesystems.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{berth, job_file, mysql, wait_for, Agent};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A dev agent that probes plugins every second.
fn csi_agent(root: &Path, name: &str) -> Agent {
    Agent::dev_with(root, name, "client {\n  csi_plugin_probe_interval = \"1s\"\n}\n")
}

/// The local plugin's job, with its state under `state`.
fn plugin_job(root: &Path, state: &Path) -> String {
    let text = std::fs::read_to_string(example("csi-local-plugin.nomad"))
        .unwrap()
        .replace("/usr/local/bin/berth", berth())
        .replace("/var/lib/berth-csi-local", &state.display().to_string());
    job_file(root, "plugin.nomad", &text)
}

fn run_ok(agent: &Agent, args: &[&str]) -> String {
    let r = agent.cli(args);
    assert_eq!(r.code, 0, "berth {args:?}: {r:?}");
    r.stdout
}

fn wait_plugin(agent: &Agent, healthy: u64) {
    wait_for(&format!("{healthy} healthy node plugin(s)"), Duration::from_secs(30), || {
        (agent.get("/v1/plugin/csi/local")["NodesHealthy"].as_u64() == Some(healthy)).then_some(())
    });
}

fn running_alloc(agent: &Agent, job: &str) -> String {
    wait_for(&format!("job {job} running"), Duration::from_secs(120), || agent.alloc_ids(job, "running").pop())
}

/// The lines of the plugin task's stderr that record `rpc`.
fn plugin_rpcs(agent: &Agent, rpc: &str) -> usize {
    let alloc = running_alloc(agent, "csi-local");
    let r = agent.cli(&["alloc", "logs", "-stderr", &alloc, "plugin"]);
    r.stdout.lines().filter(|l| l.contains(&format!("rpc={rpc}"))).count()
}

fn volume_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("volumes")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// Removes what a test (even a failed one) leaves: containers of its
/// allocations, mounts under its directory, loop devices on its images.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let dir = self.0.display().to_string();
        let allocs = sh(&format!("ls {dir}/*/alloc 2>/dev/null"));
        for alloc in allocs.split_whitespace() {
            sh(&format!("docker ps -aq --filter name={alloc} | xargs -r docker rm -f"));
        }
        sh(&format!("grep -o ' {dir}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l"));
        sh(&format!("losetup -j {dir}/csi-state/volumes/*/image.img -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d"));
        for img in sh(&format!("ls {dir}/csi-state/volumes/*/image.img 2>/dev/null")).split_whitespace() {
            sh(&format!("losetup -j {img} -O NAME -n | xargs -r -n1 losetup -d"));
        }
    }
}

fn spec(root: &Path, name: &str, text: &str) -> String {
    job_file(root, name, text)
}

const BAD_SPECS: [(&str, &str, &str); 3] = [
    (
        "bad-mode.hcl",
        "id = \"bad\"\nname = \"bad\"\ntype = \"csi\"\nplugin_id = \"local\"\ncapability {\n  access_mode = \"single-node-everything\"\n  attachment_mode = \"file-system\"\n}\n",
        "access_mode",
    ),
    (
        "bad-plugin.hcl",
        "id = \"bad\"\nname = \"bad\"\ntype = \"csi\"\nplugin_id = \"nope\"\ncapability {\n  access_mode = \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}\n",
        "plugin_id",
    ),
    (
        "bad-size.hcl",
        "id = \"bad\"\nname = \"bad\"\ntype = \"csi\"\nplugin_id = \"local\"\ncapacity_min = \"2GiB\"\ncapacity_max = \"1GiB\"\ncapability {\n  access_mode = \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}\n",
        "capacity_min",
    ),
];

/// The workshop shape on a CSI volume: data survives purge + re-run,
/// a second writer waits for the claim, an agent restart keeps the mount
/// (no second NodeStage), and `volume delete` removes the backing file.
#[test]
fn mariadb_data_lives_on_a_local_csi_volume() {
    let root = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(root.path().to_path_buf());
    let state = root.path().join("csi-state");
    let mut agent = csi_agent(root.path(), "csi-db");
    run_ok(&agent, &["job", "run", "-detach", &plugin_job(root.path(), &state)]);
    wait_plugin(&agent, 1);
    let status = run_ok(&agent, &["plugin", "status"]);
    assert!(status.contains("local") && status.contains("berth.local") && status.contains("1/1"), "{status}");

    // Bad input names the field and creates nothing.
    for (file, text, field) in BAD_SPECS {
        let r = agent.cli(&["volume", "create", &spec(root.path(), file, text)]);
        assert_ne!(r.code, 0, "{file} accepted: {r:?}");
        assert!(r.stderr.contains(field), "{file}: error does not name {field}: {r:?}");
    }
    assert!(volume_files(&state).is_empty(), "a bad spec created something: {:?}", volume_files(&state));
    assert_eq!(agent.get("/v1/volumes?type=csi").as_array().map(Vec::len), Some(0));

    let created = run_ok(&agent, &["volume", "create", &example("mysql-volume.hcl")]);
    assert!(created.contains("Created external volume") && created.contains("with ID mysql"), "{created}");
    let status = run_ok(&agent, &["volume", "status", "mysql"]);
    assert!(status.contains("Schedulable          = true") && status.contains("1.0 GiB"), "{status}");
    assert_eq!(volume_files(&state).len(), 1);

    run_ok(&agent, &["job", "run", "-detach", &example("mysql-csi.nomad")]);
    let first = running_alloc(&agent, "mysql-csi");
    wait_for("MariaDB on its CSI volume", Duration::from_secs(120), || mysql("SELECT 1").ok());
    mysql("CREATE DATABASE berth; CREATE TABLE berth.rows (n INT); INSERT INTO berth.rows VALUES (1),(2),(3)").unwrap();
    let staged = plugin_rpcs(&agent, "NodeStageVolume");
    assert_eq!(staged, 1, "one NodeStageVolume for one volume");

    // A second single-node-writer job is not placed, and says who holds the claim.
    let second = job_file(
        root.path(),
        "second.nomad",
        &std::fs::read_to_string(example("mysql-csi.nomad"))
            .unwrap()
            .replace("job \"mysql-csi\"", "job \"mysql-second\"")
            .replace("static = 3306", "static = 3307\n        to     = 3306"),
    );
    let r = agent.cli(&["job", "run", &second]);
    let why = format!("{}{}", r.stdout, r.stderr);
    assert!(why.contains("exhausted its available writer claims"), "{why}");
    assert!(why.contains(&first[..8]), "the failure names the holder {first}: {why}");
    let claims = run_ok(&agent, &["volume", "status", "mysql"]);
    assert!(claims.contains(&first[..8]) && claims.contains("write") && claims.contains("taken"), "{claims}");

    // Agent restart while mounted: the claim and the mount stay, no second stage.
    agent.kill();
    agent.start();
    wait_plugin(&agent, 1);
    assert_eq!(running_alloc(&agent, "mysql-csi"), first);
    assert_eq!(mysql("SELECT COUNT(*) FROM berth.rows").unwrap(), "3");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(plugin_rpcs(&agent, "NodeStageVolume"), staged, "the restarted agent staged again");
    let claims = run_ok(&agent, &["volume", "status", "mysql"]);
    assert!(claims.contains(&first[..8]), "claim lost across the restart: {claims}");

    // The first job stops: the second takes the volume.
    run_ok(&agent, &["job", "stop", "-purge", "mysql-csi"]);
    let taker = running_alloc(&agent, "mysql-second");
    wait_for("MariaDB of the second job", Duration::from_secs(120), || {
        Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                "3307",
                "-uroot",
                "-ppassword",
                "-N",
                "-e",
                "SELECT COUNT(*) FROM berth.rows",
            ])
            .output()
            .ok()
            .filter(|o| String::from_utf8_lossy(&o.stdout).trim() == "3")
    });
    run_ok(&agent, &["job", "stop", "-purge", "mysql-second"]);
    wait_for("the second job's claim to end", Duration::from_secs(60), || {
        (!run_ok(&agent, &["volume", "status", "mysql"]).contains(&taker[..8])).then_some(())
    });

    // Purge and run again: the rows are still there.
    run_ok(&agent, &["job", "run", "-detach", &example("mysql-csi.nomad")]);
    running_alloc(&agent, "mysql-csi");
    wait_for("the rows after a purge and re-run", Duration::from_secs(120), || {
        mysql("SELECT COUNT(*) FROM berth.rows").ok().filter(|n| n == "3")
    });

    // In use: delete is refused; stopped: delete removes the backing file.
    let r = agent.cli(&["volume", "delete", "mysql"]);
    assert!(r.code != 0 && r.stderr.contains("in use"), "{r:?}");
    run_ok(&agent, &["job", "stop", "-purge", "mysql-csi"]);
    wait_for("the volume to be deletable", Duration::from_secs(60), || {
        (agent.cli(&["volume", "delete", "mysql"]).code == 0).then_some(())
    });
    assert!(volume_files(&state).is_empty(), "backing file left: {:?}", volume_files(&state));
    assert!(sh(&format!("losetup -j {}/volumes/*/image.img", state.display())).is_empty());
    run_ok(&agent, &["job", "stop", "-purge", "csi-local"]);
}

/// A busybox job on a volume of the plugin.
fn shell_job(id: &str, volume: &str) -> String {
    format!(
        r#"job "{id}" {{
  group "g" {{
    volume "data" {{
      type            = "csi"
      source          = "{volume}"
      access_mode     = "single-node-writer"
      attachment_mode = "file-system"
    }}
    task "t" {{
      driver = "docker"
      config {{
        image   = "berth-test/tiny:latest"
        command = "/bin/sh"
        args    = ["-c", "echo ready > /data/ready; sleep 3600"]
      }}
      volume_mount {{
        volume      = "data"
        destination = "/data"
      }}
      resources {{
        cpu    = 50
        memory = 32
      }}
    }}
  }}
}}
"#
    )
}

fn data_size_kib(alloc: &str) -> u64 {
    let out = sh(&format!("docker exec t-{alloc} df -k /data | tail -1"));
    out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("df: {out:?}"))
}

/// A stopped plugin makes its volumes unschedulable with that reason; once
/// it runs again, the job is placed. Growing `capacity_min` grows the
/// filesystem the task sees (XFS grows online).
#[test]
fn plugin_health_gates_placement_and_expansion_grows_the_task_filesystem() {
    let root = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(root.path().to_path_buf());
    let state = root.path().join("csi-state");
    let agent = csi_agent(root.path(), "csi-grow");
    let plugin = plugin_job(root.path(), &state);
    run_ok(&agent, &["job", "run", "-detach", &plugin]);
    wait_plugin(&agent, 1);
    let volume = |size: &str| {
        format!(
            "id = \"scratch\"\nname = \"scratch\"\ntype = \"csi\"\nplugin_id = \"local\"\ncapacity_min = \"{size}\"\n\
             capability {{\n  access_mode = \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}}\n\
             mount_options {{\n  fs_type = \"xfs\"\n}}\nparameters {{\n  backing = \"image\"\n  fs_type = \"xfs\"\n}}\n"
        )
    };
    run_ok(&agent, &["volume", "create", &spec(root.path(), "scratch.hcl", &volume("320MiB"))]);

    // Plugin stopped: unhealthy, and placement fails saying so.
    run_ok(&agent, &["job", "stop", "csi-local"]);
    wait_plugin(&agent, 0);
    let detail = run_ok(&agent, &["plugin", "status", "local"]);
    assert!(detail.contains("false") && detail.contains("stopped"), "{detail}");
    let job = job_file(root.path(), "shell.nomad", &shell_job("shell", "scratch"));
    let r = agent.cli(&["job", "run", &job]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("CSI plugin local is unhealthy"), "{out}");

    // Plugin back: the blocked job is placed.
    run_ok(&agent, &["job", "run", "-detach", &plugin]);
    let alloc = running_alloc(&agent, "shell");
    wait_for("the task to write to its volume", Duration::from_secs(30), || {
        (sh(&format!("docker exec t-{alloc} cat /data/ready")) == "ready").then_some(())
    });

    let before = data_size_kib(&alloc);
    run_ok(&agent, &["volume", "create", &spec(root.path(), "scratch.hcl", &volume("640MiB"))]);
    let after = data_size_kib(&alloc);
    assert!(after > before + 250 * 1024, "filesystem did not grow: {before} KiB -> {after} KiB");
    let status = run_ok(&agent, &["volume", "status", "scratch"]);
    assert!(status.contains("640.0 MiB"), "{status}");

    // Snapshots: create, list, delete through the CLI.
    let created = run_ok(&agent, &["volume", "snapshot", "create", "scratch", "before-delete"]);
    let snap_id = created.split_whitespace().find(|w| w.starts_with("snap-")).expect("snapshot ID").to_string();
    let listed = run_ok(&agent, &["volume", "snapshot", "list", "-plugin", "local"]);
    assert!(listed.contains(&snap_id) && listed.contains("true"), "{listed}");
    run_ok(&agent, &["volume", "snapshot", "delete", "local", &snap_id]);
    let listed = agent.cli(&["volume", "snapshot", "list", "-plugin", "local"]);
    assert!(!listed.stdout.contains(&snap_id), "{listed:?}");

    run_ok(&agent, &["job", "stop", "-purge", "shell"]);
    wait_for("the volume to be deletable", Duration::from_secs(60), || {
        (agent.cli(&["volume", "delete", "scratch"]).code == 0).then_some(())
    });
    run_ok(&agent, &["job", "stop", "-purge", "csi-local"]);
}

/// A job whose volume claim waits (the volume's holder is still stopping:
/// its task takes up to 30 s) is stopped: its allocation ends within
/// seconds, mounting nothing, while the holder is still stopping.
#[test]
fn a_job_stopped_while_its_volume_claim_waits_ends_within_seconds() {
    let root = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(root.path().to_path_buf());
    let state = root.path().join("csi-state");
    let agent = csi_agent(root.path(), "csi-wait");
    run_ok(&agent, &["job", "run", "-detach", &plugin_job(root.path(), &state)]);
    wait_plugin(&agent, 1);
    let volume =
        "id = \"shared\"\nname = \"shared\"\ntype = \"csi\"\nplugin_id = \"local\"\ncapacity_min = \"64MiB\"\n\
                  capability {\n  access_mode = \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}\n\
                  parameters {\n  backing = \"image\"\n}\n";
    run_ok(&agent, &["volume", "create", &spec(root.path(), "shared.hcl", volume)]);
    // A shell as PID 1 ignores SIGTERM: the holder's stop waits out kill_timeout.
    let holder = shell_job("holder", "shared")
        .replace("driver = \"docker\"", "driver = \"docker\"\n      kill_timeout = \"30s\"");
    run_ok(&agent, &["job", "run", "-detach", &job_file(root.path(), "holder.nomad", &holder)]);
    let held = running_alloc(&agent, "holder");
    run_ok(&agent, &["job", "stop", "-detach", "holder"]);
    run_ok(&agent, &["job", "run", "-detach", &job_file(root.path(), "waiter.nomad", &shell_job("waiter", "shared"))]);
    let waiter = wait_for("the waiter's claim to wait", Duration::from_secs(30), || {
        let waiting = agent.log().contains("waiting for CSI volume claim");
        agent.alloc_ids("waiter", "pending").pop().filter(|_| waiting)
    });

    run_ok(&agent, &["job", "stop", "-detach", "waiter"]);
    wait_for("the waiting allocation to complete", Duration::from_secs(5), || {
        (agent.get(&format!("/v1/allocation/{waiter}"))["ClientStatus"] == "complete").then_some(())
    });
    assert_eq!(agent.get(&format!("/v1/allocation/{held}"))["ClientStatus"], "running", "the holder stopped first");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&waiter), "the stopped waiter mounted the volume");
    wait_for("the stopped waiter's claim to end", Duration::from_secs(5), || {
        (!run_ok(&agent, &["volume", "status", "shared"]).contains(&waiter[..8])).then_some(())
    });
}
