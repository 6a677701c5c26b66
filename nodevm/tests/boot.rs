//! The node VM itself: it boots Debian's kernel with the modules storage
//! tests need, runs commands with their exit codes and output, reaches a
//! forwarded host port and nothing else, bridges a guest unix socket to
//! the host, keeps its disk across a crash reboot, and leaves nothing
//! behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use std::net::SocketAddrV4;

use nodevm::{NodeVm, Proxy, ProxyMode, VmConfig, HOST_IP};

/// A host echo service on loopback answering each line with `echo: <line>`.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writeln!(writer, "echo: {line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn boots_runs_forwards_and_survives_a_crash_reboot() {
    let echo = echo_server();
    let proxy = Proxy::start(echo).unwrap();
    let config = VmConfig::new("boot-test")
        .forward(SocketAddrV4::new(HOST_IP, 4000), echo)
        .forward(SocketAddrV4::new(HOST_IP, 4001), proxy.addr())
        .file("/etc/berth-test.conf", "from the host\n", 0o600);
    let mut vm = NodeVm::boot(config).unwrap();
    eprintln!("booted in {:?} ({:?})", vm.boot_time(), vm.accel());

    // Debian's kernel, with the storage modules loaded by the init.
    let uname = vm.run("uname -r").unwrap();
    assert!(uname.trim().ends_with("-amd64"), "{uname}");
    let modules = vm.run("cat /proc/modules").unwrap();
    for module in ["iscsi_tcp", "dm_multipath", "dm_round_robin", "virtio_net"] {
        assert!(modules.contains(module), "{module} not loaded:\n{modules}");
    }
    assert!(vm.run("iscsiadm --version && pidof iscsid").is_ok());
    let out = vm.exec("echo out; echo err >&2; exit 7").unwrap();
    assert_eq!((out.code, out.stdout.trim(), out.stderr.trim()), (7, "out", "err"));
    let slow = vm.exec_timeout("sleep 30", Duration::from_millis(500)).unwrap();
    assert!(slow.timed_out && slow.code == -1, "{slow:?}");
    let error = vm.run("false").unwrap_err().to_string();
    assert!(error.contains("`false` exited with 1"), "{error}");
    assert_eq!(vm.run("stat -c %a /etc/berth-test.conf; cat /etc/berth-test.conf").unwrap(), "600\nfrom the host\n");

    // The forwarded port reaches the host service; nothing else is reachable.
    let talk = "exec 3<>/dev/tcp/10.0.2.100/PORT && echo hello >&3 && head -n1 <&3";
    let bash = |port: u16| format!("timeout 10 bash -c '{}'", talk.replace("PORT", &port.to_string()));
    assert_eq!(vm.run(&bash(4000)).unwrap().trim(), "echo: hello");
    let answered = |port: u16| vm.exec(&bash(port)).unwrap().stdout.contains("echo: hello");
    assert!(!answered(4002), "an unforwarded port answered");
    proxy.set(ProxyMode::Refuse);
    assert!(!answered(4001), "a refusing proxy answered");
    proxy.set(ProxyMode::Pass);
    assert_eq!(vm.run(&bash(4001)).unwrap().trim(), "echo: hello");

    // A guest unix socket served to the host.
    vm.run(
        "setsid socat UNIX-LISTEN:/run/t.sock,fork SYSTEM:'echo served' >/dev/null 2>&1 & \
            for i in $(seq 50); do [ -S /run/t.sock ] && exit 0; sleep 0.1; done; exit 1",
    )
    .unwrap();
    let forward = vm
        .forward_unix("/run/t.sock", &std::env::temp_dir().join(format!("nodevm-t-{}.sock", std::process::id())))
        .unwrap();
    let mut stream = UnixStream::connect(forward.path()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert_eq!(text.trim(), "served");
    drop(forward);

    // What the guest wrote survives a crash reboot; what it ran does not.
    vm.run("echo kept > /var/tmp/marker; sync; sleep 1000 >/dev/null 2>&1 &").unwrap();
    vm.reboot().unwrap();
    assert_eq!(vm.run("cat /var/tmp/marker").unwrap().trim(), "kept");
    assert_ne!(vm.exec("pidof sleep").unwrap().code, 0);

    let dir = vm.work_dir();
    drop(vm);
    assert!(!dir.exists(), "the VM directory is removed");
    let qemus = std::process::Command::new("pgrep").args(["-f", "boot-test"]).output().unwrap();
    assert!(String::from_utf8_lossy(&qemus.stdout).trim().is_empty(), "a QEMU is left running");
}
