use std::time::Duration;

use hands_devplane::Faults;
use hands_devplane::faults::{FailPosts, PostKind, ResetAfterCommit, ResetMode};
use serde_json::json;

use crate::support::*;

async fn call(env: &Env) -> (String, String, String) {
    let (session, _, token) = env.claimed().await;
    let ev = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.tool_use","name":"bash","input":{}}),
        )
        .unwrap();
    (session, ev["id"].as_str().unwrap().to_owned(), token)
}

fn result(id: &str) -> serde_json::Value {
    json!({"events":[{"type":"user.tool_result","tool_use_id":id,"content":[{"type":"text","text":"x"}]}]})
}

#[tokio::test]
async fn fail_posts_with_429_and_retry_after_then_succeeds() {
    let env = start().await;
    let (session, id, token) = call(&env).await;
    env.dp.set_faults(Faults {
        fail_posts: Some(FailPosts {
            kind: PostKind::ToolResult,
            count: 2,
            status: 429,
            retry_after_s: Some(1),
        }),
        ..Faults::default()
    });
    let url = env.url(&format!("/v1/sessions/{session}/events"));
    for _ in 0..2 {
        let r = env
            .post(&url, &token)
            .json(&result(&id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["retry-after"], "1");
        error_body(r, 429, "rate_limit_error").await;
    }
    assert_eq!(
        env.post(&url, &token)
            .json(&result(&id))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let c = env.dp.counters();
    assert_eq!(
        (
            c.injected_post_failures,
            c.result_attempts_by_tool_use[&id],
            c.results_by_tool_use[&id]
        ),
        (2, 3, 1)
    );
}

#[tokio::test]
async fn fail_posts_respects_kind() {
    let env = start().await;
    let (session, id, token) = call(&env).await;
    env.dp.set_faults(Faults {
        fail_posts: Some(FailPosts {
            kind: PostKind::CustomToolResult,
            count: 1,
            status: 500,
            retry_after_s: None,
        }),
        ..Faults::default()
    });
    let url = env.url(&format!("/v1/sessions/{session}/events"));
    assert_eq!(
        env.post(&url, &token)
            .json(&result(&id))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn reset_after_commit_stores_the_result_but_loses_the_answer() {
    for mode in [ResetMode::Error500, ResetMode::Drop, ResetMode::GarbledOk] {
        let env = start().await;
        let (session, id, token) = call(&env).await;
        env.dp.set_faults(Faults {
            reset_after_commit: Some(ResetAfterCommit { count: 1, mode }),
            ..Faults::default()
        });
        let url = env.url(&format!("/v1/sessions/{session}/events"));
        let r = env.post(&url, &token).json(&result(&id)).send().await;
        match mode {
            ResetMode::Error500 => error_body(r.unwrap(), 500, "api_error").await.to_string(),
            ResetMode::GarbledOk => {
                let resp = r.unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.text().await.unwrap();
                assert!(
                    serde_json::from_str::<serde_json::Value>(&body).is_err(),
                    "not JSON: {body}"
                );
                body
            }
            ResetMode::Drop => {
                // The connection breaks before or while the answer is read.
                let broken = match r {
                    Err(_) => true,
                    Ok(resp) => resp.bytes().await.is_err(),
                };
                assert!(broken, "the answer must be lost");
                String::new()
            }
        };
        assert_eq!(
            env.dp.counters().results_by_tool_use.get(&id),
            Some(&1),
            "{mode:?}"
        );
        // The retry finds it answered.
        let r = env
            .post(&url, &token)
            .json(&result(&id))
            .send()
            .await
            .unwrap();
        let body = error_body(r, 400, "invalid_request_error").await;
        assert_eq!(
            body["error"]["details"]["error_code"],
            "tool_use_already_answered"
        );
    }
}

#[tokio::test]
async fn heartbeat_412_at_n() {
    let env = start().await;
    let (_, work, token) = env.claimed().await;
    env.dp.set_faults(Faults {
        heartbeat_412_at: Some(2),
        ..Faults::default()
    });
    let r = env.heartbeat(&work, &token, "NO_HEARTBEAT").await;
    let hb: serde_json::Value = r.json().await.unwrap();
    let r = env
        .heartbeat(&work, &token, hb["last_heartbeat"].as_str().unwrap())
        .await;
    let body = error_body(r, 412, "invalid_request_error").await;
    assert_eq!(
        body["error"]["details"]["error_code"],
        "heartbeat_precondition_failed"
    );
    let r = env
        .heartbeat(&work, &token, hb["last_heartbeat"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), 200, "only the N-th heartbeat fails");
}

#[tokio::test]
async fn slow_responses_outlast_a_short_client_timeout() {
    let env = start().await;
    env.dp.set_faults(Faults {
        slow_ms: Some(2_000),
        ..Faults::default()
    });
    let r = env
        .get(&env.work_path("/poll"), &env.env_key())
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    env.dp.set_faults(Faults::default());
    assert_eq!(
        env.get(&env.work_path("/poll"), &env.env_key())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
