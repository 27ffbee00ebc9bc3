//! Standard Webhooks signing and verification (PROTOCOL.md §10.5), as pure functions.
//!
//! A delivery is authentic when one `v1,<base64>` entry of its `webhook-signature` header equals
//! `base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{raw body}"))` and its timestamp
//! is within [`TOLERANCE_SECS`] of `now`, in either direction.
//!
//! What this module is for: the webhook ingress calls [`Verifier::verify`] on the raw header
//! values and raw body bytes *before* anything else looks at the request, and the devplane sender
//! calls [`sign`]. What it must never do:
//! - read the clock (`now` is always passed in, so tests and replays use an injected clock);
//! - panic or overflow on any header value (CATALOGUE pitfall 1), in any build profile;
//! - normalise anything before verifying: the body is the exact bytes received (UTF-8 or not)
//!   and the timestamp is signed as the exact header text, which must be canonical decimal
//!   digits, so one signature can never be valid for two spellings (pitfall 2);
//! - silently take the first of duplicated header lines (CATALOGUE W1);
//! - compare a signature other than through [`subtle`] (CATALOGUE W25);
//! - tell the HTTP client which check failed ([`VerifyError`] displays a generic message; the
//!   precise [`RejectReason`] is for logs and metrics only);
//! - expose or print key material ([`SigningSecret`] has no byte accessor and a redacted `Debug`).
//!
//! Deliberate differences from the reference `standardwebhooks` libraries (PROTOCOL.md §15,
//! CATALOGUE pitfalls 1-3):
//! - timestamps must match `^(0|[1-9][0-9]{0,9})$`; no sign, leading zero, whitespace,
//!   decimal point or exponent (Python parses floats, the Rust crate re-formats an `i64`);
//! - window arithmetic cannot overflow (the Rust crate panics on `i64::MIN` in debug builds);
//! - a malformed signature entry (no comma, two commas, bad base64, wrong length) is ignored
//!   like an unknown version, instead of raising a non-verification exception;
//! - the signature header is capped at [`MAX_SIGNATURE_HEADER_BYTES`] bytes and
//!   [`MAX_SIGNATURE_ENTRIES`] entries; tabs and runs of spaces separate entries;
//! - missing, empty or duplicated headers are rejected, and `webhook-id` must be 1 to
//!   [`MAX_ID_BYTES`] visible ASCII characters other than `.`;
//! - non-UTF-8 bodies are verified as raw bytes (both Rust crates reject them);
//! - secrets: `whsec_` optional, padded or unpadded standard base64, but no stray characters
//!   (Python silently drops non-alphabet characters) and at least [`SigningSecret::MIN_LEN`]
//!   bytes unless [`SigningSecret::parse_allow_short`] is used;
//! - several secrets can be held at once for rotation (CATALOGUE W7).

mod headers;
mod secret;
mod verify;

pub use headers::{WebhookHeader, WebhookHeaderLines, WebhookHeaders};
pub use secret::{SecretError, SigningSecret};
pub use verify::{
    MAX_ID_BYTES, MAX_SECRETS, MAX_SIGNATURE_ENTRIES, MAX_SIGNATURE_HEADER_BYTES, RejectReason,
    Staleness, TOLERANCE_SECS, VerifiedWebhook, Verifier, VerifyError,
};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// The `webhook-signature` header value for one delivery: `v1,<base64 HMAC-SHA256>`.
///
/// `timestamp` is written in decimal exactly as `i64::to_string` does, so the header the sender
/// puts next to it must be that same text. This function does not check the id or timestamp:
/// a sender that signs an id [`Verifier`] refuses gets its deliveries refused, which its own tests
/// will show.
pub fn sign(secret: &SigningSecret, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let tag = secret.tag(webhook_id.as_bytes(), timestamp.as_bytes(), body);
    let mut header = String::with_capacity(3 + 44);
    header.push_str("v1,");
    STANDARD.encode_string(tag, &mut header);
    header
}
