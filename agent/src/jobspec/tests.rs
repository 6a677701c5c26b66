//! Jobspec tests: the example files under `examples/`, HCL1 seed-era
//! shapes, variables, defaults, and malformed input.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::structs::TaskPhase;

const SECOND: i64 = 1_000_000_000;

fn parse(name: &str, src: &str) -> Result<ParsedJob, HclError> {
    parse_job(name, src, &VarInputs::default())
}

fn example(name: &str) -> ParsedJob {
    let src = match name {
        "raw_exec.nomad.hcl" => include_str!("../../../examples/raw_exec.nomad.hcl"),
        "redis.nomad" => include_str!("../../../examples/redis.nomad"),
        "mysql.nomad" => include_str!("../../../examples/mysql.nomad"),
        "batch.nomad.hcl" => include_str!("../../../examples/batch.nomad.hcl"),
        "system.nomad.hcl" => include_str!("../../../examples/system.nomad.hcl"),
        "variables.nomad.hcl" => include_str!("../../../examples/variables.nomad.hcl"),
        other => panic!("no example {other}"),
    };
    parse(name, src).unwrap_or_else(|err| panic!("{err}"))
}

/// Wraps a task body in a minimal job.
fn task_job(task_body: &str) -> String {
    format!("job \"j\" {{\n  group \"g\" {{\n    task \"t\" {{\n{task_body}\n    }}\n  }}\n}}\n")
}

#[test]
fn raw_exec_example() {
    let parsed = example("raw_exec.nomad.hcl");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let job = parsed.job;
    assert_eq!((job.id.as_str(), job.name.as_str(), job.job_type.as_str()), ("hello", "hello", "service"));
    let tg = &job.task_groups[0];
    let task = &tg.tasks[0];
    assert_eq!(task.driver, "raw_exec");
    assert_eq!(task.config["command"], json!("/bin/sh"));
    assert_eq!(task.config["args"], json!(["-c", "while true; do echo hello; sleep 1; done"]));
    let restart = tg.restart_policy.as_ref().expect("restart");
    // The block overrides attempts and delay only; interval and mode stay the service defaults.
    assert_eq!(
        (restart.attempts, restart.delay, restart.interval, restart.mode.as_str()),
        (3, SECOND, 1800 * SECOND, "fail")
    );
    assert_eq!(task.restart_policy, tg.restart_policy);
    assert_eq!(task.resources.as_ref().map(|r| (r.cpu, r.memory_mb)), Some((100, 64)));
}

#[test]
fn redis_hcl1_example() {
    let parsed = example("redis.nomad");
    assert_eq!(
        parsed.warnings,
        vec![crate::structs::TASK_NETWORK_DEPRECATED.to_string(), crate::structs::MBITS_DEPRECATED.to_string(),]
    );
    let tg = &parsed.job.task_groups[0];
    assert_eq!(tg.count, 3);
    // The job-level migrate block reaches the group, which drains follow.
    let migrate = tg.migrate.as_ref().expect("migrate");
    assert_eq!(
        (migrate.max_parallel, migrate.min_healthy_time, migrate.healthy_deadline),
        (1, 10 * SECOND, 300 * SECOND)
    );
    let update = tg.update.as_ref().expect("update");
    assert_eq!((update.healthy_deadline, update.max_parallel, update.stagger), (180 * SECOND, 1, 30 * SECOND));
    let task = &tg.tasks[0];
    assert_eq!(task.config["port_map"], json!([{"db": 6379}]));
    let resources = task.resources.as_ref().expect("resources");
    assert_eq!((resources.cpu, resources.memory_mb), (500, 256));
    let net = &resources.networks[0];
    assert_eq!((net.mbits, net.dynamic_ports[0].label.as_str()), (10, "db"));
    assert!(net.reserved_ports.is_empty());
    let service = &task.services[0];
    assert_eq!(
        (service.name.as_str(), service.port_label.as_str(), service.provider.as_str()),
        ("redis-cache", "db", "nomad")
    );
    let check = &service.checks[0];
    assert_eq!((check.check_type.as_str(), check.interval, check.timeout), ("tcp", 10 * SECOND, 2 * SECOND));
}

#[test]
fn mysql_seed_example() {
    let parsed = example("mysql.nomad");
    assert_eq!(parsed.warnings, vec![crate::structs::TASK_NETWORK_DEPRECATED.to_string()]);
    let tg = &parsed.job.task_groups[0];
    assert_eq!(tg.restart_policy.as_ref().map(|r| r.mode.as_str()), Some("delay"));
    let task = &tg.tasks[0];
    assert_eq!(task.env.get("MYSQL_ROOT_PASSWORD").map(String::as_str), Some("password"));
    assert_eq!(task.config["image"], json!("berth-test/mariadb:latest"));
    assert_eq!(task.config["port_map"], json!([{"db": 3306}]));
    let net = &task.resources.as_ref().expect("resources").networks[0];
    assert_eq!(net.reserved_ports[0].label, "db");
    assert_eq!(net.reserved_ports[0].value, 3306);
    assert_eq!(tg.effective_network().map(|n| n.reserved_ports.len()), Some(1));
    assert_eq!(task.services[0].checks[0].name, "service: \"mysql-server\" check");
}

#[test]
fn batch_example() {
    let job = example("batch.nomad.hcl").job;
    assert_eq!(job.job_type, "batch");
    assert_eq!(job.constraints[0].l_target, "${attr.kernel.name}");
    assert_eq!((job.constraints[0].operand.as_str(), job.constraints[0].r_target.as_str()), ("=", "linux"));
    let tg = &job.task_groups[0];
    assert_eq!(tg.update, None);
    assert_eq!(tg.restart_policy.as_ref().map(|r| (r.attempts, r.interval)), Some((3, 24 * 3600 * SECOND)));
    let reschedule = tg.reschedule_policy.as_ref().expect("reschedule");
    assert_eq!(
        (reschedule.attempts, reschedule.delay, reschedule.delay_function.as_str()),
        (2, 5 * SECOND, "constant")
    );
    let task = &tg.tasks[0];
    assert_eq!(task.kill_timeout, Some(10 * SECOND));
    assert_eq!(task.log_config.as_ref().map(|l| (l.max_files, l.max_file_size_mb)), Some((3, 5)));
}

#[test]
fn system_example() {
    let job = example("system.nomad.hcl").job;
    assert_eq!(job.job_type, "system");
    let tg = &job.task_groups[0];
    assert_eq!(tg.reschedule_policy, None);
    let net = &tg.networks[0];
    assert_eq!(net.mode, "host");
    assert_eq!((net.reserved_ports[0].label.as_str(), net.reserved_ports[0].value), ("metrics", 9100));
    assert_eq!(tg.services[0].checks[0].path, "/metrics");
    assert_eq!(tg.tasks[0].env.get("NODE_NAME").map(String::as_str), Some("${node.unique.name}"));
}

