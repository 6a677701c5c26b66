//! The Synology provisioner end to end: a dev agent with the built-in
//! plugin (`plugin "synology"`) pointed at dsm-sim, which exports its LUNs
//! through its own tgtd; the node attaches them with the userspace
//! initiator (this kernel has no iscsi_tcp); real MariaDB keeps its data
//! on the LUN. Also: a session expiring in the middle of a create, the
//! agent killed between LUN create and target map, DSM down, a wrong
//! password, and a re-registered volume that must not be reformatted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::synology::{
    example, initiators, run_ok, running_alloc, sh, synology_agent, wait_plugin, Leftovers, Nas, PASSWORD,
};
use common::{job_file, mysql, wait_for, Agent};
use synology::dsm::DsmClient;
use synology::sim::FaultsUpdate;

fn stop_and_release(agent: &Agent, job: &str, alloc: &str) {
    run_ok(agent, &["job", "stop", "-purge", job]);
    wait_for("the claim to end", Duration::from_secs(60), || {
        (!run_ok(agent, &["volume", "status", "mysql"]).contains(&alloc[..8])).then_some(())
    });
}

/// The acceptance path: create from the spec file, MariaDB on the LUN,
/// rows survive purge + re-run and a deregister + register (never
/// reformatted), delete leaves nothing on the NAS or the node.
#[test]
fn mariadb_keeps_its_rows_on_a_synology_lun() {
    let root = tempfile::tempdir().unwrap();
    let nas = Nas::start(root.path());
    let _leftovers = Leftovers(root.path().to_path_buf());
    let agent = synology_agent(root.path(), "syno-db", &nas.yaml(PASSWORD), "2s");
    wait_plugin(&agent);
    let status = run_ok(&agent, &["plugin", "status"]);
    assert!(status.contains("synology") && status.contains("berth.synology"), "{status}");

    let created = run_ok(&agent, &["volume", "create", &example("storage-mysql.hcl")]);
    assert!(created.contains("with ID mysql"), "{created}");
    assert_eq!(nas.counts(), (1, 1), "one LUN and one target on the NAS");
    let volume = agent.get("/v1/volume/csi/mysql");
    assert_eq!(volume["Capacity"].as_u64(), Some(3 << 30), "{volume}");
    let context = volume["Context"].clone();
    assert_eq!(context["node_attach_driver"], "iscsi");
    assert!(!volume.to_string().contains(PASSWORD), "the NAS password leaked into the API");

    run_ok(&agent, &["job", "run", "-detach", &example("mysql-csi.nomad")]);
    let first = running_alloc(&agent, "mysql-csi");
    wait_for("MariaDB on the LUN", Duration::from_secs(180), || mysql("SELECT 1").ok());
    mysql("CREATE DATABASE berth; CREATE TABLE berth.rows (n INT); INSERT INTO berth.rows VALUES (1),(2),(3)").unwrap();
    assert_eq!(nas.sessions(), 1, "one iSCSI session for the mounted LUN");
    stop_and_release(&agent, "mysql-csi", &first);
    assert_eq!((initiators(root.path()), nas.sessions()), (0, 0), "unstaged: initiator gone, logged out");

    run_ok(&agent, &["job", "run", "-detach", &example("mysql-csi.nomad")]);
    let second = running_alloc(&agent, "mysql-csi");
    wait_for("the rows after a purge and re-run", Duration::from_secs(180), || {
        mysql("SELECT COUNT(*) FROM berth.rows").ok().filter(|n| n == "3")
    });
    stop_and_release(&agent, "mysql-csi", &second);

    // Deregister and register the same LUN again: it is mounted, not formatted.
    run_ok(&agent, &["volume", "deregister", "mysql"]);
    let mut register = String::from(
        "id = \"mysql\"\nname = \"mysql\"\ntype = \"csi\"\nplugin_id = \"synology\"\nexternal_id = \"mysql\"\n\
         capability {\n  access_mode = \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}\n\
         mount_options {\n  fs_type = \"ext4\"\n}\ncontext {\n",
    );
    for (key, value) in context.as_object().unwrap() {
        register.push_str(&format!("  {key} = {value}\n"));
    }
    register.push_str("}\n");
    run_ok(&agent, &["volume", "register", &job_file(root.path(), "register.hcl", &register)]);
    run_ok(&agent, &["job", "run", "-detach", &example("mysql-csi.nomad")]);
    let third = running_alloc(&agent, "mysql-csi");
    wait_for("the rows on the re-registered volume", Duration::from_secs(180), || {
        mysql("SELECT COUNT(*) FROM berth.rows").ok().filter(|n| n == "3")
    });
    stop_and_release(&agent, "mysql-csi", &third);

    run_ok(&agent, &["volume", "delete", "mysql"]);
    assert_eq!(nas.counts(), (0, 0), "LUN and target gone");
    assert_eq!((initiators(root.path()), nas.sessions()), (0, 0), "no initiator or session left");
    let records = sh(&format!("ls {}/syno-db/client/csi/builtin/synology/node/staged", root.path().display()));
    assert!(records.is_empty(), "stage records left: {records}");
    metrics_tell_the_volume_lifecycle(&agent);
}

