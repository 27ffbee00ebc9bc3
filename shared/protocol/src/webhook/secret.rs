//! The `whsec_…` signing secret: parsed once at startup, then only ever used as an HMAC key.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Standard alphabet; padding optional (PROTOCOL.md §10.5 step 1 says to tolerate a missing
/// one), but if present it must be canonical, and non-zero trailing bits are refused so that a
/// secret has exactly one accepted spelling per padding choice.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a configured secret was refused. Never contains any part of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret (after the optional `whsec_` prefix) is empty.
    #[error("webhook signing secret is empty")]
    Empty,
    /// The secret is not standard base64 (alphabet `A-Za-z0-9+/`, optional `=` padding).
    #[error("webhook signing secret is not valid standard base64")]
    NotBase64,
    /// The decoded secret is shorter than [`SigningSecret::MIN_LEN`] bytes.
    #[error("webhook signing secret decodes to {len} bytes, fewer than the {min} required")]
    TooShort { len: usize, min: usize },
    /// A [`super::Verifier`] was given no secret at all.
    #[error("no webhook signing secret configured")]
    NoSecrets,
    /// A [`super::Verifier`] was given more than [`super::MAX_SECRETS`] secrets.
    #[error("{count} webhook signing secrets configured, more than the {max} allowed")]
    TooManySecrets { count: usize, max: usize },
}

/// A Standard Webhooks signing secret (`whsec_<base64>`), held as a keyed HMAC state.
///
/// There is deliberately no way to get the key bytes back out, and `Debug` prints no key
/// material, so a secret cannot leak through a log line or an error.
#[derive(Clone)]
pub struct SigningSecret {
    /// Keyed once at parse time; cloned for each signature so the key is never re-derived.
    mac: HmacSha256,
}

impl SigningSecret {
    /// Minimum decoded length accepted by [`SigningSecret::parse`] (CATALOGUE W7). Production
    /// secrets are 32 bytes (PROTOCOL.md §10.2); 24 leaves room for other senders' formats
    /// without admitting toy keys.
    pub const MIN_LEN: usize = 24;

    /// Parses a secret from configuration: `whsec_` prefix optional, standard base64 with or
    /// without padding, at least [`Self::MIN_LEN`] bytes once decoded.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let key = decode(text)?;
        if key.len() < Self::MIN_LEN {
            return Err(SecretError::TooShort {
                len: key.len(),
                min: Self::MIN_LEN,
            });
        }
        Self::from_key(&key)
    }

    /// Like [`Self::parse`] but accepts any non-empty key. Only for test vectors and senders
    /// known to use short keys (PROTOCOL.md §10.5 worked example B decodes to 7 bytes); never
    /// use it for a secret read from production configuration.
    pub fn parse_allow_short(text: &str) -> Result<Self, SecretError> {
        Self::from_key(&decode(text)?)
    }

    fn from_key(key: &[u8]) -> Result<Self, SecretError> {
        // HMAC accepts keys of any length, so this cannot fail today; mapping the error keeps
        // the crate free of `unwrap` should a future `hmac` narrow that.
        let mac = HmacSha256::new_from_slice(key).map_err(|_| SecretError::Empty)?;
        Ok(Self { mac })
    }

    /// HMAC-SHA256 over `{id}.{timestamp}.{body}`, the signed content of PROTOCOL.md §10.5.
    pub(super) fn tag(&self, id: &[u8], timestamp: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(id);
        mac.update(b".");
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

fn decode(text: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    if encoded.is_empty() {
        return Err(SecretError::Empty);
    }
    let key = SECRET_BASE64
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    if key.is_empty() {
        // Unreachable for a non-empty valid encoding, but an empty HMAC key must never slip by.
        return Err(SecretError::Empty);
    }
    Ok(key)
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}
