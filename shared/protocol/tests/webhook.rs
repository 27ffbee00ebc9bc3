//! Standard Webhooks verification against PROTOCOL.md §10.5 and the webhook rows of
//! CATALOGUE.md (tests named after the rows), the fixtures in `events/webhooks/`, and property
//! tests. The clock is always injected: no test reads the real time.

// Helpers shared by the tests are not `#[test]` functions, so `allow-unwrap-in-tests` does not
// reach them; in a test binary a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hands_protocol::webhook::{
    MAX_ID_BYTES, MAX_SECRETS, MAX_SIGNATURE_ENTRIES, MAX_SIGNATURE_HEADER_BYTES, RejectReason,
    SecretError, SigningSecret, Staleness, TOLERANCE_SECS, VerifiedWebhook, Verifier, VerifyError,
    WebhookHeader, WebhookHeaders, sign,
};
use hmac::{Hmac, KeyInit, Mac};
use pretty_assertions::assert_eq;
use proptest::prelude::*;
use sha2::Sha256;

const A_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const A_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const A_TS: i64 = 1_614_265_330;
const A_BODY: &str = r#"{"test": 2432232314}"#;
const A_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const B_SECRET: &str = "whsec_c2VjcmV0Cg==";
const B_ID: &str = "whe_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const B_TS: i64 = 1_773_568_800;
const B_BODY: &str = r#"{"id":"whe_0f1e2d3c4b5a69788796a5b4c3d2e1f0","created_at":"2026-03-15T10:00:00Z","data":{"id":"sesn_011CZkZAtmR3yMPDzynEDxu7","organization_id":"org_011CZkZZAe0sMna4vkBdtrfx","type":"session.status_idled","workspace_id":"wrkspc_011CZkZaBF1tNoB5wlCeusgy"},"type":"event"}"#;
const B_SIG: &str = "v1,YunRpM14wPHe8sMDuEeZVa/YijpgKtXgHBZzex3fEP0=";

const C_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const C_ID: &str = "whe_01TESTVECTOR000000000000";
const C_TS: i64 = 1_773_842_722;
const C_BODY: &str = r#"{"type":"event","id":"whe_01TESTVECTOR000000000000","created_at":"2026-03-18T14:05:22Z","data":{"type":"session.status_run_started","id":"sesn_01TESTSESSION0000000000","organization_id":"org_01TESTORG","workspace_id":"wrkspc_01TESTWS"}}"#;
const C_SIG: &str = "v1,qtLCbrEi+5Ad6FnOCfX9kBxneW3atPw8NShMl8BfRsY=";
const C_HMAC_HEX: &str = "aad2c26eb122fb901de859ce09f5fd901c67796ddab4fc3c35284c97c05f46c6";

/// A 32-byte production-shaped secret filled with `byte`, and its raw key.
fn secret_of(byte: u8) -> (SigningSecret, [u8; 32]) {
    let key = [byte; 32];
    let secret = SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(key))).unwrap();
    (secret, key)
}

fn verifier_c() -> Verifier {
    Verifier::new([SigningSecret::parse(C_SECRET).unwrap()]).unwrap()
}

