//! What the host and the guest agent say to each other: one TCP connection
//! per request, the request as one JSON line, then either one JSON line of
//! answer (`Exec`, `Ping`) or, after a `Connected` line, the raw bytes of a
//! bridged stream (`Connect`).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The port the guest agent listens on inside the VM.
pub const AGENT_PORT: u16 = 7000;

/// A request to the guest agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Are you there?
    Ping,
    /// Run `sh -c script`, killing its process group after `timeout_ms`.
    Exec {
        /// The shell script.
        script: String,
        /// Longest it may run.
        timeout_ms: u64,
    },
    /// Bridge this connection to a unix socket (a path) or a TCP address
    /// (`host:port`) inside the guest.
    Connect {
        /// Where to connect.
        to: String,
    },
}

/// The guest agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Answer to `Ping`.
    Pong,
    /// How an `Exec` ended.
    Exited {
        /// Exit code; -1 when killed by a signal or the timeout.
        code: i32,
        /// Its standard output (lossy UTF-8).
        stdout: String,
        /// Its standard error (lossy UTF-8).
        stderr: String,
        /// Whether the timeout killed it.
        timed_out: bool,
    },
    /// `Connect` succeeded; raw bytes follow.
    Connected,
    /// The request could not be served.
    Failed {
        /// Why.
        error: String,
    },
}

/// Writes `message` as one JSON line.
pub fn send<T: Serialize>(mut writer: impl Write, message: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// Reads one JSON line.
pub fn receive<T: for<'de> Deserialize<'de>>(reader: &mut impl BufRead) -> std::io::Result<T> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before an answer"));
    }
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