#[test]
fn variables_example() {
    let job = example("variables.nomad.hcl").job;
    assert_eq!(job.datacenters, vec!["dc1".to_string()]);
    assert_eq!(job.meta.get("tier").map(String::as_str), Some("web-frontend"));
    let tg = &job.task_groups[0];
    assert_eq!(tg.count, 2);
    assert_eq!(tg.networks[0].mode, "bridge");
    assert_eq!((tg.networks[0].dynamic_ports[0].label.as_str(), tg.networks[0].dynamic_ports[0].to), ("http", 80));
    let task = &tg.tasks[0];
    assert_eq!(task.config["image"], json!("nginx:1.27"));
    assert_eq!(task.config["args"], json!(["--root", "${NOMAD_TASK_DIR}/html"]));
    assert_eq!(task.env.get("HOST_NAME").map(String::as_str), Some("${attr.unique.hostname}"));
    assert_eq!(task.env.get("REPLICAS").map(String::as_str), Some("2"));
    let tmpl = &task.templates[0];
    assert_eq!(tmpl.embedded_tmpl, "server_name {{ env \"attr.unique.hostname\" }};\nroot ${NOMAD_TASK_DIR}/html;\n");
    assert_eq!(
        (tmpl.dest_path.as_str(), tmpl.change_mode.as_str(), tmpl.perms.as_str()),
        ("local/nginx.conf", "signal", "0644")
    );

    let vars =
        BTreeMap::from([("image".to_string(), "caddy:2".to_string()), ("replicas".to_string(), "5".to_string())]);
    let src = include_str!("../../../examples/variables.nomad.hcl");
    let job = parse_job("variables.nomad.hcl", src, &VarInputs::args(vars)).expect("parses").job;
    assert_eq!(job.task_groups[0].count, 5);
    assert_eq!(job.task_groups[0].tasks[0].config["image"], json!("caddy:2"));
}

#[test]
fn variable_errors() {
    let src = "variable \"x\" {}\njob \"j\" {\n  group \"g\" {\n    task \"t\" { driver = var.x }\n  }\n}\n";
    let err = parse("v.hcl", src).unwrap_err();
    assert_eq!((err.line, err.column), (1, 1));
    assert!(err.message.contains("variable \"x\" has no default"), "{err}");
    let vars = BTreeMap::from([("x".to_string(), "docker".to_string()), ("y".to_string(), "1".to_string())]);
    let err = parse_job("v.hcl", src, &VarInputs::args(vars)).unwrap_err();
    assert!(err.message.contains("\"y\" was set with -var but is not declared"), "{err}");
    let vars = BTreeMap::from([("n".to_string(), "many".to_string())]);
    let err = parse_job("v.hcl", "variable \"n\" { type = number }\n", &VarInputs::args(vars)).unwrap_err();
    assert!(err.message.contains("the string \"many\" is not compatible with the variable's type number"), "{err}");
}