/// Independent oracle: signs the *text* of the timestamp (any spelling) and raw id bytes with
/// the `hmac` crate directly, so tests can build deliveries whose signature is valid for a
/// spelling the verifier must still refuse.
fn sign_raw(key: &[u8], id: &[u8], timestamp: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(id);
    mac.update(b".");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn verify(
    verifier: &Verifier,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<VerifiedWebhook, VerifyError> {
    verifier.verify(&WebhookHeaders::single(id, timestamp, signature), body, now)
}

fn reason(result: Result<VerifiedWebhook, VerifyError>) -> RejectReason {
    match result {
        Ok(ok) => panic!("expected a rejection, got {ok:?}"),
        Err(err) => err.reason(),
    }
}

// ---------------------------------------------------------------------------------------------
// PROTOCOL.md §10.5 worked examples

#[test]
fn example_a_reference_vector() {
    let secret = SigningSecret::parse(A_SECRET).unwrap();
    assert_eq!(sign(&secret, A_ID, A_TS, A_BODY.as_bytes()), A_SIG);
    let verifier = Verifier::new([secret]).unwrap();
    let ok = verify(
        &verifier,
        A_ID,
        "1614265330",
        A_SIG,
        A_BODY.as_bytes(),
        A_TS,
    )
    .unwrap();
    assert_eq!(
        ok,
        VerifiedWebhook {
            id: A_ID.to_owned(),
            timestamp: A_TS,
            secret_index: 0
        }
    );
}

#[test]
fn example_b_short_go_sdk_key() {
    // The key decodes to the 7 bytes `secret\n`: refused by the production parser (W7)...
    assert_eq!(
        SigningSecret::parse(B_SECRET).unwrap_err(),
        SecretError::TooShort { len: 7, min: 24 }
    );
    // ...and accepted by the compatibility parser.
    let secret = SigningSecret::parse_allow_short(B_SECRET).unwrap();
    assert_eq!(sign(&secret, B_ID, B_TS, B_BODY.as_bytes()), B_SIG);
    let verifier = Verifier::new([secret]).unwrap();
    let ok = verify(
        &verifier,
        B_ID,
        "1773568800",
        B_SIG,
        B_BODY.as_bytes(),
        B_TS,
    )
    .unwrap();
    assert_eq!((ok.id.as_str(), ok.timestamp), (B_ID, B_TS));
}

#[test]
fn example_c_production_shape() {
    assert_eq!(C_BODY.len(), 236);
    let secret = SigningSecret::parse(C_SECRET).unwrap();
    let signature = sign(&secret, C_ID, C_TS, C_BODY.as_bytes());
    assert_eq!(signature, C_SIG);
    let tag = STANDARD
        .decode(signature.trim_start_matches("v1,"))
        .unwrap();
    let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, C_HMAC_HEX);

    let ok = verify(
        &verifier_c(),
        C_ID,
        "1773842722",
        C_SIG,
        C_BODY.as_bytes(),
        C_TS,
    )
    .unwrap();
    assert_eq!((ok.id.as_str(), ok.timestamp), (C_ID, C_TS));
    // The example is outside today's window: only the injected clock makes it pass.
    assert!(
        reason(verify(
            &verifier_c(),
            C_ID,
            "1773842722",
            C_SIG,
            C_BODY.as_bytes(),
            C_TS + 301
        ))
        .is_stale()
    );
}

#[test]
fn sign_agrees_with_an_independent_hmac() {
    let (secret, key) = secret_of(0x5a);
    for (id, ts, body) in [
        ("msg_1", 0_i64, &b""[..]),
        ("msg_2", 9_999_999_999, b"\xff\xfe not utf-8 \x00"),
        ("x", 1_700_000_000, C_BODY.as_bytes()),
    ] {
        assert_eq!(
            sign(&secret, id, ts, body),
            sign_raw(&key, id.as_bytes(), ts.to_string().as_bytes(), body)
        );
    }
}

#[test]
fn non_utf8_body_is_signed_as_raw_bytes() {
    let (secret, _) = secret_of(9);
    let body = b"\x00\x9f\x92\x96 \xc3\x28 raw";
    let signature = sign(&secret, "msg_bin", 1_700_000_000, body);
    let verifier = Verifier::new([secret]).unwrap();
    verify(
        &verifier,
        "msg_bin",
        "1700000000",
        &signature,
        body,
        1_700_000_000,
    )
    .unwrap();
    let mut changed = body.to_vec();
    changed[1] ^= 0x80;
    assert_eq!(
        reason(verify(
            &verifier,
            "msg_bin",
            "1700000000",
            &signature,
            &changed,
            1_700_000_000
        )),
        RejectReason::NoMatch
    );
}

#[test]
fn rejection_is_generic_over_http_but_precise_in_logs() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    let errors = [
        verify(&verifier, C_ID, "1773842722", "v1,AAAA", body, C_TS).unwrap_err(),
        verify(&verifier, C_ID, "+1773842722", C_SIG, body, C_TS).unwrap_err(),
        verify(&verifier, C_ID, "1773842722", C_SIG, body, C_TS + 3600).unwrap_err(),
        verify(&verifier, "a.b", "1773842722", C_SIG, body, C_TS).unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.to_string(), "webhook verification failed");
    }
    let reasons: Vec<String> = errors.iter().map(|err| err.reason().to_string()).collect();
    assert_eq!(
        reasons,
        [
            "no well-formed v1 signature",
            "non-canonical webhook-timestamp",
            "webhook-timestamp 3600 s in the past",
            "malformed webhook-id",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// CATALOGUE 2a rows

#[test]
fn w1_missing_headers() {
    let verifier = verifier_c();
    for missing in WebhookHeader::ALL {
        let mut headers = WebhookHeaders::single(C_ID, "1773842722", C_SIG);
        match missing {
            WebhookHeader::Id => headers.id.clear(),
            WebhookHeader::Timestamp => headers.timestamp.clear(),
            WebhookHeader::Signature => headers.signature.clear(),
        }
        assert_eq!(
            verifier
                .verify(&headers, C_BODY.as_bytes(), C_TS)
                .unwrap_err()
                .reason(),
            RejectReason::MissingHeader(missing)
        );
    }
}

#[test]
fn w1_empty_headers() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    assert_eq!(
        reason(verify(&verifier, "", "1773842722", C_SIG, body, C_TS)),
        RejectReason::EmptyHeader(WebhookHeader::Id)
    );
    assert_eq!(
        reason(verify(&verifier, C_ID, "", C_SIG, body, C_TS)),
        RejectReason::EmptyHeader(WebhookHeader::Timestamp)
    );
    assert_eq!(
        reason(verify(&verifier, C_ID, "1773842722", "", body, C_TS)),
        RejectReason::EmptyHeader(WebhookHeader::Signature)
    );
    // Whitespace only: present, but carries no signature.
    assert_eq!(
        reason(verify(&verifier, C_ID, "1773842722", " \t ", body, C_TS)),
        RejectReason::NoV1Signature
    );
}

#[test]
fn w1_duplicated_headers_are_rejected_not_reduced_to_the_first() {
    let verifier = verifier_c();
    let (c_id, c_ts, c_sig) = (C_ID.as_bytes(), &b"1773842722"[..], C_SIG.as_bytes());
    for duplicated in WebhookHeader::ALL {
        // The valid value comes first, then an identical copy: even that is refused, since
        // choosing between lines is the sender's contract, not ours.
        let mut headers = WebhookHeaders::single(C_ID, "1773842722", C_SIG);
        match duplicated {
            WebhookHeader::Id => headers.id.push(c_id),
            WebhookHeader::Timestamp => headers.timestamp.push(c_ts),
            WebhookHeader::Signature => headers.signature.push(c_sig),
        }
        assert_eq!(
            verifier
                .verify(&headers, C_BODY.as_bytes(), C_TS)
                .unwrap_err()
                .reason(),
            RejectReason::DuplicateHeader(duplicated)
        );
    }
}

#[test]
fn w1_header_names_are_case_insensitive_and_others_ignored() {
    let lines: [(&str, &[u8]); 5] = [
        ("Content-Type", b"application/json"),
        ("Webhook-Id", C_ID.as_bytes()),
        ("WEBHOOK-TIMESTAMP", b"1773842722"),
        ("webhook-signature", C_SIG.as_bytes()),
        ("webhook-signatures", b"v1,junk"),
    ];
    let headers = WebhookHeaders::from_pairs(lines);
    assert_eq!(headers, WebhookHeaders::single(C_ID, "1773842722", C_SIG));
    verifier_c()
        .verify(&headers, C_BODY.as_bytes(), C_TS)
        .unwrap();

    let mut twice = headers.clone();
    assert!(twice.push("Webhook-Signature", C_SIG.as_bytes()));
    assert!(!twice.push("x-webhook-signature", C_SIG.as_bytes()));
    assert_eq!(
        verifier_c()
            .verify(&twice, C_BODY.as_bytes(), C_TS)
            .unwrap_err()
            .reason(),
        RejectReason::DuplicateHeader(WebhookHeader::Signature)
    );
}

#[test]
fn w2_wrong_secret() {
    let (other, _) = secret_of(0x42);
    let signature = sign(&other, C_ID, C_TS, C_BODY.as_bytes());
    assert_eq!(
        reason(verify(
            &verifier_c(),
            C_ID,
            "1773842722",
            &signature,
            C_BODY.as_bytes(),
            C_TS
        )),
        RejectReason::NoMatch
    );
}

#[test]
fn w3_truncated_or_malformed_signatures_never_match_or_panic() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    let valid_b64 = C_SIG.trim_start_matches("v1,");
    let cases = [
        "v1,".to_owned(),
        "v1,qtLCbrEi".to_owned(),
        format!("v1,{}", &valid_b64[..43]),
        format!("v1,{}", &valid_b64[..40]),
        format!("v1,{}", valid_b64.trim_end_matches('=')),
        format!("v1,{}==", valid_b64.trim_end_matches('=')),
        format!("v1,{valid_b64}A"),
        format!("v1,{valid_b64},"),
        format!("v1,,{valid_b64}"),
        format!("v1{valid_b64}"),
        "v1".to_owned(),
        ",".to_owned(),
        "v1,!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=".to_owned(),
        // Right length, wrong content: decoded and compared, no match.
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        // 44 characters that decode to 31 bytes plus padding oddities.
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==".to_owned(),
        // Non-zero trailing bits: a second spelling of a tag is not accepted.
        format!("v1,{}", valid_b64.replace("Y=", "Z=")),
    ];
    for case in &cases {
        let got = reason(verify(&verifier, C_ID, "1773842722", case, body, C_TS));
        assert!(
            matches!(got, RejectReason::NoV1Signature | RejectReason::NoMatch),
            "{case:?}: {got:?}"
        );
    }
    // Malformed entries next to the valid one are skipped, not fatal.
    let all = format!("{} {C_SIG}", cases[..MAX_SIGNATURE_ENTRIES - 1].join(" "));
    verify(&verifier, C_ID, "1773842722", &all, body, C_TS).unwrap();
}

