//! Small helpers shared across the agent: identifiers, clocks, Go-style
//! durations, humanized byte sizes and the agent's HTTP client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A new random UUID, as Nomad uses for every object ID.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The first 8 characters of an ID, as the CLI shows it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Unix time in nanoseconds.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// RFC 3339 string for a Unix-nanosecond timestamp.
pub fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(now_nanos())
}

/// Error for a malformed duration or size.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct ParseUnitError {
    kind: &'static str,
    input: String,
    reason: &'static str,
}

/// Parses a Go duration string ("30s", "1h30m", "1.5h", "300ms") to nanoseconds.
pub fn parse_duration(input: &str) -> Result<i64, ParseUnitError> {
    let err = |reason| ParseUnitError { kind: "duration", input: input.to_string(), reason };
    let s = input.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(err("missing unit (use ns, us, ms, s, m or h)")),
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    let nanos = total.round() as i64;
    Ok(if neg { -nanos } else { nanos })
}

/// Formats nanoseconds the way Go prints a `time.Duration` ("1m30s", "15s", "0s").
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let d = Duration::from_nanos(nanos.unsigned_abs());
    let sign = if nanos < 0 { "-" } else { "" };
    if d < Duration::from_secs(1) {
        let ns = d.as_nanos();
        return if ns < 1_000 {
            format!("{sign}{ns}ns")
        } else if ns < 1_000_000 {
            format!("{sign}{}µs", trim_float(ns as f64 / 1e3))
        } else {
            format!("{sign}{}ms", trim_float(ns as f64 / 1e6))
        };
    }
    let total = d.as_secs_f64();
    let h = (total / 3600.0).floor() as u64;
    let m = ((total - h as f64 * 3600.0) / 60.0).floor() as u64;
    let s = total - h as f64 * 3600.0 - m as f64 * 60.0;
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_float(s)));
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Parses a humanized byte size ("10GiB", "20G", "512MB", "1024") to bytes,
/// as go-humanize's ParseBytes does (SI for "G"/"GB", IEC for "GiB").
pub fn parse_bytes(input: &str) -> Result<u64, ParseUnitError> {
    let err = |reason| ParseUnitError { kind: "size", input: input.to_string(), reason };
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let value: f64 = s[..split].parse().map_err(|_| err("expected a number"))?;
    let unit = s[split..].trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        _ => return Err(err("unknown unit")),
    };
    Ok((value * scale).round() as u64)
}

/// Formats bytes with IEC units ("3.0 GiB"), as Nomad's CLI shows capacities.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// "5m ago"-style relative time for tables, from Unix nanoseconds; a
/// time ahead (a deadline) reads "5m from now".
pub fn pretty_time_ago(nanos: i64) -> String {
    let diff = now_nanos() - nanos;
    // A second of the future is clock noise; more is a deadline.
    let (secs, suffix) =
        if diff < -1_000_000_000 { (-diff / 1_000_000_000, "from now") } else { (diff.max(0) / 1_000_000_000, "ago") };
    match secs {
        0..=59 => format!("{secs}s {suffix}"),
        60..=3599 => format!("{}m{}s {suffix}", secs / 60, secs % 60),
        3600..=86399 => format!("{}h{}m {suffix}", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h {suffix}", secs / 86400, (secs % 86400) / 3600),
    }
}

/// Local wall-clock time for event tables ("2026-11-22T07:33:24Z").
pub fn format_timestamp(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// An HTTP client for the agent's own plain-HTTP calls (agent to agent,
/// CLI to agent). It builds even on a host without CA certificates (a
/// minimal install), where a client verifying TLS against the system's
/// roots cannot be built: it then trusts no roots, which plain HTTP does
/// not need.
pub fn http_client() -> reqwest::Client {
    http_client_with(|builder| builder)
}

/// [`http_client`] with settings such as timeouts.
pub fn http_client_with(configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> reqwest::Client {
    configure(reqwest::Client::builder()).build().unwrap_or_else(|_| {
        configure(reqwest::Client::builder().tls_certs_only(std::iter::empty()))
            .build()
            .expect("a client with no TLS roots to load always builds")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("300ms").unwrap(), 300_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(15_000_000_000), "15s");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_duration(250_000_000), "250ms");
    }

    #[test]
    fn humanized_bytes() {
        assert_eq!(parse_bytes("3GiB").unwrap(), 3 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("20G").unwrap(), 20_000_000_000);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
