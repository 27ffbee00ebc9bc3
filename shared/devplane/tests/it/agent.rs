//! The scripted agent against a minimal in-test worker that answers `bash` calls with
//! `ran: <command>`, ignores everything else, and force-stops when the session terminates.

use std::time::Duration;

use hands_devplane::Script;
use serde_json::{Value, json};

use crate::support::*;

async fn fake_worker(base: String, env_id: String, env_key: String) {
    let http = reqwest::Client::new();
    let work = format!("{base}/v1/environments/{env_id}/work");
    let item: Value = loop {
        let v: Value = http
            .get(format!("{work}/poll?block_ms=999"))
            .bearer_auth(&env_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !v.is_null() {
            break v;
        }
    };
    let id = item["id"].as_str().unwrap().to_owned();
    let session = item["data"]["id"].as_str().unwrap().to_owned();
    let token =
        hands_protocol::secret::decode_sessions_token(item["secret"].as_str().unwrap()).unwrap();
    let token = token.expose().to_owned();
    http.post(format!("{work}/{id}/ack"))
        .bearer_auth(&env_key)
        .send()
        .await
        .unwrap();
    let mut stream = http
        .get(format!("{base}/v1/sessions/{session}/events/stream"))
        .bearer_auth(&token)
        .header("anthropic-beta", BETA)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let ev: Value = serde_json::from_str(data).unwrap();
            match ev["type"].as_str() {
                Some("agent.tool_use")
                    if ev["name"] == "bash" && ev.get("evaluated_permission").is_none() =>
                {
                    let text = format!("ran: {}", ev["input"]["command"].as_str().unwrap_or(""));
                    http.post(format!("{base}/v1/sessions/{session}/events"))
                        .bearer_auth(&token)
                        .header("anthropic-beta", BETA)
                        .json(&json!({"events":[{"type":"user.tool_result","tool_use_id":ev["id"],"is_error":false,"content":[{"type":"text","text":text}]}]}))
                        .send()
                        .await
                        .unwrap();
                }
                Some("session.status_terminated") => {
                    http.post(format!("{work}/{id}/stop"))
                        .bearer_auth(&token)
                        .json(&json!({"force":true}))
                        .send()
                        .await
                        .unwrap();
                    return;
                }
                _ => {}
            }
        }
    }
}

fn script(steps: Value) -> Script {
    Script::from_json(
        &json!({"name":"t","start_timeout_ms":10_000,"result_timeout_ms":5_000,"steps":steps})
            .to_string(),
        "test",
    )
    .unwrap()
}

#[tokio::test]
async fn report_passes_and_fails_per_step() {
    let env = start().await;
    let worker = tokio::spawn(fake_worker(
        env.dp.base_url(),
        env.dp.environment_id().to_owned(),
        env.env_key(),
    ));
    let s = script(json!([
        {"step":"tool_use","label":"ok","name":"bash","input":{"command":"echo hi"},"expect":{"is_error":false,"text_equals":"ran: echo hi"}},
        {"step":"tool_use","label":"wrong","name":"bash","input":{"command":"x"},"expect":{"text_contains":["nope"]}},
        {"step":"custom_tool_use","label":"unowned","name":"lookup","input":{},"expect":{"no_result_within_ms":100}},
        {"step":"tool_use","label":"unanswered","name":"read","input":{"file_path":"a"},"timeout_ms":100},
        {"step":"idle","stop_reason":"requires_action","event_ids":["unowned"]},
        {"step":"terminated"},
        {"step":"expect_stopped","within_ms":5000}
    ]));
    let report = env.dp.run_script(&s).await;
    worker.await.unwrap();
    let verdicts: Vec<(String, bool)> = report
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.passed))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("worker_attached".into(), true),
            ("tool_use".into(), true),
            ("tool_use".into(), false),
            ("custom_tool_use".into(), true),
            ("tool_use".into(), false),
            ("idle".into(), true),
            ("terminated".into(), true),
            ("expect_stopped".into(), true),
        ],
        "{report:#?}"
    );
    assert!(!report.passed);
    assert!(report.steps[1].latency_ms.is_some());
    // devplane's own emit-to-stored round trip, in µs: never longer than what the agent saw
    // (it woke up after the result was stored), and absent where nothing was answered.
    let us = report.steps[1]
        .latency_us
        .expect("latency_us of an answered call");
    assert!(
        us <= (report.steps[1].latency_ms.unwrap() + 1) * 1000,
        "{us}"
    );
    assert_eq!(report.steps[4].latency_us, None);
    assert!(report.steps[2].detail.contains("nope"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][1]["label"], "ok");
    // The idle event carried the custom call's id.
    let session = report.session_id.unwrap();
    let events: Value = env
        .get(
            &env.url(&format!(
                "/v1/sessions/{session}/events?types[]=session.status_idle"
            )),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["data"][0]["stop_reason"]["event_ids"][0],
        json["steps"][3]["event_id"]
    );
}

#[tokio::test]
async fn no_worker_fails_the_attach_step() {
    let env = start().await;
    let mut s = script(json!([{"step":"wait","ms":1}]));
    s.start_timeout_ms = 50;
    let report = env.dp.run_script(&s).await;
    assert!(!report.passed);
    assert_eq!(report.steps.len(), 1);
    assert!(report.steps[0].detail.contains("no worker"));
}

#[tokio::test]
async fn ask_calls_are_checked_at_their_confirmation() {
    let env = start().await;
    let worker = tokio::spawn(fake_worker(
        env.dp.base_url(),
        env.dp.environment_id().to_owned(),
        env.env_key(),
    ));
    // The fake worker never runs gated calls, so an allow-confirmed ask call gets no result.
    let s = script(json!([
        {"step":"tool_use","label":"a","name":"bash","input":{"command":"x"},"permission":"ask","timeout_ms":100},
        {"step":"confirm","tool_use":"a","result":"allow"},
        {"step":"terminated"}
    ]));
    let report = env.dp.run_script(&s).await;
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    assert!(!report.passed);
    assert!(
        !report.steps[1].passed && !report.steps[2].passed,
        "{report:#?}"
    );
    assert!(report.steps[1].detail.contains("after confirmation allow"));
}

#[test]
fn shipped_scripts_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/sessions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            Script::load(&p).unwrap();
            n += 1;
        }
    }
    assert!(n >= 3);
}