#[test]
fn w4_signature_is_bound_to_body_id_and_timestamp() {
    let (secret, _) = secret_of(7);
    let verifier = Verifier::new([secret.clone()]).unwrap();
    let now = 1_700_000_000;
    let signature = sign(&secret, "msg_1", now, b"body-1");
    verify(&verifier, "msg_1", "1700000000", &signature, b"body-1", now).unwrap();
    for (id, ts, body) in [
        ("msg_1", "1700000000", &b"body-2"[..]),
        ("msg_2", "1700000000", b"body-1"),
        ("msg_1", "1700000001", b"body-1"),
    ] {
        assert_eq!(
            reason(verify(&verifier, id, ts, &signature, body, now)),
            RejectReason::NoMatch,
            "{id} {ts} {body:?}"
        );
    }
}

#[test]
fn w5_body_changed_in_transit() {
    let verifier = verifier_c();
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(C_BODY).unwrap())
            .unwrap();
    let changed = [
        format!("{C_BODY}\n"),
        format!("{C_BODY}\r\n"),
        format!("\u{feff}{C_BODY}"),
        format!(" {C_BODY}"),
        pretty.clone(),
        pretty.replace('\n', "\r\n"),
        C_BODY.replace("\":", "\": "),
    ];
    for body in &changed {
        assert_eq!(
            reason(verify(
                &verifier,
                C_ID,
                "1773842722",
                C_SIG,
                body.as_bytes(),
                C_TS
            )),
            RejectReason::NoMatch,
            "{body:?}"
        );
    }
}

