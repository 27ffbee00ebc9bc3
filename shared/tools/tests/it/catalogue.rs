//! CATALOGUE.md section 2c rows that apply to the tool layer, each asserting the specific
//! behaviour. (T2 and the canary rule are in `canary.rs`; path confinement at scale in
//! `props.rs`.)

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hands_tools::{Toolset, ToolsetConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::shell_rows::{self, Shell};

/// The tier-0 fixture's shell for the shared rows (the canary rule at tier 0 is `canary.rs`).
fn tier0(fx: &Fixture) -> Shell<'_> {
    Shell { fx, canaries: &[] }
}

async fn bash(fx: &Fixture, command: &str) -> hands_protocol::toolset::ToolOutput {
    fx.call("bash", json!({ "command": command })).await
}

// T5: a burst of background processes is gone when the call returns; a runaway loop is
// killed with the timeout and leaves nothing behind.
#[tokio::test]
async fn t5_process_bursts_are_reaped() {
    let fx = Fixture::new();
    let out = bash(
        &fx,
        "for i in $(seq 200); do sleep 7200 & done; echo spawned",
    )
    .await;
    assert_eq!(text(&out), "spawned");
    assert_eq!(alive_with_arg("7200"), Vec::<i32>::new());
    let out = fx
        .call(
            "bash",
            json!({"command": "while true; do sleep 7201 & done", "timeout_ms": 500}),
        )
        .await;
    assert!(
        out.is_error && text(&out).starts_with("bash: bash command timed out after 0.5s"),
        "{out:?}"
    );
    assert_eq!(alive_with_arg("7201"), Vec::<i32>::new());
    assert_eq!(text(&bash(&fx, "echo alive").await), "alive");
    fx.tools.shutdown().await;
}

// T5 at the default limits (`--limit-processes auto`), tier 0: on a host with a pids cgroup
// (this project's machines and CI) both bombs are held at 1024 tasks and reported, the file
// tools and another session answer meanwhile, nothing survives. Elsewhere the mechanism would
// be RLIMIT_NPROC over the user running the tests, shared with everything else it runs, so
// the row is left to `t5_fork_bomb_under_rlimit_nproc` (its own uid); with
// REQUIRE_ISOLATION=1 (CI, whose machines have the cgroup) a missing cgroup fails the row.
#[tokio::test]
async fn t5_fork_bombs_are_contained_at_the_default_limits() {
    let mechanism = hands_sandbox::process_limit_mechanism();
    if !matches!(mechanism, hands_sandbox::ProcessLimitMechanism::Cgroup) {
        assert!(
            std::env::var("REQUIRE_ISOLATION").as_deref() != Ok("1"),
            "REQUIRE_ISOLATION=1 but no pids cgroup for the tier-0 T5 row: {mechanism}"
        );
        eprintln!("skipping T5 at the default limits, tier 0: no pids cgroup here ({mechanism})");
        return;
    }
    let Some((rlimits, note)) = shell_rows::default_limits() else {
        return;
    };
    let fx = Fixture::with(|c| c.rlimits = rlimits.clone());
    let other = Fixture::with(|c| c.rlimits = rlimits.clone());
    shell_rows::t5_fork_bombs_are_contained(&tier0(&fx), 0, &note, Some(&tier0(&other))).await;
    other.tools.shutdown().await;
}

// T5 where no pids cgroup can be made and the worker is not root: the default is RLIMIT_NPROC
// in the tool processes (the uid's tasks at start plus 1024). As root, this test runs itself
// again as a uid nothing else on the host uses (RLIMIT_NPROC counts every task of the uid),
// with the cgroup skipped (`HANDS_TEST_PROCESS_LIMIT=nproc`); the child asserts that both bombs
// are held (the fork loop's sleeps, sampled throughout, with its shell and the worker's threads
// never pass the limit), the results say so, the file tools answer meanwhile, and nothing
// survives (`shell_rows::t5_under_rlimit_nproc`).
#[test]
fn t5_fork_bomb_under_rlimit_nproc() {
    if hands_test_support::is_rerun() {
        return shell_rows::t5_under_rlimit_nproc(9, hands_sandbox::Isolation::Tier0);
    }
    shell_rows::rerun_under_rlimit_nproc("catalogue::t5_fork_bomb_under_rlimit_nproc");
}

