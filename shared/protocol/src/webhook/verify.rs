//! Verification of one delivery: header shape, id, timestamp window, then the signature.
//!
//! Checks run from cheapest to dearest so that forged floods cost little (CATALOGUE W21): the
//! HMAC is computed last, once per configured secret, and compared against at most
//! [`MAX_SIGNATURE_ENTRIES`] candidates.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::{Choice, ConstantTimeEq};

use super::TAG_LEN;
use super::headers::{WebhookHeader, WebhookHeaderLines, WebhookHeaders};
use super::secret::{SecretError, SigningSecret};

/// Largest accepted distance, in seconds, between `webhook-timestamp` and `now`, in either
/// direction (PROTOCOL.md §10.5 step 5). Exactly this far is still accepted (CATALOGUE W8).
pub const TOLERANCE_SECS: i64 = 300;

/// Largest accepted `webhook-signature` value, in bytes (CATALOGUE W6). A sender rotating keys
/// sends two 47-byte entries; 4 KiB is generous and bounds the parsing work.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 4096;

/// Largest accepted number of entries (any version) in `webhook-signature` (CATALOGUE W6).
pub const MAX_SIGNATURE_ENTRIES: usize = 16;

/// Longest accepted `webhook-id`, in bytes (CATALOGUE W13).
pub const MAX_ID_BYTES: usize = 256;

/// Most secrets a [`Verifier`] holds: every forged request costs one HMAC per secret.
pub const MAX_SECRETS: usize = 8;

/// Longest canonical timestamp: ten digits reach the year 2286 and cannot overflow an `i64`.
const MAX_TIMESTAMP_DIGITS: usize = 10;

/// Length of the base64 text of a 32-byte tag, padding included.
const TAG_BASE64_LEN: usize = 44;

/// Verifies Standard Webhooks deliveries against one or more secrets (several during key
/// rotation, CATALOGUE W7). The secret list comes from configuration.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<SigningSecret>,
}

/// What a verified delivery proved: the values to dedupe and log on. They are the parsed
/// values, so two spellings of one timestamp can never look like two deliveries (pitfall 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// `webhook-id`; visible ASCII, no `.`, at most [`MAX_ID_BYTES`] bytes.
    pub id: String,
    /// `webhook-timestamp` in unix seconds.
    pub timestamp: i64,
    /// Index, in the list given to [`Verifier::new`], of the first secret that matched: lets
    /// operators see when the old key of a rotation stops being used.
    pub secret_index: usize,
}

/// A refused delivery. `Display` is the same for every cause, so it can be sent back over HTTP
/// without telling a forger which check it failed; [`VerifyError::reason`] is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("webhook verification failed")]
pub struct VerifyError {
    reason: RejectReason,
}

impl VerifyError {
    /// The precise cause, for logs and metrics only.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }
}

impl From<RejectReason> for VerifyError {
    fn from(reason: RejectReason) -> Self {
        Self { reason }
    }
}

/// Which side of the window a stale timestamp fell on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Staleness {
    /// More than [`TOLERANCE_SECS`] in the past: a late replay, or our clock is fast.
    TooOld,
    /// More than [`TOLERANCE_SECS`] in the future: our clock is slow, or a forged timestamp.
    TooNew,
}

/// Why a delivery was refused. Contains no secret material, so it is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The header was absent.
    MissingHeader(WebhookHeader),
    /// The header was present with an empty value.
    EmptyHeader(WebhookHeader),
    /// The header was sent on more than one line (CATALOGUE W1).
    DuplicateHeader(WebhookHeader),
    /// `webhook-id` is too long or contains `.`, whitespace, control or non-ASCII bytes (W13).
    BadId,
    /// `webhook-timestamp` is not canonical decimal digits (W9, pitfall 2).
    NonCanonicalTimestamp,
    /// `webhook-timestamp` is outside the window (W8, W11). A steady rate of these means our
    /// clock is off (W24). `skew_secs` is `now - timestamp`, saturated to `i64`.
    Stale {
        staleness: Staleness,
        skew_secs: i64,
    },
    /// `webhook-signature` is longer than [`MAX_SIGNATURE_HEADER_BYTES`] (W6).
    SignatureHeaderTooLarge,
    /// `webhook-signature` has more than [`MAX_SIGNATURE_ENTRIES`] entries (W6).
    TooManySignatureEntries,
    /// `webhook-signature` has no well-formed `v1` entry.
    NoV1Signature,
    /// No `v1` entry matches any configured secret (W2, W4, W5).
    NoMatch,
}

