//! The start-of-invocation sweep kills what an earlier invocation left below this process,
//! including orphans that left their session, and spares processes that are not ours. One test
//! per binary: the sweep kills every descendant of the test process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pid of a live (non-zombie) process whose command line contains `needle`.
fn find(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let zombie = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z");
        (String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
            && !zombie)
            .then_some(pid)
    })
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn orphan(command: &str) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{command} & exit 0"))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn leftover_processes_are_killed_and_processes_that_are_not_ours_spared() {
    let pid = std::process::id();
    let spared = format!("sleep 300.{pid}0");
    let left = format!("sleep 300.{pid}1");
    let escaped = format!("sleep 300.{pid}2");

    // Before this process is a subreaper, an orphan goes to init (or an ancestor): not ours.
    orphan(&spared);
    wait_until("the unrelated process never started", || {
        find(&spared).is_some()
    });

    hands_worker::startup::adopt_orphans().unwrap();
    // Orphans of a dead shell, one of them in a session of its own: re-parented to us.
    orphan(&left);
    orphan(&format!("setsid {escaped}"));
    wait_until("the leftovers never started", || {
        find(&left).is_some() && find(&escaped).is_some()
    });

    let killed = hands_worker::startup::kill_leftover_processes();
    assert!(killed >= 2, "{killed}");
    wait_until("leftovers survived the sweep", || {
        find(&left).is_none() && find(&escaped).is_none()
    });
    assert_eq!(hands_worker::startup::kill_leftover_processes(), 0);

    let other = find(&spared).expect("a process that is not ours was killed");
    // Clean up what this test started, by pid.
    let _ = Command::new("kill").arg(other.to_string()).status();
}