#[test]
fn w6_one_valid_among_junk_and_unknown_versions() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    let tag = C_SIG.trim_start_matches("v1,");
    for header in [
        format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {C_SIG}"),
        format!("v2,{tag} v1a,{tag} {C_SIG} v1,garbage"),
        format!("{C_SIG} v2,whatever"),
        format!("  {C_SIG}"),
        format!("{C_SIG} "),
        format!("v2,x\t\t{C_SIG}\t"),
        format!("v2,x \t \t {C_SIG}"),
        format!("junk-without-comma a,b,c {C_SIG}"),
        // Both keys of a rotation matched: at least one matching entry is enough.
        format!("{C_SIG} {C_SIG}"),
    ] {
        verify(&verifier, C_ID, "1773842722", &header, body, C_TS)
            .unwrap_or_else(|err| panic!("{header:?}: {:?}", err.reason()));
    }
    // Only unknown versions (including the right tag under another version name): refused.
    for header in [
        format!("v2,{tag}"),
        format!("v1a,{tag}"),
        format!("V1,{tag}"),
        format!("v0,{tag} v2,{tag}"),
    ] {
        assert_eq!(
            reason(verify(&verifier, C_ID, "1773842722", &header, body, C_TS)),
            RejectReason::NoV1Signature,
            "{header:?}"
        );
    }
}

#[test]
fn w6_entry_cap() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    let junk = "v2,x";
    let at_cap = format!(
        "{} {C_SIG}",
        vec![junk; MAX_SIGNATURE_ENTRIES - 1].join(" ")
    );
    verify(&verifier, C_ID, "1773842722", &at_cap, body, C_TS).unwrap();
    let over_cap = format!("{} {C_SIG}", vec![junk; MAX_SIGNATURE_ENTRIES].join(" "));
    assert_eq!(
        reason(verify(&verifier, C_ID, "1773842722", &over_cap, body, C_TS)),
        RejectReason::TooManySignatureEntries
    );
    // The valid entry first does not rescue an over-long list either.
    let valid_first = format!("{C_SIG} {}", vec![junk; MAX_SIGNATURE_ENTRIES].join(" "));
    assert_eq!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            &valid_first,
            body,
            C_TS
        )),
        RejectReason::TooManySignatureEntries
    );
    let ten_thousand = vec![C_SIG; 10_000].join(" ");
    assert_eq!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            &ten_thousand,
            body,
            C_TS
        )),
        RejectReason::SignatureHeaderTooLarge
    );
    // 10,000 entries that fit in the byte cap are refused by the entry cap (single-char
    // entries separated by single spaces would need 20 KB, so use the cap's own size).
    let many_small = vec!["x"; MAX_SIGNATURE_HEADER_BYTES / 2].join(" ");
    assert_eq!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            &many_small,
            body,
            C_TS
        )),
        RejectReason::TooManySignatureEntries
    );
}

#[test]
fn w6_header_size_cap() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    let padded = |len: usize| format!("{C_SIG}{}", " ".repeat(len - C_SIG.len()));
    let at_cap = padded(MAX_SIGNATURE_HEADER_BYTES);
    assert_eq!(at_cap.len(), 4096);
    verify(&verifier, C_ID, "1773842722", &at_cap, body, C_TS).unwrap();
    assert_eq!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            &padded(4097),
            body,
            C_TS
        )),
        RejectReason::SignatureHeaderTooLarge
    );
    let one_megabyte = format!("{C_SIG} {}", "A".repeat(1 << 20));
    assert_eq!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            &one_megabyte,
            body,
            C_TS
        )),
        RejectReason::SignatureHeaderTooLarge
    );
}