impl RejectReason {
    /// A short stable label for metrics, e.g. `webhook_rejected_total{reason="stale_too_old"}`.
    pub const fn metric_label(self) -> &'static str {
        match self {
            RejectReason::MissingHeader(_) => "missing_header",
            RejectReason::EmptyHeader(_) => "empty_header",
            RejectReason::DuplicateHeader(_) => "duplicate_header",
            RejectReason::BadId => "bad_id",
            RejectReason::NonCanonicalTimestamp => "non_canonical_timestamp",
            RejectReason::Stale {
                staleness: Staleness::TooOld,
                ..
            } => "stale_too_old",
            RejectReason::Stale {
                staleness: Staleness::TooNew,
                ..
            } => "stale_too_new",
            RejectReason::SignatureHeaderTooLarge => "signature_header_too_large",
            RejectReason::TooManySignatureEntries => "too_many_signature_entries",
            RejectReason::NoV1Signature => "no_v1_signature",
            RejectReason::NoMatch => "no_match",
        }
    }

    /// True for the stale rejections, the ones a clock-skew alarm counts (W24).
    pub const fn is_stale(self) -> bool {
        matches!(self, RejectReason::Stale { .. })
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::MissingHeader(h) => write!(f, "missing {h} header"),
            RejectReason::EmptyHeader(h) => write!(f, "empty {h} header"),
            RejectReason::DuplicateHeader(h) => write!(f, "{h} header sent more than once"),
            RejectReason::BadId => f.write_str("malformed webhook-id"),
            RejectReason::NonCanonicalTimestamp => f.write_str("non-canonical webhook-timestamp"),
            RejectReason::Stale {
                staleness: Staleness::TooOld,
                skew_secs,
            } => write!(f, "webhook-timestamp {skew_secs} s in the past"),
            RejectReason::Stale {
                staleness: Staleness::TooNew,
                skew_secs,
            } => write!(
                f,
                "webhook-timestamp {} s in the future",
                skew_secs.saturating_neg()
            ),
            RejectReason::SignatureHeaderTooLarge => {
                write!(
                    f,
                    "webhook-signature over {MAX_SIGNATURE_HEADER_BYTES} bytes"
                )
            }
            RejectReason::TooManySignatureEntries => {
                write!(f, "webhook-signature over {MAX_SIGNATURE_ENTRIES} entries")
            }
            RejectReason::NoV1Signature => f.write_str("no well-formed v1 signature"),
            RejectReason::NoMatch => f.write_str("no signature matches"),
        }
    }
}

impl Verifier {
    /// A verifier accepting deliveries signed with any of `secrets` (1 to [`MAX_SECRETS`]).
    pub fn new(secrets: impl IntoIterator<Item = SigningSecret>) -> Result<Self, SecretError> {
        let secrets: Vec<SigningSecret> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        if secrets.len() > MAX_SECRETS {
            return Err(SecretError::TooManySecrets {
                count: secrets.len(),
                max: MAX_SECRETS,
            });
        }
        Ok(Self { secrets })
    }

    /// Verifies one delivery. `body` is the raw request body exactly as received; `now` is the
    /// current unix time in seconds, from the caller's clock.
    pub fn verify(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedWebhook, VerifyError> {
        self.verify_lines(&WebhookHeaderLines::from(headers), body, now)
    }

    /// [`Verifier::verify`] on header lines gathered into a [`WebhookHeaderLines`] (no
    /// allocation), as the ingress does for every delivery.
    pub fn verify_lines(
        &self,
        headers: &WebhookHeaderLines<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedWebhook, VerifyError> {
        let id = single_value(headers, WebhookHeader::Id)?;
        let timestamp_text = single_value(headers, WebhookHeader::Timestamp)?;
        let signature = single_value(headers, WebhookHeader::Signature)?;

        let id_text = parse_id(id)?;
        let timestamp =
            parse_timestamp(timestamp_text).ok_or(RejectReason::NonCanonicalTimestamp)?;
        check_window(timestamp, now)?;
        let candidates = SignatureCandidates::parse(signature)?;

        // The signed content uses the header text itself; it is canonical, so it is also the
        // decimal form of `timestamp`.
        let secret_index = self
            .secrets
            .iter()
            .position(|secret| {
                let expected = secret.tag(id, timestamp_text, body);
                bool::from(candidates.any_matches(&expected))
            })
            .ok_or(RejectReason::NoMatch)?;

        Ok(VerifiedWebhook {
            id: id_text,
            timestamp,
            secret_index,
        })
    }
}

/// The one non-empty line of `header`, refusing absent, empty and repeated headers (W1).
fn single_value<'a>(
    headers: &WebhookHeaderLines<'a>,
    header: WebhookHeader,
) -> Result<&'a [u8], RejectReason> {
    let lines = headers.lines(header);
    match (lines.count, lines.first) {
        (0, _) => Err(RejectReason::MissingHeader(header)),
        (1, []) => Err(RejectReason::EmptyHeader(header)),
        (1, value) => Ok(value),
        _ => Err(RejectReason::DuplicateHeader(header)),
    }
}

