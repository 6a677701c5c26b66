//! What the controller's requests ask for, checked: CreateVolume's
//! parameters (`backing`, `fs_type`; anything else is refused, naming the
//! key) and capacity ranges, with the rule for the size a new or expanded
//! volume gets (images in whole MiB).

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use super::backing::Backing;
use crate::v1::CapacityRange;

const MIB: u64 = 1 << 20;

/// The capacity of a volume created without a capacity range (and without
/// a source to take it from).
const DEFAULT_CAPACITY: u64 = 1 << 30;

/// What CreateVolume's parameters ask for; unset: the default.
#[derive(Debug, Default)]
pub(crate) struct Parameters {
    pub(crate) backing: Option<Backing>,
    pub(crate) fs_type: Option<String>,
}

impl Parameters {
    /// Parses `backing` (`directory` or `image`) and `fs_type` (`ext2`,
    /// `ext3`, `ext4`, `xfs`); any other key is INVALID_ARGUMENT.
    pub(crate) fn parse(parameters: &HashMap<String, String>) -> Result<Self, Status> {
        let mut parsed = Self::default();
        let sorted: BTreeMap<_, _> = parameters.iter().collect();
        for (key, value) in sorted {
            match key.as_str() {
                "backing" => {
                    parsed.backing = Some(match value.as_str() {
                        "directory" => Backing::Directory,
                        "image" => Backing::Image,
                        _ => {
                            return Err(Status::invalid_argument(format!(
                                "parameter backing: {value:?} is neither \"directory\" nor \"image\""
                            )))
                        }
                    });
                }
                "fs_type" => {
                    if !matches!(value.as_str(), "ext2" | "ext3" | "ext4" | "xfs") {
                        return Err(Status::invalid_argument(format!(
                            "parameter fs_type: {value:?} is not supported (ext2, ext3, ext4, xfs)"
                        )));
                    }
                    parsed.fs_type = Some(value.clone());
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "unknown parameter {key:?} (known: backing, fs_type)"
                    )))
                }
            }
        }
        Ok(parsed)
    }
}

/// A checked capacity range; 0 means unset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Range {
    required: u64,
    limit: u64,
}

impl Range {
    pub(crate) fn of(range: Option<CapacityRange>) -> Result<Self, Status> {
        let (required, limit) = crate::answers::capacity_bounds(range.as_ref())?;
        Ok(Self { required, limit })
    }

    pub(crate) fn is_unset(self) -> bool {
        self.required == 0 && self.limit == 0
    }

    /// Whether an existing volume of `capacity` bytes satisfies the range.
    pub(crate) fn allows(self, capacity: u64) -> bool {
        capacity >= self.required && (self.limit == 0 || capacity <= self.limit)
    }

    /// The capacity to give a volume with `backing` holding at least
    /// `floor` bytes (its source's size): the required bytes, or the limit
    /// if only that is set, or `floor`, or 1 GiB; images in whole MiB
    /// (rounded up, or down to stay within the limit). OUT_OF_RANGE when
    /// nothing fits.
    pub(crate) fn capacity(self, backing: Backing, floor: u64) -> Result<u64, Status> {
        let least = self.required.max(floor);
        let base = match (least, self.limit) {
            (0, 0) => DEFAULT_CAPACITY,
            (0, limit) => limit,
            (least, _) => least,
        };
        let size = match backing {
            Backing::Directory => base,
            Backing::Image if self.limit > 0 && base.div_ceil(MIB) * MIB > self.limit => self.limit / MIB * MIB,
            Backing::Image => base.div_ceil(MIB) * MIB,
        };
        if size == 0 || size < least || (self.limit > 0 && size > self.limit) {
            let unit = if backing == Backing::Image { " in whole MiB" } else { "" };
            return Err(Status::out_of_range(format!(
                "no {} volume size{unit} of at least {least} bytes fits the limit of {} bytes",
                backing.as_str(),
                self.limit
            )));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> Range {
        Range::of(Some(CapacityRange { required_bytes: required, limit_bytes: limit })).unwrap()
    }

    #[test]
    fn capacities() {
        assert_eq!(Range::default().capacity(Backing::Directory, 0).unwrap(), DEFAULT_CAPACITY);
        assert_eq!(range(1000, 0).capacity(Backing::Directory, 0).unwrap(), 1000);
        assert_eq!(range(0, 5000).capacity(Backing::Directory, 0).unwrap(), 5000);
        assert_eq!(range(1000, 0).capacity(Backing::Image, 0).unwrap(), MIB);
        assert_eq!(range(0, 3 * MIB as i64 + 5).capacity(Backing::Image, 0).unwrap(), 3 * MIB);
        assert_eq!(range(MIB as i64 + 1, 2 * MIB as i64).capacity(Backing::Image, 0).unwrap(), 2 * MIB);
        assert_eq!(range(0, 0).capacity(Backing::Image, 5 * MIB).unwrap(), 5 * MIB);
        let e = range(MIB as i64 + 1, MIB as i64 + 2).capacity(Backing::Image, 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
        assert_eq!(range(0, MIB as i64).capacity(Backing::Image, 2 * MIB).unwrap_err().code(), tonic::Code::OutOfRange);
        assert_eq!(
            Range::of(Some(CapacityRange { required_bytes: 2, limit_bytes: 1 })).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            Range::of(Some(CapacityRange { required_bytes: -1, limit_bytes: 0 })).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(range(10, 20).allows(15) && !range(10, 20).allows(25) && !range(10, 0).allows(5));
    }

    #[test]
    fn parameters_name_the_bad_key() {
        let parse = |pairs: &[(&str, &str)]| {
            Parameters::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let p = parse(&[("backing", "image"), ("fs_type", "xfs")]).unwrap();
        assert_eq!((p.backing, p.fs_type.as_deref()), (Some(Backing::Image), Some("xfs")));
        for (pairs, named) in [
            (&[("backing", "zfs")][..], "backing"),
            (&[("fs_type", "ntfs")][..], "fs_type"),
            (&[("size", "1")][..], "\"size\""),
        ] {
            let e = parse(pairs).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(named), "{e:?}");
        }
    }
}