#[test]
fn w7_key_rotation() {
    let (old, _) = secret_of(0x01);
    let (new, _) = secret_of(0x02);
    let now = 1_700_000_000;
    let body = b"{}";
    let by_old = sign(&old, "msg_r", now, body);
    let by_new = sign(&new, "msg_r", now, body);
    let by_both = format!("{by_old} {by_new}");

    let rotating = Verifier::new([old.clone(), new.clone()]).unwrap();
    let index = |signature: &str| {
        verify(&rotating, "msg_r", "1700000000", signature, body, now)
            .unwrap()
            .secret_index
    };
    assert_eq!(index(&by_old), 0);
    assert_eq!(index(&by_new), 1);
    assert_eq!(index(&by_both), 0);
    assert_eq!(index(&format!("{by_new} {by_old}")), 0);

    let rotated = Verifier::new([new]).unwrap();
    assert_eq!(
        reason(verify(&rotated, "msg_r", "1700000000", &by_old, body, now)),
        RejectReason::NoMatch
    );
    assert_eq!(
        verify(&rotated, "msg_r", "1700000000", &by_both, body, now)
            .unwrap()
            .secret_index,
        0
    );
}

#[test]
fn w7_secret_parsing_prefix_and_padding() {
    let key: Vec<u8> = (0..32).collect();
    let padded = STANDARD.encode(&key);
    assert!(padded.ends_with('='));
    let unpadded = STANDARD_NO_PAD.encode(&key);
    let reference = sign(&SigningSecret::parse(C_SECRET).unwrap(), "m", 1, b"x");
    for text in [
        format!("whsec_{padded}"),
        padded.clone(),
        format!("whsec_{unpadded}"),
        unpadded.clone(),
    ] {
        let secret = SigningSecret::parse(&text).unwrap();
        assert_eq!(sign(&secret, "m", 1, b"x"), reference, "{text}");
    }
    // Two pad characters on a one-pad encoding, stray characters, another alphabet: refused
    // (Python's b64decode would drop the stray characters silently).
    for bad in [
        format!("whsec_{padded}="),
        format!("whsec_{unpadded}=="),
        format!("whsec_{padded}\n"),
        format!(" whsec_{padded}"),
        format!("whsec_ {padded}"),
        format!("WHSEC_{padded}"),
        format!("whsec_{}", STANDARD.encode([0xfb_u8; 24]).replace('+', "-")),
        format!("whsec_{}", STANDARD.encode([0xff_u8; 24]).replace('/', "_")),
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=".to_owned(),
        "whsec_A".to_owned(),
        "whsec_whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
    ] {
        assert_eq!(
            SigningSecret::parse(&bad).err(),
            Some(SecretError::NotBase64),
            "{bad:?}"
        );
    }
}

#[test]
fn w7_secret_parsing_length_policy() {
    assert_eq!(SigningSecret::parse("").unwrap_err(), SecretError::Empty);
    assert_eq!(
        SigningSecret::parse("whsec_").unwrap_err(),
        SecretError::Empty
    );
    assert_eq!(
        SigningSecret::parse_allow_short("whsec_").unwrap_err(),
        SecretError::Empty
    );
    assert_eq!(
        SigningSecret::parse_allow_short("").unwrap_err(),
        SecretError::Empty
    );
    let min = SigningSecret::MIN_LEN;
    assert_eq!(min, 24);
    let short = STANDARD.encode(vec![1_u8; min - 1]);
    assert_eq!(
        SigningSecret::parse(&short).unwrap_err(),
        SecretError::TooShort { len: 23, min: 24 }
    );
    SigningSecret::parse_allow_short(&short).unwrap();
    SigningSecret::parse(&STANDARD.encode(vec![1_u8; min])).unwrap();
    SigningSecret::parse_allow_short("whsec_AQ").unwrap();
    // Long keys are fine: HMAC hashes keys longer than its block.
    SigningSecret::parse(&STANDARD.encode(vec![3_u8; 1000])).unwrap();
}

#[test]
fn w7_verifier_needs_one_to_max_secrets() {
    assert_eq!(
        Verifier::new(Vec::new()).unwrap_err(),
        SecretError::NoSecrets
    );
    let secrets = |n: usize| (0..n).map(|i| secret_of(i as u8).0).collect::<Vec<_>>();
    Verifier::new(secrets(MAX_SECRETS)).unwrap();
    assert_eq!(
        Verifier::new(secrets(MAX_SECRETS + 1)).unwrap_err(),
        SecretError::TooManySecrets {
            count: MAX_SECRETS + 1,
            max: MAX_SECRETS
        }
    );
}