#[test]
fn defaults_and_merging() {
    let src = concat!(
        "job \"j\" {\n",
        "  update { max_parallel = 2 }\n",
        "  group \"g\" {\n",
        "    update { canary = 1 }\n",
        "    restart { attempts = 5 }\n",
        "    task \"t\" {\n",
        "      driver = \"exec\"\n",
        "      restart { delay = \"2s\" }\n",
        "      csi_plugin {\n        id = \"nfs\"\n        type = \"node\"\n      }\n",
        "    }\n",
        "  }\n",
        "}\n",
    );
    let job = parse("d.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    assert_eq!((job.namespace.as_str(), job.region.as_str(), job.priority), ("default", "global", 50));
    assert_eq!(job.datacenters, vec!["*".to_string()]);
    let tg = &job.task_groups[0];
    let update = tg.update.as_ref().expect("update");
    assert_eq!((update.max_parallel, update.canary, update.min_healthy_time), (2, 1, 10 * SECOND));
    let group_restart = tg.restart_policy.as_ref().expect("restart");
    assert_eq!((group_restart.attempts, group_restart.delay), (5, 15 * SECOND));
    let task = &tg.tasks[0];
    let task_restart = task.restart_policy.as_ref().expect("restart");
    assert_eq!((task_restart.attempts, task_restart.delay, task_restart.mode.as_str()), (5, 2 * SECOND, "fail"));
    let plugin = task.csi_plugin_config.as_ref().expect("plugin");
    assert_eq!((plugin.mount_dir.as_str(), plugin.health_timeout), ("/csi", 30 * SECOND));
    assert_eq!(tg.ephemeral_disk.as_ref().map(|d| d.size_mb), Some(300));
    assert_eq!(task.kill_timeout, Some(5 * SECOND));
}

#[test]
fn constraint_shorthands() {
    let src = concat!(
        "job \"j\" {\n",
        "  constraint { distinct_hosts = true }\n",
        "  constraint { distinct_hosts = false }\n",
        "  constraint {\n    distinct_property = \"${meta.rack}\"\n    value = \"2\"\n  }\n",
        "  constraint {\n    attribute = \"${attr.os.version}\"\n    version = \">= 22\"\n  }\n",
        "  constraint {\n    attribute = \"${attr.unique.hostname}\"\n    regexp = \"^nas\"\n  }\n",
        "  group \"g\" {\n    task \"t\" { driver = \"exec\" }\n  }\n",
        "}\n",
    );
    let job = parse("c.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    let got: Vec<(&str, &str, &str)> =
        job.constraints.iter().map(|c| (c.l_target.as_str(), c.operand.as_str(), c.r_target.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("", "distinct_hosts", "true"),
            ("", "distinct_hosts", "false"),
            ("${meta.rack}", "distinct_property", "2"),
            ("${attr.os.version}", "version", ">= 22"),
            ("${attr.unique.hostname}", "regexp", "^nas"),
        ]
    );
}

#[test]
fn volumes_and_mounts() {
    let src = concat!(
        "job \"j\" {\n",
        "  group \"g\" {\n",
        "    volume \"data\" {\n",
        "      type            = \"csi\"\n",
        "      source          = \"db\"\n",
        "      access_mode     = \"single-node-writer\"\n",
        "      attachment_mode = \"file-system\"\n",
        "      per_alloc       = true\n",
        "      mount_options {\n        fs_type = \"ext4\"\n        mount_flags = [\"noatime\"]\n      }\n",
        "    }\n",
        "    task \"t\" {\n",
        "      driver = \"docker\"\n",
        "      config { image = \"x\" }\n",
        "      volume_mount {\n        volume = \"data\"\n        destination = \"/srv\"\n      }\n",
        "    }\n",
        "  }\n",
        "}\n",
    );
    let job = parse("v.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    let tg = &job.task_groups[0];
    let vol = &tg.volumes["data"];
    assert_eq!((vol.name.as_str(), vol.source.as_str(), vol.per_alloc), ("data", "db", true));
    assert_eq!(vol.mount_options.as_ref().map(|m| m.fs_type.as_str()), Some("ext4"));
    assert_eq!(tg.tasks[0].volume_mounts[0].destination, "/srv");
}

#[test]
fn disconnect_identity_and_unknown_fields() {
    let group = |body: &str| {
        format!("job \"j\" {{\n  group \"g\" {{\n{body}\n    task \"t\" {{ driver = \"exec\" }}\n  }}\n}}\n")
    };
    let parsed =
        parse("u.hcl", &group("    disconnect {\n      lost_after = \"1h\"\n      replace = false\n    }")).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let d = parsed.job.task_groups[0].disconnect.clone().expect("disconnect");
    assert_eq!((d.lost_after, d.replace, d.reconcile.as_str()), (3600 * SECOND, Some(false), "best_score"));
    // The fields it replaced still mean what they did, with a deprecation.
    let parsed =
        parse("u.hcl", &group("    max_client_disconnect = \"5m\"\n    prevent_reschedule_on_lost = true")).unwrap();
    let d = parsed.job.task_groups[0].disconnect.clone().expect("disconnect");
    assert_eq!((d.lost_after, d.replace), (300 * SECOND, Some(false)));
    assert_eq!(parsed.warnings[0], "max_client_disconnect is deprecated; use disconnect { lost_after } (u.hcl:3)");
    let err = parse("u.hcl", &group("    max_client_disconnect = \"5m\"\n    disconnect { lost_after = \"1m\" }"))
        .unwrap_err();
    assert!(err.to_string().contains("u.hcl:3:5: max_client_disconnect and a disconnect block (line 4)"), "{err}");
    let err = parse(
        "u.hcl",
        &group("    disconnect {\n      lost_after = \"1m\"\n      stop_on_client_after = \"1m\"\n    }"),
    )
    .unwrap_err();
    assert!(err.message.contains("lost_after and stop_on_client_after cannot both be set"), "{err}");
    // Identities are real: the default one and named ones, with Nomad's defaults.
    let src = task_job("      driver = \"exec\"\n      identity { env = true }\n      identity {\n        name = \"db\"\n        aud = [\"db\"]\n      }");
    let task = &parse("i.hcl", &src).unwrap_or_else(|e| panic!("{e}")).job.task_groups[0].tasks[0];
    let default = task.identity.as_ref().expect("default identity");
    assert_eq!(
        (default.name.as_str(), default.audience.clone(), default.env),
        ("default", vec!["nomadproject.io".to_string()], true)
    );
    assert_eq!(task.identities[0].file_path(), "secrets/nomad_db.jwt");
    let err =
        parse("i.hcl", &task_job("      driver = \"exec\"\n      identity { name = \"db\" }")).unwrap_err().to_string();
    assert!(err.contains("an alternate identity must have an audience"), "{err}");
    // What needs Consul or Vault is refused, at every level, naming the block.
    let err = parse("u.hcl", &task_job("      driver = \"exec\"\n      vault { policies = [\"db\"] }")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "u.hcl:5:7: the \"vault\" block needs Vault, which berth does not have; remove it to run the job without it"
    );
    let connect =
        "job \"j\" {\n  group \"g\" {\n    service {\n      connect {\n        sidecar_service {}\n      }\n    \
                   }\n    task \"t\" {\n      driver = \"exec\"\n    }\n  }\n}\n";
    let err = parse("c.hcl", connect).unwrap_err().to_string();
    assert!(err.starts_with("c.hcl:4:7: the \"connect\" block needs Consul Connect"), "{err}");
    let multi = "job \"j\" {\n  multiregion {\n    region \"west\" {}\n  }\n  group \"g\" {\n    task \"t\" { driver = \"exec\" }\n  }\n}\n";
    let err = parse("r.hcl", multi).unwrap_err().to_string();
    assert!(err.starts_with("r.hcl:2:3: the \"multiregion\" block needs federated regions"), "{err}");
    let consul = "job \"j\" {\n  consul { cluster = \"default\" }\n  group \"g\" {\n    task \"t\" { driver = \"exec\" }\n  }\n}\n";
    assert!(parse("k.hcl", consul)
        .unwrap_err()
        .to_string()
        .starts_with("k.hcl:2:3: the \"consul\" block needs Consul"));
    let err = parse("u.hcl", &task_job("      driver = \"exec\"\n      foo = 1")).unwrap_err();
    assert_eq!(err.to_string(), "u.hcl:5:7: unsupported argument \"foo\" in task \"t\"");
}

#[test]
fn malformed_inputs_report_locations() {
    // Syntax error.
    let err = parse("s.hcl", "job \"j\" {\n  group \"g\" {\n    count = = 1\n  }\n}\n").unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("s.hcl", 3));
    assert!(err.message.starts_with("syntax error"), "{err}");
    // Wrong type.
    let err = parse("w.hcl", "job \"j\" {\n  group \"g\" {\n    count = \"three\"\n  }\n}\n").unwrap_err();
    assert_eq!(err.to_string(), "w.hcl:3:13: count: expected a number, found a string");
    // Missing driver: reported at the task block.
    let err = parse("m.hcl", &task_job("      user = \"nobody\"")).unwrap_err();
    assert_eq!((err.line, err.column), (3, 5));
    assert!(err.message.contains("task \"t\": task has no driver"), "{err}");
    // Undeclared volume.
    let err =
        parse("v.hcl", &task_job("      driver = \"exec\"\n      volume_mount { volume = \"nope\" }")).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.message.contains("volume_mount of undeclared volume \"nope\""), "{err}");
    // A bare runtime reference outside a string.
    let err = parse("r.hcl", &task_job("      driver = attr.driver")).unwrap_err();
    assert_eq!((err.line, err.column), (4, 16));
    // No job at all, and an empty file.
    assert!(parse("e.hcl", "").unwrap_err().message.contains("no \"job\" block"));
    // Docker ports naming an undeclared label.
    let err =
        parse("p.hcl", &task_job("      driver = \"docker\"\n      config {\n        ports = [\"http\"]\n      }"))
            .unwrap_err();
    assert!(err.message.contains("port \"http\" is not declared"), "{err}");
}

#[test]
fn hcl1_rewrite_keeps_error_lines() {
    let src = task_job(concat!(
        "      driver = \"docker\"\n",
        "      env {\n",
        "        \"A.B\" = \"1\"\n",
        "        \"C\" = \"2\"\n",
        "      }\n",
        "      kill_timeout = 5\n",
        "      user = [\"x\"]",
    ));
    let err = parse("h.hcl", &src).unwrap_err();
    assert_eq!(err.to_string(), "h.hcl:10:14: user: expected a string, found a list");
}

#[test]
fn locals_resolve_in_any_order_and_unknown_ones_fail() {
    let src = concat!(
        "locals {\n  b = \"${local.a}-b\"\n  a = \"x\"\n}\n",
        "job \"j\" {\n  meta { m = local.b }\n  group \"g\" {\n    task \"t\" { driver = \"exec\" }\n  }\n}\n",
    );
    let job = parse("l.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    assert_eq!(job.meta.get("m").map(String::as_str), Some("x-b"));
    let err = parse("l.hcl", "locals {\n  a = local.nope\n}\n").unwrap_err();
    assert_eq!(err.line, 2);
    let err = parse("l.hcl", "locals {\n  a = try(local.b, 1)\n  b = try(local.a, 2)\n}\n").unwrap_err();
    assert!(err.message.contains("local.a, local.b refer to each other in a cycle"), "{err}");
}

#[test]
fn try_and_can_in_locals_see_locals_defined_later_and_work_in_job_fields() {
    let src = concat!(
        "variable \"ports\" {\n  default = { http = 8080 }\n}\n",
        "locals {\n  tag = try(local.image.tag, \"latest\")\n  image = { tag = \"v2\" }\n",
        "  grpc = try(var.ports.grpc, 0)\n}\n",
        "job \"j\" {\n  meta {\n    tag = local.tag\n    grpc = local.grpc\n",
        "    http = upper(try(tostring(var.ports.http), \"none\"))\n    tls = can(var.ports.https)\n  }\n",
        "  group \"g\" {\n    task \"t\" { driver = \"exec\" }\n  }\n}\n",
    );
    let job = parse("t.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    let meta = |k: &str| job.meta.get(k).map(String::as_str);
    assert_eq!(
        (meta("tag"), meta("grpc"), meta("http"), meta("tls")),
        (Some("v2"), Some("0"), Some("8080"), Some("false"))
    );
}

#[test]
fn shutdown_delay_on_groups_and_tasks() {
    let src = concat!(
        "job \"j\" {\n",
        "  group \"g\" {\n    shutdown_delay = \"3s\"\n",
        "    task \"t\" {\n      driver = \"raw_exec\"\n      shutdown_delay = \"500ms\"\n    }\n",
        "    task \"u\" { driver = \"raw_exec\" }\n  }\n",
        "}\n",
    );
    let job = parse("d.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    let tg = &job.task_groups[0];
    assert_eq!(tg.shutdown_delay, Some(3 * SECOND));
    assert_eq!((tg.tasks[0].shutdown_delay, tg.tasks[1].shutdown_delay), (SECOND / 2, 0));
    let json = serde_json::to_value(&job).unwrap();
    assert_eq!(json["TaskGroups"][0]["ShutdownDelay"], 3 * SECOND);
    assert_eq!(json["TaskGroups"][0]["Tasks"][0]["ShutdownDelay"], SECOND / 2);
}

#[test]
fn lifecycle_blocks_and_their_validation() {
    let src = concat!(
        "job \"j\" {\n  group \"g\" {\n",
        "    task \"init\" {\n      driver = \"raw_exec\"\n      lifecycle { hook = \"prestart\" }\n    }\n",
        "    task \"proxy\" {\n      driver = \"raw_exec\"\n      lifecycle {\n        hook = \"prestart\"\n        sidecar = true\n      }\n    }\n",
        "    task \"main\" {\n      driver = \"raw_exec\"\n    }\n",
        "    task \"after\" {\n      driver = \"raw_exec\"\n      lifecycle { hook = \"poststop\" }\n    }\n",
        "  }\n}\n"
    );
    let parsed = parse("l.hcl", src).unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let phases: Vec<(TaskPhase, bool)> =
        parsed.job.task_groups[0].tasks.iter().map(|t| (t.phase(), t.is_sidecar())).collect();
    assert_eq!(
        phases,
        [
            (TaskPhase::Prestart, false),
            (TaskPhase::Prestart, true),
            (TaskPhase::Main, false),
            (TaskPhase::Poststop, false)
        ]
    );
    let json = serde_json::to_value(&parsed.job).unwrap();
    assert_eq!(
        json["TaskGroups"][0]["Tasks"][1]["Lifecycle"],
        serde_json::json!({"Hook": "prestart", "Sidecar": true})
    );

    let bad = src.replace("hook = \"poststop\"", "hook = \"later\"");
    let e = parse("l.hcl", &bad).unwrap_err().to_string();
    assert!(e.contains("task \"after\": lifecycle hook \"later\" must be"), "{e}");
    let only_hooks = task_job("      driver = \"raw_exec\"\n      lifecycle { hook = \"prestart\" }");
    let e = parse("l.hcl", &only_hooks).unwrap_err().to_string();
    assert!(e.contains("group has no main task"), "{e}");
}

#[test]
fn a_job_level_task_gets_a_group_of_its_own() {
    let src = concat!(
        "job \"j\" {\n  type = \"batch\"\n",
        "  group \"g\" {\n    count = 2\n    task \"a\" {\n      driver = \"raw_exec\"\n    }\n  }\n",
        "  task \"solo\" {\n    driver = \"raw_exec\"\n    config {\n      command = \"/bin/true\"\n    }\n  }\n",
        "}\n"
    );
    let parsed = parse("solo.hcl", src).unwrap_or_else(|e| panic!("{e}"));
    let groups: Vec<(&str, u32, Vec<&str>)> = parsed
        .job
        .task_groups
        .iter()
        .map(|tg| (tg.name.as_str(), tg.count, tg.tasks.iter().map(|t| t.name.as_str()).collect()))
        .collect();
    assert_eq!(groups, [("g", 2, vec!["a"]), ("solo", 1, vec!["solo"])]);
    let (g, solo) = (&parsed.job.task_groups[0], &parsed.job.task_groups[1]);
    assert_eq!(solo.restart_policy, g.restart_policy, "the job type's policies, as a written group gets");
    assert_eq!(solo.reschedule_policy, g.reschedule_policy);
    let e = parse("solo.hcl", &src.replace("    driver = \"raw_exec\"\n    config", "    bogus = 1\n    config"))
        .unwrap_err();
    assert_eq!(e.to_string(), "solo.hcl:10:5: unsupported argument \"bogus\" in task \"solo\"");
}

#[test]
fn memory_max_below_memory_is_refused() {
    let src = task_job(
        "      driver = \"docker\"\n      resources {\n        memory = 512\n        memory_max = 256\n      }",
    );
    let e = parse("m.hcl", &src).unwrap_err().to_string();
    assert!(e.contains("memory_max (256 MB) must not be below memory (512 MB)"), "{e}");
    let ok = parse("m.hcl", &src.replace("memory_max = 256", "memory_max = 1024")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.job.task_groups[0].tasks[0].resources.as_ref().map(|r| r.memory_max_mb), Some(1024));
    let unlimited =
        parse("m.hcl", &src.replace("memory_max = 256", "memory_max = -1")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unlimited.job.task_groups[0].tasks[0].resources.as_ref().map(|r| r.memory_max_mb), Some(-1));
    let e = parse("m.hcl", &src.replace("memory_max = 256", "memory_max = -2")).unwrap_err().to_string();
    assert!(e.contains("memory_max -2 must be -1 (no limit), 0 or a size in MB"), "{e}");
}

#[test]
fn periodic_and_parameterized_blocks_are_read_and_checked_as_nomad_does() {
    let src = r#"job "nightly" {
  type = "batch"
  periodic {
    crons            = ["0 3 * * *", "30 4 * * 1-5"]
    prohibit_overlap = true
    time_zone        = "Europe/Berlin"
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      config { command = "true" }
    }
  }
}
"#;
    let parsed = parse("nightly.nomad", src).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let p = parsed.job.periodic.clone().unwrap();
    assert_eq!((p.spec.as_str(), p.specs.len(), p.spec_type.as_str()), ("0 3 * * *", 2, "cron"));
    assert!(p.enabled && p.prohibit_overlap);
    assert!(parsed.job.is_periodic() && parsed.job.is_template());

    let service = src.replace("type = \"batch\"", "type = \"service\"");
    let e = parse("nightly.nomad", &service).unwrap_err().to_string();
    assert!(e.contains("periodic can only be used with \"batch\" or \"sysbatch\" jobs, not \"service\""), "{e}");
    let bad_cron = src.replace("\"30 4 * * 1-5\"", "\"30 4 * * 9\"");
    let e = parse("nightly.nomad", &bad_cron).unwrap_err().to_string();
    assert!(e.starts_with("nightly.nomad:1:") && e.contains("invalid cron expression \"30 4 * * 9\""), "{e}");
    let bad_zone = src.replace("Europe/Berlin", "Europe/Atlantis");
    assert!(parse("nightly.nomad", &bad_zone)
        .unwrap_err()
        .to_string()
        .contains("unknown time_zone \"Europe/Atlantis\""));

    let dispatch = r#"job "encode" {
  type = "batch"
  parameterized {
    payload       = "required"
    meta_required = ["target"]
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      dispatch_payload { file = "in/data.json" }
      config { command = "true" }
    }
  }
}
"#;
    let parsed = parse("encode.nomad", dispatch).unwrap();
    let p = parsed.job.parameterized_job.clone().unwrap();
    assert_eq!((p.payload.as_str(), p.meta_required.clone()), ("required", vec!["target".to_string()]));
    assert!(p.meta_optional.is_empty() && parsed.job.is_parameterized());
    assert_eq!(parsed.job.task_groups[0].tasks[0].dispatch_payload.as_ref().unwrap().file, "in/data.json");
    let e = parse("encode.nomad", &dispatch.replace("\"required\"", "\"sometimes\"")).unwrap_err().to_string();
    assert!(e.contains("unknown payload requirement \"sometimes\""), "{e}");
    let both = dispatch
        .replace("meta_required = [\"target\"]", "meta_required = [\"target\"]\n    meta_optional = [\"target\"]");
    assert!(parse("encode.nomad", &both)
        .unwrap_err()
        .to_string()
        .contains("[\"target\"] are both required and optional"));
    let escape = dispatch.replace("in/data.json", "../../etc/passwd");
    let e = parse("encode.nomad", &escape).unwrap_err().to_string();
    assert!(e.contains("dispatch_payload file \"../../etc/passwd\" must be a relative path inside local/"), "{e}");
    assert!(e.starts_with("encode.nomad:8:"), "names the task's line: {e}");
    // The API's JSON shape, as Nomad's clients send and read it.
    let json = serde_json::to_value(&parsed.job).unwrap();
    assert_eq!(json["ParameterizedJob"]["MetaRequired"], json!(["target"]));
    assert_eq!(json["Payload"], serde_json::Value::Null);
    assert_eq!(json["TaskGroups"][0]["Tasks"][0]["DispatchPayload"]["File"], "in/data.json");
}

