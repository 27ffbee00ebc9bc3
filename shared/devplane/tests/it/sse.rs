use std::time::Duration;

use hands_devplane::{Config, Faults};
use serde_json::{Value, json};

use crate::support::*;

/// Reads frames until the stream ends or `want` frames arrived; `None` on end of stream.
async fn read_frames(resp: &mut reqwest::Response, want: usize) -> (Vec<(String, Value)>, bool) {
    let mut buf = String::new();
    let mut frames = Vec::new();
    while frames.len() < want {
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
        {
            Ok(Some(c)) => buf.push_str(std::str::from_utf8(&c).unwrap()),
            _ => return (frames, true),
        }
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = Value::Null;
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            frames.push((name, data));
        }
    }
    (frames, false)
}

async fn open(env: &Env, session: &str) -> reqwest::Response {
    let r = env
        .get(
            &env.url(&format!("/v1/sessions/{session}/events/stream")),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    r
}

#[tokio::test]
async fn frames_name_the_event_type_and_can_be_dropped() {
    let env = start().await;
    let session = env.session();
    let mut stream = open(&env, &session).await;
    let emitted = env
        .dp
        .emit(
            &session,
            json!({"type":"agent.tool_use","name":"bash","input":{"command":"ls"}}),
        )
        .unwrap();
    let (frames, ended) = read_frames(&mut stream, 1).await;
    assert!(!ended);
    assert_eq!(frames[0].0, "agent.tool_use");
    assert_eq!(frames[0].1, emitted);
    env.dp.drop_streams(&session);
    let (_, ended) = read_frames(&mut stream, 1).await;
    assert!(ended, "stream must end after drop_streams");
    assert_eq!(env.dp.counters().sse_drops, 1);
}

#[tokio::test]
async fn pings_are_sent() {
    let env = start_with(Config {
        sse_ping_interval: Duration::from_millis(30),
        ..fast_config()
    })
    .await;
    let session = env.session();
    let mut stream = open(&env, &session).await;
    let (frames, _) = read_frames(&mut stream, 1).await;
    assert_eq!(frames[0].0, "ping");
}

#[tokio::test]
async fn drop_after_n_events_applies_to_the_first_connection_only() {
    let env = start_with(Config {
        faults: Faults {
            sse_drop_after_events: Some(2),
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let session = env.session();
    let mut first = open(&env, &session).await;
    for i in 0..3 {
        env.dp
            .emit(&session, json!({"type":"agent.message","n":i}))
            .unwrap();
    }
    let (frames, ended) = read_frames(&mut first, 3).await;
    assert_eq!(frames.len(), 2);
    assert!(ended);
    let mut second = open(&env, &session).await;
    for i in 0..3 {
        env.dp
            .emit(&session, json!({"type":"agent.message","n":i}))
            .unwrap();
    }
    let (frames, ended) = read_frames(&mut second, 3).await;
    assert_eq!((frames.len(), ended), (3, false));
}

#[tokio::test]
async fn stream_validates_deltas_and_auth() {
    let env = start().await;
    let session = env.session();
    let url = env.url(&format!(
        "/v1/sessions/{session}/events/stream?event_deltas[]=agent.bogus"
    ));
    error_body(
        env.get(&url, &env.env_key()).send().await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    let url = env.url(&format!("/v1/sessions/{session}/events/stream"));
    error_body(
        env.get(&url, "bad").send().await.unwrap(),
        401,
        "authentication_error",
    )
    .await;
    let url = env.url("/v1/sessions/sesn_nope/events/stream");
    error_body(
        env.get(&url, &env.env_key()).send().await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
}
