//! [`NodeVm`]: one guest booted from the [`Image`] under QEMU.
//!
//! Each VM has its own directory (under the temp dir, named after the test
//! process): a qcow2 overlay of the image's root disk (so a reboot keeps
//! what the guest wrote), the console log, and `work/`, shared into the
//! guest at `/host/work` (read-write; files under `work/rootfs/` are copied
//! over `/` at boot). The directory holding the test's binaries is shared
//! read-only at `/host/bin`; it must hold `nodevm`, whose `agent` the
//! guest's init starts.
//!
//! The network is QEMU's user network with `restrict=on`: the guest reaches
//! only the addresses given in [`VmConfig::forward`] (in 10.0.2.0/24, e.g.
//! [`HOST_IP`]`:3260`), each connection relayed by `nodevm relay` to its
//! host address; the host reaches the guest agent through one forwarded
//! loopback port. (QEMU refuses command forwards on 10.0.2.2, its own
//! address, so forwarded services get addresses of their own.)
//!
//! QEMU is started with a parent-death signal, and a later boot removes the
//! VMs and directories of test processes that no longer exist, so a crashed
//! run leaves nothing running.

use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::protocol::{receive, send, Answer, Request, AGENT_PORT};
use crate::{Image, VmError};

/// The guest-side address a test usually forwards host services to.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (slower, runs anywhere).
    Tcg,
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The guest's host name (also names the VM's directory).
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Daemons the init starts: `iscsid`, `multipathd`.
    pub services: Vec<String>,
    /// The initiator name written to `/etc/iscsi/initiatorname.iscsi`.
    pub initiator: Option<String>,
    /// Guest-side address (in 10.0.2.0/24, not .2, .3 or .15) → host address.
    pub forwards: Vec<(SocketAddrV4, SocketAddr)>,
    /// Files placed in the guest before the daemons start: path, content, mode.
    pub files: Vec<(PathBuf, Vec<u8>, u32)>,
    /// Host directory shared at `/host/bin` (holding `nodevm`).
    pub bin_dir: PathBuf,
    /// How long a boot may take until the agent answers.
    pub boot_timeout: Duration,
    /// `None`: KVM where a probe boot works (or `BERTH_NODEVM_ACCEL`), else TCG.
    pub accel: Option<Accel>,
}

