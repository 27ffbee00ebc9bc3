//! Identifiers and wall-clock timestamps in the formats the real API uses.

use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `<prefix>_` + 24 random base62 characters, like `sesn_011CZkZAtmR3yMPDzynEDxu7`.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

/// A random secret-looking token with a recognisable prefix.
pub fn new_token(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..40)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect();
    format!("{prefix}{tail}")
}

/// Now as RFC 3339 with a `Z` suffix (the format of `created_at` and friends).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A heartbeat token in Python's `isoformat()` shape (`...123456+00:00`): the `+` is what makes
/// workers that forget to percent-encode it fail the compare-and-set, as against the real API.
pub fn heartbeat_stamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_differ() {
        let a = new_id("sevt");
        assert!(a.starts_with("sevt_") && a.len() == 29);
        assert_ne!(a, new_id("sevt"));
    }

    #[test]
    fn heartbeat_stamp_has_plus_offset() {
        let t = OffsetDateTime::from_unix_timestamp(1_773_842_722).unwrap();
        assert_eq!(heartbeat_stamp(t), "2026-03-18T14:05:22.000000+00:00");
    }
}
