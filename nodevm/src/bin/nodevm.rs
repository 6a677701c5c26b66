//! `nodevm`, the two small programs of the test node VM:
//!
//! * `nodevm agent --listen ADDR` runs inside the guest (started by its
//!   init): it answers pings, runs shell scripts and bridges connections
//!   to sockets inside the guest (see `nodevm::protocol`).
//! * `nodevm relay HOST:PORT` runs on the host, started by QEMU for each
//!   connection the guest opens to a forwarded port (`guestfwd … cmd:`):
//!   it joins its stdin/stdout to that host address.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nodevm::protocol::{receive, send, Answer, Request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["agent", "--listen", addr] => agent(addr),
        ["relay", addr] => relay(addr),
        _ => {
            eprintln!("usage: nodevm agent --listen ADDR | nodevm relay HOST:PORT");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nodevm: {error}");
            ExitCode::FAILURE
        }
    }
}

fn agent(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    for stream in listener.incoming() {
        let stream = stream?;
        thread::spawn(move || {
            if let Err(error) = serve(stream) {
                eprintln!("nodevm agent: {error}");
            }
        });
    }
    Ok(())
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    match receive::<Request>(&mut reader)? {
        Request::Ping => send(&stream, &Answer::Pong),
        Request::Exec { script, timeout_ms } => send(&stream, &exec(&script, Duration::from_millis(timeout_ms))),
        Request::Connect { to } => {
            let peer: Box<dyn Duplex> = if to.starts_with('/') {
                match UnixStream::connect(&to) {
                    Ok(s) => Box::new(s),
                    Err(e) => return send(&stream, &Answer::Failed { error: format!("connecting to {to}: {e}") }),
                }
            } else {
                match TcpStream::connect(&to) {
                    Ok(s) => Box::new(s),
                    Err(e) => return send(&stream, &Answer::Failed { error: format!("connecting to {to}: {e}") }),
                }
            };
            send(&stream, &Answer::Connected)?;
            // Bytes the reader already buffered belong to the stream.
            let early = reader.buffer().to_vec();
            bridge(Box::new(stream), peer, early)
        }
    }
}

/// A stream that can be split into a reading and a writing half.
trait Duplex: Read + Write + Send {
    fn split(&self) -> std::io::Result<Box<dyn Duplex>>;
    fn close_write(&self);
}

impl Duplex for TcpStream {
    fn split(&self) -> std::io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Duplex for UnixStream {
    fn split(&self) -> std::io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Copies both ways until both sides are done.
fn bridge(a: Box<dyn Duplex>, b: Box<dyn Duplex>, early: Vec<u8>) -> std::io::Result<()> {
    let (mut a_read, mut b_read) = (a.split()?, b.split()?);
    let (mut a_write, mut b_write) = (a, b);
    let forward = thread::spawn(move || {
        let _ = b_write.write_all(&early);
        let _ = std::io::copy(&mut a_read, &mut b_write);
        b_write.close_write();
    });
    let _ = std::io::copy(&mut b_read, &mut a_write);
    a_write.close_write();
    let _ = forward.join();
    Ok(())
}

/// Runs `sh -c script` in its own process group.
fn exec(script: &str, timeout: Duration) -> Answer {
    let mut child = match Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Answer::Failed { error: format!("cannot run sh: {e}") },
    };
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let reader = thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
            }
        });
        (buffer, reader)
    };
    let (stdout, stdout_reader) = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (stderr, stderr_reader) = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let pgid = child.id() as i32;
    let (code, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status.code().unwrap_or(-1), false),
            Ok(None) if started.elapsed() > timeout => {
                // SAFETY: kill(2) takes no pointers; a negative pid signals the group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break (-1, true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Answer::Failed { error: format!("waiting for sh: {e}") },
        }
    };
    // The pipes end with the script, unless a background process it
    // started still holds them: that one is not waited for long.
    let drained = Instant::now();
    while !(stdout_reader.is_finished() && stderr_reader.is_finished()) && drained.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(2));
    }
    let text = |buffer: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    Answer::Exited { code, stdout: text(&stdout), stderr: text(&stderr), timed_out }
}

fn relay(addr: &str) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let socket = TcpStream::connect(addr)?;
    let mut from_socket = socket.try_clone()?;
    let mut to_socket = socket;
    // Unbuffered stdin/stdout: QEMU hands the guest's connection over as
    // fds 0 and 1, and bytes must pass at once, not at newlines.
    // SAFETY: fds 0 and 1 are open for the life of the process and owned here alone.
    let (mut input, mut output) =
        unsafe { (std::fs::File::from(OwnedFd::from_raw_fd(0)), std::fs::File::from(OwnedFd::from_raw_fd(1))) };
    let upstream = thread::spawn(move || {
        let _ = std::io::copy(&mut input, &mut to_socket);
        let _ = to_socket.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut from_socket, &mut output);
    // The host side closed: QEMU hands over one socket as fds 0, 1 and 2,
    // so closing fd 1 alone would keep it open; shutting down its sending
    // side lets QEMU close the guest's end.
    // SAFETY: shutdown(2) takes no pointers; on a non-socket it fails harmlessly.
    unsafe { libc::shutdown(1, libc::SHUT_WR) };
    drop(output);
    let _ = upstream.join();
    Ok(())
}