#[test]
fn functions_work_in_locals_and_job_fields_and_read_files_next_to_the_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.conf.tpl"), "listen ${port}\n").unwrap();
    let src = r#"variable "names" {
  default = ["api", "web"]
}
locals {
  tag  = format("%s-%02d", upper(var.names[1]), 7)
  conf = templatefile("app.conf.tpl", { port = 8080 })
}
job "fn" {
  meta {
    tag   = local.tag
    count = length(var.names)
    all   = join(",", var.names)
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      env {
        CONF = local.conf
        HOME = lookup({ dev = "/tmp" }, "dev", "/")
        DIR  = "${NOMAD_TASK_DIR}"
      }
      config { command = "true" }
    }
  }
}
"#;
    let file = dir.path().join("fn.nomad");
    let parsed = parse(file.to_str().unwrap(), src).unwrap_or_else(|e| panic!("{e}"));
    let meta = &parsed.job.meta;
    assert_eq!((meta["tag"].as_str(), meta["count"].as_str(), meta["all"].as_str()), ("WEB-07", "2", "api,web"));
    let env = &parsed.job.task_groups[0].tasks[0].env;
    assert_eq!(env["CONF"], "listen 8080\n");
    assert_eq!(env["HOME"], "/tmp");
    assert_eq!(env["DIR"], "${NOMAD_TASK_DIR}", "runtime references stay for the client");
    let missing = src.replace("app.conf.tpl", "nope.tpl");
    let e = parse(file.to_str().unwrap(), &missing).unwrap_err().to_string();
    assert!(e.contains("templatefile") && e.contains("nope.tpl"), "{e}");
}

