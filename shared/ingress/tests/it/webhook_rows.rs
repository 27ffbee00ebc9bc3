//! CATALOGUE §2a against the real server: every rejected delivery gets its status and causes
//! no poll (devplane's counters), no claim and no session.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hands_ingress::{IngressConfig, parse_secret_list};

use crate::harness::*;

/// Sends `d` and checks it was answered `status` without any control-plane call.
async fn assert_refused(stack: &Stack, d: &Delivery, status: u16, why: &str) {
    let polls = stack.polls();
    let reply = stack.send(d).await;
    assert_eq!(reply.status, status, "{why}: {reply:?}");
    assert_eq!(stack.polls(), polls, "{why}: a refused delivery polled");
    assert_eq!(
        stack.dp.counters().claims,
        0,
        "{why}: a refused delivery claimed"
    );
}

async fn assert_401(stack: &Stack, d: &Delivery, why: &str) {
    let polls = stack.polls();
    let reply = stack.send(d).await;
    assert_eq!(reply.status, 401, "{why}: {reply:?}");
    // The body is the same whatever failed.
    assert_eq!(reply.body, "webhook verification failed\n", "{why}");
    assert_eq!(stack.polls(), polls, "{why}: a rejected delivery polled");
}

/// A clock a test can move.
fn movable_clock(at: i64) -> (Arc<AtomicI64>, hands_ingress::Clock) {
    let now = Arc::new(AtomicI64::new(at));
    let read = Arc::clone(&now);
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

fn with_clock(clock: hands_ingress::Clock) -> Options {
    let mut o = Options::default();
    o.ingress = IngressConfig { clock, ..o.ingress };
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_missing_empty_or_duplicated_headers_are_401() {
    let s = Stack::start(Options::default()).await;
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut d = Delivery::run_started(SECRET);
        d.omit.push(header);
        assert_401(&s, &d, &format!("missing {header}")).await;

        let mut d = Delivery::run_started(SECRET);
        d.omit.push(header);
        d.extra.push((header.to_owned(), String::new()));
        assert_401(&s, &d, &format!("empty {header}")).await;
    }
    // Two signature lines, the first valid: never silently take the first.
    let mut d = Delivery::run_started(SECRET);
    d.extra.push(("webhook-signature".into(), "v1,AAAA".into()));
    assert_401(&s, &d, "duplicated webhook-signature").await;
    let mut d = Delivery::run_started(SECRET);
    d.extra.push(("Webhook-Id".into(), d.id.clone()));
    assert_401(&s, &d, "duplicated webhook-id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_wrong_secret_is_401() {
    let s = Stack::start(Options::default()).await;
    assert_401(&s, &Delivery::run_started(OTHER_SECRET), "wrong secret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3_truncated_signatures_are_401() {
    let s = Stack::start(Options::default()).await;
    let good = Delivery::run_started(SECRET);
    let b64 = good.signature.trim_start_matches("v1,").to_owned();
    for sig in [
        "v1,".to_owned(),
        format!("v1,{}", &b64[..8]),
        format!("v1,{}", &b64[..43]),
        format!("v1,{}", b64.trim_end_matches('=')),
        format!("v1,{b64}=="),
    ] {
        let mut d = good.clone();
        d.signature = sig.clone();
        assert_401(&s, &d, &format!("signature {sig:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_a_signature_from_another_id_timestamp_or_body_is_401() {
    let s = Stack::start(Options::default()).await;
    let good = Delivery::run_started(SECRET);
    let mut d = good.clone();
    d.id = "whe_another".into();
    assert_401(&s, &d, "other id").await;
    let mut d = good.clone();
    d.timestamp = (now() - 1).to_string();
    assert_401(&s, &d, "other timestamp").await;
    let mut d = good.clone();
    d.body = event_body(&good.id, "session.status_run_started", "sesn_other");
    assert_401(&s, &d, "other body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w5_a_body_changed_in_transit_is_401() {
    let s = Stack::start(Options::default()).await;
    let good = Delivery::run_started(SECRET);
    let pretty = serde_json::to_vec_pretty(
        &serde_json::from_slice::<serde_json::Value>(&good.body).unwrap(),
    )
    .unwrap();
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend_from_slice(&good.body);
    let crlf = String::from_utf8(pretty.clone())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let mut newline = good.body.clone();
    newline.push(b'\n');
    for (what, body) in [
        ("newline", newline),
        ("reindented", pretty),
        ("bom", bom),
        ("crlf", crlf),
    ] {
        let mut d = good.clone();
        d.body = body;
        assert_401(&s, &d, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w6_signature_lists_accept_one_valid_entry_and_refuse_oversized_ones() {
    let s = Stack::start(Options::default()).await;
    // One valid v1 among junk and unknown versions, oddly spaced: accepted (and it drains).
    let mut d = Delivery::run_started(SECRET);
    d.signature = format!(
        "v1,AAAA  v2,{}\tv1a,xyz v1,{}  ",
        "B".repeat(44),
        d.signature.trim_start_matches("v1,")
    );
    let reply = s.send(&d).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(s.polls() >= 1, "an accepted run-started delivery drains");

    // 10,000 entries, and a header over the verifier's cap: 401 without a poll.
    let polls = s.polls();
    let mut d = Delivery::run_started(SECRET);
    d.signature = format!("v2,x {}", "v1,AAAA ".repeat(10_000));
    assert_401(&s, &d, "10,000 entries").await;
    // A 1 MB header never reaches the handler: hyper refuses the head (431) at its buffer cap.
    let mut d = Delivery::run_started(SECRET);
    d.signature = format!("{} {}", d.signature, "x".repeat(1 << 20));
    let reply = exchange_lenient(s.addr, &d.request("/webhook")).await;
    if let Some(r) = reply {
        assert_eq!(r.status, 431, "{r:?}");
    }
    assert_eq!(s.polls(), polls);
    // And the server is still fine.
    assert_eq!(
        s.send(&Delivery::of_type(SECRET, "session.updated"))
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w7_key_rotation_accepts_either_key_until_the_old_one_is_removed() {
    let mut o = Options::default();
    o.secrets = Some(format!("{SECRET}, {OTHER_SECRET}"));
    let s = Stack::start(o).await;
    for key in [SECRET, OTHER_SECRET] {
        let reply = s.send(&Delivery::of_type(key, "session.updated")).await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    // Signed with both (the sender's own rotation).
    let mut both = Delivery::of_type(SECRET, "session.updated");
    let other = both.clone().resign(OTHER_SECRET);
    both.signature = format!("{} {}", other.signature, both.signature);
    assert_eq!(s.send(&both).await.status, 204);

    s.ingress
        .set_verifier(parse_secret_list(OTHER_SECRET).unwrap());
    assert_401(
        &s,
        &Delivery::of_type(SECRET, "session.updated"),
        "old key removed",
    )
    .await;
    assert_eq!(
        s.send(&Delivery::of_type(OTHER_SECRET, "session.updated"))
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w8_timestamps_at_300_s_pass_and_at_301_s_fail_both_ways() {
    let t = 1_773_842_722;
    let (_clock, read) = movable_clock(t);
    let s = Stack::start(with_clock(read)).await;
    for (offset, status) in [(-300, 204), (300, 204), (-301, 401), (301, 401)] {
        let id = format!("whe_w8_{}", offset + 1000);
        let body = event_body(&id, "session.updated", "sesn_1");
        let d = Delivery::signed(SECRET, &id, t + offset, body);
        let reply = s.send(&d).await;
        assert_eq!(reply.status, status, "offset {offset}: {reply:?}");
    }
    assert_eq!(s.ingress.metrics().stale_rejections(), 2);
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w9_non_canonical_timestamps_are_401() {
    let s = Stack::start(Options::default()).await;
    let n = now();
    for ts in [
        "-1".to_owned(),
        "0".to_owned(),
        format!("+{n}"),
        format!("0{n}"),
        // (" {n}" cannot be sent: HTTP strips leading whitespace from a field value, so it
        // arrives canonical; the verifier's own tests cover the raw text.)
        format!("{n} 1"),
        "1.7e9".to_owned(),
        i64::MIN.to_string(),
        u64::MAX.to_string(),
        "1".repeat(30),
    ] {
        let mut d = Delivery::run_started(SECRET);
        d.timestamp = ts.clone();
        assert_401(&s, &d, &format!("timestamp {ts:?}")).await;
    }
    let mut d = Delivery::run_started(SECRET);
    d.omit.push("webhook-timestamp");
    d.extra.push(("webhook-timestamp".into(), String::new()));
    assert_401(&s, &d, "empty timestamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w10_a_replay_inside_the_window_does_not_drain_again() {
    let s = Stack::start(Options::default()).await;
    let d = Delivery::run_started(SECRET);
    assert_eq!(s.send(&d).await.status, 200);
    let polls = s.polls();
    assert!(polls >= 1);
    for _ in 0..3 {
        let reply = s.send(&d).await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    // A retry of the same event with a fresh timestamp is the same event too.
    let mut retry = d.clone();
    retry.timestamp = (now() + 1).to_string();
    let retry = retry.resign(SECRET);
    assert_eq!(s.send(&retry).await.status, 204);
    assert_eq!(s.polls(), polls, "a replay drained again");
    assert_eq!(s.ingress.metrics().deliveries("duplicate"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w11_a_replay_after_the_window_is_401_stale() {
    let t = now();
    let (clock, read) = movable_clock(t);
    let s = Stack::start(with_clock(read)).await;
    let d = Delivery::run_started(SECRET);
    assert_eq!(s.send(&d).await.status, 200);
    clock.store(t + 600, Ordering::SeqCst);
    let polls = s.polls();
    assert_401(&s, &d, "replayed 10 minutes later").await;
    assert_eq!(s.polls(), polls);
    assert_eq!(s.ingress.metrics().stale_rejections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w12_a_reused_id_with_another_body_is_not_merged() {
    let s = Stack::start(Options::default()).await;
    let first = Delivery::run_started(SECRET);
    assert_eq!(s.send(&first).await.status, 200);
    let polls = s.polls();
    let body = event_body(&first.id, "session.status_run_started", "sesn_another");
    let second = Delivery::signed(SECRET, &first.id, now(), body);
    assert_eq!(s.send(&second).await.status, 200);
    assert!(
        s.polls() > polls,
        "the second body must be acted on, not merged"
    );
    let metrics = s.get("/metrics").await.body;
    assert!(
        metrics.contains("hands_webhook_id_reuse_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w13_malformed_ids_are_refused() {
    let s = Stack::start(Options::default()).await;
    for id in [
        "whe.1".to_owned(),
        "whe\u{e9}".to_owned(),
        "w".repeat(257),
        "whe 1".to_owned(),
    ] {
        let body = event_body(&id, "session.status_run_started", "sesn_1");
        let d = Delivery::signed(SECRET, &id, now(), body);
        assert_401(&s, &d, &format!("id {id:?}")).await;
    }
    // A control character is refused by the HTTP parser before the handler (400).
    let mut d = Delivery::run_started(SECRET);
    d.id = "whe\u{1}x".into();
    let d = d.resign(SECRET);
    let polls = s.polls();
    let reply = exchange_lenient(s.addr, &d.request("/webhook")).await;
    if let Some(r) = reply {
        assert!(matches!(r.status, 400 | 401), "{r:?}");
    }
    assert_eq!(s.polls(), polls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w14_huge_bodies_are_413_and_never_decompressed() {
    let s = Stack::start(Options::default()).await;
    // Declared 10 GB: refused from the header alone.
    let raw = format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000000\r\nwebhook-id: whe_1\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,AAAA\r\nconnection: close\r\n\r\n",
        now()
    );
    let reply = exchange(s.addr, raw.as_bytes()).await;
    assert_eq!(reply.status, 413, "{reply:?}");

    // Chunked, no length, past the limit: refused once the limit is passed.
    let mut raw = format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nwebhook-id: whe_2\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,AAAA\r\nconnection: close\r\n\r\n",
        now()
    )
    .into_bytes();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..20 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    if let Some(r) = exchange_lenient(s.addr, &raw).await {
        assert_eq!(r.status, 413, "{r:?}");
    }
    assert_eq!(s.ingress.metrics().deliveries("too_large"), 2);

    // A gzip body with a valid signature over the compressed bytes: verified as is, not
    // inflated, so it is not JSON (422).
    let gz = vec![
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0x03, 0x4b, 0x04, 0x00,
    ];
    let mut d = Delivery::signed(SECRET, "whe_gzip", now(), gz);
    d.extra.push(("content-encoding".into(), "gzip".into()));
    assert_refused(&s, &d, 422, "gzip body").await;
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w15_authentic_malformed_bodies_are_422() {
    let s = Stack::start(Options::default()).await;
    let good =
        String::from_utf8(event_body("whe_x", "session.status_run_started", "sesn_1")).unwrap();
    let deep = format!(
        r#"{{"type":"event","id":"whe_x","created_at":"t","data":{{"type":"session.status_run_started","id":"s","x":{}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let huge_number = format!(
        r#"{{"type":"event","id":"whe_x","created_at":"t","data":{{"type":"session.status_run_started","id":"s","n":1{}}}}}"#,
        "0".repeat(1_000_000)
    );
    let mut invalid_utf8 = good.clone().into_bytes();
    invalid_utf8.insert(invalid_utf8.len() - 3, 0xff);
    let duplicate = r#"{"type":"event","id":"whe_x","id":"whe_y","created_at":"t","data":{"type":"session.status_run_started","id":"s"}}"#;
    for (what, body) in [
        ("trailing garbage", format!("{good}x").into_bytes()),
        ("invalid utf-8", invalid_utf8),
        ("duplicate keys", duplicate.as_bytes().to_vec()),
        ("10,000 deep", deep.into_bytes()),
        ("10^6 digits", huge_number.into_bytes()),
    ] {
        let id = format!("whe_{}", what.len());
        let d = Delivery::signed(SECRET, &id, now(), body);
        assert_refused(&s, &d, 422, what).await;
    }
    assert_eq!(s.ingress.metrics().deliveries("malformed"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w16_the_content_type_decides_nothing() {
    let s = Stack::start(Options::default()).await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut d = Delivery::of_type(SECRET, "session.updated");
        d.content_type = ct.map(str::to_owned);
        assert_eq!(s.send(&d).await.status, 204, "{ct:?}");
        let mut forged = Delivery::of_type(OTHER_SECRET, "session.updated");
        forged.content_type = Some("application/json".into());
        assert_401(&s, &forged, "forged json").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w17_unknown_types_and_fields_are_204_counted_and_inert() {
    let s = Stack::start(Options::default()).await;
    let d = Delivery::of_type(SECRET, "session.future_thing");
    assert_eq!(s.send(&d).await.status, 204);
    let id = "whe_extra_fields";
    let body = serde_json::json!({"type":"event","id":id,"created_at":"t","future":1,
        "data":{"type":"session.status_idled","id":"sesn_1","new_field":{"x":[1]}}});
    let d = Delivery::signed(SECRET, id, now(), body.to_string().into_bytes());
    assert_eq!(s.send(&d).await.status, 204);
    assert_eq!(s.ingress.metrics().deliveries("ignored"), 2);
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w18_known_type_with_missing_or_mistyped_fields_is_422() {
    let s = Stack::start(Options::default()).await;
    for (i, body) in [
        serde_json::json!({"type":"event","id":"whe_a","created_at":"t","data":{"type":"session.status_run_started"}}),
        serde_json::json!({"type":"event","id":"whe_a","created_at":"t","data":{"type":"session.status_run_started","id":7}}),
        serde_json::json!({"type":"event","id":"whe_a","created_at":"t"}),
        serde_json::json!({"type":"event","created_at":"t","data":{"type":"session.status_run_started","id":"s"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let d = Delivery::signed(SECRET, &format!("whe_{i}"), now(), body.to_string().into_bytes());
        assert_refused(&s, &d, 422, &body.to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w20_wrong_methods_and_paths_are_405_and_404() {
    let s = Stack::start(Options::default()).await;
    let d = Delivery::run_started(SECRET);
    for method in ["GET", "PUT", "OPTIONS", "DELETE"] {
        let mut raw = d.request("/webhook");
        raw.splice(0..4, method.bytes());
        let reply = exchange(s.addr, &raw).await;
        assert_eq!(reply.status, 405, "{method}: {reply:?}");
    }
    for path in [
        "/webhook/../webhook",
        "/%2e%2e/webhook",
        "/webhook/",
        "/Webhook",
        "/webhook%2f",
        "/",
    ] {
        let reply = exchange(s.addr, &d.request(path)).await;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
    }
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w21_a_flood_of_forged_deliveries_makes_no_control_plane_call() {
    let s = Stack::start(Options::default()).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let d = Delivery::run_started(OTHER_SECRET);
                let addr = s.addr;
                tokio::spawn(async move { exchange(addr, &d.request("/webhook")).await.status })
            })
            .collect();
        for t in batch {
            statuses.push(t.await.unwrap());
        }
    }
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|&st| st == 401));
    assert_eq!(s.polls(), 0);
    assert_eq!(s.dp.counters().heartbeats, 0);
    // Valid deliveries are still served.
    assert_eq!(s.send(&Delivery::run_started(SECRET)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w22_control_plane_down_is_503_with_retry_after() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut o = Options::default();
    o.base_url = Some(format!("http://{dead}"));
    let s = Stack::start(o).await;
    let d = Delivery::run_started(SECRET);
    let reply = s.send(&d).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    // Not remembered as handled: the sender's retry drains again (and fails again here).
    assert_eq!(s.send(&d).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_a_rejected_environment_key_is_503_and_never_echoed() {
    let mut o = Options::default();
    o.environment_key = Some("sk-ant-oat01-canary-revoked-key".into());
    let s = Stack::start(o).await;
    let reply = s.send(&Delivery::run_started(SECRET)).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some());
    assert!(!reply.body.contains("canary"));
    assert_eq!(s.ingress.metrics().deliveries("unavailable"), 1);
    let metrics = s.get("/metrics").await.body;
    assert!(
        metrics.contains("hands_drains_total{trigger=\"webhook\",result=\"key_rejected\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("canary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_an_environment_the_control_plane_does_not_know_is_2xx() {
    // A control plane that answers 404 to everything.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async {
            (
                http::StatusCode::NOT_FOUND,
                [("content-type", "application/json")],
                r#"{"type":"error","error":{"type":"not_found_error","message":"environment not found"}}"#,
            )
        });
        axum::serve(gone, app).await.unwrap();
    });
    let mut o = Options::default();
    o.base_url = Some(format!("http://{gone_addr}"));
    let s = Stack::start(o).await;
    let reply = s.send(&Delivery::run_started(SECRET)).await;
    assert_eq!(reply.status, 200, "never pass a 404 through: {reply:?}");
    assert_eq!(s.ingress.metrics().deliveries("gone"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w23_a_slow_claim_is_answered_503_in_time_and_the_item_still_served() {
    let mut o = Options::default();
    o.devplane.faults.slow_ms = Some(1500);
    o.ingress.reply_budget = Duration::from_millis(300);
    let s = Stack::start(o).await;
    s.dp.create_session(&hands_devplane::SessionSpec::default())
        .unwrap();
    let reply = s.send(&Delivery::run_started(SECRET)).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(s.ingress.metrics().deliveries("over_budget"), 1);
    // The drain went on after the answer: the claimed item is served, not dropped.
    eventually("the item was acked and handed to a session", || {
        s.dp.counters().acks == 1 && s.ingress.metrics().items_claimed() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w24_clock_skew_fails_every_delivery_and_counts_stale_rejections() {
    let (_clock, read) = movable_clock(now() + 600);
    let s = Stack::start(with_clock(read)).await;
    for _ in 0..5 {
        assert_401(&s, &Delivery::run_started(SECRET), "clock 10 minutes fast").await;
    }
    assert_eq!(s.ingress.metrics().stale_rejections(), 5);
    let metrics = s.get("/metrics").await.body;
    assert!(
        metrics.contains("hands_webhook_stale_rejections_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hands_webhook_rejections_total{reason=\"stale_too_old\"} 5"),
        "{metrics}"
    );
}
