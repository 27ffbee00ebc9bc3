//! The egress proxy seen from a session's bash: the proxy variables and CA bundle are in the
//! tool environment, a refusal reads as a sentence, and the credential dies with the session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Harness, failures, script};
use hands_devplane::Config;
use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};
use tokio_util::sync::CancellationToken;

/// Log lines of this test binary (it has one test).
fn capture_log() -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("hands_egress=info")
        .with_writer(move || LogWriter(writer.clone()))
        .init();
    buf
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_bash_goes_through_the_proxy_with_its_own_credential() {
    let log = capture_log();
    let h = Harness::start(Config::default()).await;
    let policy = Policy::parse(
        "[[rule]]\nhost = \"*.allowed.test\"\naction = \"allow\"\n",
        "test",
    )
    .unwrap();
    let proxy = EgressProxy::start(
        EgressConfig {
            policy,
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream_roots: UpstreamRoots::Webpki,
            resolver: Resolver::system(),
            bundle_dir: h.root.join("egress-ca"),
        },
        &StaticSecrets::new(),
    )
    .await
    .unwrap();
    let proxy = Arc::new(proxy);
    let mut config = h.config(h.per_session("egress"));
    config.egress = Some(proxy.clone());
    // A custom tool that prints its environment: it must get the session's proxy variables too.
    let tools_file = h.root.join("tools.toml");
    std::fs::write(
        &tools_file,
        "[[tool]]\nname = \"show_env\"\ncommand = [\"/usr/bin/env\"]\n",
    )
    .unwrap();
    config.custom_tools = Arc::new(hands_worker::CustomTools::load(&tools_file).unwrap());
    let shutdown = CancellationToken::new();
    let worker = h.worker_with(config, shutdown.clone());
    let poller = tokio::spawn(async move { worker.poll_forever(2).await });

    let bundle = proxy.ca_bundle().display().to_string();
    let report = h
        .dp
        .run_script(&script(serde_json::json!({
            "name": "egress",
            "steps": [
                {"step": "tool_use", "label": "env", "name": "bash",
                 "input": {"command": "env | grep -E '^(HTTPS_PROXY|SSL_CERT_FILE|GIT_SSL_CAINFO|NO_PROXY)=' | sed -E 's#//[^@]*@#//CRED@#' | sort"},
                 "expect": {"is_error": false, "text_contains": [
                     format!("GIT_SSL_CAINFO={bundle}"),
                     format!("HTTPS_PROXY=http://CRED@{}", proxy.addr()),
                     "NO_PROXY=localhost,127.0.0.1,::1".to_string(),
                     format!("SSL_CERT_FILE={bundle}")]}},
                {"step": "tool_use", "label": "denied", "name": "bash",
                 "input": {"command": "curl -sS https://denied.test/ 2>&1; curl -sS http://denied.test/ 2>&1"},
                 "expect": {"text_contains": [
                     "egress to denied.test is not allowed by this environment's policy\negress to denied.test is not allowed by this environment's policy"]}},
                {"step": "custom_tool_use", "label": "custom", "name": "show_env", "input": {},
                 "expect": {"is_error": false, "text_contains": [
                     format!("@{}", proxy.addr()),
                     format!("CURL_CA_BUNDLE={bundle}")]}},
                {"step": "idle", "stop_reason": "end_turn", "event_ids": []},
                {"step": "terminated"},
                {"step": "expect_stopped", "within_ms": 30000}
            ]
        })))
        .await;
    shutdown.cancel();
    poller.await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    assert_eq!(
        proxy
            .metrics()
            .denied_by_policy
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // The audit lines name the session and the tool call that made the requests.
    let call = report
        .steps
        .iter()
        .find(|s| s.label.as_deref() == Some("denied"))
        .unwrap();
    let call_id = call.event_id.clone().unwrap();
    let session_id = report.session_id.clone().unwrap();
    let log = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("host=denied.test"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for l in lines {
        assert!(l.contains(&format!("session={session_id}")), "{l}");
        assert!(l.contains(&format!("tool_call={call_id}")), "{l}");
        assert!(l.contains("status=403"), "{l}");
    }
    assert!(
        proxy.sessions().is_empty(),
        "the session's credential is gone with the session"
    );
}