#[test]
fn cni_args_are_read_into_nomads_shape() {
    let src = "job \"c\" {\n  group \"g\" {\n    network {\n      mode = \"cni/lab\"\n      cni {\n        args = {\n          \
               IgnoreUnknown = \"1\"\n          VLAN = \"20\"\n        }\n      }\n    }\n    task \"t\" {\n      \
               driver = \"raw_exec\"\n      config { command = \"true\" }\n    }\n  }\n}\n";
    let parsed = parse("c.hcl", src).unwrap_or_else(|e| panic!("{e}"));
    let net = &parsed.job.task_groups[0].networks[0];
    assert_eq!(net.cni.as_ref().unwrap().args["VLAN"], "20");
    let json = serde_json::to_value(net).unwrap();
    assert_eq!(json["CNI"]["Args"]["IgnoreUnknown"], "1");
}

const VAR_JOB: &str = r#"variable "image" {
  type = string
}
variable "count" {
  type    = number
  default = 1
  validation {
    condition     = var.count > 0 && var.count < 10
    error_message = "The count must be between 1 and 9."
  }
}
variables {
  region = "home"
  debug  = false
}
job "v" {
  region = var.region
  group "g" {
    count = var.count
    task "t" {
      driver = "docker"
      config { image = var.image }
      env { DEBUG = var.debug }
    }
  }
}
"#;

fn with_files(files: &[(&str, &str)]) -> VarInputs {
    VarInputs { files: files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(), ..Default::default() }
}

