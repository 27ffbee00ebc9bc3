//! Fuzzes `WebhookEventHead::parse` against serde_json: for every body, the same head or the
//! same error text as `serde_json::from_slice::<WebhookEventHead>`. `parse` reads the usual
//! body with its own byte scanner and hands everything else to serde_json, so this is what
//! proves the scanner accepts nothing serde_json refuses (CATALOGUE W15, W18) and reads the
//! same values from what it accepts. The input is the raw body.

#![no_main]

use hands_protocol::webhook_event::WebhookEventHead;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let serde = serde_json::from_slice::<WebhookEventHead<'_>>(body).map_err(|e| e.to_string());
    let parsed = WebhookEventHead::parse(body).map_err(|e| e.to_string());
    assert_eq!(parsed, serde);
});
