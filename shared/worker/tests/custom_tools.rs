//! Custom tools end to end against devplane: a declared tool's `agent.custom_tool_use` is run
//! and answered with `user.custom_tool_result` (devplane refuses any other answer to a custom
//! call); an undeclared custom tool, and a built-in call that merely carries a declared custom
//! name, get nothing at all (PROTOCOL.md §7.5 rule 4). A custom tool's temporary files land in
//! the session's private directory, the shell's `TMPDIR`.

// Setup failures in helpers panic, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, DevPlane, Script};
use hands_worker::{CustomTools, NoObserver, WorkdirTemplate, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

mod common;
use common::failures;

fn executable(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Declares `lookup_order` (records its input in the session workdir, answers one line),
/// `failing` (exits 2 with a diagnostic on stderr) and `scratch` (writes a temporary file and
/// says in which directory).
fn declare(dir: &Path) -> CustomTools {
    let lookup = dir.join("lookup-order");
    executable(
        &lookup,
        "read -r line; echo \"$line\" > lookup.log; printf 'order %s: shipped\\n' \"$line\"",
    );
    let failing = dir.join("failing");
    executable(&failing, "echo 'no such order' >&2; exit 2");
    let scratch = dir.join("scratch");
    executable(
        &scratch,
        "f=$(mktemp) && echo scratch-data > \"$f\" && dirname \"$f\"",
    );
    let file = dir.join("tools.toml");
    std::fs::write(
        &file,
        format!(
            "[[tool]]\nname = \"lookup_order\"\ncommand = [{:?}]\ntimeout = \"20s\"\n\n\
             [[tool]]\nname = \"failing\"\ncommand = [{:?}]\n\n\
             [[tool]]\nname = \"scratch\"\ncommand = [{:?}]\n",
            lookup.display().to_string(),
            failing.display().to_string(),
            scratch.display().to_string()
        ),
    )
    .unwrap();
    CustomTools::load(&file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_custom_tools_are_answered_and_others_are_left_alone() {
    let dp = DevPlane::start(Config::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools_dir = scratch.path().join("tools");
    std::fs::create_dir(&tools_dir).unwrap();
    let tools = declare(&tools_dir);

    let cp = ControlPlane::new(ClientConfig::with_base_url(dp.base_url())).unwrap();
    let template = WorkdirTemplate::new(format!(
        "{}/sessions/{{session_id}}",
        scratch.path().display()
    ));
    let mut config = WorkerConfig::new(dp.environment_id(), template);
    config.environment_key = Some(Credential::environment_key(dp.environment_key()));
    config.max_idle = Some(Duration::from_millis(300));
    config.custom_tools = Arc::new(tools);
    let shutdown = CancellationToken::new();
    let worker = Worker::new(cp, config, Arc::new(NoObserver), shutdown.clone());
    let poller = tokio::spawn(async move { worker.poll_forever(2).await });

    let script = Script::from_json(
        &serde_json::json!({
            "name": "custom-tools",
            "steps": [
                {"step": "custom_tool_use", "label": "lookup", "name": "lookup_order", "input": {"order_id": 42},
                 "expect": {"is_error": false, "text_equals": "order {\"order_id\":42}: shipped"}},
                {"step": "custom_tool_use", "label": "failing", "name": "failing", "input": {},
                 "expect": {"is_error": true, "text_equals": "failing: exited with status 2\n[stderr]\nno such order"}},
                {"step": "custom_tool_use", "label": "undeclared", "name": "refund_order", "input": {"order_id": 42},
                 "expect": {"no_result_within_ms": 1500}},
                {"step": "tool_use", "label": "builtin-named", "name": "lookup_order", "input": {"order_id": 42},
                 "expect": {"no_result_within_ms": 1500}},
                // The custom tool ran in the session's workdir, where the built-ins work.
                {"step": "tool_use", "label": "cwd", "name": "bash", "input": {"command": "cat lookup.log"},
                 "expect": {"is_error": false, "text_equals": "{\"order_id\":42}"}},
                // A custom tool's temporary files go to the session's private directory, the
                // one the shell's TMPDIR names.
                {"step": "custom_tool_use", "label": "scratch", "name": "scratch", "input": {},
                 "expect": {"is_error": false, "text_matches": "^/.+/hands-tmp-[0-9a-f]{16}$"}},
                {"step": "tool_use", "label": "shared-tmp", "name": "bash", "input": {"command": "cat \"$TMPDIR\"/tmp.*"},
                 "expect": {"is_error": false, "text_equals": "scratch-data"}},
                {"step": "idle", "stop_reason": "requires_action", "event_ids": ["undeclared", "builtin-named"]},
                {"step": "terminated"},
                {"step": "expect_stopped", "within_ms": 30000}
            ]
        })
        .to_string(),
        "test",
    )
    .unwrap();
    let report = dp.run_script(&script).await;
    shutdown.cancel();
    poller.await.unwrap().unwrap();
    assert!(report.passed, "{}", failures(&report));
    // Each answered call was posted once, and nothing was posted for the unowned ones.
    let mut posts: Vec<u32> = report.result_attempts.values().copied().collect();
    posts.sort_unstable();
    assert_eq!(posts, [0, 0, 1, 1, 1, 1, 1], "{:?}", report.result_attempts);
}