#[test]
fn var_files_env_and_args_apply_in_nomads_order() {
    let env = [("NOMAD_VAR_image".to_string(), "env:1".to_string()), ("NOMAD_VAR_nope".into(), "x".into())];
    let job = parse_job("v.hcl", VAR_JOB, &VarInputs::default().with_env(env.clone())).unwrap().job;
    assert_eq!(job.task_groups[0].tasks[0].config["image"], json!("env:1"));
    assert_eq!((job.region.as_str(), job.task_groups[0].count), ("home", 1));

    let files = [("a.hcl", "image = \"file:a\"\ncount = 3\n"), ("b.json", r#"{"image": "file:b", "debug": true}"#)];
    let vars = with_files(&files).with_env(env.clone());
    let job = parse_job("v.hcl", VAR_JOB, &vars).unwrap().job;
    assert_eq!(job.task_groups[0].tasks[0].config["image"], json!("file:b"));
    assert_eq!(job.task_groups[0].count, 3);
    assert_eq!(job.task_groups[0].tasks[0].env["DEBUG"], "true");

    let mut vars = with_files(&files).with_env(env);
    vars.args.insert("image".into(), "arg:1".into());
    vars.args.insert("count".into(), "4".into());
    let job = parse_job("v.hcl", VAR_JOB, &vars).unwrap().job;
    assert_eq!(job.task_groups[0].tasks[0].config["image"], json!("arg:1"));
    assert_eq!(job.task_groups[0].count, 4);
}

#[test]
fn var_file_mistakes_name_the_file_and_line() {
    let err = parse_job("v.hcl", VAR_JOB, &with_files(&[("prod.hcl", "image = \"x\"\n\nzone = \"a\"\n")])).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("prod.hcl", 3), "{err}");
    assert!(err.message.contains("variable \"zone\" is set here but not declared"), "{err}");
    let err = parse_job("v.hcl", VAR_JOB, &with_files(&[("prod.hcl", "variable \"image\" {}\n")])).unwrap_err();
    assert!(err.message.contains("declare variable \"image\" there and write `image = <value>` here"), "{err}");
    let err = parse_job("v.hcl", VAR_JOB, &with_files(&[("p.json", "[1]")])).unwrap_err();
    assert!(err.message.contains("not a JSON object of variable values"), "{err}");
    let err = parse_job("v.hcl", VAR_JOB, &with_files(&[("p.hcl", "image = \"x\"\ncount = \"many\"\n")])).unwrap_err();
    assert!(
        err.message.contains("p.hcl:2: the string \"many\" is not compatible with the variable's type number"),
        "{err}"
    );
}

#[test]
fn validation_rules_check_the_value_in_use() {
    let mut vars = VarInputs::default();
    vars.args.insert("image".into(), "x".into());
    vars.args.insert("count".into(), "12".into());
    let err = parse_job("v.hcl", VAR_JOB, &vars).unwrap_err();
    assert_eq!(err.line, 7, "{err}");
    assert_eq!(
        err.message,
        "invalid value for variable \"count\" (from -var count): The count must be between 1 and 9."
    );

    let bad_rule = |rule: &str| {
        let src = format!("variable \"n\" {{\n  default = 1\n  validation {{\n{rule}\n  }}\n}}\n");
        parse_job("r.hcl", &src, &VarInputs::default()).unwrap_err().message
    };
    let m = bad_rule("condition = true\nerror_message = \"Never.\"");
    assert!(m.contains("must refer to var.n"), "{m}");
    let m = bad_rule("condition = var.n > 0\nerror_message = \"too small\"");
    assert!(m.contains("at least one full sentence"), "{m}");
    let m = bad_rule("condition = var.n > 0 && var.other\nerror_message = \"Bad.\"");
    assert!(m.contains("can only refer to var.n"), "{m}");
    let m = bad_rule("condition = var.n\nerror_message = \"Bad.\"");
    assert!(m.contains("must be true or false, not a number"), "{m}");
    let m = bad_rule("condition = var.n > 0\nerror_message = \"Bad.\"\nseverity = 1");
    assert!(m.contains("unsupported argument \"severity\" in validation"), "{m}");
}

#[test]
fn dynamic_blocks_give_the_same_job_as_written_out() {
    let dynamic = r#"locals {
  ports = { http = 8080, admin = 9090 }
  mounts = ["/srv/a", "/srv/b"]
}
job "d" {
  group "g" {
    network {
      dynamic "port" {
        for_each = local.ports
        labels   = [port.key]
        content {
          static = port.value
        }
      }
    }
    dynamic "task" {
      for_each = ["web", "worker"]
      iterator = t
      labels   = [t.value]
      content {
        driver = "docker"
        config {
          image = "app:${t.key}"
          dynamic "mount" {
            for_each = local.mounts
            content {
              type   = "bind"
              source = mount.value
              target = "/data/${mount.key}"
            }
          }
        }
        env {
          ROLE = t.value
          DIR  = "${NOMAD_TASK_DIR}"
        }
      }
    }
  }
}
"#;
    let written_out = r#"job "d" {
  group "g" {
    network {
      port "admin" { static = 9090 }
      port "http" { static = 8080 }
    }
    task "web" {
      driver = "docker"
      config {
        image = "app:0"
        mount {
          type   = "bind"
          source = "/srv/a"
          target = "/data/0"
        }
        mount {
          type   = "bind"
          source = "/srv/b"
          target = "/data/1"
        }
      }
      env {
        ROLE = "web"
        DIR  = "${NOMAD_TASK_DIR}"
      }
    }
    task "worker" {
      driver = "docker"
      config {
        image = "app:1"
        mount {
          type   = "bind"
          source = "/srv/a"
          target = "/data/0"
        }
        mount {
          type   = "bind"
          source = "/srv/b"
          target = "/data/1"
        }
      }
      env {
        ROLE = "worker"
        DIR  = "${NOMAD_TASK_DIR}"
      }
    }
  }
}
"#;
    let a = serde_json::to_value(parse("dyn.hcl", dynamic).unwrap().job).unwrap();
    let b = serde_json::to_value(parse("plain.hcl", written_out).unwrap().job).unwrap();
    assert_eq!(a, b);
    assert_eq!(a["TaskGroups"][0]["Tasks"][1]["Config"]["mount"][1]["source"], "/srv/b");

    let err =
        parse("d.hcl", "job \"d\" {\n  dynamic \"group\" {\n    for_each = 3\n    content {}\n  }\n}\n").unwrap_err();
    assert!(err.message.contains("for_each: expected a list, set or map, found a number"), "{err}");
    let err = parse("d.hcl", "job \"d\" {\n  dynamic \"group\" {\n    for_each = [1]\n  }\n}\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("needs exactly one content block"), "{err}");
    let err =
        parse("d.hcl", "job \"d\" {\n  dynamic \"gruop\" {\n    for_each = [1]\n    content {}\n  }\n}\n").unwrap_err();
    assert!(err.message.contains("unsupported block type \"gruop (dynamic)\" in job \"d\""), "{err}");
}

