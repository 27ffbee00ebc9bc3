//! The worker against devplane, in process: the control-plane faults of CATALOGUE §2b that
//! `serve.rs` does not cover (C1-C5), sessions that must not slow each other's lease, and skills.

// Helpers outside `#[test]` functions panic on setup failures too; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hands_client::{Credential, PollOptions};
use hands_devplane::faults::{AckLoss, AckRace, FailHeartbeats};
use hands_devplane::{Config, Faults, SessionSpec};
use hands_protocol::work::WorkState;
use hands_worker::{
    Claim, ItemEnd, ItemOutcome, LeaseConfig, PollError, Resume, RunEnd, WorkdirTemplate, Worker,
};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Harness, failures, marker, process_running, script, ttl};

/// Bounds every wait so a broken worker fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(60);

/// Claims until something comes back, then serves it (if it is an item).
async fn claim_and_serve(w: &Worker) -> ItemOutcome {
    loop {
        if let Claim::Item(item) = w.claim(&PollOptions::default()).await.unwrap() {
            return w.serve(&item, Resume::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(GUARD, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting for {what}");
}

// ---------------------------------------------------------------- C1

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c1_ack_409_runs_nothing_and_leaves_the_item_to_its_taker() {
    let mut config = ttl(2);
    config.faults = Faults {
        ack_race: Some(AckRace {
            count: 1,
            outcome: AckLoss::Taken,
        }),
        ..Faults::default()
    };
    let h = Harness::start(config).await;
    let log = h.root.join("runs.txt");
    let s = script(serde_json::json!({
        "name": "taken-at-ack",
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash",
             "input": {"command": format!("echo ran >> {}; echo ran", log.display())},
             "expect": {"is_error": false, "text_equals": "ran"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker_with(h.config(h.per_session("c1")), shutdown.clone());
    let test = async {
        // The first claim loses the ack race: a rival acknowledged the item just before.
        let claim = tokio::time::timeout(GUARD, async {
            loop {
                match w.claim(&PollOptions::default()).await.unwrap() {
                    Claim::Empty => tokio::time::sleep(Duration::from_millis(25)).await,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(
            matches!(claim, Claim::Skipped),
            "ack 409 must skip the item"
        );
        let c = h.dp.counters();
        assert_eq!(c.raced_acks, 1);
        // Nothing ran and the item was left alone: no lease, no session read, no stop.
        assert_eq!((c.heartbeats, c.session_gets, c.stops), (0, 0, 0), "{c:?}");
        assert!(!log.exists(), "the tool ran for an item we did not own");
        let work = h.all_work();
        assert_eq!(work.len(), 1);
        assert_eq!(
            work[0].1,
            WorkState::Starting,
            "the taker's item was touched"
        );
        assert_eq!(work[0].3.as_deref(), Some("devplane-rival"));
        // The rival never heartbeats: after its lease lapses the item is served, exactly once.
        w.poll_forever(1).await
    };
    let (report, polled) = tokio::join!(
        async {
            let r = h.dp.run_script(&s).await;
            shutdown.cancel();
            r
        },
        test
    );
    polled.unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
    assert_eq!(h.dp.counters().lease_expiries, 1);
}

// ---------------------------------------------------------------- C2

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c2_ack_404_runs_nothing_and_the_loop_keeps_serving() {
    let config = Config {
        faults: Faults {
            ack_race: Some(AckRace {
                count: 1,
                outcome: AckLoss::Gone,
            }),
            ..Faults::default()
        },
        ..Config::default()
    };
    let h = Harness::start(config).await;
    // The first item in the queue disappears between poll and ack; its session has a call.
    let gone = h.dp.create_session(&SessionSpec::default()).unwrap();
    let gone_work = h.dp.current_work(&gone).unwrap();
    let never = h.root.join("never.txt");
    h.dp.emit(
        &gone,
        serde_json::json!({"type": "agent.tool_use", "name": "bash",
            "input": {"command": format!("touch {}", never.display())}}),
    )
    .unwrap();
    let log = h.root.join("runs.txt");
    let s = script(serde_json::json!({
        "name": "after-the-404",
        "steps": [
            {"step": "tool_use", "label": "a", "name": "bash",
             "input": {"command": format!("echo ran >> {}; echo ran", log.display())},
             "expect": {"is_error": false, "text_equals": "ran"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker_with(h.config(h.per_session("c2")), shutdown.clone());
    let poller = tokio::spawn({
        let w = w.clone();
        async move { w.poll_forever(1).await }
    });
    let report = h.dp.run_script(&s).await;
    shutdown.cancel();
    tokio::time::timeout(GUARD, poller)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(h.dp.counters().raced_acks, 1, "the 404 was never served");
    assert!(h.dp.work_item(&gone_work).is_none());
    assert!(!never.exists(), "a call of the vanished item ran");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c2_poll_404_for_an_unknown_environment_ends_the_loop_without_running_anything() {
    // PROTOCOL.md §6.2 step 3 and §5.1: a 404 on poll (unknown environment) is a fatal 4xx for
    // the poller; retrying cannot make the environment exist.
    let h = Harness::start(Config::default()).await;
    h.dp.create_session(&SessionSpec::default()).unwrap();
    let mut config = h.config(h.per_session("c2p"));
    config.environment_id = "env_does_not_exist".into();
    let w = h.worker_with(config, CancellationToken::new());
    let got = tokio::time::timeout(GUARD, w.poll_forever(1))
        .await
        .unwrap();
    match got {
        Err(PollError::Refused(e)) => assert_eq!(e.status().map(|s| s.as_u16()), Some(404)),
        other => panic!("{other:?}"),
    }
    let c = h.dp.counters();
    assert_eq!((c.claims, c.acks, c.heartbeats), (0, 0, 0), "{c:?}");
}

// ---------------------------------------------------------------- C3

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c3_a_bad_key_stops_the_loop_promptly_and_never_shows_the_key() {
    let h = Harness::start(Config::default()).await;
    h.dp.create_session(&SessionSpec::default()).unwrap();
    let bad = "sk-ant-oat01-revoked-canary-c3-0123456789";
    let mut config = h.config(h.per_session("c3"));
    config.environment_key = Some(Credential::environment_key(bad));
    let w = h.worker_with(config, CancellationToken::new());
    // "Promptly": the first answer ends the loop; no backoff, no retry.
    let got = tokio::time::timeout(GUARD, w.poll_forever(1))
        .await
        .unwrap();
    let err = got.unwrap_err();
    let PollError::Refused(api) = &err else {
        panic!("{err:?}")
    };
    assert!(api.is_auth(), "{api:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(bad), "{text}");
        assert!(!text.contains("revoked-canary"), "{text}");
    }
    // Nothing was claimed with the bad key; the item waits for a worker with a good one.
    let c = h.dp.counters();
    assert_eq!((c.claims, c.acks, c.heartbeats), (0, 0, 0), "{c:?}");
    assert_eq!(h.all_work()[0].1, WorkState::Queued);
}

// ---------------------------------------------------------------- C4

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c4_heartbeat_5xx_within_the_ttl_keeps_the_session_running() {
    let h = Harness::start(ttl(6)).await;
    let sleep = marker(3, 4);
    let s = script(serde_json::json!({
        "name": "heartbeats-fail",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash",
             "input": {"command": format!("{sleep}; echo survived")},
             "expect": {"is_error": false, "text_equals": "survived"}},
            // Keeps the session open in case the failures outlast the call.
            {"step": "wait", "ms": 2000},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let mut config = h.config(h.per_session("c4"));
    // Beat every second (TTL 6 s), retry a failed beat after 250 ms.
    config.lease = LeaseConfig {
        max_interval: Duration::from_secs(1),
        min_interval: Duration::from_millis(250),
        ..LeaseConfig::default()
    };
    let w = h.worker_with(config, CancellationToken::new());
    let served = tokio::spawn(async move { claim_and_serve(&w).await });
    let (report, ()) = tokio::join!(h.dp.run_script(&s), async {
        wait_for("the call to start", || process_running(&sleep)).await;
        // The control plane is down for the next three heartbeats, while the call runs.
        h.dp.set_faults(Faults {
            fail_heartbeats: Some(FailHeartbeats {
                from: 1,
                count: 3,
                status: 503,
            }),
            ..Faults::default()
        });
    });
    let outcome = tokio::time::timeout(GUARD, served).await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    let c = h.dp.counters();
    assert_eq!(c.injected_heartbeat_failures, 3, "{c:?}");
    assert_eq!((c.heartbeat_412s, c.lease_expiries), (0, 0), "{c:?}");
    assert_eq!(outcome.end, ItemEnd::Ran(RunEnd::Idle));
    assert!(outcome.stopped);
}

// ---------------------------------------------------------------- C5

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c5_a_heartbeat_answer_lost_after_commit_means_the_lease_is_lost() {
    let h = Harness::start(ttl(2)).await;
    let sleep = marker(100, 5);
    let s = script(serde_json::json!({
        "name": "heartbeat-reset",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": sleep.clone()},
             "expect": {"no_result_within_ms": 6000}},
        ]
    }));
    let w = h.worker_with(h.config(h.per_session("c5")), CancellationToken::new());
    let served = tokio::spawn(async move { claim_and_serve(&w).await });
    let (report, ()) = tokio::join!(h.dp.run_script(&s), async {
        wait_for("the call to start", || process_running(&sleep)).await;
        // The next heartbeat is stored, but its answer never arrives.
        h.dp.set_faults(Faults {
            heartbeat_reset_at: Some(1),
            ..Faults::default()
        });
    });
    let outcome = tokio::time::timeout(GUARD, served).await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert!(
        matches!(outcome.end, ItemEnd::Ran(RunEnd::LeaseLost(_))),
        "{:?}",
        outcome.end
    );
    assert!(
        !outcome.stopped,
        "an item whose lease was lost must be left alone"
    );
    let c = h.dp.counters();
    assert_eq!(c.heartbeat_resets_after_commit, 1, "{c:?}");
    assert!(c.heartbeat_412s >= 1, "the retry with the old token: {c:?}");
    assert_eq!((c.stops, c.result_posts), (0, 0), "{c:?}");
    assert!(!process_running(&sleep), "the tool outlived the lease");
}

// ---------------------------------------------------------------- lease isolation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sessions_slow_tool_never_delays_another_sessions_calls_or_heartbeats() {
    // TTL 2 s: each lease beats every second.
    let h = Harness::start(ttl(2)).await;
    let sleep = marker(6, 6);
    let slow = script(serde_json::json!({
        "name": "slow",
        "steps": [
            {"step": "tool_use", "label": "slow", "name": "bash", "input": {"command": format!("{sleep}; echo slept")},
             "expect": {"is_error": false, "text_equals": "slept"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let quick = script(serde_json::json!({
        "name": "quick",
        "steps": [
            {"step": "tool_use", "label": "q1", "name": "bash", "input": {"command": "echo 1"},
             "expect": {"is_error": false, "text_equals": "1"}},
            {"step": "tool_use", "label": "q2", "name": "bash", "input": {"command": "echo 2"},
             "expect": {"is_error": false, "text_equals": "2"}},
            {"step": "tool_use", "label": "q3", "name": "bash", "input": {"command": "echo 3"},
             "expect": {"is_error": false, "text_equals": "3"}},
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker_with(h.config(h.per_session("iso")), shutdown.clone());
    let poller = tokio::spawn({
        let w = w.clone();
        async move { w.poll_forever(2).await }
    });
    // Every heartbeat token each item showed while the slow call was running.
    let watch = async {
        wait_for("the slow call to start", || process_running(&sleep)).await;
        let mut tokens: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        while process_running(&sleep) {
            for (id, state, beat, _) in h.all_work() {
                if let (WorkState::Active, Some(beat)) = (state, beat) {
                    tokens.entry(id).or_default().insert(beat);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokens
    };
    let quick_run = async {
        // The quick session arrives while the slow call runs.
        wait_for("the slow call to start", || process_running(&sleep)).await;
        let r = h.dp.run_script(&quick).await;
        // Finished while the other session's call was still sleeping?
        (r, process_running(&sleep))
    };
    let (slow_report, (quick_report, overlapped), tokens) =
        tokio::join!(h.dp.run_script(&slow), quick_run, watch);
    shutdown.cancel();
    tokio::time::timeout(GUARD, poller)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(slow_report.passed, "{}", failures(&slow_report));
    assert!(quick_report.passed, "{}", failures(&quick_report));
    assert!(
        overlapped,
        "the quick session's calls waited for the slow one"
    );
    assert_eq!(tokens.len(), 2, "both items were active: {tokens:?}");
    for (id, seen) in &tokens {
        assert!(
            seen.len() >= 3,
            "{id} heartbeated only {} time(s) during the slow call: {seen:?}",
            seen.len()
        );
    }
}

// ---------------------------------------------------------------- skills

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skills_are_installed_runnable_hostile_ones_skipped_and_all_removed_at_teardown() {
    let h = Harness::start(Config::default()).await;
    // A shared literal workdir survives the session, so what teardown removed can be checked.
    let ws = h.root.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let escaped_tmp = std::path::Path::new("/tmp/devplane-escaped.txt");
    let tmp_had_it = escaped_tmp.exists();
    let skills: Vec<_> = [
        "skill_hello",
        "skill_tarball",
        "skill_flat",
        "skill_evil_dotdot",
        "skill_evil_absolute",
        "skill_evil_symlink",
    ]
    .iter()
    .map(|id| serde_json::json!({"skill_id": id, "version": "latest"}))
    .collect();
    let s = script(serde_json::json!({
        "name": "skills",
        "session": {"skills": skills},
        "steps": [
            {"step": "tool_use", "label": "run", "name": "bash",
             "input": {"command": "./skills/hello/scripts/greet.sh && ./skills/tarball/bin/run && ./skills/flat/run.sh"},
             "expect": {"is_error": false, "text_equals": "hello from the hello skill\ntarball skill ran\nflat"}},
            {"step": "tool_use", "label": "modes", "name": "bash",
             "input": {"command": "stat -c '%a %n' skills/hello/scripts/greet.sh skills/hello/SKILL.md skills/tarball/bin/run"},
             "expect": {"is_error": false,
                        "text_equals": "755 skills/hello/scripts/greet.sh\n644 skills/hello/SKILL.md\n755 skills/tarball/bin/run"}},
            // Archives with `..` or absolute members are refused whole; a symlink member is
            // skipped and the rest of its skill installed.
            {"step": "tool_use", "label": "ls", "name": "bash", "input": {"command": "ls -A skills; ls -A skills/evil-symlink"},
             "expect": {"is_error": false, "text_equals": "evil-symlink\nflat\nhello\ntarball\nSKILL.md"}},
            {"step": "tool_use", "label": "escapes", "name": "bash",
             "input": {"command": "ls -A ..; test ! -e devplane-escaped.txt && echo none"},
             "expect": {"is_error": false, "text_equals": "ws\nnone"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 20000}
        ]
    }));
    let shutdown = CancellationToken::new();
    let w = h.worker_with(
        h.config(WorkdirTemplate::new(ws.to_str().unwrap())),
        shutdown.clone(),
    );
    let poller = tokio::spawn({
        let w = w.clone();
        async move { w.poll_forever(1).await }
    });
    let report = h.dp.run_script(&s).await;
    // The report passes once the item is force-stopped, which comes after teardown.
    shutdown.cancel();
    tokio::time::timeout(GUARD, poller)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(h.dp.counters().skill_downloads, 6);
    let left: Vec<_> = std::fs::read_dir(ws.join("skills"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "skill dirs left after teardown: {left:?}");
    assert!(ws.exists(), "the operator's workdir must stay");
    if !tmp_had_it {
        assert!(!escaped_tmp.exists(), "an absolute member was written");
    }
}

// ---------------------------------------------------------------- history reconciliation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_worker_never_reruns_calls_answered_in_the_history() {
    // A session's next work item (or a successor after a crash, P3) starts from a history
    // holding calls that already have results; it must run only the unanswered ones.
    let h = Harness::start(Config::default()).await;
    let log = h.root.join("runs.txt");
    let sid = h.dp.create_session(&SessionSpec::default()).unwrap();
    let call = |tag: &str| {
        serde_json::json!({"type": "agent.tool_use", "name": "bash",
            "input": {"command": format!("echo {tag} >> {}; echo {tag}", log.display())}})
    };
    let idle =
        serde_json::json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}});
    let dp = &h.dp;
    let answered = |n: usize| move || dp.counters().results_by_tool_use.len() >= n;

    // First item: one call, answered, then the turn ends and the worker lets go.
    h.dp.emit(&sid, call("a")).unwrap();
    let first = h.worker_with(h.config(h.per_session("first")), CancellationToken::new());
    let served = tokio::spawn(async move { claim_and_serve(&first).await });
    wait_for("a's result", answered(1)).await;
    h.dp.emit(&sid, idle.clone()).unwrap();
    let outcome = tokio::time::timeout(GUARD, served).await.unwrap().unwrap();
    assert_eq!(outcome.end, ItemEnd::Ran(RunEnd::Idle));

    // The session's next work item, with a new call after the answered one.
    {
        let mut store = h.dp.state().lock();
        let env = h.dp.environment_id().to_owned();
        let work = store.enqueue(&env, hands_protocol::work::WorkData::session(sid.clone()));
        store.sessions.get_mut(&sid).unwrap().current_work = Some(work);
    }
    h.dp.state().queue_changed.notify_waiters();
    h.dp.emit(&sid, call("b")).unwrap();
    let second = h.worker_with(h.config(h.per_session("second")), CancellationToken::new());
    let served = tokio::spawn(async move { claim_and_serve(&second).await });
    wait_for("b's result", answered(2)).await;
    h.dp.emit(&sid, idle).unwrap();
    let outcome = tokio::time::timeout(GUARD, served).await.unwrap().unwrap();
    assert_eq!(outcome.end, ItemEnd::Ran(RunEnd::Idle));

    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\n");
    let c = h.dp.counters();
    assert!(
        c.result_attempts_by_tool_use.values().all(|n| *n == 1),
        "{:?}",
        c.result_attempts_by_tool_use
    );
}
