//! `hands janitor` against devplane: the item of a failed Lambda invocation (its destination
//! record) is force-stopped, an item whose lease stopped beating is listed and, with
//! `--stop-stale`, force-stopped, and an item a live worker is serving is left alone.
//!
//! devplane runs with a 2 s lease TTL and does not queue an item again when its lease lapses
//! (a control plane that leaves a dead worker's item in place), so the stale item stays
//! `starting` without heartbeats; the live worker beats every second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential, PollOptions};
use hands_devplane::{Config, DevPlane, SessionSpec};
use hands_protocol::work::{WorkItem, WorkState};
use hands_worker::{Claim, NoObserver, WorkdirTemplate, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

const HANDS: &str = env!("CARGO_BIN_EXE_hands");

fn worker(dp: &DevPlane, dir: &std::path::Path, shutdown: CancellationToken) -> Worker {
    let cp = ControlPlane::new(ClientConfig::with_base_url(dp.base_url())).unwrap();
    let mut config = WorkerConfig::new(
        dp.environment_id(),
        WorkdirTemplate::new(format!("{}/{{session_id}}", dir.display())),
    );
    config.environment_key = Some(Credential::environment_key(dp.environment_key()));
    config.max_idle = None; // serves until told to stop
    Worker::new(cp, config, Arc::new(NoObserver), shutdown)
}

/// Polls and acks the next item for `session_id` (items of other sessions are not expected).
async fn claim(w: &Worker, session_id: &str) -> WorkItem {
    let opts = PollOptions {
        block_ms: Some(500),
        ..PollOptions::default()
    };
    for _ in 0..40 {
        if let Claim::Item(item) = w.claim(&opts).await.unwrap() {
            assert_eq!(item.data.id, session_id);
            return *item;
        }
    }
    panic!("no item for {session_id}");
}

fn state(dp: &DevPlane, work_id: &str) -> WorkState {
    dp.work_item(work_id).unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_stale_items_are_force_stopped_and_a_live_one_is_not() {
    let config = Config {
        default_ttl: Duration::from_secs(2),
        requeue_on_lease_expiry: false,
        ..Config::default()
    };
    let dp = DevPlane::start(config, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let w = worker(&dp, dir.path(), shutdown.clone());

    // One session per item; items are handed out in creation order.
    let failed_session = dp.create_session(&SessionSpec::default()).unwrap();
    let failed = claim(&w, &failed_session).await;
    let stale_session = dp.create_session(&SessionSpec::default()).unwrap();
    let stale = claim(&w, &stale_session).await;
    let live_session = dp.create_session(&SessionSpec::default()).unwrap();
    let live = claim(&w, &live_session).await;
    let serving = {
        let w = w.clone();
        let live = live.clone();
        tokio::spawn(async move { w.serve(&live, hands_worker::Resume::default()).await })
    };
    // The live item beats (every second); the other two were acked and then abandoned. Let
    // the abandoned ones pass `--stale-after 3s`.
    let beats = dp.counters().heartbeats;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        dp.counters().heartbeats >= beats + 2,
        "the live item is not beating"
    );
    assert_eq!(state(&dp, &stale.id), WorkState::Starting);
    assert!(
        dp.work_item(&stale.id)
            .unwrap()
            .latest_heartbeat_at
            .is_none()
    );

    // What Lambda puts in the on-failure destination after the session function kept failing.
    let record = serde_json::json!({
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"work": failed},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
    });
    let records = dir.path().join("records.jsonl");
    std::fs::write(&records, format!("{record}\n")).unwrap();

    let out = tokio::process::Command::new(HANDS)
        .arg("janitor")
        .arg("--records")
        .arg(&records)
        .args(["--stale-after", "3s", "--stop-stale"])
        .env("ANTHROPIC_BASE_URL", dp.base_url())
        .env("ANTHROPIC_ENVIRONMENT_ID", dp.environment_id())
        .env("ANTHROPIC_ENVIRONMENT_KEY", dp.environment_key())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    assert!(
        stdout.contains(&format!("stopped   {}  (RetriesExhausted)", failed.id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stale     {}  session {stale_session}", stale.id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stopped   {}  (stale)", stale.id)),
        "{stdout}"
    );
    assert!(!stdout.contains(&live.id), "{stdout}");
    assert_eq!(state(&dp, &failed.id), WorkState::Stopped);
    assert_eq!(state(&dp, &stale.id), WorkState::Stopped);
    let live_state = state(&dp, &live.id);
    assert!(
        matches!(live_state, WorkState::Starting | WorkState::Active),
        "{live_state:?}"
    );
    assert!(!serving.is_finished(), "the live session was ended");

    // The live worker is still the holder: it ends its item itself.
    shutdown.cancel();
    let outcome = serving.await.unwrap();
    assert!(outcome.stopped, "{outcome:?}");
    assert_eq!(state(&dp, &live.id), WorkState::Stopped);
}
