//! Writing `/proc/sys` knobs (forwarding, route_localnet), only when they
//! differ, as the reference plugins do.

use std::path::PathBuf;

use crate::{io_err, Result};

/// Sets `key` (slashed form, e.g. `net/ipv4/ip_forward`) to `value`.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    let path = PathBuf::from("/proc/sys").join(key);
    if std::fs::read_to_string(&path).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(io_err(format!("setting {}", path.display())))
}
