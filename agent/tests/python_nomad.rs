//! An existing Nomad API client library, python-nomad from PyPI, drives
//! berth unchanged: list, register (JSON), read, plan and deregister jobs,
//! read allocations and nodes, parse HCL. `scripts/test.sh` installs the
//! library into `target/pydeps`; without it the test is skipped locally and
//! fails in CI.

mod common;

use std::path::Path;
use std::process::Command;

use common::Agent;

const SCRIPT: &str = r#"
import sys, time
import nomad
n = nomad.Nomad(host="127.0.0.1", port=int(sys.argv[1]), timeout=10)
job = {"Job": {
    "ID": "py", "Name": "py", "Type": "service", "Datacenters": ["dc1"],
    "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
        "Name": "t", "Driver": "raw_exec",
        "Config": {"command": "/bin/sleep", "args": ["300"]},
        "Resources": {"CPU": 20, "MemoryMB": 16}}]}]}}
assert n.jobs.get_jobs() == []
reg = n.jobs.register_job(job)
assert len(reg["EvalID"]) == 36, reg
assert [j["ID"] for j in n.jobs.get_jobs()] == ["py"]
assert n.job.get_job("py")["TaskGroups"][0]["Tasks"][0]["Driver"] == "raw_exec"
for _ in range(100):
    allocs = n.job.get_allocations("py")
    if allocs and allocs[0]["ClientStatus"] == "running":
        break
    time.sleep(0.1)
else:
    raise SystemExit("allocation never ran: %r" % allocs)
alloc = n.allocation.get_allocation(allocs[0]["ID"])
assert alloc["TaskStates"]["t"]["State"] == "running", alloc
assert any(a["ID"] == alloc["ID"] for a in n.allocations.get_allocations())
nodes = n.nodes.get_nodes()
assert nodes[0]["Status"] == "ready", nodes
assert n.node.get_node(nodes[0]["ID"])["Name"] == nodes[0]["Name"]
job["Job"]["TaskGroups"][0]["Count"] = 2
plan = n.job.plan_job("py", job, diff=True)
assert plan["Annotations"]["DesiredTGUpdates"]["g"]["Place"] == 1, plan
assert n.job.get_summary("py")["Summary"]["g"]["Running"] == 1
parsed = n.jobs.parse('job "h" {\n  group "g" {\n    task "t" {\n      driver = "raw_exec"\n      config { command = "/bin/true" }\n    }\n  }\n}\n')
assert parsed["ID"] == "h", parsed
n.job.deregister_job("py", purge=True)
try:
    n.job.get_job("py")
    raise SystemExit("job still there after purge")
except nomad.api.exceptions.URLNotFoundNomadException:
    pass
print("python-nomad OK")
"#;

#[test]
fn python_nomad_drives_berth() {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps");
    if !deps.join("nomad").is_dir() {
        assert!(std::env::var_os("CI").is_none(), "python-nomad is not installed in {}", deps.display());
        eprintln!("skipping: python-nomad not installed (scripts/test.sh installs it)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "py1");
    let script = root.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out =
        Command::new("python3").arg(&script).arg(agent.http.to_string()).env("PYTHONPATH", &deps).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python-nomad failed:\n{stdout}\n{stderr}\n--- agent log\n{}", agent.log());
    assert!(stdout.contains("python-nomad OK"));
}
