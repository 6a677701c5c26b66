//! What every built-in plugin's RPC handlers share: running blocking work
//! under per-volume locks, answering (one warning per failure), and
//! checking request fields.

use std::path::{Path, PathBuf};

use tonic::{Response, Status};

use crate::locks::KeyGuard;
use crate::mount;
use crate::v1::volume_usage::Unit;
use crate::v1::VolumeUsage;

/// Runs `work` on the blocking pool holding `guards`, which are released
/// when the work ends (even if the RPC that started it was cancelled).
pub(crate) async fn blocking<T: Send + 'static>(
    guards: Vec<KeyGuard>,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(guards);
        result
    })
    .await
    .map_err(|e| Status::internal(format!("the operation's task failed: {e}")))?
}

/// The RPC's answer; a failure is logged (one warning with the RPC, its
/// subject, the code and the message) besides the info line every call
/// logs on arrival.
pub(crate) fn reply<T>(rpc: &'static str, subject: &str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(status) => {
            tracing::warn!(rpc = %rpc, subject = %subject, code = ?status.code(), error = %status.message(), "CSI call failed");
            Err(status)
        }
    }
}

/// Bytes as the protocol's `int64`.
pub(crate) fn bytes_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// INVALID_ARGUMENT unless `value` is set.
pub(crate) fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// An absolute path from a request field, or INVALID_ARGUMENT.
pub(crate) fn absolute(field: &str, value: &str) -> Result<PathBuf, Status> {
    require(field, value)?;
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!("{field} must be an absolute path, got {value:?}")));
    }
    Ok(path)
}

/// How long the caller will wait for this RPC, from its `grpc-timeout`
/// header (`<digits><H|M|S|m|u|n>`), if it sent one.
pub(crate) fn caller_timeout<T>(request: &tonic::Request<T>) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Whether `path` is a mount point.
pub(crate) fn is_mounted(path: &Path) -> bool {
    mount::mounted_source(path).is_some()
}

/// A filesystem's usage as NodeGetVolumeStats reports it: bytes, then inodes.
pub(crate) fn filesystem_usage(u: &mount::Usage) -> Vec<VolumeUsage> {
    vec![
        VolumeUsage {
            available: bytes_i64(u.available_bytes),
            total: bytes_i64(u.total_bytes),
            used: bytes_i64(u.used_bytes),
            unit: Unit::Bytes as i32,
        },
        VolumeUsage {
            available: bytes_i64(u.free_inodes),
            total: bytes_i64(u.total_inodes),
            used: bytes_i64(u.total_inodes.saturating_sub(u.free_inodes)),
            unit: Unit::Inodes as i32,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_callers_timeout() {
        let with = |value: &str| {
            let mut request = tonic::Request::new(());
            request.metadata_mut().insert("grpc-timeout", value.parse().unwrap());
            caller_timeout(&request)
        };
        assert_eq!(with("119999m"), Some(std::time::Duration::from_millis(119_999)));
        assert_eq!(with("2M"), Some(std::time::Duration::from_secs(120)));
        assert_eq!(with("x"), None);
        assert_eq!(caller_timeout(&tonic::Request::new(())), None);
    }
}
