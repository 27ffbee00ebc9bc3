use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hands_devplane::{Config, WebhookConfig};
use hands_protocol::webhook::{SigningSecret, Verifier, WebhookHeaders};
use serde_json::{Value, json};

use crate::support::*;

type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver that fails the first `fail` deliveries with 500.
async fn receiver(fail: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let mut v = s.lock().unwrap();
                v.push((headers, body.to_vec()));
                if v.len() <= fail {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn webhook_config(url: String) -> Config {
    let mut w = WebhookConfig::new(url, SECRET);
    w.base_delay = Duration::from_millis(5);
    w.max_delay = Duration::from_millis(20);
    Config {
        webhook: Some(w),
        ..fast_config()
    }
}

#[tokio::test]
async fn run_started_is_signed_and_retried_with_the_same_id() {
    let (url, seen) = receiver(2).await;
    let env = start_with(webhook_config(url)).await;
    let session = env.session();
    env.dp
        .emit(&session, json!({"type":"session.status_running"}))
        .unwrap();
    let dp = &env.dp;
    assert!(eventually(|| dp.counters().webhook_deliveries == 1).await);
    assert_eq!(env.dp.counters().webhook_attempts, 3);
    let verifier = Verifier::new([SigningSecret::parse(SECRET).unwrap()]).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let mut ids = Vec::new();
    for (headers, body) in seen.iter() {
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap();
        let wh = WebhookHeaders::single(
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        verifier.verify(&wh, body, now).unwrap();
        ids.push(h("webhook-id").to_owned());
        let ev: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["data"]["type"], "session.status_run_started");
        assert_eq!(ev["data"]["id"], session.as_str());
        assert_eq!(ev["id"], h("webhook-id"));
        // A tampered body must not verify.
        let mut bad = body.clone();
        bad.push(b' ');
        assert!(verifier.verify(&wh, &bad, now).is_err());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "same event id on every attempt");
}

#[tokio::test]
async fn gives_up_after_three_attempts() {
    let (url, seen) = receiver(usize::MAX).await;
    let env = start_with(webhook_config(url)).await;
    let session = env.session();
    env.dp
        .emit(&session, json!({"type":"session.status_running"}))
        .unwrap();
    let dp = &env.dp;
    assert!(eventually(|| dp.counters().webhook_attempts == 3).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(env.dp.counters().webhook_deliveries, 0);
}
