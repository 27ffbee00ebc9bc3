//! Memory stores through the whole worker: mounted at claim, used by the file tools and bash,
//! a read-only store refused to `write`, synced after the calls, flushed at the end; a session
//! with stores but no sessions token fails; `--memory off` runs without them; a hand-off whose
//! flush meets a slow memory service ends within the deadline margin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Harness, failures, script};
use hands_client::PollOptions;
use hands_devplane::{Config, Faults, SessionSpec};
use hands_worker::{Claim, ItemEnd, Resume, RunEnd};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn stores(mnt: &Path) -> Value {
    json!([
        {"type":"memory_store","memory_store_id":"memstore_notes","access":"read_write",
         "mount_path": mnt.join("notes").display().to_string(),"name":"notes"},
        {"type":"memory_store","memory_store_id":"memstore_rules","access":"read_only",
         "mount_path": mnt.join("rules").display().to_string(),"name":"rules"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_uses_two_stores_and_the_server_ends_with_its_edits() {
    let h = Harness::start(Config::default()).await;
    h.dp.put_memory("memstore_notes", "/old.md", "stale");
    h.dp.put_memory("memstore_notes", "/keep.md", "kept");
    h.dp.put_memory("memstore_rules", "/policy.md", "be nice");
    let mnt = h.root.join("mnt/memory");
    let (notes, rules) = (mnt.join("notes"), mnt.join("rules"));
    let s = script(json!({
        "name": "memory",
        "session": {"resources": stores(&mnt)},
        "steps": [
            {"step":"tool_use","name":"read","input":{"file_path": rules.join("policy.md")},
             "expect":{"is_error":false,"text_contains":["be nice"]}},
            {"step":"tool_use","name":"write","input":{"file_path": notes.join("learned.md"),"content":"fact one\n"},
             "expect":{"is_error":false}},
            {"step":"tool_use","name":"write","input":{"file_path": rules.join("policy.md"),"content":"be mean"},
             "expect":{"is_error":true,"text_contains":["read-only"]}},
            {"step":"tool_use","name":"bash","input":{"command": format!(
                "echo more >> {n}/learned.md && rm {n}/old.md && cat {n}/keep.md", n = notes.display())},
             "expect":{"is_error":false,"text_contains":["kept"]}},
            {"step":"idle","stop_reason":"end_turn"},
            {"step":"expect_stopped","within_ms":20000}
        ]
    }));
    let report = h.play(&s, 1).await;
    assert!(report.passed, "{}", failures(&report));
    let server = h.dp.memories("memstore_notes");
    assert_eq!(
        server.get("/learned.md").map(String::as_str),
        Some("fact one\nmore\n")
    );
    assert_eq!(server.get("/keep.md").map(String::as_str), Some("kept"));
    assert!(!server.contains_key("/old.md"), "{server:?}");
    assert_eq!(h.dp.memories("memstore_rules").len(), 1);
    assert_eq!(h.dp.memories("memstore_rules")["/policy.md"], "be nice");
    // Each change went up once (learned.md changed twice: write, then bash); the folders are
    // gone.
    let writes = h.dp.counters().memory_writes_by_path;
    assert_eq!(
        writes.into_iter().collect::<Vec<_>>(),
        vec![("memstore_notes:/learned.md".to_owned(), 2)]
    );
    assert!(!notes.exists() && !rules.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_without_a_sessions_token_fail_the_item_and_memory_off_runs_without_them() {
    let h = Harness::start(Config::default()).await;
    let mnt = h.root.join("mnt/memory");
    let spec = SessionSpec {
        resources: serde_json::from_value(stores(&mnt)).unwrap(),
        ..SessionSpec::default()
    };
    h.dp.create_session(&spec).unwrap();
    let w = h.worker("nokey", CancellationToken::new());
    let hands_worker::Claim::Item(mut item) = w
        .claim(&hands_client::PollOptions::default())
        .await
        .unwrap()
    else {
        panic!("the item was not claimed")
    };
    // The item as a worker without the secret sees it: only the environment key.
    item.secret = None;
    let outcome = w.serve(&item, Resume::default()).await;
    let ItemEnd::Failed(why) = &outcome.end else {
        panic!("expected a failure, got {:?}", outcome.end)
    };
    assert!(why.contains("no sessions token"), "{why}");
    assert!(outcome.stopped);
    assert!(!mnt.exists());

    // --memory off: the same kind of session runs, without its stores.
    let h = Harness::start(Config::default()).await;
    let mut config = h.config(h.per_session("off"));
    config.memory.enabled = false;
    let w = h.worker_with(config, CancellationToken::new());
    let shutdown = w.shutdown_token().clone();
    let poller = tokio::spawn(async move { w.poll_forever(1).await });
    let s = script(json!({
        "name": "memory-off",
        "session": {"resources": stores(&mnt)},
        "steps": [
            {"step":"tool_use","name":"bash","input":{"command": format!("test -e {} && echo mounted || echo absent", mnt.display())},
             "expect":{"is_error":false,"text_contains":["absent"]}},
            {"step":"idle","stop_reason":"end_turn"},
            {"step":"expect_stopped","within_ms":20000}
        ]
    }));
    let report = h.dp.run_script(&s).await;
    shutdown.cancel();
    poller.await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(h.dp.counters().memory_lists, 0);
}

/// A memory_store resource without a mount_path cannot be parsed; the agent was told about the
/// store, so the item fails naming it instead of the store being dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_memory_store_resource_fails_the_item_naming_the_store() {
    let h = Harness::start(Config::default()).await;
    let mnt = h.root.join("mnt/memory");
    let mut resources = stores(&mnt);
    resources[1]["mount_path"] = Value::Null;
    let spec = SessionSpec {
        resources: serde_json::from_value(resources).unwrap(),
        ..SessionSpec::default()
    };
    h.dp.create_session(&spec).unwrap();
    let w = h.worker("malformed", CancellationToken::new());
    let hands_worker::Claim::Item(item) = w
        .claim(&hands_client::PollOptions::default())
        .await
        .unwrap()
    else {
        panic!("the item was not claimed")
    };
    let outcome = w.serve(&item, Resume::default()).await;
    let ItemEnd::Failed(why) = &outcome.end else {
        panic!("expected a failure, got {:?}", outcome.end)
    };
    assert!(
        why.contains("memstore_rules") && why.contains("mount_path"),
        "{why}"
    );
    assert!(outcome.stopped);
    // Nothing was mounted, not even the well-formed store.
    assert!(!mnt.exists());
    assert_eq!(h.dp.counters().memory_lists, 0);
}

/// Bash writing into a read-only store: refused by the file system in tier 2 (read-only bind)
/// and, at tier 0, by file modes unless the worker is root; never uploaded in any tier, and the
/// agent is told when the write landed on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bash_cannot_change_a_read_only_store() {
    use hands_sandbox::{HostProbe, Isolation, IsolationMode, Tier, Tier2Options};
    let required = std::env::var("REQUIRE_ISOLATION").is_ok_and(|v| v == "1");
    let probe = HostProbe::run();
    let tier2 = match probe.select(IsolationMode::Tier(Tier::Bwrap), true) {
        Ok(_) => probe.bwrap_sandbox(Tier2Options::default()),
        Err(e) if required => panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {e}"),
        Err(e) => {
            eprintln!("tier 2 not available, checking tier 0 only: {e}");
            None
        }
    };
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut tiers = vec![("tier0", Isolation::Tier0)];
    if let Some(b) = tier2 {
        tiers.push(("tier2", Isolation::Bwrap(b)));
    }
    for (name, isolation) in tiers {
        let h = Harness::start(Config::default()).await;
        h.dp.put_memory("memstore_rules", "/policy.md", "be nice");
        let mnt = h.root.join("mnt/memory");
        let rules = mnt.join("rules");
        let mut config = h.config(h.per_session(name));
        let bound = matches!(isolation, Isolation::Bwrap(_));
        config.toolset.isolation = isolation;
        let expect = if bound {
            json!({"is_error":true,"text_contains":["Read-only file system"]})
        } else if root {
            // Root passes file modes at tier 0: the write lands, and the agent is told it
            // does not count.
            json!({"is_error":false,"text_contains":["[memory]","read-only"]})
        } else {
            json!({"is_error":true,"text_contains":["Permission denied"]})
        };
        let s = script(json!({
            "name": "memory-read-only",
            "session": {"resources": stores(&mnt)},
            "steps": [
                {"step":"tool_use","name":"bash","input":{"command": format!("echo be mean > {}/policy.md", rules.display())},
                 "expect": expect},
                {"step":"idle","stop_reason":"end_turn"},
                {"step":"expect_stopped","within_ms":20000}
            ]
        }));
        let w = h.worker_with(config, CancellationToken::new());
        let shutdown = w.shutdown_token().clone();
        let poller = tokio::spawn(async move { w.poll_forever(1).await });
        let report = h.dp.run_script(&s).await;
        shutdown.cancel();
        poller.await.unwrap().unwrap();
        assert!(report.passed, "{name}: {}", failures(&report));
        assert_eq!(
            h.dp.memories("memstore_rules")["/policy.md"],
            "be nice",
            "{name}"
        );
        assert!(h.dp.counters().memory_writes_by_path.is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_off_flush_stops_within_the_margin_and_the_successor_re_downloads() {
    let h = Harness::start(Config::default()).await;
    h.dp.put_memory("memstore_notes", "/kept.md", "kept");
    let mnt = h.root.join("mnt/memory");
    let notes = mnt.join("notes");
    let s = script(json!({
        "name": "memory-hand-off",
        "session": {"resources": [
            {"type":"memory_store","memory_store_id":"memstore_notes","access":"read_write",
             "mount_path": notes.display().to_string(),"name":"notes"}]},
        "steps": [
            {"step":"tool_use","name":"bash","input":{"command": format!("echo fact > {}/learned.md", notes.display())},
             "expect":{"is_error":false}},
            // Cut by the hand-off; its edit is only in the folder when the flush starts.
            {"step":"tool_use","name":"bash","input":{"command": format!("echo late > {}/late.md; sleep 60", notes.display())},
             "expect":{"is_error":true}},
            // Served by the successor, which downloaded the store again.
            {"step":"tool_use","name":"bash","input":{"command": format!(
                "cat {n}/learned.md {n}/kept.md; test -e {n}/late.md && echo late-present || echo late-lost", n = notes.display())},
             "expect":{"is_error":false,"text_contains":["fact","kept","late-lost"]}},
            {"step":"idle","stop_reason":"end_turn"},
            {"step":"expect_stopped","within_ms":20000}
        ]
    }));
    // The session function's split of its margin: posts get half of it, the flush ends at
    // three quarters (hands_worker::memory::flush_deadline).
    let post_budget = Duration::from_secs(4);
    let drive = async {
        let mut config = h.config(h.per_session("first"));
        config.hand_off_post_budget = post_budget;
        // A flush budget far past the guard below: only the hand-off's deadline can end the
        // teardown in time against a memory service answering in 120 s.
        config.memory.flush_timeout = Duration::from_secs(600);
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
        // Room for the mount, the first call and its sync on a loaded machine.
        let hand_off_at = Instant::now() + Duration::from_secs(8);
        // Once the first call's sync has uploaded, the memory service slows to a crawl.
        let slow_down = async {
            while h.dp.counters().memory_writes < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            h.dp.set_faults(Faults {
                slow_memory_ms: Some(120_000),
                ..Faults::default()
            });
        };
        // A guard far past the margin, so an unbounded teardown fails the test, not hangs it.
        let serve = tokio::time::timeout(
            Duration::from_secs(60),
            first.serve_until(&item, Resume::default(), Some(hand_off_at)),
        );
        let (out1, ()) = tokio::join!(serve, slow_down);
        let out1 = out1.expect("the hand-off's teardown was not bounded by its deadline");
        h.dp.set_faults(Faults::default());
        let second = h.worker("second", CancellationToken::new());
        let resume = out1.continuation.clone().expect("a continuation");
        let out2 = second.serve(&item, resume).await;
        (out1, out2)
    };
    let (report, (out1, out2)) = tokio::join!(h.dp.run_script(&s), drive);
    assert!(report.passed, "{}", failures(&report));
    // The hand-off happened, its teardown ended within the guard (bounded by the deadline,
    // not by the 600 s flush budget), the flush was cut (late.md never reached the server)
    // and the successor saw the server's state (the script's third step: late-lost).
    assert_eq!(out1.end, ItemEnd::Ran(RunEnd::Deadline));
    assert_eq!(out2.end, ItemEnd::Ran(RunEnd::Idle));
    let server = h.dp.memories("memstore_notes");
    assert_eq!(
        server.get("/learned.md").map(String::as_str),
        Some("fact\n")
    );
    assert!(!server.contains_key("/late.md"), "{server:?}");
    assert!(report.result_attempts.values().all(|&n| n == 1));
}
