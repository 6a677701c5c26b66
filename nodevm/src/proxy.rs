//! [`Proxy`]: a TCP relay on the host's loopback in front of a service
//! (an iSCSI portal, DSM), whose behaviour a test switches at run time:
//! pass traffic, refuse (close every connection and every new one), or
//! blackhole (hold connections open and pass nothing, a portal that no
//! longer answers).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::VmError;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Relay both ways.
    Pass,
    /// Close all connections, and each new one at once.
    Refuse,
    /// Keep connections open but relay nothing.
    Blackhole,
}

struct State {
    mode: ProxyMode,
    /// Both streams of each relayed connection, by connection number.
    open: Vec<(u64, TcpStream)>,
    next: u64,
    accepted: u64,
}

/// A relay from a loopback port to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Starts relaying from a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Proxy, VmError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(VmError::io("127.0.0.1:0"))?;
        let addr = listener.local_addr().map_err(VmError::io("127.0.0.1:0"))?;
        let state = Arc::new(Mutex::new(State { mode: ProxyMode::Pass, open: Vec::new(), next: 0, accepted: 0 }));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                thread::spawn(move || relay(client, upstream, &shared));
            }
        });
        Ok(Proxy { addr, state })
    }

    /// The loopback address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (also the refused and held ones): how
    /// often a client tried.
    pub fn connections(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).accepted
    }

    /// Switches the mode; `Refuse` also closes every open connection.
    pub fn set(&self, mode: ProxyMode) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.mode = mode;
        if mode == ProxyMode::Refuse {
            for (_, stream) in state.open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(ProxyMode::Refuse);
    }
}

fn relay(client: TcpStream, upstream: SocketAddr, state: &Arc<Mutex<State>>) {
    {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        guard.accepted += 1;
        if guard.mode == ProxyMode::Refuse {
            return;
        }
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else { return };
    let id = {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        guard.next += 1;
        let id = guard.next;
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                guard.open.push((id, clone));
            }
        }
        id
    };
    if let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) {
        let forward_state = Arc::clone(state);
        let forward = thread::spawn(move || pump(client_read, server, &forward_state));
        pump(server_read, client, state);
        let _ = forward.join();
    }
    state.lock().unwrap_or_else(|e| e.into_inner()).open.retain(|(open, _)| *open != id);
}

/// Copies `from` to `to` while the mode passes traffic; in blackhole mode
/// what arrives is held back (dropped), so the peer sees silence.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &Mutex<State>) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match state.lock().unwrap_or_else(|e| e.into_inner()).mode {
            ProxyMode::Pass => {}
            ProxyMode::Blackhole => continue,
            ProxyMode::Refuse => break,
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