/// After a create, three mounts and a delete, `/v1/metrics` in Prometheus
/// text parses line by line and holds the storage series: CSI calls by
/// RPC, DSM calls by API, iSCSI attaches and no session left, the plugin's
/// health, HTTP requests and plan timings.
fn metrics_tell_the_volume_lifecycle(agent: &Agent) {
    let text = agent.text("/v1/metrics?format=prometheus");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let sample_lines = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    assert_eq!(scrape.samples.len(), sample_lines, "every sample line parses:\n{text}");
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in:\n{text}"))
    };
    assert_eq!(value("berth_csi_rpc_count", &[("rpc", "NodeStageVolume")]), 3.0, "three stages");
    assert_eq!(value("berth_csi_rpc_count", &[("rpc", "CreateVolume")]), 1.0);
    assert!(value("berth_csi_rpc_sum", &[("rpc", "NodePublishVolume")]) > 0.0);
    assert!(value("berth_dsm_call_count", &[("api", "SYNO.Core.ISCSI.LUN"), ("method", "create")]) >= 1.0);
    assert!(value("berth_dsm_call_count", &[("api", "SYNO.Core.ISCSI.LUN"), ("method", "delete")]) >= 1.0);
    let failed: Vec<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "berth_dsm_call_errors")
        .map(|s| format!("{:?}", s.labels))
        .collect();
    assert!(failed.is_empty(), "a fault-free lifecycle fails no DSM call (\"no such LUN\" is an answer): {failed:?}");
    assert_eq!(value("berth_iscsi_attach_count", &[]), 3.0, "three attaches");
    assert_eq!(value("berth_iscsi_sessions", &[]), 0.0, "no session left");
    assert_eq!(value("berth_csi_plugin_nodes_healthy", &[("plugin_id", "synology")]), 1.0);
    assert!(value("berth_http_request_count", &[("route", "/v1/jobs"), ("method", "PUT")]) >= 3.0);
    assert!(value("nomad_nomad_plan_apply_count", &[]) >= 1.0);
}