#[test]
fn affinity_and_spread_blocks_are_read_defaulted_and_checked() {
    let src = r#"job "p" {
  affinity {
    attribute = "${node.datacenter}"
    value     = "home"
  }
  spread {
    attribute = "${meta.rack}"
    target "r1" {
      percent = 60
    }
    target "r2" {
      percent = 40
    }
  }
  group "g" {
    affinity {
      attribute = "${meta.disk}"
      regexp    = "ssd|nvme"
      weight    = -30
    }
    spread {
      attribute = "${node.datacenter}"
      weight    = 100
    }
    task "t" {
      driver = "raw_exec"
      config { command = "true" }
      affinity {
        attribute        = "${attr.cpu.arch}"
        set_contains_any = "amd64,arm64"
      }
    }
  }
}
"#;
    let json = serde_json::to_value(parse("p.hcl", src).unwrap().job).unwrap();
    assert_eq!(
        json["Affinities"],
        json!([{"LTarget": "${node.datacenter}", "RTarget": "home", "Operand": "=", "Weight": 50}])
    );
    assert_eq!(json["Spreads"][0]["Weight"], 50);
    assert_eq!(
        json["Spreads"][0]["SpreadTarget"],
        json!([{"Value": "r1", "Percent": 60}, {"Value": "r2", "Percent": 40}])
    );
    let tg = &json["TaskGroups"][0];
    assert_eq!(tg["Affinities"][0]["Operand"], "regexp");
    assert_eq!(tg["Affinities"][0]["Weight"], -30);
    assert_eq!(tg["Spreads"][0]["Weight"], 100);
    assert_eq!(tg["Tasks"][0]["Affinities"][0]["Operand"], "set_contains_any");

    let job_with = |block: &str| {
        format!("job \"p\" {{\n  {block}\n  group \"g\" {{\n    task \"t\" {{\n      driver = \"raw_exec\"\n      config {{ command = \"true\" }}\n    }}\n  }}\n}}\n")
    };
    let err = |block: &str| parse("p.hcl", &job_with(block)).unwrap_err().to_string();
    let e = err("affinity {\n    attribute = \"${meta.a}\"\n    value = \"x\"\n    weight = 0\n  }");
    assert!(e.contains("p.hcl:2:3: affinity weight cannot be zero"), "{e}");
    let e = err("affinity {\n    attribute = \"${meta.a}\"\n    value = \"x\"\n    weight = 120\n  }");
    assert!(e.contains("job affinity weight 120 must be within the range [-100,100]"), "{e}");
    let e = err("affinity {\n    attribute = \"${meta.a}\"\n    operator = \"distinct_hosts\"\n  }");
    assert!(e.contains("job affinity has unknown operator \"distinct_hosts\""), "{e}");
    let e = err("spread {\n    attribute = \"${meta.rack}\"\n    target \"a\" {\n      percent = 70\n    }\n    target \"b\" {\n      percent = 40\n    }\n  }");
    assert!(e.contains("sum of job spread target percentages must not be greater than 100%; got 110%"), "{e}");
    let e = err("spread {\n    target \"a\" {\n      percent = 10\n    }\n  }");
    assert!(e.contains("job spread needs an attribute"), "{e}");
    let task_spread = src.replace(
        "      affinity {\n        attribute        = \"${attr.cpu.arch}\"",
        "      spread {\n        attribute        = \"${attr.cpu.arch}\"",
    );
    let e = parse("p.hcl", &task_spread).unwrap_err().to_string();
    assert!(e.contains("unsupported block type \"spread\" in task \"t\""), "{e}");
}

