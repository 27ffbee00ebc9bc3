//! The worker against devplane, in process: the session scripts in `events/sessions/`, and the
//! control-plane faults of CATALOGUE §2b (C6-C8, C10, C11, C16, C17) and P5.

// Helpers outside `#[test]` functions panic on setup failures too; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, Faults, Script};
use hands_worker::{ItemEnd, Resume, RunEnd};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Harness, failures, marker, process_running, script, ttl};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_session_script_passes() {
    for name in ["demo", "tools", "faults"] {
        let h = Harness::start(Config::default()).await;
        let s = Script::load(&repo_root().join(format!("events/sessions/{name}.json"))).unwrap();
        let report = h.play(&s, 1).await;
        assert!(report.passed, "{name} failed:\n{}", failures(&report));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c17_healthcheck_items_run_nothing_and_are_stopped() {
    let h = Harness::start(Config::default()).await;
    let work_id = h.dp.enqueue_healthcheck();
    let w = h.worker("hc", CancellationToken::new());
    let claim = w
        .claim(&hands_client::PollOptions::default())
        .await
        .unwrap();
    let hands_worker::Claim::Item(item) = claim else {
        panic!("healthcheck item not claimed")
    };
    let outcome = w.serve(&item, Resume::default()).await;
    assert_eq!(outcome.end, ItemEnd::Healthcheck);
    assert!(outcome.stopped);
    let state = h.dp.work_item(&work_id).unwrap().state;
    assert_eq!(state, hands_protocol::work::WorkState::Stopped);
    assert_eq!(
        h.dp.counters().heartbeats,
        0,
        "a healthcheck needs no lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c6_c7_result_posts_survive_5xx_and_429_with_retry_after() {
    let h = Harness::start(Config::default()).await;
    let s = script(serde_json::json!({
        "name": "flaky-posts",
        "faults": {"fail_posts": {"kind": "tool_result", "count": 2, "status": 429, "retry_after_s": 1}},
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash", "input": {"command": "echo once >> count.txt; cat count.txt"},
             "expect": {"is_error": false, "text_equals": "once"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let report = h.play(&s, 1).await;
    assert!(report.passed, "{}", failures(&report));
    // Two refusals then success: three attempts, and the tool itself ran once (the file has one line).
    assert_eq!(
        report.result_attempts.values().copied().collect::<Vec<_>>(),
        vec![3]
    );
}

/// Two calls whose first result post is committed and then its answer lost as `mode` says.
async fn play_with_a_lost_answer(
    mode: hands_devplane::faults::ResetMode,
) -> hands_devplane::ScriptReport {
    let config = Config {
        faults: Faults {
            reset_after_commit: Some(hands_devplane::faults::ResetAfterCommit { count: 1, mode }),
            ..Faults::default()
        },
        ..Config::default()
    };
    let h = Harness::start(config).await;
    let s = script(serde_json::json!({
        "name": "lost-answer",
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash", "input": {"command": "echo hi"},
             "expect": {"is_error": false, "text_equals": "hi"}},
            {"step": "tool_use", "label": "b", "name": "bash", "input": {"command": "echo there"},
             "expect": {"is_error": false, "text_equals": "there"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    h.play(&s, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c8_reset_after_commit_counts_as_answered() {
    let report = play_with_a_lost_answer(hands_devplane::faults::ResetMode::Error500).await;
    assert!(report.passed, "{}", failures(&report));
}

/// A 2xx whose body is not the echo (a proxy's page) after the result was stored: the worker
/// posts again at once, meets "already answered", and counts it as posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c8_an_unreadable_2xx_answer_is_posted_again_and_counts_as_answered() {
    let report = play_with_a_lost_answer(hands_devplane::faults::ResetMode::GarbledOk).await;
    assert!(report.passed, "{}", failures(&report));
    let mut attempts: Vec<u32> = report.result_attempts.values().copied().collect();
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        vec![1, 2],
        "the garbled answer's result was posted twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c11_stop_mid_tool_kills_it_posts_an_error_and_stops_the_item() {
    let h = Harness::start(ttl(2)).await;
    let sleep = marker(100, 11);
    let s = script(serde_json::json!({
        "name": "stopped",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": sleep},
             "expect": {"is_error": true}},
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker("stop", shutdown.clone());
    let poller = tokio::spawn({
        let w = w.clone();
        async move { w.poll_forever(1).await }
    });
    let api = ControlPlane::new(ClientConfig::with_base_url(h.dp.base_url())).unwrap();
    let stopper = {
        let env = h.dp.environment_id().to_owned();
        let key = Credential::environment_key(h.dp.environment_key());
        let dp_state = h.dp.state().clone();
        let sleep = sleep.clone();
        tokio::spawn(async move {
            // Wait for the call to be running, then ask for a graceful stop like ops tooling.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if process_running(&sleep) {
                    break;
                }
            }
            let work_id = {
                let store = dp_state.lock();
                store.sessions.values().find_map(|s| s.current_work.clone())
            };
            api.stop(&key, &env, &work_id.unwrap(), false)
                .await
                .unwrap();
        })
    };
    let report = h.dp.run_script(&s).await;
    stopper.await.unwrap();
    assert!(report.passed, "{}", failures(&report));
    // The item ends stopped (the worker confirmed with a force stop) and the tool is gone.
    for _ in 0..50 {
        let stopped = {
            let store = h.dp.state().lock();
            store
                .work
                .values()
                .all(|r| r.item.state == hands_protocol::work::WorkState::Stopped)
        };
        if stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!process_running(&sleep), "the stopped command survived");
    shutdown.cancel();
    poller.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c10_lease_lost_kills_the_tool_posts_nothing_and_leaves_the_item() {
    let mut config = ttl(2);
    config.faults = Faults {
        heartbeat_412_at: Some(3),
        ..Faults::default()
    };
    let h = Harness::start(config).await;
    let marker = marker(200, 10);
    let s = script(serde_json::json!({
        "name": "lease-lost",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": marker.clone()},
             "expect": {"no_result_within_ms": 6000}},
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker("lost", shutdown.clone());
    let claimed = tokio::spawn({
        let w = w.clone();
        async move {
            loop {
                if let hands_worker::Claim::Item(item) = w
                    .claim(&hands_client::PollOptions::default())
                    .await
                    .unwrap()
                {
                    return w.serve(&item, Resume::default()).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let report = h.dp.run_script(&s).await;
    assert!(report.passed, "{}", failures(&report));
    let outcome = claimed.await.unwrap();
    assert!(
        matches!(outcome.end, ItemEnd::Ran(RunEnd::LeaseLost(_))),
        "{:?}",
        outcome.end
    );
    assert!(
        !outcome.stopped,
        "an item whose lease was lost must be left alone"
    );
    assert!(!process_running(&marker), "the tool outlived the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p5_many_pollers_one_item_exactly_one_execution() {
    let h = Harness::start(Config::default()).await;
    let count = h.root.join("executions.txt");
    let s = script(serde_json::json!({
        "name": "one-of-many",
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash",
             "input": {"command": format!("echo ran >> {}", count.display())},
             "expect": {"is_error": false}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let report = h.play(&s, 50).await;
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c16_sse_drops_are_reconciled_without_running_anything_twice() {
    let config = Config {
        faults: Faults {
            sse_drop_after_events: Some(1),
            sse_drop_connections: Some(5),
            ..Faults::default()
        },
        ..Config::default()
    };
    let h = Harness::start(config).await;
    let log = h.root.join("runs.txt");
    let mut steps = vec![];
    for i in 0..6 {
        steps.push(
            serde_json::json!({"step": "tool_use", "label": format!("c{i}"), "name": "bash",
            "input": {"command": format!("echo {i} >> {}; echo {i}", log.display())},
            "expect": {"is_error": false, "text_equals": format!("{i}")}}),
        );
    }
    steps.push(serde_json::json!({"step": "idle", "stop_reason": "end_turn"}));
    steps.push(serde_json::json!({"step": "expect_stopped", "within_ms": 20000}));
    let s = script(serde_json::json!({"name": "drops", "steps": steps}));
    let report = h.play(&s, 1).await;
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "0\n1\n2\n3\n4\n5\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c17_items_of_deleted_or_terminated_sessions_run_nothing_and_are_stopped() {
    for ending in ["session.deleted", "session.status_terminated"] {
        let h = Harness::start(Config::default()).await;
        let session =
            h.dp.create_session(&hands_devplane::SessionSpec::default())
                .unwrap();
        h.dp.emit(&session, serde_json::json!({"type": ending}))
            .unwrap();
        let w = h.worker("over", CancellationToken::new());
        let hands_worker::Claim::Item(item) = w
            .claim(&hands_client::PollOptions::default())
            .await
            .unwrap()
        else {
            panic!("the item was not claimed")
        };
        let outcome = w.serve(&item, Resume::default()).await;
        assert_eq!(outcome.end, ItemEnd::SessionOver, "{ending}");
        assert!(outcome.stopped, "{ending}: the item must be force-stopped");
        assert_eq!(
            h.dp.counters().sse_connections,
            0,
            "{ending}: no stream is opened for a session that is over"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c9_a_result_refused_as_too_large_is_shortened_not_dropped() {
    let h = Harness::start(Config::default()).await;
    let s = script(serde_json::json!({
        "name": "too-large",
        "faults": {"fail_posts": {"kind": "tool_result", "count": 1, "status": 413}},
        "steps": [
            {"step": "tool_use", "label": "big", "name": "bash", "input": {"command": "seq 1 30000"},
             "expect": {"is_error": false,
                        "text_contains": [hands_worker::results::SHRUNK_MARKER.trim_end(), "30000"]}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let report = h.play(&s, 1).await;
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(
        report.result_attempts.values().copied().collect::<Vec<_>>(),
        vec![2],
        "one refused post, then the shortened one"
    );
}
