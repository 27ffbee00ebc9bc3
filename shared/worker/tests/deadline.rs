//! Serving up to a hand-off point and carrying on in a successor (the Lambda deadline path,
//! DESIGN.md "Lambda deadline and continuation"), in process against devplane: the in-flight
//! call is cancelled and answered, the lease is handed over between beats, and the successor,
//! presenting the last heartbeat value, finishes the session without a 412, a lapse or a rerun.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hands_client::PollOptions;
use hands_devplane::Config;
use hands_protocol::work::WorkState;
use hands_worker::{Claim, ItemEnd, Resume, RunEnd};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Harness, failures, marker, process_running, script, ttl};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_off_mid_call_answers_it_and_the_successor_carries_the_lease_on() {
    // A 4 s TTL: beats every 2 s, so the hand-off lands between beats or during one.
    let h = Harness::start(ttl(4)).await;
    let sleep = marker(60, 21);
    let sc = script(serde_json::json!({
        "name": "hand-off",
        "steps": [
            {"step": "tool_use", "label": "first", "name": "bash", "input": {"command": "echo one > one.txt; cat one.txt"},
             "expect": {"is_error": false, "text_equals": "one"}},
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": sleep},
             "expect": {"is_error": true}},
            {"step": "tool_use", "label": "after", "name": "bash", "input": {"command": "echo after"},
             "expect": {"is_error": false, "text_equals": "after"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let drive = async {
        let first = h.worker("first", CancellationToken::new());
        let opts = PollOptions {
            block_ms: Some(500),
            ..PollOptions::default()
        };
        let item = loop {
            if let Claim::Item(i) = first.claim(&opts).await.unwrap() {
                break *i;
            }
        };
        let out1 = first
            .serve_until(
                &item,
                Resume::default(),
                Some(Instant::now() + Duration::from_secs(3)),
            )
            .await;
        let second = h.worker("second", CancellationToken::new());
        let resume = out1.continuation.clone().expect("a continuation");
        let out2 = second.serve(&item, resume).await;
        (out1, out2)
    };
    let (report, (out1, out2)) = tokio::join!(h.dp.run_script(&sc), drive);
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(out1.end, ItemEnd::Ran(RunEnd::Deadline));
    assert!(!out1.stopped, "a hand-off leaves the item to the successor");
    let cont = out1.continuation.unwrap();
    // Only answers whose result event was not seen yet travel (the others are in the
    // history); nothing was left unposted.
    assert!(cont.answered.len() <= 2, "{cont:?}");
    assert!(cont.results.is_empty(), "{cont:?}");
    assert!(cont.last_heartbeat.is_some());
    assert_eq!(out2.end, ItemEnd::Ran(RunEnd::Idle));
    assert!(out2.stopped);
    let c = h.dp.counters();
    assert_eq!(c.heartbeat_412s, 0);
    assert_eq!(c.lease_expiries, 0);
    assert_eq!(report.rejected_posts, 0);
    assert!(report.result_attempts.values().all(|&n| n == 1));
    assert!(!process_running(&sleep));
    let work_id = report.work_id.unwrap();
    assert_eq!(h.dp.work_item(&work_id).unwrap().state, WorkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_continuation_is_refused_by_the_lease_and_runs_nothing() {
    let h = Harness::start(Config::default()).await;
    let sc = script(serde_json::json!({
        "name": "stale",
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash", "input": {"command": "echo a"},
             "expect": {"is_error": false, "text_equals": "a"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let drive = async {
        let w = h.worker("w", CancellationToken::new());
        let item = loop {
            if let Claim::Item(i) = w
                .claim(&PollOptions {
                    block_ms: Some(500),
                    ..PollOptions::default()
                })
                .await
                .unwrap()
            {
                break *i;
            }
        };
        // A duplicate continuation (Lambda retried an old event) holding a token that is not
        // the lease's current one: the first beat answers 412 and nothing runs.
        let stale = Resume {
            last_heartbeat: Some("2020-01-01T00:00:00Z".into()),
            ..Resume::default()
        };
        let dup = w.serve(&item, stale).await;
        let real = w.serve(&item, Resume::default()).await;
        (dup, real)
    };
    let (report, (dup, real)) = tokio::join!(h.dp.run_script(&sc), drive);
    assert!(matches!(dup.end, ItemEnd::NotClaimed(_)), "{:?}", dup.end);
    assert!(!dup.stopped);
    assert!(report.passed, "{}", failures(&report));
    assert!(real.stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_session_hands_off_only_the_answers_not_yet_in_its_history() {
    // 40 calls answered before the hand-off: their results are in the session's history (the
    // stream echoed them), so the continuation carries the newest 32 ids (a hedge), not 41.
    let h = Harness::start(ttl(30)).await;
    let sleep = marker(60, 23);
    let mut steps: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({"step": "tool_use", "label": format!("quick-{i}"), "name": "bash",
                "input": {"command": format!("echo {i}")},
                "expect": {"is_error": false, "text_equals": format!("{i}")}})
        })
        .collect();
    steps.push(
        serde_json::json!({"step": "tool_use", "label": "long", "name": "bash",
        "input": {"command": sleep}, "expect": {"is_error": true}}),
    );
    steps.push(
        serde_json::json!({"step": "tool_use", "label": "after", "name": "bash",
        "input": {"command": "echo after"}, "expect": {"is_error": false, "text_equals": "after"}}),
    );
    steps.push(serde_json::json!({"step": "idle", "stop_reason": "end_turn"}));
    steps.push(serde_json::json!({"step": "expect_stopped", "within_ms": 20000}));
    let sc = script(serde_json::json!({"name": "long-session", "steps": steps}));
    let drive = async {
        let first = h.worker("first", CancellationToken::new());
        let opts = PollOptions {
            block_ms: Some(500),
            ..PollOptions::default()
        };
        let item = loop {
            if let Claim::Item(i) = first.claim(&opts).await.unwrap() {
                break *i;
            }
        };
        // The 40 quick calls take a few seconds; the hand-off lands during the long one.
        let out1 = first
            .serve_until(
                &item,
                Resume::default(),
                Some(Instant::now() + Duration::from_secs(15)),
            )
            .await;
        let second = h.worker("second", CancellationToken::new());
        let resume = out1.continuation.clone().expect("a continuation");
        let out2 = second.serve(&item, resume).await;
        (out1, out2)
    };
    let (report, (out1, out2)) = tokio::join!(h.dp.run_script(&sc), drive);
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(out1.end, ItemEnd::Ran(RunEnd::Deadline));
    let cont = out1.continuation.unwrap();
    // The newest 32 answered ids travel as a hedge against a history behind the stream,
    // not all 41.
    assert_eq!(
        cont.answered.len(),
        hands_worker::ledger::ALWAYS_CARRIED,
        "{:?}",
        cont.answered
    );
    assert!(cont.results.is_empty(), "{cont:?}");
    assert_eq!(out2.end, ItemEnd::Ran(RunEnd::Idle));
    // Nothing ran twice: 42 calls, one result each.
    assert_eq!(report.result_attempts.len(), 42);
    assert!(report.result_attempts.values().all(|&n| n == 1));
    assert!(!process_running(&sleep));
}

/// A workspace store whose save never finishes (an S3 too slow for the time left) and which
/// holds a previous snapshot until it is discarded.
#[derive(Default)]
struct StuckStore {
    previous: std::sync::Mutex<bool>,
    saves: std::sync::atomic::AtomicUsize,
    discards: std::sync::atomic::AtomicUsize,
}

impl hands_worker::WorkspaceStore for StuckStore {
    fn restore<'a>(
        &'a self,
        _session_id: &'a str,
        _dir: &'a std::path::Path,
    ) -> futures::future::BoxFuture<'a, Result<bool, hands_worker::StoreError>> {
        Box::pin(async move { Ok(*self.previous.lock().unwrap()) })
    }

    fn save<'a>(
        &'a self,
        _session_id: &'a str,
        _dir: &'a std::path::Path,
    ) -> futures::future::BoxFuture<'a, Result<(), hands_worker::StoreError>> {
        Box::pin(async move {
            self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        })
    }

    fn discard<'a>(
        &'a self,
        _session_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), hands_worker::StoreError>> {
        Box::pin(async move {
            self.discards
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            *self.previous.lock().unwrap() = false;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_save_too_slow_for_the_hand_off_is_abandoned_the_old_snapshot_dropped_and_the_item_handed_on()
 {
    let h = Harness::start(ttl(30)).await;
    let sleep = marker(60, 24);
    let sc = script(serde_json::json!({
        "name": "stuck-save",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": sleep},
             "expect": {"is_error": true}},
            {"step": "tool_use", "label": "after", "name": "bash", "input": {"command": "echo after"},
             "expect": {"is_error": false, "text_equals": "after"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let store = std::sync::Arc::new(StuckStore::default());
    *store.previous.lock().unwrap() = true;
    let drive = async {
        let mut config = h.config(h.per_session("first"));
        config.workspace_store = Some(store.clone());
        config.hand_off_post_budget = Duration::from_millis(500);
        config.hand_off_save_budget = Duration::from_secs(1);
        let first = h.worker_with(config, CancellationToken::new());
        let opts = PollOptions {
            block_ms: Some(500),
            ..PollOptions::default()
        };
        let item = loop {
            if let Claim::Item(i) = first.claim(&opts).await.unwrap() {
                break *i;
            }
        };
        // The store's save sleeps 600 s: this guard only catches a hand-off that waits for it.
        let out1 = tokio::time::timeout(
            Duration::from_secs(120),
            first.serve_until(
                &item,
                Resume::default(),
                Some(Instant::now() + Duration::from_secs(2)),
            ),
        )
        .await
        .expect("the hand-off waited for the stuck save");
        let second = h.worker("second", CancellationToken::new());
        let resume = out1.continuation.clone().expect("a continuation");
        let out2 = second.serve(&item, resume).await;
        (out1, out2)
    };
    let (report, (out1, out2)) = tokio::join!(h.dp.run_script(&sc), drive);
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(out1.end, ItemEnd::Ran(RunEnd::Deadline));
    assert!(out1.continuation.unwrap().last_heartbeat.is_some());
    assert_eq!(store.saves.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(store.discards.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        !*store.previous.lock().unwrap(),
        "the previous snapshot is still there"
    );
    assert_eq!(out2.end, ItemEnd::Ran(RunEnd::Idle));
    assert_eq!(h.dp.counters().lease_expiries, 0);
    assert!(report.result_attempts.values().all(|&n| n == 1));
    assert!(!process_running(&sleep));
}
