//! Any CSI client is served, whatever authority it sends: Python's grpcio
//! (from PyPI, as CSI sanity tools and scripts use it) puts the socket's
//! path in the HTTP/2 `:authority`, which the HTTP/2 layer refuses unless
//! berth's server rewrites it. The built-in local plugin answers
//! GetPluginInfo and Probe to grpcio over its unix socket, several calls
//! on one channel.

use std::path::Path;
use std::process::Command;

use csi::local::{self, LocalConfig, LocalPlugin};
use tokio::sync::oneshot;

const CLIENT: &str = r#"
import sys, grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
for method in ["/csi.v1.Identity/GetPluginInfo", "/csi.v1.Identity/Probe", "/csi.v1.Identity/GetPluginInfo"]:
    call = channel.unary_unary(method, request_serializer=lambda m: m, response_deserializer=lambda m: m)
    print(method, call(b"", timeout=10).hex())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_is_served_over_the_unix_socket() {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps");
    assert!(
        deps.join("grpc").is_dir(),
        "grpcio is not installed in {} (scripts/test.sh installs it from PyPI)",
        deps.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let plugin =
        LocalPlugin::open(LocalConfig { state_dir: dir.path().join("state"), node_id: "node-1".into() }).unwrap();
    let endpoint = format!("unix://{}", socket.display());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        local::serve(plugin, &endpoint, async {
            let _ = stopped.await;
        })
        .await
    });
    while !socket.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", CLIENT]).arg(&socket).env("PYTHONPATH", &deps).output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "grpcio failed:\n{stdout}\n{stderr}");
    // GetPluginInfoResponse: field 1 (name) = "berth.local".
    let name = b"berth.local".iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(stdout.matches(&format!("0a0b{name}")).count(), 2, "{stdout}");
    assert!(stdout.contains("/csi.v1.Identity/Probe"), "{stdout}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