// T6: the file-size rlimit hook makes a disk filler fail in the tool, not in the worker.
#[tokio::test]
async fn t6_file_size_limit_stops_a_disk_filler() {
    let fx = Fixture::with(|c| c.rlimits.file_size_bytes = Some(1024 * 1024));
    let out = bash(&fx, "head -c 5000000 /dev/zero > big.bin").await;
    assert!(out.is_error, "{out:?}");
    assert!(text(&out).contains("File size limit exceeded"), "{out:?}");
    assert_eq!(
        std::fs::metadata(fx.path("big.bin")).unwrap().len(),
        1024 * 1024
    );
    fx.tools.shutdown().await;
}

// T7: floods are capped to the last bytes with the reference marker; stdout and stderr
// floods at once do not deadlock. (The worker-memory bound is asserted in the tier children,
// where no other test shares the process.)
#[tokio::test]
async fn t7_output_floods_are_bounded() {
    let fx = Fixture::new();
    shell_rows::t7_output_floods_are_bounded(&tier0(&fx)).await;
}

// T8: nothing waits on stdin; a never-ending command is killed at the timeout with its
// partial output, and everything it started is gone.
#[tokio::test]
async fn t8_never_exits() {
    let fx = Fixture::new();
    shell_rows::t8_never_exits(&tier0(&fx), 0).await;
}

// T9: background survivors of every kind are gone when the call returns, and the call
// returned although they held the output pipe.
#[tokio::test]
async fn t9_no_background_survivors() {
    let fx = Fixture::new();
    let cases = [
        ("sleep 7401 &", "7401"),
        ("nohup sleep 7402 >/dev/null 2>&1 &", "7402"),
        ("setsid sleep 7403 &", "7403"),
        ("(setsid sleep 7404 &)", "7404"),
        ("(sleep 7405 &)", "7405"),
        ("sleep 7406 & disown", "7406"),
        ("(sleep 7407 &) > held.txt", "7407"),
        ("setsid -f sleep 7408", "7408"),
        ("env -i /usr/bin/setsid sleep 7409 &", "7409"),
        ("bash -c 'sleep 7410 & sleep 7410 & wait' &", "7410"),
        // Orphaned, out of the session, and with a cleared environment: only the subreaper
        // tree ties it to the shell.
        (
            "(env -i /usr/bin/setsid /bin/sleep 7411 >/dev/null 2>&1 &)",
            "7411",
        ),
    ];
    for (command, token) in cases {
        let out = bash(&fx, &format!("{command}\necho ok")).await;
        assert_eq!(text(&out), "ok", "{command}");
        assert_eq!(
            alive_with_arg(token),
            Vec::<i32>::new(),
            "survivor of `{command}`"
        );
    }
    // Output of a killed background process never leaks into the next call.
    let out = bash(&fx, "(sleep 0.05; echo LATE) & echo now").await;
    assert_eq!(text(&out), "now");
    assert_eq!(text(&bash(&fx, "sleep 0.2; echo next").await), "next");
    fx.tools.shutdown().await;
}

// T9 (shutdown): `shutdown` kills the shell and its tree; the toolset stays usable.
#[tokio::test]
async fn t9_shutdown_kills_the_shell() {
    let fx = Fixture::new();
    let pid: i32 = text(&bash(&fx, "echo $$").await).parse().unwrap();
    assert!(hands_sandbox::pid_is_alive(pid));
    fx.tools.shutdown().await;
    assert!(!hands_sandbox::pid_is_alive(pid));
    let pid2: i32 = text(&bash(&fx, "echo $$").await).parse().unwrap();
    assert_ne!(pid, pid2);
    fx.tools.shutdown().await;
}

