//! Fuzzes `hands_protocol::webhook`: the secret parser and `Verifier::verify` on hostile header
//! values and bodies must never panic, and a delivery made by `sign` must be accepted exactly
//! when its id and timestamp are valid and inside the window.
//!
//! Input layout (so seeds can be written by hand):
//! - bytes 0..8: an `i64` (little-endian) used as `now`, and as the timestamp of the round trip;
//! - bytes 8..10: an `i16` (little-endian); `/ 32` gives the round trip's clock skew in seconds;
//! - the rest, split on `\n` into at most six fields: secret, `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`, one extra header line `name:value` (which can
//!   duplicate a webhook header, in any letter case), and the body (which may contain `\n`).

#![no_main]

use hands_protocol::webhook::{SigningSecret, Verifier, WebhookHeaders, sign};
use libfuzzer_sys::fuzz_target;

/// The 32-byte secret of PROTOCOL.md §10.5 example C, used when the fuzzed one does not parse.
const FALLBACK_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fuzz_target!(|data: &[u8]| {
    let Some((now_bytes, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some((skew_bytes, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let now = i64::from_le_bytes(*now_bytes);
    let skew = i64::from(i16::from_le_bytes(*skew_bytes) / 32);

    let mut fields = rest.splitn(6, |&byte| byte == b'\n');
    let secret_field = fields.next().unwrap_or_default();
    let id = fields.next().unwrap_or_default();
    let timestamp = fields.next().unwrap_or_default();
    let signature = fields.next().unwrap_or_default();
    let extra = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();

    // Secret parsing: both policies on any text; the short policy accepts a superset.
    let secret_text = String::from_utf8_lossy(secret_field);
    let strict = SigningSecret::parse(&secret_text);
    let lenient = SigningSecret::parse_allow_short(&secret_text);
    assert!(
        strict.is_err() || lenient.is_ok(),
        "strict accepted what lenient refused"
    );
    let secret = match lenient {
        Ok(secret) => secret,
        Err(_) => SigningSecret::parse(FALLBACK_SECRET).expect("fallback secret parses"),
    };
    let verifier = Verifier::new([secret.clone()]).expect("one secret is enough");

    // Arbitrary headers: must return, never panic.
    let mut headers = WebhookHeaders {
        id: vec![id],
        timestamp: vec![timestamp],
        signature: vec![signature],
    };
    if let Some(colon) = extra.iter().position(|&byte| byte == b':') {
        let (name, value) = extra.split_at(colon);
        if let Ok(name) = std::str::from_utf8(name) {
            headers.push(name, &value[1..]);
        }
    }
    let _ = verifier.verify(&headers, body, now);

    // Round trip: what `sign` produced is accepted exactly when an independent reading of the
    // rules (written here, not shared with the crate) says it should be.
    if let Ok(id) = std::str::from_utf8(id) {
        let timestamp = now;
        let verify_at = timestamp.saturating_add(skew);
        let signature = sign(&secret, id, timestamp, body);
        let timestamp_text = timestamp.to_string();
        let result = verifier.verify(
            &WebhookHeaders::single(id, &timestamp_text, &signature),
            body,
            verify_at,
        );
        let id_ok = !id.is_empty()
            && id.len() <= 256
            && id
                .bytes()
                .all(|byte| (b'!'..=b'~').contains(&byte) && byte != b'.');
        let timestamp_ok = (0..=9_999_999_999).contains(&timestamp);
        let in_window = (i128::from(verify_at) - i128::from(timestamp)).abs() <= 300;
        assert_eq!(
            result.is_ok(),
            id_ok && timestamp_ok && in_window,
            "id {id:?} ts {timestamp} now {verify_at}: {:?}",
            result.as_ref().map_err(|err| err.reason())
        );
        if let Ok(verified) = result {
            assert_eq!((verified.id.as_str(), verified.timestamp), (id, timestamp));
        }
    }
});
