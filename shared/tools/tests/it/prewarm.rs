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

/// Starts ahead of use are throttled process-wide (one per CPU at a time); none is dropped,
/// and a call that comes before its session's turn runs at once in a shell of its own.
#[tokio::test]
async fn throttled_prewarms_are_all_served() {
    let fixtures: Vec<Fixture> = (0..6).map(|_| Fixture::new()).collect();
    for fx in &fixtures {
        fx.tools.prewarm_shell();
    }
    // The last one may still be waiting for its turn; a call made meanwhile is answered.
    let last = fixtures.last().unwrap();
    let out = last.call("bash", json!({"command": "echo $$"})).await;
    assert!(!out.is_error, "{}", last.shown(&out));
    let give_up = Instant::now() + Duration::from_secs(60);
    for fx in &fixtures {
        loop {
            let shells = processes_in(&fx.ws);
            assert!(shells.len() <= 1, "one shell per session: {shells:?}");
            if shells.len() == 1 {
                break;
            }
            assert!(Instant::now() < give_up, "a prewarm was never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