// T11: a long grep runs on the blocking pool: other tasks of the same (single-threaded)
// runtime keep running while it searches.
#[test]
fn t11_grep_does_not_block_the_runtime() {
    let fx = Fixture::new();
    for d in 0..20 {
        for f in 0..50 {
            fx.write(
                &format!("d{d}/f{f}.txt"),
                "lorem ipsum dolor sit amet\n".repeat(200),
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (ticks, done) = (ticks.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        let out = fx
            .call("grep", json!({"pattern": "(a|b|c|d)+[^x]*zzz"}))
            .await;
        let seen = ticks.load(Ordering::SeqCst);
        done.store(true, Ordering::SeqCst);
        heartbeat.await.unwrap();
        assert_eq!(text(&out), "no matches");
        assert!(seen > 0, "the heartbeat task never ran while grep searched");
    });
}

// T11: a CPU burner on every core is ended by the wall-clock timeout, or by RLIMIT_CPU when
// set; the runtime keeps answering meanwhile.
#[tokio::test]
async fn t11_cpu_burner_is_stopped() {
    let fx = Fixture::new();
    shell_rows::t11_cpu_burner_is_timed_out(&tier0(&fx), 0).await;
    let fx = Fixture::with(|c| c.rlimits.cpu_seconds = Some(shell_rows::CPU_SECONDS));
    shell_rows::t11_cpu_limit_ends_a_burner(&tier0(&fx), 0).await;
}

// T13: binary, invalid UTF-8, NUL bytes, characters split across reads and cuts.
#[tokio::test]
async fn t13_binary_output_never_panics() {
    let fx = Fixture::new();
    shell_rows::t13_binary_output_never_panics(&tier0(&fx)).await;
}

// T14: exit codes and deaths by signal are errors, never success.
#[tokio::test]
async fn t14_exit_status_and_signals() {
    let fx = Fixture::new();
    shell_rows::t14_exit_status_and_signals(&tier0(&fx)).await;
    shell_rows::t14_a_killed_shell_names_the_signal(&tier0(&fx)).await;
}

// T15: helpers planted in the workspace and environment changes of earlier commands never
// reach the tools.
#[tokio::test]
async fn t15_helper_hijacking() {
    let fx = Fixture::with(shell_rows::workspace_first_on_path);
    shell_rows::t15_helper_hijacking(&tier0(&fx)).await;
}

// T12: the address-space rlimit hook makes a memory hog fail in the tool.
#[tokio::test]
async fn t12_memory_hog_fails_in_the_tool() {
    let fx = Fixture::with(|c| c.rlimits.address_space_bytes = Some(shell_rows::HOG_LIMIT));
    shell_rows::t12_memory_hog_fails_in_the_tool(&tier0(&fx)).await;
}

// T17: traversal spellings resolve under the policy or are refused; none panics.
#[tokio::test]
async fn t17_path_traversal() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.path("a")).unwrap();
    fx.write("a/f.txt", "inside");
    let long = "x/".repeat(2100);
    let cases = vec![
        Case {
            name: "dotdot",
            tool: "read",
            input: json!({"file_path": "../../etc/passwd"}),
        },
        Case {
            name: "absolute",
            tool: "read",
            input: json!({"file_path": "/etc/passwd"}),
        },
        Case {
            name: "climb out of a subdirectory",
            tool: "read",
            input: json!({"file_path": "a/../../.."}),
        },
        Case {
            name: "dotdot that stays inside",
            tool: "read",
            input: json!({"file_path": "a/../a/./f.txt"}),
        },
        Case {
            name: "url-encoded dots are a name",
            tool: "read",
            input: json!({"file_path": "%2e%2e/etc/passwd"}),
        },
        Case {
            name: "backslashes are a name",
            tool: "read",
            input: json!({"file_path": "..\\..\\etc\\passwd"}),
        },
        Case {
            name: "tilde is not expanded",
            tool: "read",
            input: json!({"file_path": "~/.bashrc"}),
        },
        Case {
            name: "variables are not expanded",
            tool: "write",
            input: json!({"file_path": "$HOME/x", "content": "x"}),
        },
        Case {
            name: "nul byte",
            tool: "read",
            input: json!({"file_path": "a/f.txt\u{0}../../etc/passwd"}),
        },
        Case {
            name: "longer than PATH_MAX",
            tool: "read",
            input: json!({"file_path": long}),
        },
        Case {
            name: "empty path",
            tool: "read",
            input: json!({"file_path": ""}),
        },
        Case {
            name: "a directory",
            tool: "edit",
            input: json!({"file_path": "a", "old_string": "x", "new_string": "y"}),
        },
        Case {
            name: "trailing slash on a file",
            tool: "read",
            input: json!({"file_path": "a/f.txt/"}),
        },
        Case {
            name: "write beside the root",
            tool: "write",
            input: json!({"file_path": "../ws-evil/x", "content": "x"}),
        },
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
    assert!(
        std::fs::read_dir(&fx.root).unwrap().count() == 2,
        "something was created beside the workdir"
    );
    assert!(
        exists(&fx.path("$HOME/x")),
        "`$HOME` is a literal directory name"
    );
}

// T18: symlink escapes are refused; links that stay inside work.
#[tokio::test]
async fn t18_symlink_escapes() {
    let fx = Fixture::new();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, fx.path(name)).unwrap();
    fx.write("real/inner.txt", "inner");
    link("/", "root");
    link("/proc/self/environ", "e");
    link("/proc/self", "me");
    link(
        &fx.outside.join("secret.txt").display().to_string(),
        "abs-out",
    );
    link("../outside/new.txt", "dangling-out");
    link("real/inner.txt", "rel-in");
    link(&fx.path("real").display().to_string(), "abs-in");
    link("real/made-by-link.txt", "dangling-in");
    link("loop1", "loop2");
    link("loop2", "loop1");
    link("real/../../outside", "sneaky");
    let cases = vec![
        Case {
            name: "link to / then a path",
            tool: "read",
            input: json!({"file_path": "root/etc/passwd"}),
        },
        Case {
            name: "link to /proc/self/environ",
            tool: "read",
            input: json!({"file_path": "e"}),
        },
        Case {
            name: "link to /proc/self, then environ",
            tool: "read",
            input: json!({"file_path": "me/environ"}),
        },
        Case {
            name: "absolute link out",
            tool: "read",
            input: json!({"file_path": "abs-out"}),
        },
        Case {
            name: "dangling link out, write",
            tool: "write",
            input: json!({"file_path": "dangling-out", "content": "x"}),
        },
        Case {
            name: "link with dotdot out",
            tool: "read",
            input: json!({"file_path": "sneaky/secret.txt"}),
        },
        Case {
            name: "relative link inside",
            tool: "read",
            input: json!({"file_path": "rel-in"}),
        },
        Case {
            name: "absolute link inside",
            tool: "read",
            input: json!({"file_path": "abs-in/inner.txt"}),
        },
        Case {
            name: "dangling link inside, write creates the target",
            tool: "write",
            input: json!({"file_path": "dangling-in", "content": "via link"}),
        },
        Case {
            name: "edit through a link inside",
            tool: "edit",
            input: json!({"file_path": "rel-in", "old_string": "inner", "new_string": "edited"}),
        },
        Case {
            name: "loop",
            tool: "read",
            input: json!({"file_path": "loop1"}),
        },
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
    assert!(!exists(&fx.outside.join("new.txt")));
    assert_eq!(
        std::fs::read_to_string(fx.path("real/made-by-link.txt")).unwrap(),
        "via link"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("real/inner.txt")).unwrap(),
        "edited"
    );
    // Edit through a link replaces the target file, and the link stays a link.
    assert!(
        std::fs::symlink_metadata(fx.path("rel-in"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

// T18 (race): a directory flipped to a symlink pointing outside while reads and writes run.
#[test]
fn t18_symlink_swap_race() {
    let fx = Fixture::new();
    std::fs::write(fx.outside.join("f"), SECRET).unwrap();
    let d = fx.path("d");
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (d, outside, stop) = (d.clone(), fx.outside.clone(), stop.clone());
        std::thread::spawn(move || {
            let staged = d.with_file_name("d.staged");
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::create_dir(&staged);
                let _ = std::fs::write(staged.join("f"), "inside");
                let _ = std::fs::rename(&staged, &d);
                let link = d.with_file_name("d.link");
                let _ = std::os::unix::fs::symlink(&outside, &link);
                // Swap the directory out for the link (atomic rename over an empty path).
                let _ = std::fs::rename(&d, d.with_file_name("d.old"));
                let _ = std::fs::rename(&link, &d);
                let _ = std::fs::remove_dir_all(d.with_file_name("d.old"));
                let _ = std::fs::remove_file(&d);
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut inside_reads = 0;
    rt.block_on(async {
        for i in 0..2000 {
            let out = fx.call("read", json!({"file_path": "d/f"})).await;
            let shown = fx.shown(&out);
            assert!(
                !shown.contains(SECRET),
                "read escaped on iteration {i}: {shown}"
            );
            if shown == "inside" {
                inside_reads += 1;
            }
            let out = fx
                .call("write", json!({"file_path": "d/w", "content": "x"}))
                .await;
            assert!(!fx.shown(&out).contains(SECRET));
            assert!(
                !exists(&fx.outside.join("w")),
                "write escaped on iteration {i}"
            );
        }
    });
    stop.store(true, Ordering::SeqCst);
    flipper.join().unwrap();
    // The race really ran: some reads saw the directory (others were refused).
    assert!(inside_reads > 0);
}

// T19: a hard link to an outside file is replaced, never written through.
#[tokio::test]
async fn t19_hard_links_are_not_written_through() {
    let fx = Fixture::new();
    std::fs::hard_link(fx.outside.join("secret.txt"), fx.path("hl")).unwrap();
    let out = fx
        .call(
            "write",
            json!({"file_path": "hl", "content": "overwritten"}),
        )
        .await;
    assert!(!out.is_error);
    std::fs::hard_link(fx.outside.join("secret.txt"), fx.path("hl2")).unwrap();
    let out = fx
        .call(
            "edit",
            json!({"file_path": "hl2", "old_string": "outside", "new_string": "x"}),
        )
        .await;
    assert!(!out.is_error);
    assert_eq!(
        std::fs::read_to_string(fx.outside.join("secret.txt")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("hl")).unwrap(),
        "overwritten"
    );
}

// T20: special files are refused without blocking and without reading them.
#[tokio::test]
async fn t20_special_files() {
    let fx = Fixture::new();
    std::os::unix::fs::symlink("/dev/zero", fx.path("zero")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(fx.path("sock")).unwrap();
    let sparse = std::fs::File::create(fx.path("sparse.txt")).unwrap();
    sparse.set_len(5 << 30).unwrap();
    let cases = vec![
        Case {
            name: "device via a link",
            tool: "read",
            input: json!({"file_path": "zero"}),
        },
        Case {
            name: "unix socket",
            tool: "read",
            input: json!({"file_path": "sock"}),
        },
        Case {
            name: "5 GB sparse file",
            tool: "read",
            input: json!({"file_path": "sparse.txt"}),
        },
        Case {
            name: "5 GB sparse file, edit",
            tool: "edit",
            input: json!({"file_path": "sparse.txt", "old_string": "a", "new_string": "b"}),
        },
        Case {
            name: "proc file by absolute path",
            tool: "read",
            input: json!({"file_path": "/proc/self/status"}),
        },
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
}

// T21-T23: a refused edit leaves the file byte-for-byte as it was; BOM and CRLF survive.
#[tokio::test]
async fn t21_t23_edit_refusals_leave_the_file_unchanged() {
    let fx = Fixture::new();
    let original = "\u{feff}alpha\r\nbeta\r\nbeta\r\n";
    fx.write("f.txt", original);
    let before = std::fs::metadata(fx.path("f.txt")).unwrap();
    for (old, new, all) in [
        ("gamma", "x", false),
        ("beta", "x", false),
        ("", "x", false),
        ("", "x", true),
    ] {
        let out = fx.call("edit", json!({"file_path": "f.txt", "old_string": old, "new_string": new, "replace_all": all})).await;
        assert!(out.is_error, "{old:?}");
        assert_eq!(std::fs::read_to_string(fx.path("f.txt")).unwrap(), original);
    }
    let after = std::fs::metadata(fx.path("f.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&before),
        std::os::unix::fs::MetadataExt::ino(&after)
    );
    let out = fx
        .call(
            "edit",
            json!({"file_path": "f.txt", "old_string": "alpha\nbeta", "new_string": "ALPHA\nBETA"}),
        )
        .await;
    assert_eq!(text(&out), "edited f.txt (1 replacement(s))");
    assert_eq!(
        std::fs::read_to_string(fx.path("f.txt")).unwrap(),
        "\u{feff}ALPHA\r\nBETA\r\nbeta\r\n"
    );
    let out = fx.call("edit", json!({"file_path": "f.txt", "old_string": "\r\n", "new_string": "\n", "replace_all": true})).await;
    assert_eq!(text(&out), "edited f.txt (3 replacement(s))");
    let mut bad = std::fs::File::create(fx.path("bad.txt")).unwrap();
    bad.write_all(b"ok \xff\n").unwrap();
    let out = fx
        .call(
            "edit",
            json!({"file_path": "bad.txt", "old_string": "ok", "new_string": "x"}),
        )
        .await;
    assert!(out.is_error);
    assert_eq!(std::fs::read(fx.path("bad.txt")).unwrap(), b"ok \xff\n");
}

// T23: a stale read is a conflict. The model read the file, something else changed it (here a
// bash command, with the same size, within the same clock tick), and the edit is refused
// instead of being applied to text the model never saw; after a fresh read it goes through.
// Edits and writes by the tools themselves keep the record current.
#[tokio::test]
async fn t23_an_edit_after_the_file_changed_behind_the_models_back_is_refused() {
    let fx = Fixture::new();
    fx.write("s.txt", "count = 1\n");
    let out = fx.call("read", json!({"file_path": "s.txt"})).await;
    assert!(!out.is_error);
    let out = fx
        .call("bash", json!({"command": "printf 'count = 2\\n' > s.txt"}))
        .await;
    assert!(!out.is_error, "{}", text(&out));
    let edit = json!({"file_path": "s.txt", "old_string": "count", "new_string": "total"});
    let out = fx.call("edit", edit.clone()).await;
    assert!(out.is_error);
    assert_eq!(
        text(&out),
        "edit: s.txt changed since it was last read (modified outside the file tools); read it again before editing"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("s.txt")).unwrap(),
        "count = 2\n"
    );

    // Read again: the edit applies; a second edit right after needs no new read.
    fx.call("read", json!({"file_path": "s.txt"})).await;
    let out = fx.call("edit", edit).await;
    assert_eq!(text(&out), "edited s.txt (1 replacement(s))");
    let out = fx
        .call(
            "edit",
            json!({"file_path": "s.txt", "old_string": "total", "new_string": "sum"}),
        )
        .await;
    assert_eq!(text(&out), "edited s.txt (1 replacement(s))");

    // write counts as seen; a file never read is edited as the reference does.
    fx.call("write", json!({"file_path": "w.txt", "content": "a b"}))
        .await;
    let out = fx
        .call(
            "edit",
            json!({"file_path": "w.txt", "old_string": "a", "new_string": "c"}),
        )
        .await;
    assert_eq!(text(&out), "edited w.txt (1 replacement(s))");
    fx.write("never-read.txt", "x y");
    let out = fx
        .call(
            "edit",
            json!({"file_path": "never-read.txt", "old_string": "x", "new_string": "z"}),
        )
        .await;
    assert_eq!(text(&out), "edited never-read.txt (1 replacement(s))");
}

// T24: glob explosions stay bounded.
#[tokio::test]
async fn t24_glob_explosions_are_bounded() {
    let fx = Fixture::with(|c| c.limits.walk_entries = 50);
    std::os::unix::fs::symlink(".", fx.path("loop")).unwrap();
    for i in 0..80 {
        fx.write(&format!("f{i:02}.txt"), "x");
    }
    let out = fx.call("glob", json!({"pattern": "**/*"})).await;
    let t = text(&out);
    assert!(
        t.ends_with("[walk stopped after 50 entries; narrow the pattern or path]"),
        "{t}"
    );
    assert!(!t.contains("/loop/"));
    let fx = Fixture::new();
    let braces = format!("{}x", "{a,b}".repeat(30));
    let out = fx.call("glob", json!({"pattern": braces})).await;
    assert_eq!(text(&out), "no matches");
    let out = fx
        .call("glob", json!({"pattern": "a".repeat(100_000)}))
        .await;
    assert_eq!(text(&out), "glob: pattern is longer than 8192 bytes");
    for p in ["/**", "../**", "x/../../**"] {
        let out = fx.call("glob", json!({"pattern": p})).await;
        assert!(out.is_error, "{p}");
    }
}

// T24, and what a big tree costs a narrow pattern: the walk enters only directories beneath
// which the pattern can match, so the entries budget is spent on them alone. With a budget of
// 50 entries and 80 files elsewhere, `deep/dir/*.rs` and `*.md` list everything they match.
#[tokio::test]
async fn t24_a_narrow_glob_reads_only_the_directories_it_can_match_in() {
    let fx = Fixture::with(|c| c.limits.walk_entries = 50);
    for i in 0..80 {
        fx.write(&format!("elsewhere/f{i:02}.rs"), "x");
    }
    fx.write("deep/dir/a.rs", "a");
    fx.write("deep/dir/b.rs", "b");
    fx.write("deep/dir/below/c.rs", "c");
    fx.write("top.md", "t");
    let shown = |rel: &str| fx.path(rel).display().to_string();
    let out = fx.call("glob", json!({"pattern": "deep/dir/*.rs"})).await;
    let mut listed: Vec<&str> = text(&out).lines().collect();
    listed.sort_unstable();
    assert_eq!(listed, [shown("deep/dir/a.rs"), shown("deep/dir/b.rs")]);
    let out = fx.call("glob", json!({"pattern": "*.md"})).await;
    assert_eq!(text(&out), shown("top.md"));
    // The same budget still stops a pattern that needs the whole tree.
    let out = fx.call("glob", json!({"pattern": "**/*.rs"})).await;
    assert!(
        text(&out).contains("[walk stopped after 50 entries"),
        "{out:?}"
    );
}

// T25: hostile regexes and files cost bounded time and memory.
#[tokio::test]
async fn t25_grep_hostile_inputs() {
    let fx = Fixture::new();
    fx.write("aaa.txt", format!("{}b\n", "a".repeat(1500)));
    // 20 MB on one line: longer than the line cap and than the searcher's buffer limit.
    fx.write("oneline.txt", "z".repeat(20 << 20));
    fx.write("after.txt", "needle\n");
    let out = fx.call("grep", json!({"pattern": "(a+)+$"})).await;
    assert_eq!(text(&out), "no matches");
    let out = fx.call("grep", json!({"pattern": "z+|needle"})).await;
    assert!(text(&out).ends_with("/ws/after.txt:1:needle"), "{out:?}");
    let out = fx
        .call("grep", json!({"pattern": "x".repeat(10_000)}))
        .await;
    assert_eq!(text(&out), "grep: pattern is longer than 8192 bytes");
    let fx = Fixture::with(|c| c.limits.search_time = Duration::ZERO);
    fx.write("x.txt", "needle\n");
    let out = fx.call("grep", json!({"pattern": "needle"})).await;
    assert!(text(&out).contains("[search stopped after 0s]"), "{out:?}");
}

// Cancellation: a cancelled bash call kills its process tree; a cancelled search stops.
#[tokio::test]
async fn cancel_kills_the_tree() {
    let fx = Fixture::new();
    let cancel = CancellationToken::new();
    let call = {
        let (tools, cancel) = (fx.tools.clone(), cancel.clone());
        tokio::spawn(async move {
            tools
                .call(
                    "bash",
                    json!({"command": "sleep 7501 & touch started; sleep 7502"}),
                    &cancel,
                )
                .await
        })
    };
    while !exists(&fx.path("started")) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let out = call.await.unwrap();
    assert!(out.is_error);
    assert_eq!(
        text(&out),
        "bash: cancelled; the command and everything it started were killed"
    );
    assert_eq!(alive_with_arg("7501"), Vec::<i32>::new());
    assert_eq!(alive_with_arg("7502"), Vec::<i32>::new());
    let out = fx
        .tools
        .call("grep", json!({"pattern": "x"}), &cancel)
        .await;
    assert_eq!(text(&out), "grep: cancelled");
    assert_eq!(
        text(&fx.call("bash", json!({"command": "echo fresh"})).await),
        "fresh"
    );
    fx.tools.shutdown().await;
}

#[tokio::test]
async fn configuration_errors_are_reported() {
    let err = Toolset::new(ToolsetConfig::new("/nonexistent/hands-ws")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot use /nonexistent/hands-ws as a tool root"),
        "{err}"
    );
    let mut config = ToolsetConfig::new("/tmp");
    config.bash_path = "bash".into();
    assert!(Toolset::new(config).is_err());
    assert!(Toolset::owns("bash") && Toolset::owns("grep") && !Toolset::owns("web_fetch"));
    let fx = Fixture::new();
    let out = fx.call("web_search", json!({})).await;
    assert_eq!(
        (out.is_error, text(&out)),
        (true, "unknown tool: web_search")
    );
}