impl VmConfig {
    /// A 1 GiB, one-CPU node running iscsid, sharing the directory of the
    /// running test's binaries (`target/<profile>`).
    pub fn new(name: &str) -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|deps| deps.parent().unwrap_or(deps).to_path_buf()))
            .unwrap_or_default();
        Self {
            name: name.to_owned(),
            memory_mib: 1024,
            cpus: 1,
            services: vec!["iscsid".to_owned()],
            initiator: None,
            forwards: Vec::new(),
            files: Vec::new(),
            bin_dir,
            boot_timeout: Duration::from_secs(180),
            accel: None,
        }
    }

    /// Makes `host` reachable from the guest at `guest` (e.g.
    /// `10.0.2.100:3260`; see [`HOST_IP`]).
    pub fn forward(mut self, guest: SocketAddrV4, host: SocketAddr) -> Self {
        self.forwards.push((guest, host));
        self
    }

    /// Places a file in the guest at boot.
    pub fn file(mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.into(), content.into(), mode));
        self
    }

    /// Starts these daemons at boot (replacing the default list).
    pub fn services(mut self, services: &[&str]) -> Self {
        self.services = services.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// How a command in the guest ended.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; -1 when killed.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// A booted guest. Dropping it powers it off and removes its directory.
pub struct NodeVm {
    config: VmConfig,
    image: Image,
    accel: Accel,
    dir: PathBuf,
    qemu: Option<Child>,
    agent: SocketAddr,
    boot_time: Duration,
}

/// Directory holding every VM of this user (one subdirectory per VM).
fn vms_dir() -> PathBuf {
    std::env::temp_dir().join("berth-nodevm")
}

fn free_port() -> Result<u16, VmError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(VmError::io("127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(VmError::io("127.0.0.1:0"))?.port())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills QEMUs and removes directories of VMs whose test process is gone.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(vms_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid_alive(owner) {
            continue;
        }
        if let Ok(pid) = std::fs::read_to_string(entry.path().join("qemu.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&name) {
                    // SAFETY: kill(2) takes no pointers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

impl NodeVm {
    /// Boots a VM and waits until its agent answers.
    pub fn boot(config: VmConfig) -> Result<NodeVm, VmError> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        if !config.bin_dir.join("nodevm").is_file() {
            return Err(VmError::Image(format!(
                "{} has no `nodevm` binary (build it: cargo build -p nodevm, with --release for a benchmark)",
                config.bin_dir.display()
            )));
        }
        let image = Image::get()?;
        sweep_leftovers();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let dir = vms_dir().join(format!("{}-{sequence}-{}", std::process::id(), config.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work/rootfs")).map_err(VmError::io(&dir))?;
        for (path, content, mode) in &config.files {
            let at = dir.join("work/rootfs").join(path.strip_prefix("/").unwrap_or(path));
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent).map_err(VmError::io(parent))?;
            }
            std::fs::write(&at, content).map_err(VmError::io(&at))?;
            std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                .map_err(VmError::io(&at))?;
        }
        let overlay = dir.join("root.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.root())
            .arg(&overlay)
            .status()
            .map_err(VmError::io("qemu-img"))?;
        if !status.success() {
            return Err(VmError::Image(format!("qemu-img create {} failed: {status}", overlay.display())));
        }
        let accel = match config.accel {
            Some(accel) => accel,
            None => detect_accel(&image, &config),
        };
        let mut vm = NodeVm {
            config,
            image,
            accel,
            dir,
            qemu: None,
            agent: SocketAddr::from(([127, 0, 0, 1], 0)),
            boot_time: Duration::ZERO,
        };
        vm.start()?;
        Ok(vm)
    }

    /// Starts QEMU on the VM's disk and waits for the agent.
    fn start(&mut self) -> Result<(), VmError> {
        let started = Instant::now();
        self.agent = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let console = self.dir.join("console.log");
        let relay = self.config.bin_dir.join("nodevm");
        let mut netdev = format!("user,id=net0,restrict=on,hostfwd=tcp:{}-10.0.2.15:{AGENT_PORT}", self.agent);
        for (index, (guest, host)) in self.config.forwards.iter().enumerate() {
            // QEMU's option syntax takes no spaces in the command: a script.
            let script = self.dir.join(format!("relay-{index}"));
            let text = format!("#!/bin/sh\nexec '{}' relay {host}\n", relay.display());
            std::fs::write(&script, text).map_err(VmError::io(&script))?;
            std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(VmError::io(&script))?;
            netdev.push_str(&format!(",guestfwd=tcp:{guest}-cmd:{}", script.display()));
        }
        let mut cmdline = format!("console=ttyS0 panic=-1 quiet net.ifnames=0 nodevm.hostname={}", self.config.name);
        if !self.config.services.is_empty() {
            cmdline.push_str(&format!(" nodevm.services={}", self.config.services.join(",")));
        }
        if let Some(initiator) = &self.config.initiator {
            cmdline.push_str(&format!(" nodevm.initiator={initiator}"));
        }
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-name", &name, "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none"])
            .args(["-machine", "q35", "-m", &self.config.memory_mib.to_string()])
            .args(["-smp", &self.config.cpus.to_string()])
            .args(match self.accel {
                Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
                Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
            })
            .arg("-kernel")
            .arg(self.image.kernel())
            .arg("-initrd")
            .arg(self.image.initrd())
            .args(["-append", &cmdline])
            .args(["-serial", &format!("file:{}", console.display())])
            .args([
                "-drive",
                &format!("file={},if=virtio,format=qcow2,discard=unmap", self.dir.join("root.qcow2").display()),
            ])
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0,romfile="])
            .args([
                "-virtfs",
                &format!("local,path={},mount_tag=bin,security_model=none,readonly=on", self.config.bin_dir.display()),
            ])
            .args([
                "-virtfs",
                &format!("local,path={},mount_tag=work,security_model=none", self.dir.join("work").display()),
            ])
            .args(["-pidfile", &self.dir.join("qemu.pid").display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("qemu.log")).map_err(VmError::io(&self.dir))?);
        // SAFETY: prctl(2) with PR_SET_PDEATHSIG takes no pointers and is
        // async-signal-safe, as pre_exec requires.
        unsafe {
            qemu.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = qemu.spawn().map_err(|e| VmError::Qemu {
            detail: format!("cannot start qemu-system-x86_64 (apt install qemu-system-x86): {e}"),
            console: String::new(),
        })?;
        self.qemu = Some(child);
        self.wait_for_agent(self.config.boot_timeout)?;
        self.boot_time = started.elapsed();
        Ok(())
    }

    fn wait_for_agent(&mut self, timeout: Duration) -> Result<(), VmError> {
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.qemu.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
                return Err(VmError::Qemu {
                    detail: format!("exited with {status} during boot: {}", log.trim()),
                    console: self.console_tail(40),
                });
            }
            if self.request(&Request::Ping, Duration::from_secs(2)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(VmError::Agent {
                    detail: format!("no answer within {timeout:?} of boot ({:?})", self.accel),
                    console: self.console_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// One request to the agent on a fresh connection, and its answer.
    fn request(&self, request: &Request, timeout: Duration) -> std::io::Result<Answer> {
        let stream = TcpStream::connect_timeout(&self.agent, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(timeout))?;
        send(&stream, request)?;
        receive(&mut BufReader::new(stream))
    }

    /// How long the last boot took, QEMU start to agent answer.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// KVM or TCG.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The host side of `/host/work`.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The last `lines` lines the guest printed on its console.
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `sh -c script` in the guest (up to `timeout`).
    pub fn exec_timeout(&self, script: &str, timeout: Duration) -> Result<Output, VmError> {
        let request = Request::Exec { script: script.to_owned(), timeout_ms: timeout.as_millis() as u64 };
        let agent_error = |detail: String| VmError::Agent { detail, console: self.console_tail(20) };
        match self.request(&request, timeout + Duration::from_secs(10)) {
            Ok(Answer::Exited { code, stdout, stderr, timed_out }) => Ok(Output { code, stdout, stderr, timed_out }),
            Ok(Answer::Failed { error }) => Err(agent_error(format!("`{script}`: {error}"))),
            Ok(other) => Err(agent_error(format!("`{script}`: unexpected answer {other:?}"))),
            Err(e) => Err(agent_error(format!("`{script}`: {e}"))),
        }
    }

    /// Runs `sh -c script` in the guest (up to 5 minutes).
    pub fn exec(&self, script: &str) -> Result<Output, VmError> {
        self.exec_timeout(script, Duration::from_secs(300))
    }

    /// Runs `script` and returns its stdout; an exit code other than 0 is
    /// an error carrying the output.
    pub fn run(&self, script: &str) -> Result<String, VmError> {
        let out = self.exec(script)?;
        if out.code == 0 {
            Ok(out.stdout)
        } else {
            Err(VmError::Failed {
                script: script.to_owned(),
                code: out.code,
                timed_out: out.timed_out,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// A stream bridged to `to` in the guest: a unix socket path or a
    /// `host:port` the guest can reach.
    pub fn connect(&self, to: &str) -> Result<TcpStream, VmError> {
        bridged(self.agent, to)
            .map_err(|e| VmError::Agent { detail: format!("connect to {to}: {e}"), console: self.console_tail(20) })
    }

    /// Serves a unix socket at `host_socket` whose every connection is
    /// bridged to the guest's unix socket `guest_socket` (e.g. a CSI
    /// plugin's), for as long as the returned forward lives.
    pub fn forward_unix(&self, guest_socket: &str, host_socket: &Path) -> Result<UnixForward, VmError> {
        let _ = std::fs::remove_file(host_socket);
        let listener = UnixListener::bind(host_socket).map_err(VmError::io(host_socket))?;
        let agent = self.agent;
        let guest = guest_socket.to_owned();
        let path = host_socket.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let guest = guest.clone();
                thread::spawn(move || {
                    let Ok(remote) = bridged(agent, &guest) else { return };
                    join_streams(client, remote);
                });
            }
        });
        Ok(UnixForward { path, stop })
    }

    /// Crashes the guest (no sync, no unmount: sysrq `b`) and boots it
    /// again from the same disk, as a node that lost power comes back.
    pub fn reboot(&mut self) -> Result<(), VmError> {
        let _ = self.exec_timeout("echo b > /proc/sysrq-trigger", Duration::from_secs(5));
        if let Some(mut qemu) = self.qemu.take() {
            let started = Instant::now();
            while qemu.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(30) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
        self.start()
    }

    /// Stops QEMU now (the disk is kept until the VM is dropped).
    pub fn power_off(&mut self) {
        if let Some(mut qemu) = self.qemu.take() {
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
    }
}

/// A connection to the agent already switched to a bridge to `guest`.
fn bridged(agent: SocketAddr, guest: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&agent, Duration::from_secs(2))?;
    send(&stream, &Request::Connect { to: guest.to_owned() })?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = &stream;
    while byte[0] != b'\n' {
        if reader.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "agent closed"));
        }
        line.push(byte[0]);
    }
    match serde_json::from_slice::<Answer>(&line) {
        Ok(Answer::Connected) => Ok(stream),
        other => Err(std::io::Error::other(format!("connect to {guest}: {other:?}"))),
    }
}

/// Copies both ways between a unix client and a bridged TCP stream.
fn join_streams(client: std::os::unix::net::UnixStream, remote: TcpStream) {
    let (Ok(mut client_read), Ok(mut remote_read)) = (client.try_clone(), remote.try_clone()) else { return };
    let (mut client_write, mut remote_write) = (client, remote);
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut remote_write);
        let _ = remote_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut remote_read, &mut client_write);
    let _ = client_write.flush();
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// A host unix socket forwarded into the guest; removed when dropped.
pub struct UnixForward {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UnixForward {
    /// The host socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the stop flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for NodeVm {
    fn drop(&mut self) {
        self.power_off();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// KVM when `BERTH_NODEVM_ACCEL` says so or a probe boot with KVM reaches
/// the agent within 20 s (the verdict is cached per host kernel); else TCG.
fn detect_accel(image: &Image, config: &VmConfig) -> Accel {
    match std::env::var("BERTH_NODEVM_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Accel::Tcg;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let verdict = image.cache_dir().join(format!("accel-{}", release.trim()));
    match std::fs::read_to_string(&verdict).as_deref().map(str::trim) {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let mut probe = config.clone();
    probe.name = "kvm-probe".to_owned();
    probe.accel = Some(Accel::Kvm);
    probe.boot_timeout = Duration::from_secs(20);
    probe.services.clear();
    probe.forwards.clear();
    probe.files.clear();
    let accel = match NodeVm::boot(probe) {
        Ok(_) => Accel::Kvm,
        Err(_) => Accel::Tcg,
    };
    let _ = std::fs::write(&verdict, if accel == Accel::Kvm { "kvm" } else { "tcg" });
    accel
}