/// The id is a dedupe key and lands in logs, so only visible ASCII is allowed; `.` is refused
/// because it is the separator of the signed content (W13).
fn parse_id(id: &[u8]) -> Result<String, RejectReason> {
    let well_formed = id.len() <= MAX_ID_BYTES
        && id
            .iter()
            .all(|&byte| byte.is_ascii_graphic() && byte != b'.');
    if !well_formed {
        return Err(RejectReason::BadId);
    }
    String::from_utf8(id.to_vec()).map_err(|_| RejectReason::BadId)
}

/// Parses `^(0|[1-9][0-9]{0,9})$`. Anything else (sign, leading zero, whitespace, decimal point,
/// exponent, more digits) has another canonical spelling or none, so it is refused rather than
/// normalised (W9, pitfall 2).
fn parse_timestamp(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > MAX_TIMESTAMP_DIGITS {
        return None;
    }
    if text.len() > 1 && text.first() == Some(&b'0') {
        return None;
    }
    text.iter().try_fold(0_i64, |value, &byte| {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
        value.checked_mul(10)?.checked_add(i64::from(digit))
    })
}

/// Accepts `|now - timestamp| <= TOLERANCE_SECS` (W8). The difference is taken in `i128`, where
/// two `i64` values cannot overflow whatever the injected clock says (pitfall 1).
fn check_window(timestamp: i64, now: i64) -> Result<(), RejectReason> {
    let skew = i128::from(now) - i128::from(timestamp);
    let staleness = if skew > i128::from(TOLERANCE_SECS) {
        Staleness::TooOld
    } else if skew < -i128::from(TOLERANCE_SECS) {
        Staleness::TooNew
    } else {
        return Ok(());
    };
    let skew_secs = i64::try_from(skew).unwrap_or(match staleness {
        Staleness::TooOld => i64::MAX,
        Staleness::TooNew => i64::MIN,
    });
    Err(RejectReason::Stale {
        staleness,
        skew_secs,
    })
}

/// The decoded `v1` tags of a `webhook-signature` header, at most [`MAX_SIGNATURE_ENTRIES`],
/// held inline so a hostile header cannot make us allocate.
struct SignatureCandidates {
    tags: [[u8; TAG_LEN]; MAX_SIGNATURE_ENTRIES],
    len: usize,
}

impl SignatureCandidates {
    /// Entries are separated by runs of spaces or tabs (W6). Entries of other versions, and
    /// `v1` entries that are not exactly a base64 32-byte tag, are skipped like unknown
    /// versions: they cannot match, and failing on them would let a sender's future format
    /// break verification (W3, W6).
    fn parse(header: &[u8]) -> Result<Self, RejectReason> {
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(RejectReason::SignatureHeaderTooLarge);
        }
        let mut candidates = Self {
            tags: [[0; TAG_LEN]; MAX_SIGNATURE_ENTRIES],
            len: 0,
        };
        let entries = header
            .split(|&byte| byte == b' ' || byte == b'\t')
            .filter(|entry| !entry.is_empty());
        for (count, entry) in entries.enumerate() {
            if count >= MAX_SIGNATURE_ENTRIES {
                return Err(RejectReason::TooManySignatureEntries);
            }
            if let Some(tag) = decode_v1_entry(entry)
                && let Some(slot) = candidates.tags.get_mut(candidates.len)
            {
                *slot = tag;
                candidates.len += 1;
            }
        }
        if candidates.len == 0 {
            return Err(RejectReason::NoV1Signature);
        }
        Ok(candidates)
    }

    /// Whether any candidate equals `expected`. Every candidate is compared (no early exit),
    /// each through [`tags_match`].
    fn any_matches(&self, expected: &[u8; TAG_LEN]) -> Choice {
        self.tags
            .iter()
            .take(self.len)
            .fold(Choice::from(0), |found, candidate| {
                found | tags_match(expected, candidate)
            })
    }
}

/// The tag of a well-formed `v1,<base64 of 32 bytes>` entry. The strict standard engine accepts
/// exactly one spelling of each tag (canonical padding, no stray trailing bits), which makes
/// this equivalent to comparing the base64 text as the reference libraries do.
fn decode_v1_entry(entry: &[u8]) -> Option<[u8; TAG_LEN]> {
    let encoded = entry.strip_prefix(b"v1,")?;
    if encoded.len() != TAG_BASE64_LEN {
        return None;
    }
    // Straight into the tag: no allocation per entry. Text that decodes to more than the tag
    // fails (the slice is too small), to less is caught by the length.
    let mut tag = [0; TAG_LEN];
    let len = STANDARD.decode_slice(encoded, &mut tag).ok()?;
    (len == TAG_LEN).then_some(tag)
}

