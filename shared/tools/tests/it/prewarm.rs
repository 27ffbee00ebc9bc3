//! `Toolset::prewarm_shell`: the session's shell is started before the first `bash` call, and
//! that call runs in it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// Live processes whose working directory is `dir` (the fixture's workspace is unique to it,
/// so other tests' shells running at the same time are not counted).
fn processes_in(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
            && hands_sandbox::pid_is_alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn the_prewarmed_shell_runs_the_first_call() {
    let fx = Fixture::new();
    assert!(
        processes_in(&fx.ws).is_empty(),
        "no shell before anything asked for one"
    );
    fx.tools.prewarm_shell();
    // A hang guard, not a speed check: the shell normally starts in milliseconds.
    let give_up = Instant::now() + Duration::from_secs(30);
    let shell = loop {
        if let [pid] = processes_in(&fx.ws)[..] {
            break pid;
        }
        assert!(
            Instant::now() < give_up,
            "no shell was started ahead of the first call"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let out = fx.call("bash", json!({"command": "echo $$"})).await;
    assert!(!out.is_error, "{}", fx.shown(&out));
    assert_eq!(
        text(&out),
        shell.to_string(),
        "the first call ran in the prewarmed shell"
    );
}