/// Failures on the way to the NAS: a session expiring mid-create, the agent
/// killed between LUN create and target map, DSM down, a wrong password.
#[test]
fn creates_survive_expiry_and_crashes_and_fail_fast_when_the_nas_cannot_serve() {
    let root = tempfile::tempdir().unwrap();
    let mut nas = Nas::start(root.path());
    let _leftovers = Leftovers(root.path().to_path_buf());
    let mut agent = synology_agent(root.path(), "syno-faults", &nas.yaml(PASSWORD), "30s");
    wait_plugin(&agent);
    let spec = |name: &str| {
        let text = std::fs::read_to_string(example("storage-mysql.hcl"))
            .unwrap()
            .replace("id        = \"mysql\"", &format!("id        = \"{name}\""))
            .replace("name      = \"mysql\"", &format!("name      = \"{name}\""));
        job_file(root.path(), &format!("{name}.hcl"), &text)
    };

    // The session expires after the first SAN call of the create.
    let logins = nas.sim().stats().logins;
    nas.inject(FaultsUpdate { expire_sessions_after_calls: Some(1), ..Default::default() });
    run_ok(&agent, &["volume", "create", &spec("expiry")]);
    assert_eq!(nas.sim().stats().logins - logins, 1, "one re-login");
    assert_eq!(nas.counts(), (1, 1), "created once");

    // Killed while the target create is in flight (after the LUN exists).
    nas.inject(FaultsUpdate {
        stall_method: Some("SYNO.Core.ISCSI.Target.create".into()),
        stall_ms: Some(60_000),
        ..Default::default()
    });
    let mut create = Command::new(common::berth())
        .args(["volume", "create", &format!("-address=http://127.0.0.1:{}", agent.http), &spec("crash")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the LUN of the interrupted create", Duration::from_secs(30), || (nas.counts().0 == 2).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    agent.kill();
    let _ = create.kill();
    let _ = create.wait();
    assert_eq!(nas.counts(), (2, 1), "killed between LUN create and target map");
    nas.inject(FaultsUpdate { stall_method: Some(String::new()), ..Default::default() });
    agent.start();
    wait_plugin(&agent);
    run_ok(&agent, &["volume", "create", &spec("crash")]);
    assert_eq!(nas.counts(), (2, 2), "exactly one LUN and one target per volume");

    // DSM down: fails fast, names the NAS, and leaves nothing.
    nas.down();
    let started = Instant::now();
    let r = agent.cli(&["volume", "create", &spec("down")]);
    assert_ne!(r.code, 0, "{r:?}");
    eprintln!("DSM down, after {:?}: {}", started.elapsed(), r.stderr.trim());
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let port = nas.config.listen.port().to_string();
    assert!(r.stderr.contains(&port) || r.stderr.contains("DSM"), "{r:?}");
    nas.up();
    assert_eq!(nas.counts(), (2, 2), "nothing half-made while DSM was down");
    assert_eq!(agent.get("/v1/volumes?type=csi").as_array().map(Vec::len), Some(2));

    // Wrong password: the plugin says the credentials were refused; a create fails.
    agent.kill();
    std::fs::write(root.path().join("syno-faults-synology-iscsi.yaml"), nas.yaml("not-the-password")).unwrap();
    agent.start();
    let why = wait_for("the plugin to report the refused login", Duration::from_secs(30), || {
        let plugin = agent.get("/v1/plugin/csi/synology");
        let text = plugin.to_string();
        text.contains("400").then_some(text)
    });
    assert!(why.contains("password"), "{why}");
    assert!(!why.contains("not-the-password"), "the password leaked: {why}");
    let r = agent.cli(&["volume", "create", &spec("refused")]);
    assert_ne!(r.code, 0, "{r:?}");
    eprintln!("wrong password: {}\nplugin: {why}", r.stderr.trim());
    assert_eq!(nas.counts(), (2, 2));

    agent.kill();
    std::fs::write(root.path().join("syno-faults-synology-iscsi.yaml"), nas.yaml(PASSWORD)).unwrap();
    agent.start();
    wait_plugin(&agent);
    for name in ["expiry", "crash"] {
        run_ok(&agent, &["volume", "delete", name]);
    }
    assert_eq!(nas.counts(), (0, 0));
}

/// democratic-csi's own example `synology-iscsi.yaml`, with only the NAS's
/// address, password and portal filled in, configures the standalone
/// plugin (`berth csi-plugin synology`), which serves controller and node.
#[test]
fn the_standalone_plugin_takes_democratic_csis_yaml_unchanged() {
    use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
    use csi::v1::{
        CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, GetPluginInfoRequest, NodeStageVolumeRequest,
        NodeUnstageVolumeRequest, ProbeRequest, VolumeCapability,
    };

    let root = tempfile::tempdir().unwrap();
    let nas = Nas::start(root.path());
    let _leftovers = Leftovers(root.path().to_path_buf());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../synology/testdata/democratic-csi-synology-iscsi.yaml");
    let yaml = std::fs::read_to_string(example)
        .unwrap()
        .replace("host: server address", "host: 127.0.0.1")
        .replace("port: 5000", &format!("port: {}", nas.config.listen.port()))
        .replace("password: password", &format!("password: {PASSWORD}"))
        .replace("targetPortal: \"server[:port]\"", &format!("targetPortal: \"{}\"", nas.config.portal));
    let file = root.path().join("synology-iscsi.yaml");
    std::fs::write(&file, yaml).unwrap();
    let socket = root.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let plugin = Command::new(common::berth())
        .args(["csi-plugin", "synology", "--endpoint", &endpoint, "--driver-config-file"])
        .arg(&file)
        .args(["--initiator", "userspace", "--state-dir"])
        .arg(root.path().join("plugin-state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the plugin socket", Duration::from_secs(20), || socket.exists().then_some(()));

    let capability = VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    };
    nas.rt.block_on(async {
        let csi = csi::CsiClient::connect(&endpoint, csi::ClientConfig::default()).await.unwrap();
        assert_eq!(csi.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().name, "berth.synology");
        assert_eq!(csi.probe(ProbeRequest {}).await.unwrap().ready, Some(true));
        let volume = csi
            .create_volume(CreateVolumeRequest {
                name: "pvc-standalone".into(),
                capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
                volume_capabilities: vec![capability.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .volume
            .unwrap();
        assert!(volume.volume_context["iqn"].starts_with("iqn.2000-01.com.synology:csi."), "{volume:?}");
        let staging = root.path().join("staging").display().to_string();
        csi.node_stage_volume(NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(capability.clone()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(sh(&format!("findmnt -n -o FSTYPE {staging}")) == "ext4", "staged with a new ext4 filesystem");
        csi.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging,
        })
        .await
        .unwrap();
        csi.delete_volume(DeleteVolumeRequest { volume_id: volume.volume_id, ..Default::default() }).await.unwrap();
    });
    assert_eq!(nas.counts(), (0, 0));
    assert_eq!((initiators(root.path()), nas.sessions()), (0, 0));
    sh(&format!("kill -TERM {}", plugin.id()));
    let out = plugin.wait_with_output().unwrap();
    assert!(out.status.success(), "the plugin exits cleanly on SIGTERM: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("CreateVolume") || log.contains("NodeStageVolume"), "{log}");
    assert!(!log.contains(PASSWORD), "the DSM password reached the log");
    assert!(!socket.exists(), "socket removed on exit");
}

/// `berth doctor` names the userspace initiator where the kernel has no
/// iSCSI module, and says when the NAS refuses the credentials (without
/// printing them).
#[test]
fn doctor_explains_the_initiator_and_a_refused_password() {
    let root = tempfile::tempdir().unwrap();
    let nas = Nas::start(root.path());
    let config_dir = root.path().join("berth.d");
    std::fs::create_dir_all(&config_dir).unwrap();
    let yaml = config_dir.join("synology-iscsi.yaml");
    std::fs::write(
        config_dir.join("synology.hcl"),
        format!("plugin \"synology\" {{\n  config {{\n    driver_config_file = \"{}\"\n  }}\n}}\n", yaml.display()),
    )
    .unwrap();
    let doctor = |password: &str| {
        std::fs::write(&yaml, nas.yaml(password)).unwrap();
        let r = common::cli(&["doctor", "-json", &format!("-config={}", config_dir.display())]);
        let findings: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        let find = |check: &str| {
            findings.as_array().unwrap().iter().find(|f| f["check"] == check).cloned().unwrap_or_default()
        };
        (r, find("kernel: iscsi_tcp"), find("NAS"))
    };

    let (r, iscsi, nas_check) = doctor("wrong-password-xyz");
    assert_eq!(r.code, 1, "a failed check exits 1: {r:?}");
    if csi::iscsi::kernel_has_iscsi() {
        assert_eq!(iscsi["status"], "pass");
    } else {
        assert_eq!(iscsi["status"], "warn", "{iscsi}");
        assert!(iscsi["detail"].as_str().unwrap().contains("userspace initiator"), "{iscsi}");
    }
    assert_eq!(nas_check["status"], "fail", "{nas_check}");
    assert!(nas_check["detail"].as_str().unwrap().contains("refused the credentials"), "{nas_check}");
    assert!(!r.stdout.contains("wrong-password-xyz"), "the password was printed");

    let (_, _, nas_check) = doctor(PASSWORD);
    assert_eq!(nas_check["status"], "pass", "{nas_check}");
    let human = common::cli(&["doctor", &format!("-config={}", config_dir.display())]);
    assert!(human.stdout.contains("[ OK ] NAS:") && human.stdout.contains("fix:"), "{human:?}");
}

/// Moving from Nomad + democratic-csi: a LUN and target made exactly as
/// democratic-csi's synology-iscsi driver names them (namePrefix and
/// nameSuffix set), holding the filesystem and file its node left, is
/// found by `volume import-synology`, registered under democratic-csi's
/// volume id, mounted by a job with its data, expanded, snapshotted and
/// deleted on the NAS through berth.
#[test]
fn democratic_csi_volumes_are_imported_and_managed_with_their_ids() {
    use synology::dsm::{LunCreate, LunType, TargetAuth, TargetCreate};
    let root = tempfile::tempdir().unwrap();
    let nas = Nas::start(root.path());
    let _leftovers = Leftovers(root.path().to_path_buf());
    let yaml = nas
        .yaml(PASSWORD)
        .replace("namePrefix: \"\"", "namePrefix: \"k8s-\"")
        .replace("nameSuffix: \"\"", "nameSuffix: \"-dc\"");
    // democratic-csi: LUN and target named namePrefix + volume id + nameSuffix, IQN baseiqn + that name.
    let (id, lun_name) = ("pvc-7f3a", "k8s-pvc-7f3a-dc");
    let dsm = nas.client();
    let uuid = nas
        .rt
        .block_on(dsm.create_lun(&LunCreate {
            name: lun_name.into(),
            location: "/volume1".into(),
            size: 1 << 30,
            lun_type: LunType::Blun,
            description: None,
            dev_attribs: Vec::new(),
        }))
        .unwrap();
    let content = root.path().join("dc-data");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("from-democratic-csi.txt"), "written by democratic-csi's node\n").unwrap();
    let backing = nas.config.state_dir.join("luns").join(format!("{uuid}.img"));
    let made = Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&content).arg(&backing).status();
    assert!(made.unwrap().success(), "mke2fs on the LUN's backing file");
    let iqn = synology::dsm::Iqn::new(format!("iqn.2000-01.com.synology:berth-sim.{lun_name}")).unwrap();
    let target = TargetCreate { name: lun_name.into(), iqn, max_sessions: 1, auth: TargetAuth::None };
    let target_id = nas.rt.block_on(dsm.create_target(&target)).unwrap();
    nas.rt.block_on(dsm.map_lun_to_target(&uuid, target_id)).unwrap();

    let agent = synology_agent(root.path(), "syno-dc", &yaml, "2s");
    wait_plugin(&agent);
    let yaml_file = root.path().join("syno-dc-synology-iscsi.yaml");
    let specs = root.path().join("imported");
    let r = common::cli(&[
        "volume",
        "import-synology",
        &format!("--driver-config-file={}", yaml_file.display()),
        &format!("--dir={}", specs.display()),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let files: Vec<_> = std::fs::read_dir(&specs).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(
        files,
        [std::ffi::OsString::from(format!("{id}.hcl"))],
        "only democratic-csi's volume, not the NAS's own"
    );
    let spec = specs.join(format!("{id}.hcl"));
    assert!(std::fs::read_to_string(&spec).unwrap().contains(&format!("external_id = \"{id}\"")));
    run_ok(&agent, &["volume", "register", &spec.display().to_string()]);

    // A job mounts it: democratic-csi's file is there (never reformatted).
    let job = format!(
        "job \"dc-reader\" {{\n  group \"g\" {{\n    volume \"data\" {{\n      type = \"csi\"\n      source = \"{id}\"\n      \
         access_mode = \"single-node-writer\"\n      attachment_mode = \"file-system\"\n    }}\n    task \"t\" {{\n      \
         driver = \"docker\"\n      config {{\n        image = \"berth-test/tiny:latest\"\n        command = \"sh\"\n        \
         args = [\"-c\", \"cat /data/from-democratic-csi.txt; echo added by berth > /data/added; sync; sleep 3600\"]\n      \
         }}\n      volume_mount {{\n        volume = \"data\"\n        destination = \"/data\"\n      }}\n    }}\n  }}\n}}\n"
    );
    run_ok(&agent, &["job", "run", "-detach", &job_file(root.path(), "dc-reader.nomad", &job)]);
    let alloc = running_alloc(&agent, "dc-reader");
    wait_for("democratic-csi's file in the task", Duration::from_secs(120), || {
        run_ok(&agent, &["alloc", "logs", &alloc]).contains("written by democratic-csi's node").then_some(())
    });
    run_ok(&agent, &["job", "stop", "-purge", "dc-reader"]);
    wait_for("the claim to end", Duration::from_secs(60), || {
        (!run_ok(&agent, &["volume", "status", id]).contains(&alloc[..8])).then_some(())
    });

    // Expand, snapshot and delete act on democratic-csi's LUN.
    let grown = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("type        = \"csi\"", "type        = \"csi\"\ncapacity_min = \"2GiB\"");
    run_ok(&agent, &["volume", "create", &job_file(root.path(), "grow.hcl", &grown)]);
    let size = |dsm: &DsmClient| nas.rt.block_on(dsm.get_lun(lun_name)).unwrap().map(|l| l.size);
    assert_eq!(size(&dsm), Some(2 << 30), "the LUN grew");
    run_ok(&agent, &["volume", "snapshot", "create", id, "before-move"]);
    assert_eq!(nas.rt.block_on(dsm.list_snapshots(&uuid)).unwrap().len(), 1);
    run_ok(&agent, &["volume", "delete", id]);
    assert_eq!(size(&dsm), None, "the LUN is gone");
    assert_eq!(nas.counts(), (0, 0), "the LUN and the target are gone");
}