#[test]
fn w7_debug_never_prints_key_material() {
    let secret = SigningSecret::parse(C_SECRET).unwrap();
    let verifier = Verifier::new([secret.clone()]).unwrap();
    let texts = [
        format!("{secret:?}"),
        format!("{secret:#?}"),
        format!("{verifier:?}"),
        format!("{:?}", SigningSecret::parse("whsec_c2VjcmV0Cg==")),
        SigningSecret::parse("whsec_c2VjcmV0Cg==")
            .unwrap_err()
            .to_string(),
    ];
    for text in texts {
        for needle in ["AAECAwQF", "c2VjcmV0", "0, 1, 2, 3", "secret\\n", "[0, 1"] {
            assert!(!text.contains(needle), "{text}");
        }
        assert!(!text.is_empty());
    }
}

#[test]
fn w8_window_edges() {
    let (secret, _) = secret_of(8);
    let verifier = Verifier::new([secret.clone()]).unwrap();
    let ts = 1_700_000_000;
    let signature = sign(&secret, "msg_w8", ts, b"{}");
    let at = |now: i64| verify(&verifier, "msg_w8", "1700000000", &signature, b"{}", now);

    assert_eq!(TOLERANCE_SECS, 300);
    // Timestamp 300 s in the past and 300 s in the future: accepted.
    at(ts + 300).unwrap();
    at(ts - 300).unwrap();
    at(ts).unwrap();
    assert_eq!(
        reason(at(ts + 301)),
        RejectReason::Stale {
            staleness: Staleness::TooOld,
            skew_secs: 301
        }
    );
    assert_eq!(
        reason(at(ts - 301)),
        RejectReason::Stale {
            staleness: Staleness::TooNew,
            skew_secs: -301
        }
    );
}

#[test]
fn w8_extreme_clocks_never_overflow() {
    let (secret, _) = secret_of(8);
    let verifier = Verifier::new([secret.clone()]).unwrap();
    let signature = sign(&secret, "m", 9_999_999_999, b"");
    for now in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
        assert!(
            reason(verify(&verifier, "m", "9999999999", &signature, b"", now)).is_stale(),
            "{now}"
        );
    }
    let signature = sign(&secret, "m", 0, b"");
    verify(&verifier, "m", "0", &signature, b"", 300).unwrap();
    verify(&verifier, "m", "0", &signature, b"", -300).unwrap();
}

#[test]
fn w9_non_canonical_timestamps() {
    let (_, key) = secret_of(9);
    let verifier = Verifier::new([secret_of(9).0]).unwrap();
    let i64_min = i64::MIN.to_string();
    let u64_max = u64::MAX.to_string();
    let thirty = "1".repeat(30);
    let cases: [(&str, i64); 17] = [
        ("-1", -1),
        ("+1700000000", 1_700_000_000),
        ("01700000000", 1_700_000_000),
        ("0170000000", 170_000_000),
        ("00", 0),
        (" 1700000000", 1_700_000_000),
        ("1700000000 ", 1_700_000_000),
        ("1700000000\t", 1_700_000_000),
        ("1.7e9", 1_700_000_000),
        ("1700000000.0", 1_700_000_000),
        ("1700000000e0", 1_700_000_000),
        ("0x6553f100", 1_700_000_000),
        ("١٧٠٠٠٠٠٠٠٠", 1_700_000_000),
        ("-0", 0),
        (&i64_min, 0),
        (&u64_max, 0),
        (&thirty, 0),
    ];
    for (text, lenient_value) in cases {
        // Signed over that exact spelling and verified at the time a lenient parser would read,
        // so the only thing wrong is the spelling.
        let signature = sign_raw(&key, b"msg_w9", text.as_bytes(), b"{}");
        assert_eq!(
            reason(verify(
                &verifier,
                "msg_w9",
                text,
                &signature,
                b"{}",
                lenient_value
            )),
            RejectReason::NonCanonicalTimestamp,
            "{text:?}"
        );
    }
    let signature = sign_raw(&key, b"msg_w9", b"", b"{}");
    assert_eq!(
        reason(verify(&verifier, "msg_w9", "", &signature, b"{}", 0)),
        RejectReason::EmptyHeader(WebhookHeader::Timestamp)
    );
    // `0` is canonical; at any realistic `now` it is simply stale.
    let signature = sign_raw(&key, b"msg_w9", b"0", b"{}");
    assert_eq!(
        reason(verify(
            &verifier,
            "msg_w9",
            "0",
            &signature,
            b"{}",
            1_700_000_000
        )),
        RejectReason::Stale {
            staleness: Staleness::TooOld,
            skew_secs: 1_700_000_000
        }
    );
    // Non-UTF-8 timestamp bytes.
    let headers = WebhookHeaders {
        id: vec![b"msg_w9"],
        timestamp: vec![b"17000\xff0000"],
        signature: vec![signature.as_bytes()],
    };
    assert_eq!(
        verifier
            .verify(&headers, b"{}", 1_700_000_000)
            .unwrap_err()
            .reason(),
        RejectReason::NonCanonicalTimestamp
    );
}

