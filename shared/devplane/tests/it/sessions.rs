use serde_json::{Value, json};

use crate::support::*;

fn events_url(env: &Env, session: &str, q: &str) -> String {
    env.url(&format!("/v1/sessions/{session}/events{q}"))
}

#[tokio::test]
async fn history_pagination_order_and_type_filter() {
    let env = start().await;
    let session = env.session();
    for i in 0..5 {
        env.dp
            .emit(
                &session,
                json!({"type":"agent.message","content":[{"type":"text","text":format!("m{i}")}]}),
            )
            .unwrap();
    }
    env.dp
        .emit(
            &session,
            json!({"type":"session.status_idle","stop_reason":{"type":"end_turn"}}),
        )
        .unwrap();
    let mut seen = Vec::new();
    let mut url = events_url(&env, &session, "?limit=2");
    loop {
        let page: Value = env
            .get(&url, &env.env_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["data"].as_array().unwrap() {
            assert!(e["id"].as_str().unwrap().starts_with("sevt_"));
            assert!(e["processed_at"].is_string());
            seen.push(e["type"].as_str().unwrap().to_owned());
        }
        match page["next_page"].as_str() {
            Some(p) => url = events_url(&env, &session, &format!("?limit=2&page={p}")),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.last().map(String::as_str), Some("session.status_idle"));
    let desc: Value = env
        .get(
            &events_url(&env, &session, "?order=desc&limit=1"),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(desc["data"][0]["type"], "session.status_idle");
    let next = desc["next_page"].as_str().unwrap();
    let desc2: Value = env
        .get(
            &events_url(&env, &session, &format!("?order=desc&limit=1&page={next}")),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(desc2["data"][0]["content"][0]["text"], "m4");
    let filtered: Value = env
        .get(
            &events_url(&env, &session, "?types[]=session.status_idle&limit=1000"),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["next_page"], Value::Null);
    for bad in ["?limit=0", "?limit=1001", "?order=sideways", "?page=zzz"] {
        let r = env
            .get(&events_url(&env, &session, bad), &env.env_key())
            .send()
            .await
            .unwrap();
        error_body(r, 400, "invalid_request_error").await;
    }
}

#[tokio::test]
async fn results_are_echoed_and_bad_ones_rejected() {
    let env = start().await;
    let (session, _, token) = env.claimed().await;
    let call = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.tool_use","name":"bash","input":{"command":"ls"}}),
        )
        .unwrap();
    let call_id = call["id"].as_str().unwrap();
    let custom = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.custom_tool_use","name":"lookup","input":{}}),
        )
        .unwrap();
    let custom_id = custom["id"].as_str().unwrap();
    let url = events_url(&env, &session, "");

    // user.message while calls are open
    let r = env
        .post(&url, &token)
        .json(&json!({"events":[{"type":"user.message","content":[{"type":"text","text":"hi"}]}]}))
        .send()
        .await
        .unwrap();
    let body = error_body(r, 400, "invalid_request_error").await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("waiting on responses to events [")
            && msg.contains(call_id)
            && msg.contains(custom_id),
        "{msg}"
    );

    let result = json!({"events":[{"type":"user.tool_result","tool_use_id":call_id,"is_error":false,"content":[{"type":"text","text":"a.txt"}]}]});
    let r = env.post(&url, &token).json(&result).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["data"][0]["type"], "user.tool_result");
    assert!(echo["data"][0]["processed_at"].is_string());
    assert!(echo["data"][0]["id"].as_str().unwrap().starts_with("sevt_"));

    let r = env.post(&url, &token).json(&result).send().await.unwrap();
    let body = error_body(r, 400, "invalid_request_error").await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "tool_use_already_answered"
    );
    let unknown =
        json!({"events":[{"type":"user.tool_result","tool_use_id":"sevt_nope","content":[]}]});
    let body = error_body(
        env.post(&url, &token).json(&unknown).send().await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "unknown_tool_use_id"
    );
    // Wrong kind: a tool_result naming a custom call.
    let wrong =
        json!({"events":[{"type":"user.tool_result","tool_use_id":custom_id,"content":[]}]});
    let body = error_body(
        env.post(&url, &token).json(&wrong).send().await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "unknown_tool_use_id"
    );
    let custom_result = json!({"events":[{"type":"user.custom_tool_result","custom_tool_use_id":custom_id,"content":[{"type":"text","text":"ok"}]}]});
    assert_eq!(
        env.post(&url, &token)
            .json(&custom_result)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    for bad in [
        json!({"events":[]}),
        json!({"events":[{"type":"agent.tool_use","id":"x","name":"bash"}]}),
        json!({"nope":1}),
    ] {
        let r = env.post(&url, &token).json(&bad).send().await.unwrap();
        error_body(r, 400, "invalid_request_error").await;
    }
    let c = env.dp.counters();
    assert_eq!(c.results_by_tool_use.get(call_id), Some(&1));
    assert_eq!(c.result_attempts_by_tool_use.get(call_id), Some(&2));
}

#[tokio::test]
async fn a_message_to_a_session_without_live_work_enqueues_a_new_item() {
    let env = start().await;
    let (session, work, token) = env.claimed().await;
    let url = events_url(&env, &session, "");
    let msg =
        json!({"events":[{"type":"user.message","content":[{"type":"text","text":"again"}]}]});
    assert_eq!(
        env.post(&url, &token)
            .json(&msg)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        env.dp.current_work(&session).as_deref(),
        Some(work.as_str()),
        "live item kept"
    );
    env.post(&env.work_path(&format!("/{work}/stop")), &token)
        .json(&json!({"force":true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        env.post(&url, env.dp.api_key())
            .json(&msg)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let next = env.dp.current_work(&session).unwrap();
    assert_ne!(next, work);
    let item: Value = env
        .get(&env.work_path("/poll"), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["id"], next.as_str());
}

#[tokio::test]
async fn denied_calls_and_terminated_threads_take_no_result() {
    let env = start().await;
    let (session, _, token) = env.claimed().await;
    let denied = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.tool_use","name":"bash","input":{},"evaluated_permission":"deny"}),
        )
        .unwrap();
    let threaded = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.tool_use","name":"bash","input":{},"session_thread_id":"sthr_2"}),
        )
        .unwrap();
    env.dp
        .emit(
            &session,
            json!({"type":"session.thread_status_terminated","session_thread_id":"sthr_2"}),
        )
        .unwrap();
    let url = events_url(&env, &session, "");
    for id in [&denied["id"], &threaded["id"]] {
        let r = env
            .post(&url, &token)
            .json(&json!({"events":[{"type":"user.tool_result","tool_use_id":id,"content":[]}]}))
            .send()
            .await
            .unwrap();
        error_body(r, 400, "invalid_request_error").await;
    }
    // Neither blocks a new message.
    let msg = json!({"events":[{"type":"user.message","content":[]}]});
    assert_eq!(
        env.post(&url, &token)
            .json(&msg)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
