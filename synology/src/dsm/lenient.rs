//! Numbers as DSM versions send them: DSM 7 answers byte counts as strings
//! (`"size_free_byte": "123456789"`), DSM 6.2 builds and other fields as
//! JSON numbers; ids come either way. These deserialize both.

use serde::de::{self, Deserializer, Visitor};

struct Lenient;

impl Visitor<'_> for Lenient {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative number, or a string holding one")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::custom(format!("{value} is negative")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        if value >= 0.0 && value.fract() == 0.0 && value <= u64::MAX as f64 {
            Ok(value as u64)
        } else {
            Err(E::custom(format!("{value} is not a whole non-negative number")))
        }
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
        value.trim().parse().map_err(|_| E::custom(format!("{value:?} is not a number")))
    }
}

/// A `u64` sent as a number or a numeric string.
pub(crate) fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(Lenient)
}

/// A `u32` sent as a number or a numeric string.
pub(crate) fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = deserializer.deserialize_any(Lenient)?;
    std::primitive::u32::try_from(value).map_err(|_| de::Error::custom(format!("{value} is too large")))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Shape {
        #[serde(deserialize_with = "super::u64")]
        size: u64,
        #[serde(deserialize_with = "super::u32")]
        id: u32,
    }

    #[test]
    fn numbers_and_numeric_strings_both_decode() {
        let dsm7: Shape = serde_json::from_str(r#"{"size": "1073741824", "id": "7"}"#).unwrap();
        let dsm6: Shape = serde_json::from_str(r#"{"size": 1073741824, "id": 7}"#).unwrap();
        assert_eq!(dsm7, dsm6);
        assert!(serde_json::from_str::<Shape>(r#"{"size": "lots", "id": 1}"#).is_err());
        assert!(serde_json::from_str::<Shape>(r#"{"size": -1, "id": 1}"#).is_err());
    }
}
