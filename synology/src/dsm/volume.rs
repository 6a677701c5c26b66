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

/// A path that is not volume-shaped answers success without a volume.
#[derive(Deserialize)]
struct VolumeData {
    volume: Option<RawVolume>,
}

/// DSM 7 sends the byte counts as strings, DSM 6.2 builds as numbers.
#[derive(Deserialize)]
struct RawVolume {
    #[serde(deserialize_with = "super::lenient::u64")]
    size_free_byte: u64,
    #[serde(deserialize_with = "super::lenient::u64")]
    size_total_byte: u64,
}

impl DsmClient {
    /// Free and total bytes of the volume at `volume_path` (e.g. `/volume1`).
    /// A volume the NAS does not have (DSM answers 117, or nothing for a
    /// path that is no volume's) is [`DsmError::NoVolume`].
    pub async fn volume_capacity(&self, volume_path: &str) -> Result<VolumeCapacity, DsmError> {
        let params = Params::new().string("volume_path", volume_path);
        let no_volume = || DsmError::NoVolume { path: volume_path.to_owned() };
        let data: VolumeData = match self.call_as(VOLUME_API, "get", params).await {
            Err(DsmError::Api { code: 117, .. }) => return Err(no_volume()),
            other => other?,
        };
        let volume = data.volume.ok_or_else(no_volume)?;
        Ok(VolumeCapacity { free: volume.size_free_byte, total: volume.size_total_byte })
    }
}
