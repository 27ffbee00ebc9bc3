use hands_protocol::secret::decode_sessions_token;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn empty_poll_is_200_null_and_block_ms_is_validated() {
    let env = start().await;
    let r = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.text().await.unwrap(), "null");
    let r = env
        .get(&env.work_path("/poll?block_ms=50"), &env.env_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "null");
    for bad in ["0", "1000", "-1", "abc"] {
        let r = env
            .get(
                &env.work_path(&format!("/poll?block_ms={bad}")),
                &env.env_key(),
            )
            .send()
            .await
            .unwrap();
        error_body(r, 400, "invalid_request_error").await;
    }
    let c = env.dp.counters();
    assert_eq!((c.polls, c.empty_polls), (2, 2));
}

#[tokio::test]
async fn poll_claims_with_secret_and_long_poll_wakes_up() {
    let env = start().await;
    let poll = {
        let req = env
            .get(&env.work_path("/poll?block_ms=999"), &env.env_key())
            .header("anthropic-worker-id", "w1");
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let session = env.session();
    let item = poll.await.unwrap();
    assert_eq!(item["type"], "work");
    assert_eq!(item["state"], "queued");
    assert_eq!(item["data"], json!({"type":"session","id":session}));
    let work = item["id"].as_str().unwrap();
    let token = decode_sessions_token(item["secret"].as_str().unwrap()).unwrap();
    assert_eq!(Some(token.expose().to_owned()), env.dp.sessions_token(work));
    // Claimed: the next immediate poll sees nothing; secret is null everywhere else.
    let r = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "null");
    let listed: Value = env
        .get(&env.work_path(""), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["secret"], Value::Null);
    assert_eq!(env.dp.counters().worker_ids, vec!["w1".to_owned()]);
}

#[tokio::test]
async fn unacked_items_are_reclaimed() {
    let env = start().await;
    env.session();
    let first: Value = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again: Value = env
        .get(
            &env.work_path("/poll?reclaim_older_than_ms=10"),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], first["id"]);
    // With the default window (5 s) it is not handed out a third time right away.
    let r = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "null");
}

#[tokio::test]
async fn ack_transitions_and_conflicts() {
    let env = start().await;
    let r = env
        .post(&env.work_path("/work_nope/ack"), &env.env_key())
        .send()
        .await
        .unwrap();
    error_body(r, 404, "not_found_error").await;
    let (_, work, _) = env.claimed().await;
    let item = env.dp.work_item(&work).unwrap();
    assert_eq!(item.state.as_str(), "starting");
    assert!(item.acknowledged_at.is_some());
    let r = env
        .post(&env.work_path(&format!("/{work}/ack")), &env.env_key())
        .send()
        .await
        .unwrap();
    let body = error_body(r, 409, "conflict_error").await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "work_already_acknowledged"
    );
}

#[tokio::test]
async fn stats_list_retrieve_update() {
    let env = start().await;
    let api = env.dp.api_key().to_owned();
    env.session();
    env.session();
    env.session();
    let _claimed = env
        .get(&env.work_path("/poll"), &env.env_key())
        .header("anthropic-worker-id", "w-stats")
        .send()
        .await
        .unwrap();
    let stats: Value = env
        .get(&env.work_path("/stats"), &api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["type"], "work_queue_stats");
    assert_eq!(
        (stats["depth"].as_u64(), stats["pending"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(stats["workers_polling"], 1);
    assert!(stats["oldest_queued_at"].is_string());

    let mut ids = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut url = env.work_path("?limit=2");
        if let Some(p) = &page {
            url.push_str(&format!("&page={p}"));
        }
        let body: Value = env
            .get(&url, &env.env_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned()),
        );
        match body["next_page"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 3);
    let r = env
        .get(&env.work_path("?page=garbage"), &env.env_key())
        .send()
        .await
        .unwrap();
    error_body(r, 400, "invalid_request_error").await;

    let item = env.work_path(&format!("/{}", ids[0]));
    let r = env
        .post(&item, &api)
        .json(&json!({"metadata":{"a":"1","b":"2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = env
        .post(&item, &api)
        .json(&json!({"metadata":{"a":null}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["metadata"], json!({"b":"2"}));
    let got: Value = env
        .get(&item, &api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["metadata"], json!({"b":"2"}));
    let r = env
        .post(&item, &api)
        .body("{not json")
        .send()
        .await
        .unwrap();
    error_body(r, 400, "invalid_request_error").await;
    let r = env
        .post(&item, &api)
        .json(&json!({"metadata":{"a":5}}))
        .send()
        .await
        .unwrap();
    error_body(r, 400, "invalid_request_error").await;
}

#[tokio::test]
async fn healthcheck_items_are_served() {
    let env = start().await;
    let work = env.dp.enqueue_healthcheck();
    let item: Value = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["id"], work.as_str());
    assert_eq!(item["data"]["type"], "healthcheck");
}
