//! `SYNO.Core.Storage.Volume get`: the capacity of the storage volume LUNs
//! are created on.

use serde::Deserialize;

use super::client::DsmClient;
use super::error::DsmError;
use super::params::Params;

const VOLUME_API: &str = "SYNO.Core.Storage.Volume";

/// Capacity of one storage volume, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeCapacity {
    /// Free bytes.
    pub free: u64,
    /// Total bytes.
    pub total: u64,
}

#[derive(Deserialize)]
struct VolumeData {
    volume: RawVolume,
}

/// DSM sends the byte counts as strings.
#[derive(Deserialize)]
struct RawVolume {
    size_free_byte: String,
    size_total_byte: String,
}

impl DsmClient {
    /// Free and total bytes of the volume at `volume_path` (e.g. `/volume1`).
    pub async fn volume_capacity(&self, volume_path: &str) -> Result<VolumeCapacity, DsmError> {
        let params = Params::new().string("volume_path", volume_path);
        let data: VolumeData = self.call_as(VOLUME_API, "get", params).await?;
        let parse = |field: &str, text: &str| {
            text.parse::<u64>().map_err(|e| DsmError::Malformed {
                api: VOLUME_API,
                method: "get",
                detail: format!("{field} {text:?} is not a byte count: {e}"),
            })
        };
        Ok(VolumeCapacity {
            free: parse("size_free_byte", &data.volume.size_free_byte)?,
            total: parse("size_total_byte", &data.volume.size_total_byte)?,
        })
    }
}
