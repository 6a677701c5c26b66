//! Every job file under examples/ validates; malformed files fail with
//! file:line:col, a non-zero exit and no panic.

mod common;

use common::{cli, job_file};

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.ends_with(".nomad") || n.ends_with(".nomad.hcl")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_job_validates() {
    let files = examples();
    assert!(files.len() >= 6, "expected the example jobs, found {files:?}");
    for f in files {
        let out = cli(&["job", "validate", f.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}: {out:?}", f.display());
        assert!(out.stdout.contains("Job validation successful"), "{out:?}");
        assert!(!out.stdout.contains("is ignored"), "berth drops no block: {out:?}");
    }
}

#[test]
fn hcl1_flag_and_var_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let f = job_file(
        dir.path(),
        "v.nomad",
        "variable \"n\" { default = 1 }\njob \"v\" {\n  group \"g\" {\n    count = var.n\n    task \"t\" {\n      driver = \"raw_exec\"\n      config { command = \"/bin/true\" }\n    }\n  }\n}\n",
    );
    let out = cli(&["job", "validate", "-hcl1", "-var", "n=3", &f]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = cli(&["job", "run", "-output", "-var", "n=3", &f]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["Job"]["TaskGroups"][0]["Count"], 3);
}

#[test]
fn run_output_prints_a_fragment_that_validate_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let f =
        job_file(dir.path(), "frag.nomad.hcl", "job \"frag\" {\n  group \"g\" {\n    task \"t\" {\n    }\n  }\n}\n");
    let out = cli(&["job", "run", "-output", &f]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["Job"]["TaskGroups"][0]["Tasks"][0]["Name"], "t");
    let out = cli(&["job", "validate", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("frag.nomad.hcl:3") && out.stderr.contains("driver"), "{out:?}");
}

#[test]
fn var_files_and_nomad_var_environment_reach_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let f = job_file(
        dir.path(),
        "v.nomad.hcl",
        "variable \"n\" { type = number }\nvariable \"dc\" { default = \"a\" }\njob \"v\" {\n  datacenters = [var.dc]\n  group \"g\" {\n    count = var.n\n    task \"t\" {\n      driver = \"raw_exec\"\n      config { command = \"/bin/true\" }\n    }\n  }\n}\n",
    );
    let hcl = job_file(dir.path(), "prod.hcl", "n = 2\n");
    let json = job_file(dir.path(), "dc.json", "{\"dc\": \"home\"}");
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(common::berth());
        cmd.args(args).stdin(std::process::Stdio::null());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        common::Run::from(cmd.output().unwrap())
    };
    let out = run(&["job", "run", "-output", "-var-file", &hcl, "-var-file", &json, &f], Some(("NOMAD_VAR_n", "7")));
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["Job"]["TaskGroups"][0]["Count"].clone(), v["Job"]["Datacenters"][0].clone()),
        (2.into(), "home".into())
    );
    let out = run(&["job", "run", "-output", &f], Some(("NOMAD_VAR_n", "7")));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["Job"]["TaskGroups"][0]["Count"], 7, "{out:?}");
    let out = run(&["job", "validate", "-var-file", &dir.path().join("missing.hcl").to_string_lossy(), &f], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("Error reading -var-file") && out.stderr.contains("missing.hcl"), "{out:?}");
}

#[test]
fn malformed_files_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("syntax.nomad", "job \"x\" {\n  group \"g\" {\n    count = \n  }\n}\n", ":3:"),
        (
            "unknown.nomad",
            "job \"x\" {\n  group \"g\" {\n    bogus = 1\n    task \"t\" {\n      driver = \"raw_exec\"\n    }\n  }\n}\n",
            ":3:5",
        ),
        ("type.nomad", "job \"x\" {\n  group \"g\" {\n    count = \"many\"\n  }\n}\n", ":3:"),
        ("nodriver.nomad", "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      config {}\n    }\n  }\n}\n", ":3:"),
    ];
    for (name, text, loc) in cases {
        let f = job_file(dir.path(), name, text);
        for cmd in [["job", "validate"], ["job", "run"]] {
            let out = cli(&[cmd[0], cmd[1], "-address=http://127.0.0.1:1", &f]);
            assert_ne!(out.code, 0, "{name}: {out:?}");
            assert!(out.stderr.contains(&format!("{name}{loc}")), "{name}: expected {loc} in {out:?}");
            assert!(!out.stderr.contains("panicked"), "{out:?}");
        }
    }
    let out =
        cli(&["job", "plan", "-address=http://127.0.0.1:1", &dir.path().join("syntax.nomad").display().to_string()]);
    assert_eq!(out.code, 255, "plan errors exit 255: {out:?}");
    let out = cli(&["job", "validate", "/nonexistent/job.nomad"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/job.nomad"), "{out:?}");
}
