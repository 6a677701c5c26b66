//! [`Params`], the query parameters of one SAN API call, encoded the way DSM
//! decodes them.
//!
//! DSM JSON-decodes every parameter value of the `SYNO.Core.*` APIs and falls
//! back to the raw text when that fails. A string sent unquoted can therefore
//! turn into a number (a digits-only description becomes a float and DSM
//! refuses it) and `target_id=4` is refused where `target_id="4"` works. So
//! every string goes out JSON-quoted, numbers and booleans bare, lists and
//! objects as JSON text.

use serde_json::Value;

/// Encoded parameters, in the order they were added.
#[derive(Default)]
pub(crate) struct Params(Vec<(&'static str, String)>);

impl Params {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A string, sent JSON-quoted (`uuid="3f1e…"`).
    pub(crate) fn string(mut self, key: &'static str, value: &str) -> Self {
        self.0.push((key, Value::from(value).to_string()));
        self
    }

    /// A number, sent bare (`size=1073741824`).
    pub(crate) fn number(mut self, key: &'static str, value: u64) -> Self {
        self.0.push((key, value.to_string()));
        self
    }

    /// A boolean, sent as `true` / `false`.
    pub(crate) fn boolean(mut self, key: &'static str, value: bool) -> Self {
        self.0.push((key, value.to_string()));
        self
    }

    /// A list or object, sent as JSON text (`target_ids=[5]`).
    pub(crate) fn json(mut self, key: &'static str, value: &Value) -> Self {
        self.0.push((key, value.to_string()));
        self
    }

    pub(crate) fn pairs(&self) -> &[(&'static str, String)] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_numbers_and_lists_are_not() {
        let params = Params::new()
            .string("target_id", "4")
            .string("description", "123456789012345678901234567")
            .number("size", 1 << 30)
            .boolean("is_locked", true)
            .json("target_ids", &serde_json::json!([5]));
        let pairs: Vec<(&str, &str)> = params.pairs().iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("target_id", "\"4\""),
                ("description", "\"123456789012345678901234567\""),
                ("size", "1073741824"),
                ("is_locked", "true"),
                ("target_ids", "[5]"),
            ]
        );
    }
}
