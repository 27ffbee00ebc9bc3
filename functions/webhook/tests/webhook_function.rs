//! The real `webhook` binary under a loopback fake of the Lambda Runtime API, with devplane as
//! the control plane and a fake of the Lambda Invoke API recording the hand-offs. Payloads come
//! from `events/lambda/` (the delivery re-signed with a fresh timestamp).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use hands_devplane::{Config, DevPlane, SessionSpec};
use hands_lambda::fakes::{FakeInvoke, FakeRuntime, FunctionProcess, InvocationResult, lambda_env};
use hands_protocol::webhook::{SigningSecret, sign};
use hands_protocol::work::WorkState;
use serde_json::{Value, json};

const WEBHOOK: &str = env!("CARGO_BIN_EXE_webhook");
const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// A hang guard, not a measurement.
const GUARD: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/lambda")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `events/lambda/function-url-webhook.json` with a fresh webhook id and timestamp, re-signed
/// with `secret`, about `session_id`.
fn delivery(secret: &str, session_id: &str) -> Value {
    let mut event = fixture("function-url-webhook.json");
    let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    let id = format!("whe_{:016x}", rand_u64());
    body["id"] = json!(id);
    body["data"]["id"] = json!(session_id);
    let body = body.to_string();
    let ts = now();
    let sig = sign(
        &SigningSecret::parse(secret).unwrap(),
        &id,
        ts,
        body.as_bytes(),
    );
    let headers = event["headers"].as_object_mut().unwrap();
    headers.insert("webhook-id".into(), json!(id));
    headers.insert("webhook-timestamp".into(), json!(ts.to_string()));
    headers.insert("webhook-signature".into(), json!(sig));
    headers.insert("content-length".into(), json!(body.len().to_string()));
    event["body"] = json!(body);
    event
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .elapsed()
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

struct Stack {
    dp: DevPlane,
    runtime: FakeRuntime,
    invoke: FakeInvoke,
    function: FunctionProcess,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(config: Config, extra: &[(&str, &str)]) -> Stack {
        Self::start_with(config, extra, true).await
    }

    /// `plain_secrets: false` leaves the environment key and the signing key out: `extra` names
    /// where they come from.
    async fn start_with(config: Config, extra: &[(&str, &str)], plain_secrets: bool) -> Stack {
        let dp = DevPlane::start(config, "127.0.0.1:0").await.unwrap();
        let runtime = FakeRuntime::start().await.unwrap();
        let invoke = FakeInvoke::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut env = lambda_env(
            &runtime,
            &invoke,
            "hands-webhook",
            "hands-canary-webhook-credential",
        );
        for (k, v) in [
            ("ANTHROPIC_ENVIRONMENT_ID", dp.environment_id().to_owned()),
            ("ANTHROPIC_BASE_URL", dp.base_url()),
            ("HANDS_SESSION_FUNCTION", "hands-session".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        if plain_secrets {
            env.push((
                "ANTHROPIC_ENVIRONMENT_KEY".into(),
                dp.environment_key().to_owned(),
            ));
            env.push(("ANTHROPIC_WEBHOOK_SIGNING_KEY".into(), SECRET.to_owned()));
        }
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let function =
            FunctionProcess::spawn(WEBHOOK, &env, dir.path().join("webhook.log")).unwrap();
        Stack {
            dp,
            runtime,
            invoke,
            function,
            _dir: dir,
        }
    }

    async fn call(&self, event: Value) -> InvocationResult {
        let rx = self.runtime.invoke(event, Duration::from_secs(30));
        match tokio::time::timeout(GUARD, rx).await {
            Ok(Ok(r)) => r,
            _ => panic!(
                "the function did not answer; its log:\n{}",
                self.function.log()
            ),
        }
    }

    async fn response(&self, event: Value) -> Value {
        match self.call(event).await {
            InvocationResult::Response(v) => v,
            InvocationResult::Error(e) => {
                panic!("invocation failed: {e}\nlog:\n{}", self.function.log())
            }
        }
    }

    fn session(&self) -> (String, String) {
        let session_id = self.dp.create_session(&SessionSpec::default()).unwrap();
        let work_id = self.dp.current_work(&session_id).unwrap();
        (session_id, work_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_hands_every_claimed_item_to_the_session_function_by_async_invoke() {
    let s = Stack::start(Config::default(), &[("HANDS_TENANT_ISOLATION", "1")]).await;
    let (s1, w1) = s.session();
    let (s2, w2) = s.session();

    // A forged delivery first: 401, no control-plane call, no invoke.
    let forged = delivery("whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=", &s1);
    let r = s.response(forged).await;
    assert_eq!(r["statusCode"], 401, "{r}");
    assert!(s.invoke.calls().is_empty());
    assert_eq!(s.dp.counters().polls, 0);

    let event = delivery(SECRET, &s1);
    let r = s.response(event.clone()).await;
    assert_eq!(r["statusCode"], 200, "{r}\n{}", s.function.log());
    assert_eq!(r["body"], "drained\n");
    assert_eq!(r["isBase64Encoded"], false);

    // Answered only after both invokes were accepted: they are recorded already.
    let calls = s.invoke.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let mut seen = Vec::new();
    for c in &calls {
        assert_eq!(c.function, "hands-session");
        assert_eq!(c.invocation_type.as_deref(), Some("Event"));
        let work = &c.payload["work"];
        let session = work["data"]["id"].as_str().unwrap();
        // Tenant isolation: one execution environment per session.
        assert_eq!(c.tenant_id.as_deref(), Some(session));
        assert!(
            work["secret"].is_string(),
            "the item's credential travels with it"
        );
        assert!(c.payload.get("continuation").is_none());
        seen.push((session.to_owned(), work["id"].as_str().unwrap().to_owned()));
    }
    seen.sort();
    let mut want = vec![(s1, w1.clone()), (s2, w2.clone())];
    want.sort();
    assert_eq!(seen, want);
    // Polled but not acknowledged (the session function acks as its first step), and nothing
    // ran here.
    for w in [&w1, &w2] {
        assert_eq!(s.dp.work_item(w).unwrap().state, WorkState::Queued);
    }
    assert_eq!(s.dp.counters().acks, 0);
    assert_eq!(s.dp.counters().heartbeats, 0);

    // The same delivery again (the sender retried): a duplicate, 204, nothing polled.
    let polls = s.dp.counters().polls;
    let r = s.response(event).await;
    assert_eq!(r["statusCode"], 204, "{r}");
    assert_eq!(s.dp.counters().polls, polls);
    assert_eq!(s.invoke.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_invoke_answers_503_and_the_item_comes_back_for_the_schedule() {
    // A lease far longer than the test: the item can only come back because it was never
    // acknowledged, not because a lease lapsed.
    let config = Config {
        default_ttl: Duration::from_secs(600),
        ..Config::default()
    };
    let s = Stack::start(config, &[]).await;
    let (s1, w1) = s.session();
    s.invoke.fail_with(Some(500));
    let r = s.response(delivery(SECRET, &s1)).await;
    assert_eq!(r["statusCode"], 503, "{r}");
    assert!(r["headers"]["retry-after"].is_string(), "{r}");
    assert!(!s.invoke.calls().is_empty());
    // The refused item was polled, not acknowledged: still queued, leased to nobody.
    assert_eq!(s.dp.work_item(&w1).unwrap().state, WorkState::Queued);
    assert_eq!(s.dp.counters().acks, 0);

    // Once Invoke works, a schedule drain polls it again after DRAIN_RECLAIM_MS.
    s.invoke.fail_with(None);
    let before = s.invoke.calls().len();
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "item never came back"
        );
        let r = s.response(fixture("schedule.json")).await;
        if r["drain"]["claimed"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let calls = s.invoke.calls();
    assert_eq!(calls.len(), before + 1);
    assert_eq!(calls[before].payload["work"]["id"], json!(w1));
    assert_eq!(s.dp.counters().lease_expiries, 0);
    assert_eq!(s.dp.counters().acks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_drains_and_an_on_failure_record_force_stops_its_item() {
    let s = Stack::start(Config::default(), &[]).await;
    let (_s1, w1) = s.session();
    let r = s.response(fixture("schedule.json")).await;
    assert_eq!(r["drain"]["claimed"], 1, "{r}");
    assert_eq!(r["stale"], json!([]), "{r}");
    let calls = s.invoke.calls();
    assert_eq!(calls.len(), 1);

    // Lambda gave up on that invoke: its destination record comes back to this function.
    let mut record = fixture("on-failure-record.json");
    record["requestPayload"] = calls[0].payload.clone();
    let r = s.response(record).await;
    assert_eq!(r, json!({"janitor": "stopped", "work_id": w1}));
    assert_eq!(s.dp.work_item(&w1).unwrap().state, WorkState::Stopped);

    // The fixture as shipped names an item devplane does not know: not stopped, so the
    // invocation fails and Lambda keeps the record for a retry.
    match s.call(fixture("on-failure-record.json")).await {
        InvocationResult::Error(e) => assert!(e.to_string().contains("could not stop"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// An item acked and never heartbeated (its session invocation is gone) is stale once
/// HANDS_STALE_AFTER has passed since the ack (0 s here); the schedule force-stops it, and
/// leaves a queued item to the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_force_stops_items_without_a_heartbeat_for_the_stale_window() {
    let s = Stack::start(Config::default(), &[("HANDS_STALE_AFTER", "0s")]).await;
    let (_s1, w1) = s.session();
    let cp =
        hands_client::ControlPlane::new(hands_client::ClientConfig::with_base_url(s.dp.base_url()))
            .unwrap();
    let key = hands_client::Credential::environment_key(s.dp.environment_key());
    cp.ack(&key, s.dp.environment_id(), &w1).await.unwrap();
    assert_eq!(s.dp.work_item(&w1).unwrap().state, WorkState::Starting);
    let (_s2, w2) = s.session();

    let r = s.response(fixture("schedule.json")).await;
    assert_eq!(r["stale"], json!([w1]), "{r}\n{}", s.function.log());
    assert_eq!(r["stopped"], json!([w1]), "{r}");
    assert_eq!(r["stop_failed"], json!([]), "{r}");
    assert_eq!(s.dp.work_item(&w1).unwrap().state, WorkState::Stopped);
    // The queued one was drained (handed to the session function), not stopped.
    assert_eq!(r["drain"]["claimed"], 1, "{r}");
    let calls = s.invoke.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].payload["work"]["id"], json!(w2));
    assert_ne!(s.dp.work_item(&w2).unwrap().state, WorkState::Stopped);
    assert!(
        s.function
            .log()
            .contains("work item holds a lease without heartbeating; force-stopping it"),
        "{}",
        s.function.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_can_come_from_secrets_manager_by_arn() {
    let Some(moto) = hands_secrets::moto::MotoServer::start().unwrap() else {
        return;
    };
    // devplane's key is only known once it runs: start it first, then the function.
    let config = Config::default();
    let key = config.environment_key.clone();
    let key_arn = moto
        .create_secret("hands/environment-key", &key)
        .await
        .unwrap();
    let signing_arn = moto
        .create_secret("hands/webhook-signing-key", SECRET)
        .await
        .unwrap();
    let endpoint = moto.endpoint().to_owned();
    let s = Stack::start_with(
        config,
        &[
            ("ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN", key_arn.as_str()),
            (
                "ANTHROPIC_WEBHOOK_SIGNING_KEY_SECRET_ARN",
                signing_arn.as_str(),
            ),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint.as_str()),
        ],
        false,
    )
    .await;
    let (s1, w1) = s.session();
    let r = s.response(delivery(SECRET, &s1)).await;
    assert_eq!(r["statusCode"], 200, "{r}\n{}", s.function.log());
    let calls = s.invoke.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].payload["work"]["id"], json!(w1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_runtime_api_it_serves_the_router_locally() {
    let dp = DevPlane::start(Config::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("ANTHROPIC_ENVIRONMENT_ID", dp.environment_id().to_owned()),
        ("ANTHROPIC_ENVIRONMENT_KEY", dp.environment_key().to_owned()),
        ("ANTHROPIC_BASE_URL", dp.base_url()),
        ("HANDS_SESSION_FUNCTION", "hands-session".to_owned()),
        ("HANDS_LISTEN", format!("127.0.0.1:{port}")),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut f = FunctionProcess::spawn(WEBHOOK, &env, dir.path().join("local.log")).unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    let reply = loop {
        assert!(!f.exited(), "exited:\n{}", f.log());
        assert!(
            std::time::Instant::now() < deadline,
            "never listened:\n{}",
            f.log()
        );
        if let Ok(r) = http_get(port, "/healthz") {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        f.log().contains("serving the webhook Router locally"),
        "{}",
        f.log()
    );
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