#[test]
fn migrate_blocks_merge_job_then_group_and_only_service_jobs_take_them() {
    let src =
        "job \"j\" {\n  migrate {\n    max_parallel = 2\n    min_healthy_time = \"20s\"\n  }\n  group \"a\" {\n    \
               migrate {\n      health_check = \"task_states\"\n    }\n    task \"t\" { driver = \"exec\" }\n  }\n  \
               group \"b\" {\n    task \"t\" { driver = \"exec\" }\n  }\n}\n";
    let job = parse("m.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    let a = job.task_groups[0].migrate.as_ref().expect("migrate");
    assert_eq!((a.max_parallel, a.health_check.as_str(), a.min_healthy_time), (2, "task_states", 20 * SECOND));
    assert_eq!(a.healthy_deadline, 300 * SECOND, "unset fields keep Nomad's defaults");
    let b = job.task_groups[1].migrate.as_ref().expect("the job's block reaches every group");
    assert_eq!((b.max_parallel, b.health_check.as_str()), (2, "checks"));
    // A service group without any block gets the defaults.
    let plain = parse("p.hcl", &task_job("      driver = \"exec\"")).unwrap().job;
    assert_eq!(plain.task_groups[0].migrate, Some(crate::structs::MigrateStrategy::default()));

    let batch = "job \"j\" {\n  type = \"batch\"\n  group \"g\" {\n    migrate { max_parallel = 1 }\n    task \"t\" { \
                 driver = \"exec\" }\n  }\n}\n";
    let err = parse("b.hcl", batch).unwrap_err().to_string();
    assert!(err.contains("job type \"batch\" does not allow a migrate block"), "{err}");
    let bad =
        "job \"j\" {\n  group \"g\" {\n    migrate {\n      max_parallel = -1\n      health_check = \"http\"\n    \
               }\n    task \"t\" { driver = \"exec\" }\n  }\n}\n";
    let err = parse("v.hcl", bad).unwrap_err().to_string();
    assert!(err.starts_with("v.hcl:2:") && err.contains("max_parallel must be >= 0 but found -1"), "{err}");
    assert!(err.contains("health_check must be \"checks\" or \"task_states\""), "{err}");
}

#[test]
fn a_fragment_decodes_and_only_validation_rejects_it() {
    // Nomad's split: the parser takes a job without groups or a task without
    // a driver; the servers' validation refuses them.
    let src = "job \"fragment\" {\n  datacenters = [\"dc1\"]\n}\n";
    let decoded = decode_job("fragment.hcl", src, &VarInputs::default()).expect("a fragment decodes");
    assert_eq!(decoded.job.id, "fragment");
    assert!(decoded.job.task_groups.is_empty());
    let err = decoded.validate().unwrap_err();
    assert!(err.to_string().contains("fragment.hcl:1") && err.message.contains("no task groups"), "{err}");

    let no_driver = "job \"j\" {\n  group \"g\" {\n    task \"t\" {\n    }\n  }\n}\n";
    let decoded = decode_job("d.hcl", no_driver, &VarInputs::default()).expect("a task without driver decodes");
    assert_eq!(decoded.job.task_groups[0].tasks[0].name, "t");
    let err = decoded.validate().unwrap_err();
    assert!(err.to_string().contains("d.hcl:3") && err.message.contains("driver"), "{err}");
}

#[test]
fn sticky_volumes_follow_nomads_rules() {
    let vol = |body: &str| {
        format!("job \"j\" {{\n  group \"g\" {{\n    volume \"data\" {{\n{body}\n    }}\n    task \"t\" {{ driver = \"exec\" }}\n  }}\n}}\n")
    };
    let csi = "      type = \"csi\"\n      source = \"db\"\n      access_mode = \"single-node-writer\"\n      attachment_mode = \"file-system\"\n      sticky = true";
    let job = parse("s.hcl", &vol(csi)).unwrap_or_else(|e| panic!("{e}")).job;
    assert!(job.task_groups[0].volumes["data"].sticky);
    let err = parse("s.hcl", &vol(&format!("{csi}\n      per_alloc = true"))).unwrap_err();
    assert!(err.message.contains("cannot be per_alloc and sticky"), "{err}");
    let err = parse("s.hcl", &vol("      type = \"host\"\n      source = \"db\"\n      sticky = true")).unwrap_err();
    assert!(err.message.contains("sticky needs a dynamic host volume, which berth does not have"), "{err}");
}

#[test]
fn template_options_are_read_defaulted_and_checked_as_nomad_does() {
    let src = task_job(concat!(
        "      driver = \"raw_exec\"\n",
        "      template {\n        data = \"x\"\n        destination = \"local/a.conf\"\n",
        "        change_mode = \"script\"\n        change_script {\n          command = \"/local/reload.sh\"\n",
        "          args = [\"-q\"]\n          fail_on_error = true\n        }\n",
        "        splay = \"0s\"\n        once = true\n        uid = 1000\n        gid = -1\n",
        "        error_on_missing_key = true\n        wait {\n          min = \"2s\"\n          max = \"10s\"\n        }\n",
        "      }\n",
        "      template {\n        data = \"y\"\n        destination = \"local/b.conf\"\n        change_mode = \"signal\"\n",
        "        change_signal = \"sigusr1\"\n        vault_grace = \"15s\"\n      }",
    ));
    let parsed = parse("t.hcl", &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.warnings, vec![crate::structs::VAULT_GRACE_DEPRECATED.to_string()]);
    let json = serde_json::to_value(&parsed.job).unwrap();
    let tmpls = &json["TaskGroups"][0]["Tasks"][0]["Templates"];
    assert_eq!(
        tmpls[0]["ChangeScript"],
        json!({"Command": "/local/reload.sh", "Args": ["-q"], "Timeout": 5 * SECOND, "FailOnError": true, "RunOnFirstRender": false})
    );
    assert_eq!(
        (&tmpls[0]["Splay"], &tmpls[0]["Once"], &tmpls[0]["Uid"], &tmpls[0]["Gid"], &tmpls[0]["ErrMissingKey"]),
        (&json!(0), &json!(true), &json!(1000), &json!(-1), &json!(true)),
        "an explicit splay of 0 stays 0"
    );
    assert_eq!(tmpls[0]["Wait"], json!({"Min": 2 * SECOND, "Max": 10 * SECOND}));
    assert_eq!((&tmpls[1]["ChangeSignal"], &tmpls[1]["Splay"]), (&json!("SIGUSR1"), &json!(5 * SECOND)));

    for (change, want) in [
        ("min = \"2s\"", "wait min 10s is greater than max 2s"),
        ("command = \"/local/reload.sh\"", "template change_script needs a command"),
        ("fail_on_error = true", "run_on_first_render: berth cannot run a command inside a task"),
        ("destination = \"local/a.conf\"", "template destination \"../../a.conf\" escapes the allocation directory"),
        ("change_mode = \"script\"", "template change_mode \"reload\" is not restart, signal, script or noop"),
    ] {
        let replacement = match change {
            "min = \"2s\"" => "min = \"10s\"\n          max = \"2s\"".to_string(),
            "command = \"/local/reload.sh\"" => "command = \"\"".to_string(),
            "fail_on_error = true" => "run_on_first_render = true".to_string(),
            "destination = \"local/a.conf\"" => "destination = \"../../a.conf\"".to_string(),
            _ => "change_mode = \"reload\"".to_string(),
        };
        let bad = src.replacen(change, &replacement, 1).replacen("          max = \"10s\"\n", "", 1);
        let e = parse("t.hcl", &bad).unwrap_err().to_string();
        assert!(e.contains(want), "{change}: {e}");
    }
}

#[test]
fn devices_are_read_and_leave_the_group_unplaceable_on_berth() {
    let src = task_job(concat!(
        "      driver = \"docker\"\n      resources {\n",
        "        device \"nvidia/gpu\" {\n          count = 2\n",
        "          constraint {\n            attribute = \"${device.attr.memory}\"\n            operator = \">=\"\n            value = \"2 GiB\"\n          }\n",
        "          affinity {\n            attribute = \"${device.model}\"\n            value = \"1080ti\"\n            weight = 50\n          }\n",
        "        }\n        device \"fpga\" {}\n      }",
    ));
    let job = parse("d.hcl", &src).unwrap_or_else(|e| panic!("{e}")).job;
    let json = serde_json::to_value(&job).unwrap();
    let devices = &json["TaskGroups"][0]["Tasks"][0]["Resources"]["Devices"];
    assert_eq!((&devices[0]["Name"], &devices[0]["Count"]), (&json!("nvidia/gpu"), &json!(2)));
    assert_eq!(devices[0]["Constraints"][0]["Operand"], json!(">="));
    assert_eq!(devices[0]["Affinities"][0]["Weight"], json!(50));
    assert_eq!((&devices[1]["Name"], &devices[1]["Count"]), (&json!("fpga"), &json!(1)), "count defaults to 1");
    let e = parse("d.hcl", &src.replace("operator = \">=\"", "operator = \"distinct_hosts\"")).unwrap_err();
    assert!(e.to_string().contains("device \"nvidia/gpu\" constraint: using unsupported operand"), "{e}");
}

#[test]
fn max_run_duration_is_for_batch_groups() {
    let src = concat!(
        "job \"j\" {\n  type = \"batch\"\n  group \"g\" {\n    max_run_duration = \"90s\"\n",
        "    task \"t\" { driver = \"raw_exec\" }\n  }\n}\n"
    );
    let job = parse("m.hcl", src).unwrap_or_else(|e| panic!("{e}")).job;
    assert_eq!(serde_json::to_value(&job).unwrap()["TaskGroups"][0]["MaxRunDuration"], json!(90 * SECOND));
    let alloc = crate::structs::Allocation {
        job: Some(std::sync::Arc::new(job.clone())),
        task_group: "g".into(),
        create_time: 1_000,
        ..Default::default()
    };
    assert_eq!(alloc.max_run_deadline(), Some(1_000 + 90 * SECOND));
    let e = parse("m.hcl", &src.replace("batch", "service")).unwrap_err();
    assert!(e.to_string().contains("job type \"service\" does not allow max_run_duration"), "{e}");
    let e = parse("m.hcl", &src.replace("\"90s\"", "\"0s\"")).unwrap_err();
    assert!(e.to_string().contains("max_run_duration must be greater than zero"), "{e}");
}

#[test]
fn a_ui_block_is_kept_and_an_action_refused() {
    let src = concat!(
        "job \"j\" {\n  ui {\n    description = \"Nomad **Example** Job\"\n",
        "    link {\n      label = \"Docs\"\n      url   = \"https://example.com/docs\"\n    }\n  }\n",
        "  group \"g\" {\n    task \"t\" {\n      driver = \"raw_exec\"\n",
        "      action \"hello\" {\n        command = \"/bin/echo\"\n      }\n    }\n  }\n}\n"
    );
    let e = parse("u.hcl", src).unwrap_err();
    assert_eq!((e.line, e.column), (12, 7));
    assert!(e.message.contains("the \"action\" block needs commands run inside a running task"), "{e}");
    let job = parse("u.hcl", &src.replace("      action \"hello\" {\n        command = \"/bin/echo\"\n      }\n", ""))
        .unwrap_or_else(|e| panic!("{e}"))
        .job;
    assert_eq!(
        serde_json::to_value(&job).unwrap()["UI"],
        json!({"Description": "Nomad **Example** Job", "Links": [{"Label": "Docs", "URL": "https://example.com/docs"}]})
    );
}