/// The only place a received signature is compared with an expected one (CATALOGUE W25).
///
/// It goes through `subtle::ConstantTimeEq`, and returns a `subtle::Choice` rather than a `bool`
/// so callers combine results without branching on each one. The unit test
/// `w25_comparison_goes_through_subtle` counts calls to this function to prove that every
/// comparison made by `Verifier::verify` passes here.
fn tags_match(expected: &[u8; TAG_LEN], candidate: &[u8; TAG_LEN]) -> Choice {
    #[cfg(test)]
    tests::COMPARISONS.with(|count| count.set(count.get() + 1));
    expected.ct_eq(candidate)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::webhook::sign;

    thread_local! {
        /// Calls of `tags_match` on this test's thread.
        pub(super) static COMPARISONS: Cell<usize> = const { Cell::new(0) };
    }

    fn secret(byte: u8) -> SigningSecret {
        let text = format!("whsec_{}", STANDARD.encode([byte; 32]));
        SigningSecret::parse(&text).unwrap()
    }

    #[test]
    fn w25_comparison_goes_through_subtle() {
        let verifier = Verifier::new([secret(1), secret(2)]).unwrap();
        let body = b"{}";
        let junk = format!("v1,{}", STANDARD.encode([0_u8; 32]));
        let wrong = sign(&secret(3), "msg_1", 1_700_000_000, body);
        let signature = format!("{junk} v2,abc {wrong} v1,short");

        COMPARISONS.with(|count| count.set(0));
        let err = verifier
            .verify(
                &WebhookHeaders::single("msg_1", "1700000000", &signature),
                body,
                1_700_000_000,
            )
            .unwrap_err();
        assert_eq!(err.reason(), RejectReason::NoMatch);
        // Two well-formed v1 candidates, two secrets: four comparisons, none of them elsewhere.
        assert_eq!(COMPARISONS.with(Cell::get), 4);

        // A matching delivery is also decided by `tags_match`: it stops at the first secret that
        // matches, after comparing against every candidate.
        let good = sign(&secret(2), "msg_1", 1_700_000_000, body);
        let signature = format!("{junk} {good}");
        COMPARISONS.with(|count| count.set(0));
        let ok = verifier
            .verify(
                &WebhookHeaders::single("msg_1", "1700000000", &signature),
                body,
                1_700_000_000,
            )
            .unwrap();
        assert_eq!(ok.secret_index, 1);
        assert_eq!(COMPARISONS.with(Cell::get), 4);

        // And the primitive itself answers through `subtle::Choice`.
        let tag = [7_u8; TAG_LEN];
        let mut other = tag;
        other[31] ^= 1;
        let same: Choice = tags_match(&tag, &tag);
        assert!(bool::from(same));
        assert!(!bool::from(tags_match(&tag, &other)));
    }

    #[test]
    fn v1_entries_decode_to_exactly_one_tag() {
        let tag = [0xa5_u8; TAG_LEN];
        let text = STANDARD.encode(tag);
        assert_eq!(text.len(), TAG_BASE64_LEN);
        assert_eq!(decode_v1_entry(format!("v1,{text}").as_bytes()), Some(tag));
        // 44 characters that are 31 or 33 bytes, stray bits, another version or length: no tag.
        let short = STANDARD.encode([1_u8; TAG_LEN - 1]);
        let long = STANDARD.encode([1_u8; TAG_LEN + 1]);
        for entry in [
            format!("v1,{short}"),
            format!("v1,{}", &long[..TAG_BASE64_LEN]),
            // The last character carries stray bits below the 32nd byte.
            format!("v1,{}B=", &text[..TAG_BASE64_LEN - 2]),
            format!("v1,{}", text.replace('=', "A")),
            format!("v2,{text}"),
            format!("v1,{text}="),
        ] {
            assert_eq!(decode_v1_entry(entry.as_bytes()), None, "{entry}");
        }
    }

    #[test]
    fn timestamp_grammar() {
        assert_eq!(parse_timestamp(b"0"), Some(0));
        assert_eq!(parse_timestamp(b"9"), Some(9));
        assert_eq!(parse_timestamp(b"9999999999"), Some(9_999_999_999));
        assert_eq!(parse_timestamp(b"1614265330"), Some(1_614_265_330));
        for bad in [
            &b""[..],
            b"00",
            b"01",
            b"10000000000",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"1e9",
            b"/",
            b":",
            b"\xff",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn window_skew_saturates() {
        assert_eq!(
            check_window(9_999_999_999, i64::MIN),
            Err(RejectReason::Stale {
                staleness: Staleness::TooNew,
                skew_secs: i64::MIN
            })
        );
        assert_eq!(
            check_window(0, i64::MAX),
            Err(RejectReason::Stale {
                staleness: Staleness::TooOld,
                skew_secs: i64::MAX
            })
        );
        assert_eq!(check_window(0, 300), Ok(()));
        assert_eq!(check_window(300, 0), Ok(()));
    }
}
