use hands_devplane::{Config, StopReply};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn heartbeat_compare_and_set() {
    let env = start().await;
    let (_, work, token) = env.claimed().await;
    let r = env.heartbeat(&work, &token, "NO_HEARTBEAT").await;
    assert_eq!(r.status(), 200);
    let hb: Value = r.json().await.unwrap();
    assert_eq!(hb["type"], "work_heartbeat");
    assert_eq!(hb["state"], "active");
    assert_eq!(hb["lease_extended"], true);
    assert_eq!(hb["ttl_seconds"], 90);
    let last = hb["last_heartbeat"].as_str().unwrap().to_owned();
    assert!(last.ends_with("+00:00"), "{last}");
    assert!(env.dp.work_item(&work).unwrap().started_at.is_some());

    // Stale value -> 412 with the lease state.
    let r = env.heartbeat(&work, &token, "NO_HEARTBEAT").await;
    let body = error_body(r, 412, "invalid_request_error").await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "heartbeat_precondition_failed"
    );
    let current = &body["error"]["details"]["current_state"];
    assert_eq!(current["state"], "active");
    assert_eq!(current["last_heartbeat"], last.as_str());
    assert_eq!(current["lease_extended"], false);

    // A raw `+` decodes as a space, so forgetting to percent-encode fails the CAS.
    let raw = env.work_path(&format!("/{work}/heartbeat?expected_last_heartbeat={last}"));
    let r = env.post(&raw, &token).send().await.unwrap();
    assert_eq!(r.status(), 412);

    // Correct, percent-encoded echo with a desired TTL.
    let r = env
        .post(&env.work_path(&format!("/{work}/heartbeat")), &token)
        .query(&[
            ("expected_last_heartbeat", last.as_str()),
            ("desired_ttl_seconds", "30"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hb: Value = r.json().await.unwrap();
    assert_eq!(hb["ttl_seconds"], 30);
    assert_ne!(hb["last_heartbeat"], last.as_str());

    let r = env
        .post(&env.work_path(&format!("/{work}/heartbeat")), &token)
        .send()
        .await
        .unwrap();
    error_body(r, 400, "invalid_request_error").await;
    let r = env
        .post(&env.work_path(&format!("/{work}/heartbeat")), &token)
        .query(&[
            ("expected_last_heartbeat", "x"),
            ("desired_ttl_seconds", "0"),
        ])
        .send()
        .await
        .unwrap();
    error_body(r, 400, "invalid_request_error").await;
}

#[tokio::test]
async fn heartbeat_on_unacked_item_is_412() {
    let env = start().await;
    env.session();
    let item: Value = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let work = item["id"].as_str().unwrap();
    let r = env.heartbeat(work, &env.env_key(), "NO_HEARTBEAT").await;
    let body = error_body(r, 412, "invalid_request_error").await;
    assert_eq!(body["error"]["details"]["current_state"]["state"], "queued");
}

#[tokio::test]
async fn graceful_then_force_stop_and_409() {
    let env = start().await;
    let (_, work, token) = env.claimed().await;
    env.heartbeat(&work, &token, "NO_HEARTBEAT").await;
    let stop = env.work_path(&format!("/{work}/stop"));
    let r = env
        .post(&stop, env.dp.api_key())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().await.unwrap(), "");
    // While stopping, heartbeats are not compared and say the lease is over.
    let r = env.heartbeat(&work, &token, "anything").await;
    let hb: Value = r.json().await.unwrap();
    assert_eq!(
        (hb["state"].as_str(), hb["lease_extended"].as_bool()),
        (Some("stopping"), Some(false))
    );
    let r = env
        .post(&stop, &token)
        .json(&json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let item = env.dp.work_item(&work).unwrap();
    assert_eq!(item.state.as_str(), "stopped");
    assert!(item.stopped_at.is_some() && item.stop_requested_at.is_some());
    let r = env
        .post(&stop, &token)
        .json(&json!({"force": true}))
        .send()
        .await
        .unwrap();
    let body = error_body(r, 409, "conflict_error").await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "work_already_stopped"
    );
    let r = env
        .post(&stop, &token)
        .body("{\"force\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn stop_can_answer_200_with_the_item() {
    let env = start_with(Config {
        stop_reply: StopReply::Json,
        ..fast_config()
    })
    .await;
    let (_, work, token) = env.claimed().await;
    let r = env
        .post(&env.work_path(&format!("/{work}/stop")), &token)
        .json(&json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let item: Value = r.json().await.unwrap();
    assert_eq!(item["state"], "stopped");
    assert_eq!(item["secret"], Value::Null);
}

#[tokio::test]
async fn lapsed_lease_requeues_and_late_heartbeat_gets_412() {
    let env = start().await;
    let (_, work, token) = env.claimed().await;
    let r = env
        .post(&env.work_path(&format!("/{work}/heartbeat")), &token)
        .query(&[
            ("expected_last_heartbeat", "NO_HEARTBEAT"),
            ("desired_ttl_seconds", "1"),
        ])
        .send()
        .await
        .unwrap();
    let last: Value = r.json().await.unwrap();
    let dp = &env.dp;
    assert!(
        eventually(|| dp
            .work_item(&work)
            .is_some_and(|w| w.state.as_str() == "queued"))
        .await
    );
    let r = env
        .heartbeat(&work, &token, last["last_heartbeat"].as_str().unwrap())
        .await;
    let body = error_body(r, 412, "invalid_request_error").await;
    assert_eq!(body["error"]["details"]["current_state"]["state"], "queued");
    let again: Value = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], work.as_str());
    assert_eq!(env.dp.counters().lease_expiries, 1);
}

#[tokio::test]
async fn lapsed_lease_can_be_left_alone() {
    let env = start_with(Config {
        requeue_on_lease_expiry: false,
        ..fast_config()
    })
    .await;
    let (_, work, token) = env.claimed().await;
    env.post(&env.work_path(&format!("/{work}/heartbeat")), &token)
        .query(&[
            ("expected_last_heartbeat", "NO_HEARTBEAT"),
            ("desired_ttl_seconds", "1"),
        ])
        .send()
        .await
        .unwrap();
    let dp = &env.dp;
    assert!(eventually(|| dp.counters().lease_expiries == 1).await);
    assert_eq!(env.dp.work_item(&work).unwrap().state.as_str(), "active");
}
