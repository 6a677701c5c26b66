//! [`ApiParams`], one request's parameters decoded the way DSM decodes
//! them: query string and form body merged (form wins), standard form rules
//! (`+` is a space), order ignored, and each value JSON-decoded when it
//! parses as JSON and kept as the raw string otherwise. So `uuid="abc"` and
//! `uuid=abc` both give the string `abc`, while `target_id=4` gives the
//! number 4 (which target methods refuse).

use std::collections::HashMap;

use serde_json::Value;

/// Decoded parameters of one request.
#[derive(Debug, Default)]
pub(crate) struct ApiParams {
    raw: HashMap<String, String>,
}

impl ApiParams {
    /// Merges the query string and, when present, the form body.
    pub fn parse(query: Option<&str>, form: Option<&[u8]>) -> Self {
        let mut raw = HashMap::new();
        let query_pairs = query.map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default());
        let form_pairs = form.map(|b| serde_urlencoded::from_bytes::<Vec<(String, String)>>(b).unwrap_or_default());
        for (key, value) in query_pairs.into_iter().chain(form_pairs).flatten() {
            raw.insert(key, value);
        }
        Self { raw }
    }

    /// The decoded value: JSON when the text is JSON, else the raw string.
    pub fn value(&self, key: &str) -> Option<Value> {
        let raw = self.raw.get(key)?;
        Some(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())))
    }

    /// The value when it decodes to a string.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value when it decodes to a non-negative integer.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.value(key)?.as_u64()
    }

    /// The value when it decodes to a boolean (`true`/`false`, also `yes`/`no`).
    pub fn boolean(&self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(b),
            Value::String(s) if s == "yes" => Some(true),
            Value::String(s) if s == "no" => Some(false),
            _ => None,
        }
    }

    /// The raw text, before JSON decoding (login credentials are compared raw).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    /// Whether the parameter was sent at all.
    pub fn has(&self, key: &str) -> bool {
        self.raw.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_strings_decode_alike_but_digits_become_numbers() {
        let params = ApiParams::parse(
            Some("uuid=%22abc%22&name=pvc-1&target_id=4&description=1234&q=a+b"),
            Some(b"name=%22from-form%22&size=1073741824"),
        );
        assert_eq!(params.string("uuid").as_deref(), Some("abc"));
        assert_eq!(params.string("name").as_deref(), Some("from-form"));
        assert_eq!(params.string("target_id"), None);
        assert_eq!(params.number("target_id"), Some(4));
        assert_eq!(params.string("description"), None);
        assert_eq!(params.string("q").as_deref(), Some("a b"));
        assert_eq!(params.number("size"), Some(1 << 30));
    }
}
