//! The per-item `secret` (PROTOCOL.md §4.2): URL-safe base64 (padding optional) of a JSON object
//! carrying `sessions_token`, plus fields this worker does not consume.
//!
//! Decoding is lenient and total: anything malformed yields `None` (the caller falls back to the
//! environment key). The token type never prints its value, so it cannot leak through `Debug`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// The bearer a work item's lifecycle and session calls use. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionsToken(String);

impl SessionsToken {
    pub fn new(token: impl Into<String>) -> Self {
        SessionsToken(token.into())
    }

    /// The raw token, for an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionsToken(<redacted>)")
    }
}

/// The decoded payload; unknown fields are ignored on input and not produced on output.
#[derive(Deserialize)]
struct SecretPayload {
    #[serde(default)]
    sessions_token: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct SecretPayloadOut<'a> {
    sessions_token: &'a str,
}

/// Extracts the sessions token from a work item's `secret`, or `None` if the value is not
/// url-safe base64 of a JSON object with a non-empty string `sessions_token`.
pub fn decode_sessions_token(secret: &str) -> Option<SessionsToken> {
    let trimmed = secret.trim();
    // Accept both padded and unpadded input: strip padding, then decode without it.
    let unpadded = trimmed.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD.decode(unpadded).ok()?;
    let payload: SecretPayload = serde_json::from_slice(&bytes).ok()?;
    match payload.sessions_token? {
        serde_json::Value::String(s) if !s.is_empty() => Some(SessionsToken(s)),
        _ => None,
    }
}

/// Encodes a secret the way the control plane does (url-safe base64 with padding), carrying only
/// `sessions_token` — the shape Anthropic's quickstart re-wraps for sandboxes.
pub fn encode_secret(token: &SessionsToken) -> String {
    let json = serde_json::to_vec(&SecretPayloadOut {
        sessions_token: &token.0,
    })
    .unwrap_or_default();
    URL_SAFE.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_EXAMPLE: &str = "eyJzZXNzaW9uc190b2tlbiI6InNrLWFudC1leGFtcGxlLXNlc3Npb24tdG9rZW4ifQ";

    fn b64(s: &str) -> String {
        URL_SAFE.encode(s)
    }

    #[test]
    fn protocol_example_decodes_without_padding() {
        let t = decode_sessions_token(DOC_EXAMPLE).unwrap();
        assert_eq!(t.expose(), "sk-ant-example-session-token");
    }

    #[test]
    fn padded_and_unpadded_forms_agree() {
        let padded = b64(r#"{"sessions_token":"abcd"}"#);
        assert!(padded.ends_with('='), "fixture must need padding: {padded}");
        let unpadded = padded.trim_end_matches('=').to_owned();
        assert_eq!(decode_sessions_token(&padded).unwrap().expose(), "abcd");
        assert_eq!(decode_sessions_token(&unpadded).unwrap().expose(), "abcd");
    }

    #[test]
    fn url_safe_alphabet_is_required_and_extra_fields_ignored() {
        let s = b64(r#"{"sessions_token":"t>>?","ingress_token":"x","n":1}"#);
        assert_eq!(decode_sessions_token(&s).unwrap().expose(), "t>>?");
    }

    #[test]
    fn garbage_yields_none() {
        for bad in [
            "",
            "!!!!",
            "a",
            &b64("not json"),
            &b64("[1,2]"),
            &b64(r#"{"sessions_token":""}"#),
            &b64(r#"{"sessions_token":42}"#),
            &b64(r#"{"sessions_token":null}"#),
            &b64(r#"{"other":"x"}"#),
            &b64("\u{0}\u{1}"),
        ] {
            assert!(decode_sessions_token(bad).is_none(), "{bad:?} decoded");
        }
    }

    #[test]
    fn encode_round_trips_and_debug_redacts() {
        let t = SessionsToken::new("sk-ant-secret-value");
        let enc = encode_secret(&t);
        assert_eq!(decode_sessions_token(&enc), Some(t.clone()));
        assert!(!format!("{t:?}").contains("secret-value"));
    }
}