#[test]
fn w11_replay_after_the_window() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    verify(&verifier, C_ID, "1773842722", C_SIG, body, C_TS + 5).unwrap();
    let late = reason(verify(
        &verifier,
        C_ID,
        "1773842722",
        C_SIG,
        body,
        C_TS + 600,
    ));
    assert_eq!(
        late,
        RejectReason::Stale {
            staleness: Staleness::TooOld,
            skew_secs: 600
        }
    );
    assert_eq!(late.metric_label(), "stale_too_old");
}

#[test]
fn w11_stale_is_decided_before_the_signature() {
    // A stale delivery with a forged signature is reported stale: the window check runs
    // first and needs no HMAC.
    let verifier = verifier_c();
    let forged = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert!(
        reason(verify(
            &verifier,
            C_ID,
            "1773842722",
            forged,
            b"",
            C_TS + 600
        ))
        .is_stale()
    );
}

#[test]
fn w13_malformed_webhook_ids() {
    let (_, key) = secret_of(13);
    let verifier = Verifier::new([secret_of(13).0]).unwrap();
    let too_long = "a".repeat(MAX_ID_BYTES + 1);
    let bad_ids: [&[u8]; 13] = [
        b".",
        b"msg.1",
        b"msg_1.",
        b"msg\x001",
        b"msg\n",
        b"msg\r\n",
        b"msg\t1",
        b"msg 1",
        b"msg\x7f",
        "msg_é".as_bytes(),
        "msg_\u{200b}".as_bytes(),
        b"msg_\xff",
        too_long.as_bytes(),
    ];
    for id in bad_ids {
        let signature = sign_raw(&key, id, b"1700000000", b"{}");
        let headers = WebhookHeaders {
            id: vec![id],
            timestamp: vec![b"1700000000"],
            signature: vec![signature.as_bytes()],
        };
        assert_eq!(
            verifier
                .verify(&headers, b"{}", 1_700_000_000)
                .unwrap_err()
                .reason(),
            RejectReason::BadId,
            "{id:?}"
        );
    }
    // The longest id allowed, with every other visible ASCII character in it.
    let visible: String = ('!'..='~').filter(|c| *c != '.').collect();
    let longest: String = visible.chars().cycle().take(MAX_ID_BYTES).collect();
    for id in [visible.as_str(), longest.as_str()] {
        let signature = sign(&secret_of(13).0, id, 1_700_000_000, b"{}");
        let ok = verify(
            &verifier,
            id,
            "1700000000",
            &signature,
            b"{}",
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(ok.id, id);
    }
}

#[test]
fn w24_clock_skew_shows_up_as_stale_metrics() {
    let verifier = verifier_c();
    let body = C_BODY.as_bytes();
    // Our clock 10 minutes fast: deliveries look old. 10 minutes slow: they look new.
    let fast = reason(verify(
        &verifier,
        C_ID,
        "1773842722",
        C_SIG,
        body,
        C_TS + 600,
    ));
    let slow = reason(verify(
        &verifier,
        C_ID,
        "1773842722",
        C_SIG,
        body,
        C_TS - 600,
    ));
    assert_eq!(
        (fast.metric_label(), slow.metric_label()),
        ("stale_too_old", "stale_too_new")
    );
    assert!(fast.is_stale() && slow.is_stale());
    assert_eq!(slow.to_string(), "webhook-timestamp 600 s in the future");
    // Other rejections do not feed the skew alarm.
    assert!(!reason(verify(&verifier, C_ID, "1773842722", "v1,x", body, C_TS)).is_stale());
}

// ---------------------------------------------------------------------------------------------
// Fixtures: every file in events/webhooks/

#[test]
fn fixtures_in_events_webhooks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/webhooks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "fixtures missing in {}", dir.display());
    let mut accepted = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let secret_text = fixture["secret"].as_str().unwrap();
        let secret = if fixture["allow_short_secret"].as_bool().unwrap_or(false) {
            SigningSecret::parse_allow_short(secret_text)
        } else {
            SigningSecret::parse(secret_text)
        }
        .unwrap();
        let now = fixture["now"].as_i64().unwrap();
        let body = fixture["body"].as_str().unwrap().as_bytes();
        let header_lines: Vec<(String, String)> = fixture["headers"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(name, value)| {
                let values = match value {
                    serde_json::Value::Array(lines) => lines.clone(),
                    line => vec![line.clone()],
                };
                values
                    .into_iter()
                    .map(|line| (name.clone(), line.as_str().unwrap().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let headers = WebhookHeaders::from_pairs(
            header_lines
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        );
        let verifier = Verifier::new([secret.clone()]).unwrap();
        let result = verifier.verify(&headers, body, now);
        match fixture["expect"].as_str().unwrap() {
            "accept" => {
                accepted += 1;
                let ok = result.unwrap_or_else(|err| panic!("{name}: {}", err.reason()));
                assert_eq!(ok.id.as_bytes(), headers.id[0], "{name}");
                // The sender side reproduces one of the header's v1 entries.
                let signed = sign(&secret, &ok.id, ok.timestamp, body);
                let signature = std::str::from_utf8(headers.signature[0]).unwrap();
                assert!(
                    signature.split(' ').any(|entry| entry == signed),
                    "{name}: {signed}"
                );
                // The fixture's clock matters: a minute past the window it is refused.
                assert!(
                    verifier
                        .verify(&headers, body, ok.timestamp + TOLERANCE_SECS + 60)
                        .unwrap_err()
                        .reason()
                        .is_stale(),
                    "{name}"
                );
            }
            label => {
                let err = result.map(|ok| ok.id).unwrap_err();
                assert_eq!(err.reason().metric_label(), label, "{name}");
            }
        }
    }
    assert!(accepted >= 3, "the three worked examples must be accepted");
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// Ids the verifier accepts: visible ASCII except `.`.
const ID_PATTERN: &str = "[!-\\-/-~]{1,64}";

fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    let index = bit / 8 % flipped.len();
    flipped[index] ^= 1 << (bit % 8);
    flipped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_sign_verify_round_trip(
        key in proptest::collection::vec(any::<u8>(), 24..80),
        id in ID_PATTERN,
        timestamp in 0_i64..=9_999_999_999,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let secret = SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(&key))).unwrap();
        let signature = sign(&secret, &id, timestamp, &body);
        prop_assert_eq!(&signature, &sign_raw(&key, id.as_bytes(), timestamp.to_string().as_bytes(), &body));
        let verifier = Verifier::new([secret]).unwrap();
        let ok = verify(&verifier, &id, &timestamp.to_string(), &signature, &body, timestamp + skew).unwrap();
        prop_assert_eq!(ok, VerifiedWebhook { id, timestamp, secret_index: 0 });
    }

    #[test]
    fn prop_any_flipped_bit_fails(
        id in ID_PATTERN,
        timestamp in 1_000_000_000_i64..=9_999_999_999,
        body in proptest::collection::vec(any::<u8>(), 1..256),
        bit in any::<usize>(),
        target in 0_u8..4,
    ) {
        let (secret, _) = secret_of(0x33);
        let verifier = Verifier::new([secret.clone()]).unwrap();
        let ts_text = timestamp.to_string();
        let signature = sign(&secret, &id, timestamp, &body);
        let (mut id_b, mut ts_b, mut sig_b, mut body_b) =
            (id.as_bytes().to_vec(), ts_text.as_bytes().to_vec(), signature.as_bytes().to_vec(), body.clone());
        match target {
            0 => id_b = flip_bit(&id_b, bit),
            1 => ts_b = flip_bit(&ts_b, bit),
            2 => sig_b = flip_bit(&sig_b, bit),
            _ => body_b = flip_bit(&body_b, bit),
        }
        let headers = WebhookHeaders { id: vec![&id_b], timestamp: vec![&ts_b], signature: vec![&sig_b] };
        prop_assert!(verifier.verify(&headers, &body_b, timestamp).is_err());
    }

    #[test]
    fn prop_arbitrary_headers_never_panic(
        lines in proptest::collection::vec(
            (0_usize..4, prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                "[ \t]*(v[0-9a-z]{0,2},[A-Za-z0-9+/=]{0,48}[ \t]+){0,20}".prop_map(String::into_bytes),
                "[-+ 0-9.eE]{0,32}".prop_map(String::into_bytes),
            ]),
            0..8,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
    ) {
        let names = ["webhook-id", "webhook-timestamp", "webhook-signature", "other"];
        let headers = WebhookHeaders::from_pairs(
            lines.iter().map(|(name, value)| (names[*name], value.as_slice())),
        );
        let verifier = verifier_c();
        if let Err(err) = verifier.verify(&headers, &body, now) {
            // Every refusal carries a label and the generic message.
            prop_assert!(!err.reason().metric_label().is_empty());
            prop_assert_eq!(err.to_string(), "webhook verification failed");
        }
    }

    #[test]
    fn prop_secret_parser_never_panics(text in "(whsec_)?[A-Za-z0-9+/=_ \n-]{0,80}") {
        let _ = SigningSecret::parse(&text);
        let _ = SigningSecret::parse_allow_short(&text);
    }

    #[test]
    fn prop_secret_padding_is_optional(key in proptest::collection::vec(any::<u8>(), 24..64)) {
        let padded = SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(&key))).unwrap();
        let unpadded = SigningSecret::parse(&STANDARD_NO_PAD.encode(&key)).unwrap();
        prop_assert_eq!(sign(&padded, "m", 1, b"b"), sign(&unpadded, "m", 1, b"b"));
    }
}
