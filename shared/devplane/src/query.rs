//! Query-string parsing that keeps repeated keys (`types[]=a&types[]=b`) and decodes `+` as a
//! space, the way form decoding on the real server does: a worker that sends a heartbeat token
//! containing a raw `+` gets its CAS compared against a space and fails, as it would there.

use crate::error::ApiError;

/// Decoded `key=value` pairs in order.
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(QueryParams(pairs))
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (for bracketed array parameters).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// An integer parameter within `range`, or a 400 naming the parameter.
    pub fn int_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let value: i64 = raw.parse().map_err(|_| {
            ApiError::bad_request(format!("{key}: expected an integer, got {raw:?}"))
        })?;
        if !range.contains(&value) {
            return Err(ApiError::bad_request(format!(
                "{key}: must be between {} and {}, got {value}",
                range.start(),
                range.end()
            )));
        }
        Ok(Some(value))
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request("malformed percent-encoding in query"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_plus_and_arrays() {
        let q = QueryParams::parse(Some(
            "expected_last_heartbeat=2026-01-01T00%3A00%3A00.1%2B00%3A00&types[]=a&types%5B%5D=b&x=1+2",
        ))
        .unwrap();
        assert_eq!(
            q.get("expected_last_heartbeat"),
            Some("2026-01-01T00:00:00.1+00:00")
        );
        assert_eq!(q.all("types[]"), vec!["a", "b"]);
        assert_eq!(q.get("x"), Some("1 2"));
    }

    #[test]
    fn rejects_bad_escapes_and_ranges() {
        assert!(QueryParams::parse(Some("a=%zz")).is_err());
        assert!(QueryParams::parse(Some("a=%f")).is_err());
        let q = QueryParams::parse(Some("block_ms=0")).unwrap();
        assert!(q.int_in("block_ms", 1..=999).is_err());
        assert_eq!(q.int_in("missing", 1..=2).unwrap(), None);
        let q = QueryParams::parse(Some("block_ms=abc")).unwrap();
        assert!(q.int_in("block_ms", 1..=999).is_err());
    }
}
