//! Whole sessions through the ingress: duplicates serve one session, the periodic drain
//! recovers a lost webhook, devplane's webhook sender drives a scripted session end to end, and
//! a graceful shutdown mid-session answers the in-flight call and stops the item.

use std::time::Duration;

use hands_devplane::{Script, ScriptReport, SessionSpec, WebhookConfig};
use hands_protocol::work::WorkState;
use tokio::net::TcpListener;

use crate::harness::*;

fn failures(report: &ScriptReport) -> String {
    report
        .steps
        .iter()
        .filter(|s| !s.passed)
        .map(|s| format!("step {} {} {:?}: {}", s.index, s.step, s.label, s.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

fn all_items_stopped(s: &Stack) -> bool {
    let store = s.dp.state().lock();
    !store.work.is_empty()
        && store
            .work
            .values()
            .all(|r| r.item.state == WorkState::Stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w10_p5_a_replay_and_50_concurrent_copies_serve_one_session() {
    let mut s = Stack::start(Options::default()).await;
    s.dp.create_session(&SessionSpec::default()).unwrap();
    let d = Delivery::run_started(SECRET);
    let copies: Vec<_> = (0..50)
        .map(|_| {
            let raw = d.request("/webhook");
            let addr = s.addr;
            tokio::spawn(async move { exchange(addr, &raw).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in copies {
        statuses.push(c.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&st| st == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&st| st == 204).count(),
        49,
        "{statuses:?}"
    );
    eventually("the session was served", || s.dp.counters().heartbeats >= 1).await;
    // A later replay changes nothing.
    assert_eq!(s.send(&d).await.status, 204);
    let c = s.dp.counters();
    assert_eq!((c.claims, c.acks), (1, 1), "{c:?}");
    assert_eq!(s.ingress.metrics().items_claimed(), 1);
    s.shutdown().await;
    assert!(all_items_stopped(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_webhook_is_recovered_by_the_periodic_drain() {
    let mut o = Options::default();
    // No webhook is configured in devplane: every delivery is "lost".
    o.server.drain_interval = Some(Duration::from_millis(200));
    let mut s = Stack::start(o).await;
    let script = Script::from_json(
        &serde_json::json!({
            "name": "timer",
            "steps": [
                {"step": "tool_use", "name": "bash", "input": {"command": "echo recovered"},
                 "expect": {"is_error": false, "text_equals": "recovered"}},
                {"step": "idle", "stop_reason": "end_turn"},
                {"step": "expect_stopped", "within_ms": 20000}
            ]
        })
        .to_string(),
        "timer",
    )
    .unwrap();
    let report = s.dp.run_script(&script).await;
    assert!(report.passed, "{}", failures(&report));
    assert!(s.ingress.metrics().drains("timer") >= 1);
    assert_eq!(s.ingress.metrics().drains("webhook"), 0);
    assert_eq!(s.dp.counters().webhook_attempts, 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devplane_webhook_sender_drives_a_whole_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let mut o = Options::default();
    let mut hook = WebhookConfig::new(url, SECRET);
    hook.base_delay = Duration::from_millis(50);
    hook.max_delay = Duration::from_millis(200);
    o.devplane.webhook = Some(hook);
    // No timer: only the webhook can wake the drain.
    o.server.drain_interval = None;
    let mut s = Stack::start_on(listener, o).await;
    let script = Script::load(&repo_root().join("events/sessions/demo.json")).unwrap();
    let report = s.dp.run_script(&script).await;
    assert!(report.passed, "{}", failures(&report));
    assert!(s.dp.counters().webhook_deliveries >= 1);
    assert!(s.ingress.metrics().deliveries("drained") >= 1);
    assert_eq!(s.ingress.metrics().drains("timer"), 0);
    let metrics = s.get("/metrics").await.body;
    assert!(
        metrics.contains("hands_tool_calls_total{tool=\"bash\",outcome=\"ok\"}"),
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2_shutdown_mid_session_answers_the_call_stops_the_item_and_exits_in_time() {
    let mut o = Options::default();
    o.server.drain_interval = Some(Duration::from_millis(200));
    let mut s = Stack::start(o).await;
    let marker = format!("sleep 101.{}", std::process::id());
    let script = Script::from_json(
        &serde_json::json!({
            "name": "shutdown",
            "steps": [
                {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": marker.clone()},
                 "expect": {"is_error": true}}
            ]
        })
        .to_string(),
        "shutdown",
    )
    .unwrap();
    let dp_state = s.dp.state().clone();
    let play = tokio::spawn(async move {
        let agent = hands_devplane::agent::run(&dp_state, &script);
        agent.await
    });
    let m = marker.clone();
    eventually("the long call is running", move || process_running(&m)).await;
    assert_eq!(s.ingress.metrics().sessions_active(), 1);

    let outcome = s.shutdown().await;
    assert!(
        outcome.sessions_finished,
        "a session outlived the grace period"
    );
    assert!(!s.ingress.is_ready());
    let report = tokio::time::timeout(GUARD, play).await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert!(!process_running(&marker), "the cancelled command survived");
    assert!(all_items_stopped(&s), "the item was not stopped");
    assert_eq!(s.ingress.metrics().sessions_finished("shutdown"), 1);
    assert_eq!(s.ingress.metrics().sessions_active(), 0);
}
