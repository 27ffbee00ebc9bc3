//! The real `session` binary under a loopback fake of the Lambda Runtime API, serving items of
//! devplane's scripted sessions, with a fake of the Lambda Invoke API recording continuations
//! and, for workspace snapshots, moto's S3 on loopback.
//!
//! The deadline hand-off is driven with a short fake deadline: the first invocation gets a few
//! seconds, its call is cancelled and answered at `deadline - margin`, the continuation it
//! invokes is fed back to the runtime as the next invocation, and the session finishes there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential, PollOptions};
use hands_devplane::{Config, DevPlane, Script, ScriptReport, SessionSpec};
use hands_lambda::fakes::{FakeInvoke, FakeRuntime, FunctionProcess, InvocationResult, lambda_env};
use hands_lambda::{S3WorkspaceStore, SessionInvoke};
use hands_protocol::work::{WorkItem, WorkState};
use hands_secrets::moto::MotoServer;
use hands_worker::WorkspaceStore as _;
use hands_worker::{Claim, NoObserver, WorkdirTemplate, Worker, WorkerConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// HostProbe::run trial-runs the tier-1 helper of /proc/self/exe: this test binary stands in.
hands_sandbox::helper_dispatch_for_tests!();

/// moto's server on loopback (`hands_secrets::moto`: skipped with the reason printed when moto
/// is not installed, an error under CI), for S3.
fn start_moto() -> Option<MotoServer> {
    MotoServer::start().unwrap()
}

/// A bucket in moto and the workspace store the function uses on it.
async fn moto_bucket(moto: &MotoServer, bucket: &str) -> S3WorkspaceStore {
    let sdk = moto.sdk_config().await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    client.create_bucket().bucket(bucket).send().await.unwrap();
    S3WorkspaceStore::new(client, bucket.to_owned())
}

const SESSION: &str = env!("CARGO_BIN_EXE_session");
const GUARD: Duration = Duration::from_secs(90);
/// Stands for the execution role's secret key and session token in the function's environment.
const CANARY: &str = "hands-canary-role-credential";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Value {
    let path = repo().join("events/lambda").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Whether a process whose command line contains `needle` is alive.
fn process_running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

struct Stack {
    dp: DevPlane,
    runtime: FakeRuntime,
    invoke: FakeInvoke,
    function: FunctionProcess,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start(config: Config, extra: &[(String, String)]) -> Stack {
        let dp = DevPlane::start(config, "127.0.0.1:0").await.unwrap();
        let runtime = FakeRuntime::start().await.unwrap();
        let invoke = FakeInvoke::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut env = lambda_env(&runtime, &invoke, "hands-session", CANARY);
        for (k, v) in [
            ("ANTHROPIC_ENVIRONMENT_ID", dp.environment_id().to_owned()),
            ("ANTHROPIC_BASE_URL", dp.base_url()),
            ("ANTHROPIC_ENVIRONMENT_KEY", dp.environment_key().to_owned()),
            (
                "HANDS_WORKDIR",
                format!("{}/work/{{session_id}}", dir.path().display()),
            ),
            ("HANDS_DEADLINE_MARGIN", "2s".to_owned()),
            ("HANDS_MAX_IDLE", "1s".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        env.extend(extra.iter().cloned());
        let function =
            FunctionProcess::spawn(SESSION, &env, dir.path().join("session.log")).unwrap();
        Stack {
            dp,
            runtime,
            invoke,
            function,
            dir,
        }
    }

    /// Polls the script's item the way the webhook function does (no ack: the session function
    /// acks); with `ack`, acks it too, as another invocation that got it first would.
    async fn claim(&self, ack: bool) -> WorkItem {
        let cp = ControlPlane::new(ClientConfig::with_base_url(self.dp.base_url())).unwrap();
        let mut config = WorkerConfig::new(
            self.dp.environment_id(),
            WorkdirTemplate::new(self.dir.path().join("unused").display().to_string()),
        );
        config.environment_key = Some(Credential::environment_key(self.dp.environment_key()));
        let w = Worker::new(
            cp,
            config,
            std::sync::Arc::new(NoObserver),
            CancellationToken::new(),
        );
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "nothing to claim");
            let opts = PollOptions {
                block_ms: Some(500),
                ..PollOptions::default()
            };
            if ack {
                if let Claim::Item(item) = w.claim(&opts).await.unwrap() {
                    return *item;
                }
            } else if let Some(item) = w.poll_item(&opts).await.unwrap() {
                return item;
            }
        }
    }

    async fn invoke(&self, payload: Value, timeout: Duration) -> Value {
        let rx = self.runtime.invoke(payload, timeout);
        match tokio::time::timeout(GUARD, rx).await {
            Ok(Ok(InvocationResult::Response(v))) => v,
            Ok(Ok(InvocationResult::Error(e))) => {
                panic!("invocation failed: {e}\nlog:\n{}", self.function.log())
            }
            _ => panic!("no answer; log:\n{}", self.function.log()),
        }
    }
}

fn script(v: Value) -> Script {
    Script::from_json(&v.to_string(), "test").unwrap()
}

fn failures(report: &ScriptReport) -> String {
    report
        .steps
        .iter()
        .filter(|s| !s.passed)
        .map(|s| format!("step {} {} {:?}: {}", s.index, s.step, s.label, s.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serves the item across two invocations: the first one's deadline is `first_timeout` away.
/// Returns (first response, the continuation call, second response).
async fn two_invocations(
    s: &Stack,
    first_timeout: Duration,
) -> (Value, hands_lambda::fakes::InvokeCall, Value) {
    let item = s.claim(false).await;
    // events/lambda/session-invoke.json with devplane's item in it; the shape is the one the
    // webhook function sends.
    let mut payload = fixture("session-invoke.json");
    payload["work"] = serde_json::to_value(&item).unwrap();
    assert_eq!(
        serde_json::from_value::<SessionInvoke>(payload.clone()).unwrap(),
        SessionInvoke::first(item.clone())
    );
    // The fake runtime answers a response that comes after the deadline as Sandbox.Timedout
    // (Lambda kills the invocation), and `invoke` panics on it: r1 arrived in time.
    let r1 = s.invoke(payload, first_timeout).await;
    let calls = s.invoke.calls();
    assert_eq!(
        calls.len(),
        1,
        "one continuation: {calls:?}\n{}",
        s.function.log()
    );
    let call = calls[0].clone();
    // A continuation has the shape of events/lambda/continuation.json (`results` only when
    // some result could not be posted).
    let template = fixture("continuation.json");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&call.payload), keys(&template));
    let template_keys = keys(&template["continuation"]);
    for k in keys(&call.payload["continuation"]) {
        assert!(template_keys.contains(&k), "{k} not in {template_keys:?}");
    }
    assert!(
        serde_json::to_vec(&call.payload).unwrap().len()
            <= hands_lambda::handover::CONTINUATION_PAYLOAD_BUDGET
    );
    // Lambda hands the accepted event to the function (maybe another environment) later.
    let r2 = s
        .invoke(call.payload.clone(), Duration::from_secs(60))
        .await;
    (r1, call, r2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_deadline_the_call_is_answered_and_a_continuation_carries_the_lease_on() {
    let s = Stack::start(Config::default(), &[]).await;
    let marker = format!("sleep 40.{}7", std::process::id());
    // Every /proc/*/environ this uid can read, and the tool's own environment: the role's
    // credentials must be in none of them (the function process is not dumpable).
    let probe = format!(
        "(env; for f in /proc/[0-9]*/environ; do cat \"$f\" 2>/dev/null; echo; done) | tr '\\0' '\\n' | grep -c {CANARY} || true"
    );
    let sc = script(json!({
        "name": "deadline",
        "steps": [
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": marker},
             "expect": {"is_error": true}},
            {"step": "tool_use", "label": "after", "name": "bash", "input": {"command": "echo after"},
             "expect": {"is_error": false, "text_equals": "after"}},
            {"step": "tool_use", "label": "creds", "name": "bash", "input": {"command": probe},
             "expect": {"is_error": false, "text_equals": "0"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 30000}
        ]
    }));
    let (report, (r1, call, r2)) = tokio::join!(
        s.dp.run_script(&sc),
        two_invocations(&s, Duration::from_secs(6))
    );
    assert!(
        report.passed,
        "{}\nlog:\n{}",
        failures(&report),
        s.function.log()
    );

    // First invocation: stopped at the hand-off point, item not stopped, continuation sent.
    assert_eq!(r1["end"], "ran:Deadline", "{r1}");
    assert_eq!(r1["stopped"], false);
    assert_eq!(r1["continued"], true);
    assert_eq!(call.function, "hands-session");
    assert_eq!(call.invocation_type.as_deref(), Some("Event"));
    assert_eq!(
        call.tenant_id, None,
        "tenant isolation is off unless configured"
    );
    let cont = &call.payload["continuation"];
    assert!(
        cont["last_heartbeat"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{cont}"
    );
    // The answered ids travel (as a hedge against a history listing behind the stream, the
    // newest 32 even when their result events were seen): here the three calls' at most.
    let answered = cont["answered"].as_array().unwrap();
    assert!(answered.len() <= 3, "{cont}");
    assert!(
        cont.get("results").is_none(),
        "every result was posted: {cont}"
    );
    assert_eq!(
        call.payload["work"]["id"],
        json!(report.work_id.clone().unwrap())
    );

    // Second invocation: carried on with the same lease and finished the session.
    assert_eq!(r2["end"], "ran:Idle", "{r2}");
    assert_eq!(r2["stopped"], true);
    assert_eq!(r2["continued"], false);

    // The lease never lapsed and nobody lost it; every call was answered once.
    let c = s.dp.counters();
    assert_eq!(c.heartbeat_412s, 0);
    assert_eq!(c.lease_expiries, 0);
    assert_eq!(report.rejected_posts, 0);
    assert_eq!(report.result_attempts.len(), 3);
    assert!(
        report.result_attempts.values().all(|&n| n == 1),
        "{:?}",
        report.result_attempts
    );
    assert_eq!(
        s.dp.work_item(report.work_id.as_deref().unwrap())
            .unwrap()
            .state,
        WorkState::Stopped
    );
    // The cancelled command is gone, and so is every workspace.
    assert!(!process_running(&marker));
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("work"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_workspace_follows_the_continuation_through_s3() {
    let Some(moto) = start_moto() else {
        return;
    };
    let bucket = "hands-workspaces-test";
    let store = moto_bucket(&moto, bucket).await;
    let extra = vec![
        ("HANDS_WORKSPACE_BUCKET".to_owned(), bucket.to_owned()),
        ("AWS_ENDPOINT_URL_S3".to_owned(), moto.endpoint().to_owned()),
    ];
    let s = Stack::start(Config::default(), &extra).await;
    let marker = format!("sleep 40.{}8", std::process::id());
    let sc = script(json!({
        "name": "snapshot",
        "steps": [
            {"step": "tool_use", "label": "write", "name": "write",
             "input": {"file_path": "notes/plan.txt", "content": "step one\n"},
             "expect": {"is_error": false}},
            {"step": "tool_use", "label": "exec", "name": "bash",
             "input": {"command": "printf '#!/bin/sh\\necho ran\\n' > run.sh && chmod 755 run.sh"},
             "expect": {"is_error": false}},
            {"step": "tool_use", "label": "long", "name": "bash", "input": {"command": marker},
             "expect": {"is_error": true}},
            {"step": "tool_use", "label": "read", "name": "bash",
             "input": {"command": "cat notes/plan.txt && ./run.sh"},
             "expect": {"is_error": false, "text_equals": "step one\nran"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 30000}
        ]
    }));
    let (report, (r1, _call, r2)) = tokio::join!(
        s.dp.run_script(&sc),
        two_invocations(&s, Duration::from_secs(7))
    );
    assert!(
        report.passed,
        "{}\nlog:\n{}",
        failures(&report),
        s.function.log()
    );
    assert_eq!(r1["continued"], true, "{r1}");
    assert_eq!(r2["stopped"], true, "{r2}");
    // The local copy was wiped after each invocation: the file came back from S3.
    assert!(
        s.function.log().contains("workspace restored"),
        "{}",
        s.function.log()
    );
    // The snapshot saved at session end, for the next turn, holds the workspace.
    let session = report.session_id.unwrap();
    let restored = tempfile::tempdir().unwrap();
    let found = store.restore(&session, restored.path()).await.unwrap();
    assert!(found, "no snapshot for {session}");
    assert_eq!(
        std::fs::read_to_string(restored.path().join("notes/plan.txt")).unwrap(),
        "step one\n"
    );
    assert!(restored.path().join("run.sh").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_invocation_of_an_acknowledged_item_serves_nothing_and_stops_nothing() {
    let s = Stack::start(Config::default(), &[]).await;
    let session_id = s.dp.create_session(&SessionSpec::default()).unwrap();
    // Another invocation got the item first: it is acknowledged (leased) already.
    let item = s.claim(true).await;
    assert_eq!(item.data.id, session_id);
    let mut payload = fixture("session-invoke.json");
    payload["work"] = serde_json::to_value(&item).unwrap();
    let r = s.invoke(payload, Duration::from_secs(30)).await;
    assert!(
        r["end"].as_str().unwrap().starts_with("not_acked:"),
        "{r}\n{}",
        s.function.log()
    );
    assert_eq!(r["stopped"], false);
    assert_eq!(r["continued"], false);
    // Not stopped, not heartbeated, no continuation: left to whoever acked it.
    assert_eq!(s.dp.work_item(&item.id).unwrap().state, WorkState::Starting);
    let c = s.dp.counters();
    assert_eq!(c.heartbeats, 0);
    assert_eq!(c.acks, 1);
    assert!(s.invoke.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_post_that_keeps_failing_does_not_hold_the_hand_off_past_the_deadline() {
    // Result posts answer 503 (retry after 2 s) three times, and the lease TTL is a minute: a
    // post window of the TTL would retry past the 6 s deadline, and the fake runtime would
    // report the first invocation as timed out. With the window capped at the hand-off point
    // plus half the margin, the post gives up, the result travels in the continuation, and
    // the successor posts it first without running the call again.
    let mut config = Config {
        default_ttl: Duration::from_secs(60),
        ..Config::default()
    };
    config.faults.fail_posts = Some(hands_devplane::faults::FailPosts {
        kind: hands_devplane::faults::PostKind::ToolResult,
        count: 3,
        status: 503,
        retry_after_s: Some(2),
    });
    let s = Stack::start(config, &[]).await;
    let sc = script(json!({
        "name": "stuck-post",
        "steps": [
            {"step": "tool_use", "label": "one", "name": "bash", "input": {"command": "echo one"},
             "expect": {"is_error": false, "text_equals": "one"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 30000}
        ]
    }));
    let (report, (r1, call, r2)) = tokio::join!(
        s.dp.run_script(&sc),
        two_invocations(&s, Duration::from_secs(6))
    );
    let log = s.function.log();
    assert!(report.passed, "{}\nlog:\n{log}", failures(&report));
    assert_eq!(r1["end"], "ran:Deadline", "{r1}");
    assert_eq!(r1["continued"], true, "{r1}");
    assert_eq!(r2["stopped"], true, "{r2}");
    // The unposted result went with the continuation, inline...
    let results = call.payload["continuation"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{}", call.payload);
    assert_eq!(results[0]["name"], "bash");
    assert_eq!(results[0]["output"]["content"][0]["text"], "one");
    // ...and the successor posted it without running the call again.
    assert_eq!(executed(&log), 1, "{log}");
    assert!(log.contains("carried-over result posted"), "{log}");
    assert_eq!(report.result_attempts.len(), 1);
    assert_eq!(s.dp.counters().lease_expiries, 0);
}

/// How many tool calls the function ran (both invocations log to one file).
fn executed(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("tool call executed"))
        .count()
}

/// Result posts fail from the start until the first invocation has handed off; the one call's
/// result is 60,000 U+0001 characters, 360 KB once escaped in JSON: more than the
/// continuation's payload budget on its own.
///
/// With `duplicate_with`, the successor wins the lease before the continuation is delivered a
/// second time: the test moves the lease on (as a successor's first heartbeat does), delivers
/// the continuation, which cannot claim, checks the stored result is still in that store, then
/// hands the continuation (with the new heartbeat value) to the function as the real successor.
async fn results_too_big_for_the_payload(
    extra: &[(String, String)],
    duplicate_with: Option<&S3WorkspaceStore>,
) -> (Stack, Value, ScriptReport) {
    let mut config = Config::default();
    config.faults.fail_posts = Some(hands_devplane::faults::FailPosts {
        kind: hands_devplane::faults::PostKind::ToolResult,
        count: u32::MAX,
        status: 503,
        retry_after_s: None,
    });
    let s = Stack::start(config, extra).await;
    let sc = script(json!({
        "name": "big-unposted",
        "steps": [
            {"step": "tool_use", "label": "big", "name": "bash",
             "input": {"command": "head -c 60000 /dev/zero | tr '\\0' '\\001'"},
             "expect": {"is_error": false, "text_matches": "^\\x01+$"}},
            {"step": "tool_use", "label": "after", "name": "bash", "input": {"command": "echo after"},
             "expect": {"is_error": false, "text_equals": "after"}},
            {"step": "idle", "stop_reason": "end_turn"},
            {"step": "expect_stopped", "within_ms": 30000}
        ]
    }));
    let run = s.dp.run_script(&sc);
    let serve = async {
        let item = s.claim(false).await;
        let mut payload = fixture("session-invoke.json");
        payload["work"] = serde_json::to_value(&item).unwrap();
        let r1 = s.invoke(payload, Duration::from_secs(6)).await;
        assert_eq!(r1["continued"], true, "{r1}\n{}", s.function.log());
        // The control plane is back: the successor's posts go through.
        s.dp.set_faults(hands_devplane::faults::Faults::default());
        let calls = s.invoke.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let mut successor = calls[0].payload.clone();
        if let Some(store) = duplicate_with {
            let item: WorkItem = serde_json::from_value(successor["work"].clone()).unwrap();
            let expected = successor["continuation"]["last_heartbeat"]
                .as_str()
                .unwrap()
                .to_owned();
            let cp = ControlPlane::new(ClientConfig::with_base_url(s.dp.base_url())).unwrap();
            let beat = cp
                .heartbeat(
                    &Credential::environment_key(s.dp.environment_key()),
                    &item.environment_id,
                    &item.id,
                    &expected,
                    None,
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            let hands_client::Heartbeat::Beat(beat) = beat else {
                panic!("the test's heartbeat lost the lease: {beat:?}");
            };
            let dup = s.invoke(successor.clone(), Duration::from_secs(60)).await;
            assert!(
                dup["end"].as_str().unwrap().starts_with("not_claimed"),
                "{dup}\n{}",
                s.function.log()
            );
            assert_eq!(dup["continued"], false, "{dup}");
            let key = successor["continuation"]["results"][0]["stored"]
                .as_str()
                .unwrap();
            assert!(
                store.get_bytes(key).await.is_ok(),
                "the duplicate deleted {key}\n{}",
                s.function.log()
            );
            successor["continuation"]["last_heartbeat"] = json!(beat.last_heartbeat);
        }
        let r2 = s.invoke(successor, Duration::from_secs(60)).await;
        assert_eq!(r2["stopped"], true, "{r2}");
        calls[0].payload.clone()
    };
    let (report, continuation) = tokio::join!(run, serve);
    assert!(
        report.passed,
        "{}\nlog:\n{}",
        failures(&report),
        s.function.log()
    );
    assert!(
        serde_json::to_vec(&continuation).unwrap().len()
            <= hands_lambda::handover::CONTINUATION_PAYLOAD_BUDGET
    );
    assert_eq!(s.dp.counters().lease_expiries, 0);
    (s, continuation, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unposted_results_too_big_for_the_payload_wait_in_s3_and_no_call_runs_twice() {
    let Some(moto) = start_moto() else {
        return;
    };
    let bucket = "hands-carried-results";
    let store = moto_bucket(&moto, bucket).await;
    let extra = vec![
        ("HANDS_WORKSPACE_BUCKET".to_owned(), bucket.to_owned()),
        ("AWS_ENDPOINT_URL_S3".to_owned(), moto.endpoint().to_owned()),
    ];
    let (s, continuation, report) = results_too_big_for_the_payload(&extra, None).await;
    let log = s.function.log();
    let results = continuation["continuation"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{continuation}");
    assert!(results[0].get("output").is_none(), "{continuation}");
    let key = results[0]["stored"].as_str().unwrap();
    // Each call ran once: the stored result was fetched and posted, not recomputed.
    assert_eq!(executed(&log), 2, "{log}");
    assert!(log.contains("carried-over result posted"), "{log}");
    assert_eq!(report.result_attempts.len(), 2);
    // The stored result was consumed and deleted.
    assert!(store.get_bytes(key).await.is_err(), "{key} still there");
}

/// A continuation delivered twice: the copy that cannot claim the lease (the successor has
/// it) leaves the stored result for the successor, which posts it; no call runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_continuation_that_cannot_claim_leaves_the_stored_result_in_place() {
    let Some(moto) = start_moto() else {
        return;
    };
    let bucket = "hands-carried-results-dup";
    let store = moto_bucket(&moto, bucket).await;
    let extra = vec![
        ("HANDS_WORKSPACE_BUCKET".to_owned(), bucket.to_owned()),
        ("AWS_ENDPOINT_URL_S3".to_owned(), moto.endpoint().to_owned()),
    ];
    let (s, _continuation, report) = results_too_big_for_the_payload(&extra, Some(&store)).await;
    let log = s.function.log();
    assert!(
        log.contains("its stored results are left in place"),
        "{log}"
    );
    assert_eq!(executed(&log), 2, "{log}");
    assert!(log.contains("carried-over result posted"), "{log}");
    assert_eq!(report.result_attempts.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_bucket_a_result_too_big_for_the_payload_is_left_out_and_its_call_runs_again() {
    let (s, continuation, _report) = results_too_big_for_the_payload(&[], None).await;
    let log = s.function.log();
    assert!(
        continuation["continuation"].get("results").is_none(),
        "{continuation}"
    );
    assert!(
        log.contains(
            "there is no HANDS_WORKSPACE_BUCKET to hold it: the successor runs this call again"
        ),
        "{log}"
    );
    // The left-out call ran twice, the other once.
    assert_eq!(executed(&log), 3, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_deletes_the_previous_snapshot_so_it_is_never_restored_as_current() {
    let Some(moto) = start_moto() else {
        return;
    };
    let store = moto_bucket(&moto, "hands-workspaces-failed-save").await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("old.txt"), "turn one").unwrap();
    // A socket left by tool code does not fail the save.
    let _listener = std::os::unix::net::UnixListener::bind(work.path().join("agent.sock")).unwrap();
    store.save("sesn_failed_save", work.path()).await.unwrap();
    let check = tempfile::tempdir().unwrap();
    assert!(
        store
            .restore("sesn_failed_save", check.path())
            .await
            .unwrap()
    );
    assert!(check.path().join("old.txt").exists());

    // The next save fails (the workspace cannot be read): the older snapshot is gone with it.
    let missing = work.path().join("no-such-dir");
    assert!(store.save("sesn_failed_save", &missing).await.is_err());
    let again = tempfile::tempdir().unwrap();
    assert!(
        !store
            .restore("sesn_failed_save", again.path())
            .await
            .unwrap()
    );
    assert!(!again.path().join("old.txt").exists());
}

/// One invocation serving `sc` to its end; returns the function's response.
async fn one_invocation(s: &Stack, sc: &Script) -> Value {
    let serve = async {
        let item = s.claim(false).await;
        let mut payload = fixture("session-invoke.json");
        payload["work"] = serde_json::to_value(&item).unwrap();
        s.invoke(payload, Duration::from_secs(60)).await
    };
    let (report, r) = tokio::join!(s.dp.run_script(sc), serve);
    assert!(
        report.passed,
        "{}\nlog:\n{}",
        failures(&report),
        s.function.log()
    );
    r
}

/// The session function chooses its tools' isolation like `hands poll`: `auto` by default (the
/// strongest tier the host allows, logged with the probe), `HANDS_ISOLATION=landlock` with
/// `HANDS_REQUIRE_ISOLATION=1` runs the tools under tier 1 (a write outside the workspace is
/// refused) where the host allows it and fails the start naming the reason where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_function_selects_and_logs_its_isolation_tier() {
    let probe = hands_sandbox::HostProbe::run();
    let sc = |outside: &str| {
        script(json!({
            "name": "isolation",
            "steps": [
                {"step": "tool_use", "label": "in", "name": "bash",
                 "input": {"command": "echo ran > here.txt && cat here.txt"},
                 "expect": {"is_error": false, "text_equals": "ran"}},
                {"step": "tool_use", "label": "out", "name": "bash",
                 "input": {"command": format!("echo x > {outside} 2>/dev/null; echo rc=$?")},
                 "expect": {"is_error": false}},
                {"step": "idle", "stop_reason": "end_turn"},
                {"step": "expect_stopped", "within_ms": 30000}
            ]
        }))
    };

    let s = Stack::start(Config::default(), &[]).await;
    let r = one_invocation(&s, &sc("/dev/null")).await;
    assert_eq!(r["stopped"], true, "{r}");
    let log = s.function.log();
    let line = log
        .lines()
        .find(|l| l.contains("isolation") && l.contains("asked"))
        .unwrap_or_else(|| panic!("no isolation line:\n{log}"));
    assert!(line.contains("auto"), "{line}");
    assert!(line.contains(&probe.strongest().to_string()), "{line}");

    let required = [
        ("HANDS_ISOLATION".to_owned(), "landlock".to_owned()),
        ("HANDS_REQUIRE_ISOLATION".to_owned(), "1".to_owned()),
    ];
    match probe.check(hands_sandbox::Tier::Landlock) {
        Ok(()) => {
            let s = Stack::start(Config::default(), &required).await;
            let outside = s.dir.path().join("outside.txt");
            let r = one_invocation(&s, &sc(outside.to_str().unwrap())).await;
            assert_eq!(r["stopped"], true, "{r}");
            let log = s.function.log();
            assert!(log.contains("tier 1 (landlock)"), "{log}");
            // The second call ran (the script passed) and its write was refused.
            assert!(
                !outside.exists(),
                "tier 1 let a tool write outside its workspace"
            );
        }
        Err(why) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
            panic!("REQUIRE_ISOLATION=1 but tier 1 cannot engage: {why}")
        }
        Err(why) => {
            eprintln!("tier 1 unavailable here ({why}): checking that the start fails instead");
            let s = Stack::start(Config::default(), &required).await;
            let deadline = tokio::time::Instant::now() + GUARD;
            while !s.function.log().contains("cannot be fully enforced") {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{}",
                    s.function.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
