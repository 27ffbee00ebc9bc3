//! The canary rule (CATALOGUE 2c, T1, T2): a worker holding canary credentials in its
//! environment and a sessions token in its memory runs the tools; no tool output may contain
//! any of them.
//!
//! `/proc/<pid>/environ` shows the environment a process was *started* with, so the canaries
//! must be there from the start: the test re-runs this test binary as a child process with the
//! canary variables set, and the child runs the probes.

use std::process::Command;

use hands_tools::{Toolset, ToolsetConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const CHILD: &str = "HANDS_CANARY_CHILD";
const KEY: &str = "canary-envkey-5b1e0c7d";
const AWS: &str = "canary-aws-secret-93f0aa41";
const SERVICE: &str = "canary-service-key-77d2";
const TOKEN: &str = "canary-sessions-token-c4e81f";

#[test]
fn canary_values_never_reach_tool_output() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "canary::canary_child",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("ANTHROPIC_ENVIRONMENT_KEY", KEY)
        .env("AWS_SECRET_ACCESS_KEY", AWS)
        .env("AWS_ACCESS_KEY_ID", "AKIACANARY0000")
        .env("SERVICE_KEY", SERVICE)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The child must really have run the probes: a filtered-out test would "pass" with 0 run.
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    for canary in [KEY, AWS, SERVICE, TOKEN] {
        assert!(!stdout.contains(canary) && !stderr.contains(canary));
    }
}

#[test]
#[ignore = "run by canary_values_never_reach_tool_output, in a process started with canary credentials"]
fn canary_child() {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run through canary_values_never_reach_tool_output"
    );
    hands_sandbox::harden_worker_process().unwrap();
    assert!(!hands_sandbox::is_dumpable());
    // The sessions token lives only in this process's memory, as in the worker.
    let token = std::hint::black_box(format!("Bearer {TOKEN}"));

    let dir = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    let me = std::process::id();
    std::os::unix::fs::symlink("/proc/self/environ", ws.join("self-environ")).unwrap();
    std::os::unix::fs::symlink(format!("/proc/{me}/environ"), ws.join("worker-environ")).unwrap();
    std::os::unix::fs::symlink(format!("/proc/{me}/mem"), ws.join("worker-mem")).unwrap();
    let tools = Toolset::new(ToolsetConfig::new(&ws)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let probes: Vec<(&str, serde_json::Value)> = vec![
        ("bash", json!({"command": "env"})),
        ("bash", json!({"command": "printenv"})),
        (
            "bash",
            json!({"command": "tr '\\0' '\\n' < /proc/self/environ"}),
        ),
        ("bash", json!({"command": "cat /proc/$PPID/environ"})),
        (
            "bash",
            json!({"command": "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'"}),
        ),
        (
            "bash",
            json!({"command": "tr '\\0' ' ' < /proc/$PPID/cmdline"}),
        ),
        ("bash", json!({"command": "ls -l /proc/$PPID/fd"})),
        (
            "bash",
            json!({"command": "for f in /proc/$PPID/fd/*; do timeout 1 head -c 4096 \"$f\"; done"}),
        ),
        ("bash", json!({"command": "head -c 100 /proc/$PPID/maps"})),
        (
            "bash",
            json!({"command": "grep -a -o 'canary[a-z0-9-]*' /proc/$PPID/mem"}),
        ),
        ("bash", json!({"command": "cat /proc/$PPID/task/*/environ"})),
        ("read", json!({"file_path": "self-environ"})),
        ("read", json!({"file_path": "worker-environ"})),
        ("read", json!({"file_path": "worker-mem"})),
        ("read", json!({"file_path": "/proc/self/environ"})),
        ("grep", json!({"pattern": "canary", "path": "/proc/self"})),
        ("glob", json!({"pattern": "*", "path": "/proc/self"})),
    ];
    let mut outputs = Vec::new();
    rt.block_on(async {
        for (tool, input) in &probes {
            let out = tools
                .call(tool, input.clone(), &CancellationToken::new())
                .await;
            outputs.push((
                format!("{tool} {input}"),
                serde_json::to_string(&out).unwrap(),
            ));
        }
        tools.shutdown().await;
    });
    for (probe, output) in &outputs {
        for canary in [KEY, AWS, SERVICE, TOKEN, "AKIACANARY0000"] {
            // Never print the output itself: on failure it holds the secret.
            assert!(
                !output.contains(canary),
                "a canary leaked through `{probe}`"
            );
        }
    }
    // The specific denials, not merely "no canary" (pitfall 8).
    let find = |needle: &str| &outputs.iter().find(|(p, _)| p.contains(needle)).unwrap().1;
    assert!(find("cat /proc/$PPID/environ").contains("Permission denied"));
    assert!(find("ls -l /proc/$PPID/fd").contains("Permission denied"));
    assert!(find("/proc/$PPID/maps").contains("Permission denied"));
    assert!(find("self-environ").contains("is outside the session's working directory"));
    assert!(find("worker-environ").contains("is outside the session's working directory"));
    let env_out = find("\"env\"");
    assert!(
        env_out.contains("TERM=dumb")
            && !env_out.contains("ANTHROPIC_")
            && !env_out.contains("AWS_")
    );
    assert!(token.ends_with(TOKEN));
    let _ = SECRET;
}
