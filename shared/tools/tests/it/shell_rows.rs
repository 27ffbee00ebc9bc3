//! The shell rows of CATALOGUE 2c that every tier runs with the same assertions (T7, T8,
//! T11-T15): tier 0 in `catalogue.rs`, tier 1 in `tier1.rs`, tier 2 in `isolation.rs`. The shell
//! is the same code at every tier, but what it runs inside is not (the tier-1 helper, bubblewrap,
//! limits inherited through either), so each tier proves the rows for itself.
//!
//! The tiers' tests run at the same time on one machine, so the bodies that look for leftover
//! processes (T8, T11) take the tier's number and derive their markers from it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hands_protocol::toolset::ToolOutput;
use hands_tools::output::{LOSSY_NOTE, TRUNCATED_PREFIX};
use serde_json::{Value, json};

use crate::common::*;

/// The bash output kept by default (`Limits::bash_output_bytes`).
const OUTPUT_LIMIT: usize = 100 * 1024;
/// The size of the one-line flood of T7: far above what may stay in the worker's memory.
const FLOOD_BYTES: u64 = 64 * 1024 * 1024;
/// The address-space limit the T12 rows set (`Rlimits::address_space_bytes`).
pub const HOG_LIMIT: u64 = 256 * 1024 * 1024;
/// The CPU-time limit the T11 limit rows set (`Rlimits::cpu_seconds`).
pub const CPU_SECONDS: u64 = 1;

/// A fixture's shell, and the canaries no result may contain.
pub struct Shell<'a> {
    pub fx: &'a Fixture,
    /// Empty at tier 0, whose canary rule is `canary.rs`.
    pub canaries: &'a [&'a str],
}

impl Shell<'_> {
    /// Calls `bash` with `input` and checks the canary rule on the result.
    pub async fn call(&self, input: Value) -> ToolOutput {
        let what = input.to_string();
        let out = self.fx.call("bash", input).await;
        let shown = self.fx.shown(&out);
        for canary in self.canaries {
            assert!(
                !shown.contains(canary),
                "canary in the result of {what}: {shown}"
            );
        }
        out
    }

    pub async fn bash(&self, command: &str) -> ToolOutput {
        self.call(json!({ "command": command })).await
    }

    pub async fn shown(&self, command: &str) -> String {
        let out = self.bash(command).await;
        self.fx.shown(&out)
    }
}

/// Awaits `call` while the `read` tool reads `note.txt` again and again on the same runtime;
/// returns the call's result and how many reads answered before it ended (every read must
/// succeed). A call that blocked the runtime would leave at most the first read answered.
pub async fn while_reading<F: Future>(fx: &Fixture, call: F) -> (F::Output, u32) {
    fx.write("note.txt", "still here");
    let done = AtomicBool::new(false);
    let call = async {
        let out = call.await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let reads = async {
        let mut answered = 0;
        while !done.load(Ordering::SeqCst) {
            let out = fx.call("read", json!({"file_path": "note.txt"})).await;
            assert!(
                !out.is_error && fx.shown(&out).contains("still here"),
                "{out:?}"
            );
            if !done.load(Ordering::SeqCst) {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered
    };
    tokio::join!(call, reads)
}

/// The limits `hands poll` gives tool processes by default (`--limit-processes auto` and the
/// rest), and the words that show the process limit was hit: the pids cgroup's note, or the
/// `RLIMIT_NPROC` one. `None` (after printing why) where this host has neither; with
/// `REQUIRE_ISOLATION=1` that fails instead.
pub fn default_limits() -> Option<(hands_sandbox::Rlimits, String)> {
    use hands_sandbox::ProcessLimitMechanism as M;
    let rlimits = hands_sandbox::LimitSettings::default().rlimits().unwrap();
    let mechanism = hands_sandbox::process_limit_mechanism();
    let note = match mechanism {
        M::Cgroup => format!(
            "[resource limit: the process limit ({} at once) was reached;",
            hands_sandbox::DEFAULT_PROCESSES
        ),
        M::Nproc { .. } => NPROC_NOTE.to_owned(),
        M::Unavailable(why) => {
            assert!(
                std::env::var("REQUIRE_ISOLATION").as_deref() != Ok("1"),
                "REQUIRE_ISOLATION=1 but no process limit by default: {why}"
            );
            eprintln!("skipping T5 at the default limits: {mechanism}");
            return None;
        }
    };
    Some((rlimits, note))
}

/// The start of the `RLIMIT_NPROC` note, which only failed calls carry (EAGAIN in the output
/// of a call that succeeded is no proof of a refused start).
const NPROC_NOTE: &str = "[resource limit: a process could not be started";

/// The argument of the fork loop's `sleep`s at `tier`, which names them in `/proc`.
fn sleeper_of(tier: u8) -> String {
    format!("75{tier}1")
}

/// Tasks of the fork loop's tree (its `sleep`s) that show it holds the limit: the limit less
/// the shell and what a tier adds around it (the tier-1 helper, bubblewrap and its init).
const NEAR_LIMIT: usize = hands_sandbox::DEFAULT_PROCESSES as usize - 64;

/// Waits (scanning `/proc`) until `near` processes carry the argument `arg`, for at most
/// `patience`; returns the most seen.
async fn wait_for_processes(arg: &str, near: usize, patience: Duration) -> usize {
    let arg = arg.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + patience;
        let mut most = 0;
        while most < near && std::time::Instant::now() < deadline {
            most = most.max(alive_with_arg(&arg).len());
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    })
    .await
    .unwrap()
}

/// An exclusive `flock` on a file every user can open (the `RLIMIT_NPROC` row runs as a uid
/// of its own), held until dropped.
fn bomb_lock() -> std::fs::File {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new("/tmp/hands-t5-bombs.lock");
    let file = std::fs::File::open(path).unwrap_or_else(|_| {
        let file = std::fs::File::create(path).unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .unwrap();
        file
    });
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
    file
}

/// T5 at the default limits (`default_limits`, whose `note` the results must carry): a fork
/// loop in the foreground and the classic `:(){ :|:& };:` left running in the background are
/// both held at the limit and say so (under `RLIMIT_NPROC` only the failed call carries the
/// note); the worker's file tools (and `other`, a second session, when given: under
/// `RLIMIT_NPROC` sessions share the count, so not there) answer meanwhile, also once the loop
/// is seen holding the limit; nothing of either tree survives the call; the shell works
/// afterwards.
pub async fn t5_fork_bombs_are_contained(
    sh: &Shell<'_>,
    tier: u8,
    note: &str,
    other: Option<&Shell<'_>>,
) {
    // One bomb at a time on this machine: the tiers' rows (and the RLIMIT_NPROC child) run at
    // once, and four bombs of 1024 tasks each on two cores would slow every other row.
    let _one_at_a_time = tokio::task::spawn_blocking(bomb_lock).await.unwrap();
    let sleeper = sleeper_of(tier);
    let bomber = format!("hands-t5-bomb-tier{tier}");
    // The other session's shell is started before the bomb: at the limit it then only has to
    // fork one process. Starting a whole shell there (through bubblewrap at tier 2) could take
    // seconds on a loaded machine, longer than the loop had left before its timeout, and the
    // loop's end then looked like a loop that had never held the limit while they answered.
    if let Some(other) = other {
        assert_eq!(other.shown("echo ready").await, "ready");
    }
    // Forks fail at the limit until the timeout ends the loop (bash retries a refused fork for
    // 15 s before it gives up on the whole command). The timeout only has to leave the loop
    // time to reach the limit: 3 s was not always enough on this project's loaded 2-core
    // machine.
    let bomb = sh.call(json!({
        "command": format!("while true; do sleep {sleeper} & done"),
        "timeout_ms": 10_000,
    }));
    sh.fx.write("t5-held.txt", "read at the limit");
    // Once the loop holds the limit (its first seconds only fill the tree): a read and the
    // other session, and whether the loop still held it when they had answered. The loop runs
    // until its timeout; waiting at most 7 of its 10 s leaves the answers time on a loaded
    // machine.
    let at_the_limit = async {
        let held = wait_for_processes(&sleeper, NEAR_LIMIT, Duration::from_secs(7)).await;
        let read = sh
            .fx
            .call("read", json!({"file_path": "t5-held.txt"}))
            .await;
        let other_out = match other {
            // An external echo: the other tree forks while this one is held at its limit.
            Some(o) => Some(o.shown("/bin/echo other session").await),
            None => None,
        };
        let still = alive_with_arg(&sleeper).len();
        (held, read, other_out, still)
    };
    let ((out, reads), (held, read, other_out, still)) =
        tokio::join!(while_reading(sh.fx, bomb), at_the_limit);
    let shown = sh.fx.shown(&out);
    assert!(
        out.is_error && shown.starts_with("bash: bash command timed out after 10.0s"),
        "{shown}"
    );
    assert!(shown.contains(note), "{shown}");
    assert!(reads > 0, "no read answered during the bomb");
    assert!(
        held >= NEAR_LIMIT,
        "the loop was not seen at the limit: {held} sleeps at most"
    );
    assert!(
        !read.is_error && sh.fx.shown(&read).contains("read at the limit"),
        "{read:?}"
    );
    if other.is_some() {
        assert_eq!(other_out.as_deref(), Some("other session"));
    }
    assert!(
        still > 0,
        "the loop had ended before the read and the other session answered"
    );
    assert_eq!(alive_with_arg(&sleeper), Vec::<i32>::new());

    // The classic bomb in the background (named by its `$0`), while the shell waits four
    // seconds with builtins only (every fork fails once the bomb holds the limit, which it
    // reaches in far less: it doubles): the command ends normally, and the sweep ends the bomb
    // with the call.
    let out = sh
        .bash(&format!(
            "rm -f t5.fifo; mkfifo t5.fifo; exec 3<>t5.fifo; \
             bash -c ':(){{ :|:& }};:' {bomber}; read -t 4 -u 3; exec 3>&-; echo waited"
        ))
        .await;
    let shown = sh.fx.shown(&out);
    assert!(shown.contains("waited"), "{shown}");
    if note == NPROC_NOTE {
        // The command succeeded: no note, but the bomb's own words on its refused forks.
        assert!(!shown.contains(note) && shown.contains("fork: "), "{shown}");
    } else {
        assert!(shown.contains(note), "{shown}");
    }
    assert_eq!(alive_with_arg(&bomber), Vec::<i32>::new());
    // The shell works. (Its first fork may be retried while the killed bomb is reaped: the
    // tasks count until then, against RLIMIT_NPROC as against the cgroup.)
    let after = sh.shown("rm t5.fifo; echo alive").await;
    assert!(after.lines().any(|l| l == "alive"), "{after}");
    sh.fx.tools.shutdown().await;
}

/// Runs the test `name` of this binary again as a uid no task on the host uses (`RLIMIT_NPROC`
/// counts every task of the uid), with the pids cgroup skipped, so that the default process
/// limit is `RLIMIT_NPROC`; the child runs [`t5_under_rlimit_nproc`]. Switching uids needs
/// root: without it the row is skipped, or fails under `REQUIRE_ISOLATION=1`.
pub fn rerun_under_rlimit_nproc(name: &str) {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var("REQUIRE_ISOLATION").as_deref() != Ok("1"),
            "REQUIRE_ISOLATION=1 but switching to a uid of its own needs root"
        );
        eprintln!("skipping: switching to a uid of its own needs root");
        return;
    }
    let uid = idle_uid();
    let rerun = hands_test_support::rerun_as(
        uid,
        name,
        &[(
            hands_sandbox::process_limit::TEST_MECHANISM_VAR,
            std::ffi::OsStr::new("nproc"),
        )],
    );
    if let Some(line) = rerun
        .stderr
        .lines()
        .find(|l| l.starts_with("RLIMIT_NPROC "))
    {
        eprintln!("as uid {uid}: {line}");
    }
}

/// A uid with no task on this host: `RLIMIT_NPROC` counts every task of a uid, so a test of it
/// needs one nothing else uses. Tests running at once get different ones: the pid spreads
/// processes, and each call in a process starts 1000 further on (two tests of one binary would
/// otherwise both find the first idle uid before either child runs as it).
fn idle_uid() -> u32 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed) * 1000);
    (0..4000)
        .map(|i| 61_000 + start.wrapping_add(i) % 4000)
        .find(|&uid| hands_sandbox::uid_task_count(uid).is_ok_and(|n| n == 0))
        .unwrap_or_else(|| panic!("no idle uid in 61000..65000"))
}

/// T5 at the default limits as a uid of its own that `RLIMIT_NPROC` binds (the child of
/// [`rerun_under_rlimit_nproc`]), in `isolation` (`tier` names the markers): the mechanism is
/// `RLIMIT_NPROC` at the uid's tasks at start plus 1024, tried at start; both bombs are held
/// ([`t5_fork_bombs_are_contained`]); and the fork loop's sleeps, sampled throughout, with its
/// shell and the worker's own lasting threads never pass the limit: the kernel counts the
/// tool's tasks together with every other task of the uid (in bubblewrap's user namespace as
/// well).
pub fn t5_under_rlimit_nproc(tier: u8, isolation: hands_sandbox::Isolation) {
    let uid = rustix::process::getuid().as_raw();
    assert_ne!(uid, 0, "the child meant to run as its own uid is root");
    let hands_sandbox::ProcessLimitMechanism::Nproc { uid_tasks, .. } =
        *hands_sandbox::process_limit_mechanism()
    else {
        panic!(
            "not RLIMIT_NPROC: {}",
            hands_sandbox::process_limit_mechanism()
        );
    };
    let (rlimits, note) = default_limits().unwrap();
    let nproc = rlimits.nproc.unwrap();
    assert_eq!(nproc, uid_tasks + hands_sandbox::DEFAULT_PROCESSES);
    // The start's trial of the value, on this host as a uid RLIMIT_NPROC binds: a child under
    // it forks; under 1 (the uid runs this process already) the fork is refused.
    assert_eq!(
        hands_sandbox::nproc_trial(nproc),
        hands_sandbox::NprocTrial::Forks
    );
    assert_eq!(
        hands_sandbox::nproc_trial(1),
        hands_sandbox::NprocTrial::Refused
    );
    assert_eq!(rlimits.max_pids, None);
    let own_threads = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap()
    };
    // The fork loop's sleeps, sampled until the row is over. They only come, until the loop's
    // call ends and they are all killed at once, so a scan of /proc (not one instant: it takes
    // a while with a thousand processes) never counts more than were there together. The whole
    // uid's tasks are no such measure: the classic bomb's processes come and go by the
    // thousand while a scan runs, so a scan sees more than ever lived at once.
    let sleeper = sleeper_of(tier);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0u64;
            while !done.load(Ordering::SeqCst) {
                most = most.max(alive_with_arg(&sleeper).len() as u64);
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    // Threads of this process that live through the row: those now (the harness's, the
    // sampler) and the runtime's two workers. Each tool fork is checked against every task of
    // the uid, these included.
    const WORKERS: u64 = 2;
    let lasting = own_threads() + WORKERS;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS as usize)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let bwrap = matches!(isolation, hands_sandbox::Isolation::Bwrap(_));
            let fx = Fixture::with(|c| {
                c.rlimits = rlimits.clone();
                c.isolation = isolation;
            });
            let sh = Shell {
                fx: &fx,
                canaries: &[],
            };
            if bwrap {
                // Bubblewrap engaged: the shell is pid 1 of its own pid namespace, /tmp the
                // sandbox's tmpfs.
                assert_eq!(
                    text(&sh.bash("echo $$; stat -f -c %T /tmp").await),
                    "1\ntmpfs"
                );
            }
            t5_fork_bombs_are_contained(&sh, tier, &note, None).await;
        });
    done.store(true, Ordering::SeqCst);
    let most = sampler.join().unwrap();
    // The loop got near the limit (`t5_fork_bombs_are_contained` saw it) and its sleeps, its
    // shell and this process's lasting threads never passed it: every tool fork is checked
    // against all the uid's tasks. A count of the sandbox's own tasks alone (its user
    // namespace's) would have let the sleeps reach the limit less the shell (and bubblewrap's
    // init).
    assert!(
        most + 1 + lasting <= nproc,
        "{most} sleeps of the loop at once, its shell and {lasting} threads of the worker: above \
         RLIMIT_NPROC {nproc}"
    );
    eprintln!(
        "RLIMIT_NPROC {nproc}: at most {most} sleeps of the fork loop at once, beside its shell \
         and {lasting} lasting threads of the worker"
    );
}

/// T7: a flood is cut to its last bytes behind the reference marker, whatever its shape (one
/// huge line, binary, never ending), and floods on stdout and stderr at once do not deadlock.
pub async fn t7_output_floods_are_bounded(sh: &Shell<'_>) {
    let out = sh
        .bash(&format!(
            "head -c {FLOOD_BYTES} /dev/zero | tr '\\0' y; echo; echo END"
        ))
        .await;
    let t = text(&out);
    assert!(t.starts_with(TRUNCATED_PREFIX), "{}", &t[..40]);
    assert!(t.ends_with("\nEND"));
    assert!(t.len() <= OUTPUT_LIMIT + TRUNCATED_PREFIX.len());
    let out = sh
        .bash("(yes out | head -c 20000000) & (yes err | head -c 20000000 >&2); wait; echo DONE")
        .await;
    let t = text(&out);
    assert!(
        t.starts_with(TRUNCATED_PREFIX) && t.ends_with("\nDONE"),
        "{}",
        last_chars(t, 80)
    );
    assert!(t.len() <= OUTPUT_LIMIT + TRUNCATED_PREFIX.len());
    // Random bytes: cut, then shown lossily (each invalid byte may become a three-byte
    // replacement character, so the bound is on the bytes kept, not on the text).
    let out = sh
        .bash("head -c 5000000 /dev/urandom; echo; echo END")
        .await;
    let t = text(&out);
    assert!(
        t.starts_with(TRUNCATED_PREFIX) && t.ends_with(&format!("\nEND\n{LOSSY_NOTE}")),
        "{}",
        last_chars(t, 80)
    );
    assert!(t.len() <= 3 * OUTPUT_LIMIT + TRUNCATED_PREFIX.len() + LOSSY_NOTE.len() + 1);
    // `yes` never ends: the timeout stops it and keeps a bounded tail of what it printed.
    let out = sh
        .call(json!({"command": "yes flood", "timeout_ms": 1000}))
        .await;
    let t = text(&out);
    assert!(
        out.is_error && t.starts_with("bash: bash command timed out after 1.0s\n"),
        "{}",
        &t[..t.len().min(300)]
    );
    let (_, tail) = t.split_once("[output before the timeout]\n").unwrap();
    assert!(
        tail.contains("flood\nflood"),
        "{}",
        &tail[..tail.len().min(300)]
    );
    assert!(tail.len() <= OUTPUT_LIMIT + TRUNCATED_PREFIX.len());
    assert_eq!(text(&sh.bash("echo alive").await), "alive");
    sh.fx.tools.shutdown().await;
}

/// The last `n` characters of `t`, for a message.
fn last_chars(t: &str, n: usize) -> String {
    let skip = t.chars().count().saturating_sub(n);
    t.chars().skip(skip).collect()
}

/// T7 where the worker's process runs nothing else at the same time (the tier children run one
/// row at a time): the rows of [`t7_output_floods_are_bounded`], and the worker's peak resident
/// memory meanwhile grows by less than a quarter of the one-line flood.
pub async fn t7_output_floods_are_bounded_in_bounded_memory(sh: &Shell<'_>) {
    let peak = PeakMemory::reset();
    t7_output_floods_are_bounded(sh).await;
    let grown = peak.growth_bytes();
    println!(
        "T7: the worker's peak memory grew by {grown} bytes during a {FLOOD_BYTES}-byte flood"
    );
    assert!(
        grown < FLOOD_BYTES / 4,
        "the worker's peak memory grew by {grown} bytes during a {FLOOD_BYTES}-byte flood"
    );
}

/// The process's peak resident memory since [`PeakMemory::reset`].
struct PeakMemory {
    start_kib: u64,
}

impl PeakMemory {
    /// Resets the peak (`VmHWM`) to the current resident size (`/proc/self/clear_refs`, 5).
    fn reset() -> PeakMemory {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        PeakMemory {
            start_kib: status_kib("VmHWM"),
        }
    }

    fn growth_bytes(&self) -> u64 {
        status_kib("VmHWM").saturating_sub(self.start_kib) * 1024
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Whether `program` (the first of `names` found) is on the shell's `PATH`. When none is, the
/// row is skipped with the reason printed, except under `REQUIRE_ISOLATION=1` (CI, whose
/// `.ci/run` installs them all), where a missing program fails.
async fn program(sh: &Shell<'_>, names: &[&str], row: &str) -> Option<String> {
    let lookup = names
        .iter()
        .map(|n| format!("command -v {n}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let out = sh.bash(&format!("{{ {lookup}; }} | head -n 1")).await;
    let found = text(&out).trim().to_owned();
    if !out.is_error && found.starts_with('/') {
        return Some(found);
    }
    assert!(
        std::env::var("REQUIRE_ISOLATION").as_deref() != Ok("1"),
        "REQUIRE_ISOLATION=1 but {names:?} is not installed for the T8 row {row}"
    );
    println!("skipping the T8 row {row}: {names:?} is not installed on this host");
    None
}

/// A loopback HTTP server that answers every request `401 Unauthorized` with a Basic challenge
/// (what makes git ask for a user name), run by the command itself so that it is inside the
/// sandbox's own network at tier 2. Prints its port, then serves until killed.
const UNAUTHORIZED_SERVER: &str = r#"import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    c.sendall(b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="t8"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
    c.close()
"#;

/// T8, interactive prompts: the shell's stdin is `/dev/null` and it has no controlling terminal
/// (its own session), so a program that asks for input gets the end of its input or cannot open
/// `/dev/tty`, and fails at once with its own words instead of waiting for the call's timeout.
/// Each row's command but vim's ends by itself (the generous timeout is never reached) and says
/// the specific failure; vim's is the one killed at its timeout. None leaves a process behind
/// (each carries a marker argument looked for after).
pub async fn t8_interactive_prompts(sh: &Shell<'_>, tier: u8) {
    let marker = |what: &str| format!("hands-t8-{what}-tier{tier}");
    let call = |command: String| sh.call(json!({"command": command, "timeout_ms": 60_000}));
    let not_timed_out = |t: &str| !t.starts_with("bash: bash command timed out");

    // No controlling terminal: every prompt that reads /dev/tty (ssh's password and host-key
    // questions, sudo's password) has nothing to read from.
    let out = sh.bash("exec 3<>/dev/tty; echo rc=$?").await;
    assert!(
        text(&out).contains("/dev/tty: No such device or address") && text(&out).ends_with("rc=1"),
        "{out:?}"
    );

    // Python's input() reads the end of /dev/null.
    let py = marker("python");
    let out = call(format!("python3 -c 'input()' {py}; echo rc=$?")).await;
    let t = text(&out);
    assert!(
        not_timed_out(t) && t.contains("EOFError: EOF when reading a line") && t.ends_with("rc=1"),
        "{t}"
    );
    assert_eq!(alive_with_arg(&py), Vec::<i32>::new());

    // git asking for a user name at a server's 401: GIT_TERMINAL_PROMPT=0 (the environment
    // policy) makes it fail at once. Tier 1 allows no TCP socket (seccomp), so no server can be
    // reached there; its prompt is the `credential fill` of `t8_never_exits`.
    if tier == 1 {
        println!("skipping the T8 git clone row at tier 1: no TCP sockets there to reach a server");
    } else if program(sh, &["git"], "git clone").await.is_some() {
        let server = marker("http401");
        sh.fx.write("t8_401.py", UNAUTHORIZED_SERVER);
        let out = call(format!(
            "python3 t8_401.py {server} > t8_port & \
             for i in $(seq 200); do [ -s t8_port ] && break; sleep 0.05; done; \
             git -c credential.helper= clone \"http://127.0.0.1:$(cat t8_port)/repo.git\" t8_clone; echo rc=$?"
        ))
        .await;
        let t = text(&out);
        assert!(
            not_timed_out(t)
                && t.contains("fatal: could not read Username for 'http://127.0.0.1:")
                && t.contains("terminal prompts disabled")
                && t.ends_with("rc=128"),
            "{t}"
        );
        // The server, left in the background, went with the call's sweep.
        assert_eq!(alive_with_arg(&server), Vec::<i32>::new());
    }

    // ssh's passphrase prompt (ssh-keygen reading a protected key) gets no answer and fails;
    // its host-key question needs a terminal on stdin, its password prompt /dev/tty (above).
    if program(sh, &["ssh-keygen"], "ssh passphrase")
        .await
        .is_some()
    {
        let key = marker("key");
        let out = call(format!(
            "rm -f {key} {key}.pub; ssh-keygen -q -t ed25519 -N secret -f {key} && ssh-keygen -y -f {key}; echo rc=$?"
        ))
        .await;
        let t = text(&out);
        assert!(
            not_timed_out(t)
                && t.contains("incorrect passphrase supplied to decrypt private key")
                && t.ends_with("rc=255"),
            "{t}"
        );
        assert_eq!(alive_with_arg(&key), Vec::<i32>::new());
    }

    // sudo's password prompt. Root is never asked, so a root shell asks as uid 65534 (setpriv).
    // Tier 0: sudo would read the password from /dev/tty, which cannot be opened, and says so;
    // unless that user may run it without a password (NOPASSWD, as GitHub's runners grant their
    // user): then there is no prompt to stop, and the row checks that sudo ran at once instead.
    // Tiers 1 and 2 run everything with no_new_privs, so sudo cannot become root and stops before
    // any prompt (NOPASSWD or not): it says so; or, as uid 0 of tier 2's user namespace (a root
    // worker; no capabilities there, so no setpriv either), it cannot switch to the sudoers
    // file's owner and finds no policy.
    if program(sh, &["sudo"], "sudo").await.is_some() {
        let mark = marker("sudo");
        let out = call(format!(
            "echo \"uid=$(id -u)\"; as=; \
             if [ \"$(id -u)\" = 0 ] && setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; \
             then as='setpriv --reuid=65534 --regid=65534 --clear-groups --'; fi; \
             if $as sudo -n true 2>/dev/null; then echo nopasswd=yes; else echo nopasswd=no; fi; \
             $as sudo -k true {mark}; echo rc=$?"
        ))
        .await;
        let t = text(&out);
        assert!(not_timed_out(t), "{t}");
        if tier == 0 && t.contains("\nnopasswd=yes\n") {
            println!(
                "T8 sudo row at tier 0: this user has NOPASSWD sudo, so sudo never prompts; checked that it ran at once"
            );
            assert!(
                t.ends_with("rc=0") && !t.contains("terminal is required"),
                "{t}"
            );
        } else {
            let expected = match (tier, t.starts_with("uid=0\n")) {
                (0, _) => "sudo: a terminal is required to read the password",
                (2, true) => "sudo: no valid sudoers sources found",
                _ => "sudo: The \"no new privileges\" flag is set",
            };
            assert!(
                t.contains("\nnopasswd=no\n") && t.contains(expected) && t.ends_with("rc=1"),
                "{t}"
            );
        }
        assert_eq!(alive_with_arg(&mark), Vec::<i32>::new());
    }

    // vim reads the end of /dev/null, then (as it does when its input ends) turns to stderr for
    // keys; stderr is the call's output pipe, where nothing ever arrives, so vim waits and is
    // killed at the timeout with what it printed so far (its warnings come at once; the screen
    // after a pause of its own), and nothing of it is left.
    if let Some(vim) = program(sh, &["vim", "vim.tiny"], "vim").await {
        let file = marker("vim");
        sh.fx.write(&file, "hello\n");
        let out = sh
            .call(json!({"command": format!("{vim} -u NONE -N {file}"), "timeout_ms": 2000}))
            .await;
        let t = text(&out);
        assert!(
            out.is_error && t.starts_with("bash: bash command timed out after 2.0s\n"),
            "{t}"
        );
        let (_, partial) = t.split_once("[output before the timeout]\n").unwrap();
        assert!(
            partial.contains("Vim: Warning: Input is not from a terminal"),
            "{partial}"
        );
        assert_eq!(alive_with_arg(&file), Vec::<i32>::new());
    }
}

/// The sshd configuration of the T8 ssh row: password authentication only (no PAM, which an
/// unprivileged server cannot use; no keyboard-interactive, so the methods ssh names are fixed),
/// loopback only, no pid file (the root is read-only at tier 2).
const SSHD_CONFIG: &str = "ListenAddress 127.0.0.1\n\
UsePAM no\n\
PidFile none\n\
PasswordAuthentication yes\n\
KbdInteractiveAuthentication no\n";

/// What a root shell preloads into sshd (only there) so that it runs as an unprivileged user
/// would: see `t8_ssh_prompts`.
const SSHD_AS_UID_1000: &str = "#include <unistd.h>\n\
uid_t getuid(void) { return 1000; }\n\
uid_t geteuid(void) { return 1000; }\n";

/// Processes whose command line contains `text` anywhere. sshd rewrites its listener's command
/// line into one string ("sshd: /usr/sbin/sshd -D ... [listener] ..."), so the exact-argument
/// match of `alive_with_arg` would miss it.
fn alive_with_text(text: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.windows(text.len()).any(|w| w == text.as_bytes())
            && hands_sandbox::pid_is_alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// T8, ssh's host-key question and password prompt against a real OpenSSH server. The command
/// itself starts sshd on a free loopback port (inside the sandbox's own network at tier 2,
/// where a server of the test process could not be reached) and connects twice with
/// no key and no agent: with `StrictHostKeyChecking=ask` ssh must ask whether to trust the
/// unknown host key, cannot (no terminal), and fails; with `accept-new` it records the key, and
/// its password prompt cannot open /dev/tty, so it sends an empty password until the server
/// gives up. Both fail at once with status 255, well before the call's timeout, and the server
/// goes with the call. Tier 1 has no TCP sockets: skipped there, where the /dev/tty row stands in.
///
/// As uid 0 sshd insists on privilege separation: its directory (/run/sshd, absent from a
/// container that never started the service), its user, and a chroot, which a capability-less
/// uid 0 (tier 2's namespace root; nested user namespaces are disabled there) cannot do. So a
/// root shell starts the server with `getuid`/`geteuid` answering 1000 (`SSHD_AS_UID_1000`,
/// compiled by the command), and sshd runs as for any unprivileged user. Only the server is
/// fooled; the ssh client under test is not.
async fn t8_ssh_prompts(sh: &Shell<'_>, tier: u8) {
    if tier == 1 {
        println!(
            "skipping the T8 ssh host-key row at tier 1: no TCP sockets there to reach a server (the /dev/tty row stands in)"
        );
        return;
    }
    let row = "ssh host key";
    let Some(sshd) = program(sh, &["sshd", "/usr/sbin/sshd"], row).await else {
        return;
    };
    let root = text(&sh.bash("id -u").await) == "0";
    let needed: &[&str] = if root {
        &["ssh", "ssh-keygen", "cc"]
    } else {
        &["ssh", "ssh-keygen"]
    };
    for name in needed {
        if program(sh, &[name], row).await.is_none() {
            return;
        }
    }
    // The configuration's file name is the marker: it stays in the listener's rewritten
    // command line.
    let conf = format!("hands-t8-sshd-tier{tier}");
    sh.fx.write(&conf, SSHD_CONFIG);
    sh.fx.write("t8_sshd_uid.c", SSHD_AS_UID_1000);
    let started = std::time::Instant::now();
    let out = sh
        .call(json!({"command": format!(
            "rm -rf t8ssh && mkdir t8ssh && ssh-keygen -q -t ed25519 -N '' -f t8ssh/host_key \
               && : > t8ssh/known_hosts || exit 1; \
             as=; if [ \"$(id -u)\" = 0 ]; then cc -shared -fPIC -o t8ssh/uid.so t8_sshd_uid.c || exit 1; \
               as=\"env LD_PRELOAD=$PWD/t8ssh/uid.so\"; fi; \
             port=$(python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'); \
             $as {sshd} -D -e -f \"$PWD/{conf}\" -h \"$PWD/t8ssh/host_key\" -p \"$port\" 2> t8ssh/sshd.log & sshd=$!; \
             for i in $(seq 200); do grep -q 'Server listening' t8ssh/sshd.log && break; \
               kill -0 $sshd 2>/dev/null || break; sleep 0.05; done; \
             ssh() {{ env -u SSH_AUTH_SOCK ssh -F /dev/null -o BatchMode=no -o IdentitiesOnly=yes -o IdentityFile=none \
               -o UserKnownHostsFile=\"$PWD/t8ssh/known_hosts\" -o GlobalKnownHostsFile=/dev/null -p \"$port\" \"$@\"; }}; \
             ssh -o StrictHostKeyChecking=ask 127.0.0.1 true; echo ask_rc=$?; \
             ssh -o StrictHostKeyChecking=accept-new 127.0.0.1 true; echo accept_new_rc=$?; \
             for i in $(seq 100); do kids=$(cat /proc/$sshd/task/$sshd/children) && kids=$(echo $kids | wc -w) || kids=unreadable; \
               [ $kids = 0 ] && break; sleep 0.05; done; \
             echo known_hosts=$(wc -l < t8ssh/known_hosts) sshd_children=$kids; echo '[sshd]'; cat t8ssh/sshd.log"
        ), "timeout_ms": 60_000}))
        .await;
    let elapsed = started.elapsed();
    let t = text(&out);
    let not_timed_out = !t.starts_with("bash: bash command timed out");
    assert!(
        not_timed_out && t.contains("Server listening on 127.0.0.1 port "),
        "after {elapsed:?} of 60 s: {t}"
    );
    let (ask, after_ask) = t.split_once("ask_rc=").unwrap();
    let (accept_new, after_accept_new) = after_ask.split_once("accept_new_rc=").unwrap();
    // Asked about the unknown key, ssh has no terminal to ask on: it refuses the host.
    assert!(
        ask.contains("Host key verification failed.")
            && !ask.contains("Permanently added")
            && after_ask.starts_with("255\n"),
        "after {elapsed:?} of 60 s: {t}"
    );
    // Past the host key (recorded: the file's one line), the password prompt has no /dev/tty:
    // empty answers, denied.
    assert!(
        accept_new.contains("Warning: Permanently added '[127.0.0.1]:")
            && accept_new.contains("@127.0.0.1: Permission denied (publickey,password).")
            && after_accept_new.starts_with("255\nknown_hosts=1 "),
        "after {elapsed:?} of 60 s: {t}"
    );
    // The server's process for each connection (renamed "sshd: [accepted]" and the like, so no
    // marker) ended with its connection, while the listener still ran; the listener went with the
    // call.
    assert!(t.contains(" sshd_children=0\n"), "{t}");
    assert_eq!(alive_with_text(&conf), Vec::<i32>::new(), "{t}");
    println!("T8 ssh row at tier {tier}: both connections failed, call returned after {elapsed:?}");
}

/// T8: nothing waits on stdin or a prompt; a never-ending command (`tail -f`, `sleep infinity`)
/// is killed at the timeout with its partial output, and everything it started is gone.
pub async fn t8_never_exits(sh: &Shell<'_>, tier: u8) {
    // Markers (`sleep` adds its arguments up; `tail` follows a missing file name in vain).
    let [tail, background, infinity] = [1, 2, 3].map(|n| format!("73{tier}0.{n}"));
    assert_eq!(text(&sh.bash("cat; read x; echo done").await), "done");
    // Interactive prompts fail at once instead of waiting: git is told not to prompt
    // (GIT_TERMINAL_PROMPT=0 from the environment policy), the Python REPL reads the end of
    // /dev/null.
    let out = sh
        .bash("printf 'protocol=https\\nhost=example.com\\n\\n' | git -c credential.helper= credential fill")
        .await;
    assert!(
        out.is_error && text(&out).contains("terminal prompts disabled"),
        "{out:?}"
    );
    assert_eq!(text(&sh.bash("python3; echo rc=$?").await), "rc=0");
    t8_interactive_prompts(sh, tier).await;
    t8_ssh_prompts(sh, tier).await;
    let out = sh
        .call(json!({
            "command": format!("echo partial; tail -f /dev/null --pid=1 {tail}"),
            "timeout_ms": 300,
        }))
        .await;
    assert!(out.is_error);
    assert!(
        text(&out).contains("[output before the timeout]\npartial"),
        "{out:?}"
    );
    let out = sh
        .call(json!({
            "command": format!("sleep {background} & sleep infinity {infinity}"),
            "timeout_ms": 300,
        }))
        .await;
    assert!(
        out.is_error && text(&out).starts_with("bash: bash command timed out after 0.3s\n"),
        "{out:?}"
    );
    for marker in [tail, background, infinity] {
        assert_eq!(alive_with_arg(&marker), Vec::<i32>::new(), "{marker}");
    }
    assert_eq!(text(&sh.bash("echo alive").await), "alive");
    sh.fx.tools.shutdown().await;
}

/// T11: a CPU burner on every core is ended by the wall-clock timeout with its whole tree, and
/// the worker's runtime keeps answering other tools while it burns.
pub async fn t11_cpu_burner_is_timed_out(sh: &Shell<'_>, tier: u8) {
    let marker = format!("hands-t11-burner-tier{tier}");
    let burn = format!("bash -c 'while :; do :; done' {marker}");
    let command = format!("for i in $(seq $(nproc)); do {burn} & done; {burn}");
    let (out, reads) = while_reading(
        sh.fx,
        sh.call(json!({"command": command, "timeout_ms": 2000})),
    )
    .await;
    let t = text(&out);
    assert!(
        out.is_error
            && t.starts_with(
                "bash: bash command timed out after 2.0s\n[the command and everything it started were killed"
            ),
        "{t}"
    );
    assert!(reads >= 3, "only {reads} reads answered during the burn");
    assert_eq!(alive_with_arg(&marker), Vec::<i32>::new());
    assert_eq!(text(&sh.bash("echo alive").await), "alive");
    sh.fx.tools.shutdown().await;
}

/// T11 with `RLIMIT_CPU` ([`CPU_SECONDS`], set by the caller): a burner is ended by the limit,
/// well before the call's timeout, and bash says so in plain words; and so is the bare burner
/// `while :; do :; done`, which burns in the session's shell itself. At tiers 0 and 1 that shell
/// dies of SIGXCPU; at tier 2 it is pid 1 of its namespace, which ignores SIGXCPU, so it runs on
/// to the hard limit a second later and is killed by SIGKILL, which bubblewrap reports as
/// status 137. Either way the result names the limit.
pub async fn t11_cpu_limit_ends_a_burner(sh: &Shell<'_>, tier: u8) {
    let out = sh
        .call(json!({
            "command": "bash -c 'while :; do :; done'; echo \"status=$?\"",
            "timeout_ms": 120_000,
        }))
        .await;
    let t = text(&out);
    // 152: 128 + SIGXCPU.
    assert!(
        t.contains("CPU time limit exceeded") && t.ends_with("status=152"),
        "{t}"
    );
    let out = sh
        .call(json!({"command": "echo burning; while :; do :; done", "timeout_ms": 120_000}))
        .await;
    let how = match tier {
        2 => "killed by signal 9, status 137 from the sandbox",
        _ => "killed by signal 24",
    };
    let expected = format!(
        "burning\n[the shell exited ({how}: the CPU time limit ({CPU_SECONDS} s) was reached); the next command starts a new shell"
    );
    let t = text(&out);
    assert!(out.is_error && t.starts_with(&expected), "{t}");
    assert_eq!(text(&sh.bash("echo after").await), "after");
    sh.fx.tools.shutdown().await;
}

/// T11 at tier 2 with a CPU limit ([`CPU_SECONDS`], set by the caller): a SIGKILL of the shell
/// that is not the limit (here from outside the sandbox, as an operator or the OOM killer would
/// send it) is said plainly, not as the CPU limit: the shell had used next to no CPU.
pub async fn t11_an_outside_kill_is_not_the_cpu_limit(sh: &Shell<'_>, tier: u8) {
    let marker = format!("77{tier}3.25");
    let call = sh.call(json!({
        "command": format!("echo started; sleep {marker}; echo not reached"),
        "timeout_ms": 60_000,
    }));
    let (out, ()) = tokio::join!(call, kill_the_shell_of(&marker));
    let t = text(&out);
    assert!(
        out.is_error
            && t.starts_with(
                "started\n[the shell exited (killed by signal 9, status 137 from the sandbox); the next command starts a new shell"
            ),
        "{t}"
    );
    assert!(!t.contains("CPU time limit"), "{t}");
    assert_eq!(alive_with_arg(&marker), Vec::<i32>::new());
    assert_eq!(text(&sh.bash("echo after").await), "after");
    sh.fx.tools.shutdown().await;
}

/// T11 at tier 2 with a CPU limit ([`CPU_SECONDS`], set by the caller): a child of the shell
/// (not the shell) ignores SIGXCPU and burns on to the hard limit, a second above, where
/// SIGKILL ends it (status 137), and then the shell is killed from outside. The child's CPU,
/// more than the limit, is in the shell's reaped-children counters, but the shell's own CPU
/// stayed low: the kill is said plainly, not as the limit.
pub async fn t11_a_child_burner_then_an_outside_kill_is_not_the_cpu_limit(
    sh: &Shell<'_>,
    tier: u8,
) {
    let marker = format!("77{tier}3.75");
    let call = sh.call(json!({
        "command": format!(
            "bash -c 'trap \"\" XCPU; while :; do :; done'; echo \"child=$?\"; sleep {marker}; echo not reached"
        ),
        "timeout_ms": 60_000,
    }));
    let (out, ()) = tokio::join!(call, kill_the_shell_of(&marker));
    let t = text(&out);
    assert!(
        out.is_error
            && t.contains(
                "\nchild=137\n[the shell exited (killed by signal 9, status 137 from the sandbox); the next command starts a new shell"
            ),
        "{t}"
    );
    assert!(!t.contains("the CPU time limit ("), "{t}");
    assert_eq!(alive_with_arg(&marker), Vec::<i32>::new());
    assert_eq!(text(&sh.bash("echo after").await), "after");
    sh.fx.tools.shutdown().await;
}

/// Kills by SIGKILL, from outside the sandbox, the parent (the session's shell) of the process
/// whose arguments hold `marker`, once that process runs.
async fn kill_the_shell_of(marker: &str) {
    for _ in 0..3000 {
        if let Some(&pid) = alive_with_arg(marker).first() {
            let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
            let shell = hands_sandbox::parse_stat(&stat).unwrap().ppid;
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(shell).unwrap(),
                rustix::process::Signal::KILL,
            )
            .unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the process {marker} never started");
}

/// T12 with the address-space limit [`HOG_LIMIT`] (set by the caller): a memory hog fails in the
/// tool with the program's own words, while the session's shell (its variables kept) and the
/// file tools go on.
pub async fn t12_memory_hog_fails_in_the_tool(sh: &Shell<'_>) {
    assert_eq!(
        text(&sh.bash("export T12_SHELL=kept; echo set").await),
        "set"
    );
    let hog = "/bin/bash -c 'x=$(head -c 400000000 /dev/zero | tr \"\\0\" a); echo survived'";
    let (out, _) = while_reading(sh.fx, sh.bash(hog)).await;
    let t = text(&out);
    assert!(out.is_error && t.contains("cannot allocate"), "{t}");
    assert!(!t.contains("survived"), "{t}");
    let out = sh.bash("python3 -c 'a = \" \" * 10**10'").await;
    let t = text(&out);
    assert!(out.is_error && t.contains("MemoryError"), "{t}");
    assert_eq!(text(&sh.bash("echo $T12_SHELL").await), "kept");
    sh.fx.tools.shutdown().await;
}

/// T13: binary, invalid UTF-8, NUL bytes, characters split across reads and cuts, ANSI escapes.
pub async fn t13_binary_output_never_panics(sh: &Shell<'_>) {
    let out = sh.bash("printf '\\xff\\xfe\\x00'").await;
    assert!(text(&out).ends_with(LOSSY_NOTE), "{out:?}");
    serde_json::to_string(&out).unwrap();
    let out = sh.bash("head -c 300000 /bin/bash").await;
    assert!(text(&out).starts_with(TRUNCATED_PREFIX) && text(&out).ends_with(LOSSY_NOTE));
    // 'é' is two bytes: 65,535 ASCII bytes first put one across the 64 KiB read boundary.
    let out = sh
        .bash("head -c 65535 /dev/zero | tr '\\0' a; printf 'éé'")
        .await;
    assert!(text(&out).ends_with("aéé"), "{}", &text(&out)[65530..]);
    // A cut of the tail never starts mid-character and never claims invalid UTF-8.
    let out = sh
        .bash("for i in $(seq 60000); do printf 'é'; done; printf '\\xe2\\x9c\\x93'")
        .await;
    let t = text(&out);
    assert!(t.starts_with("[output truncated]\né"), "{}", &t[..30]);
    assert!(!t.contains('\u{fffd}') && t.ends_with('✓'));
    // Colour escapes are stripped; a carriage return is kept as it is.
    let out = sh.bash("printf '\\033[31mred\\033[0m\\rover\\n'").await;
    assert_eq!(text(&out), "red\rover");
    sh.fx.tools.shutdown().await;
}

/// T14: exit codes and deaths by signal are errors that say which, never success.
pub async fn t14_exit_status_and_signals(sh: &Shell<'_>) {
    let out = sh.bash("(exit 255)").await;
    assert!(out.is_error);
    assert_eq!(text(&out), "exit 255");
    for (signal, words, status) in [("SEGV", "Segmentation fault", 139), ("KILL", "Killed", 137)] {
        let out = sh
            .bash(&format!(
                "bash -c 'kill -{signal} $$'; echo \"status=$?\"; (exit {status})"
            ))
            .await;
        let t = text(&out);
        assert!(
            out.is_error && t.contains(words) && t.ends_with(&format!("status={status}")),
            "{signal}: {t}"
        );
        // Killed as the last thing the command does, with nothing else printed.
        let out = sh.bash(&format!("bash -c 'kill -{signal} $$'")).await;
        assert!(
            out.is_error && text(&out).contains(words),
            "{signal}: {out:?}"
        );
    }
    sh.fx.tools.shutdown().await;
}

/// T14 where the shell itself can be killed from inside (tiers 0 and 1; at tier 2 it is pid 1 of
/// its namespace, which ignores signals it has no handler for): the result names the signal.
pub async fn t14_a_killed_shell_names_the_signal(sh: &Shell<'_>) {
    let out = sh.bash("echo before; kill -KILL $$").await;
    let t = text(&out);
    assert!(
        out.is_error
            && t.starts_with("before\n[the shell exited (killed by signal 9); the next command starts a new shell"),
        "{t}"
    );
    assert_eq!(text(&sh.bash("echo after").await), "after");
    sh.fx.tools.shutdown().await;
}

/// For T15: the tools' `PATH` is the worker's with the workspace first, so that a worker that
/// started a helper (the shell, bubblewrap, git) by name would find the one planted there: the
/// process that starts the shell resolves a bare name on the `PATH` it gives the child.
pub fn workspace_first_on_path(c: &mut hands_tools::ToolsetConfig) {
    let path = std::env::var("PATH").unwrap_or_default();
    c.env
        .set
        .push(("PATH".to_owned(), format!("{}:{path}", c.workdir.display())));
}

/// T15 (in a fixture configured with [`workspace_first_on_path`]): helpers planted in the
/// workspace and environment changes of earlier commands never reach the tools: grep is in
/// process, and a new shell (after `restart` or a timeout) is started by absolute path with the
/// configured environment.
pub async fn t15_helper_hijacking(sh: &Shell<'_>) {
    use std::os::unix::fs::PermissionsExt as _;
    let fx = sh.fx;
    for helper in ["rg", "grep", "bash", "sh", "git", "bwrap"] {
        fx.write(helper, "#!/bin/sh\ntouch \"$(dirname \"$0\")/pwned\"\n");
        std::fs::set_permissions(fx.path(helper), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The planted helpers are what a lookup by name finds: the row could not pass by luck.
    let found = sh.bash("command -v git bash").await;
    assert_eq!(
        text(&found),
        format!(
            "{}\n{}",
            fx.path("git").display(),
            fx.path("bash").display()
        )
    );
    fx.write("code.txt", "needle\n");
    let hijack = "export PATH=.:$PATH LD_PRELOAD=/nonexistent.so BASH_ENV=./sh; echo set";
    let clean = "echo \"$BASH|${LD_PRELOAD-unset}|${BASH_ENV-unset}\"; case :$PATH: in *:.:*) echo dot;; esac";
    assert_eq!(text(&sh.bash(hijack).await), "set");
    let out = fx
        .call("grep", json!({"pattern": "needle", "path": "code.txt"}))
        .await;
    assert!(text(&out).ends_with("/ws/code.txt:1:needle"), "{out:?}");
    let out = fx.call("bash", json!({"restart": true})).await;
    assert_eq!(text(&out), "bash session restarted");
    assert_eq!(text(&sh.bash(clean).await), "/bin/bash|unset|unset");
    // The shell a timeout restarts is as clean.
    assert_eq!(text(&sh.bash(hijack).await), "set");
    let out = sh
        .call(json!({"command": "sleep 30", "timeout_ms": 300}))
        .await;
    assert!(out.is_error, "{out:?}");
    assert_eq!(text(&sh.bash(clean).await), "/bin/bash|unset|unset");
    assert!(!exists(&fx.path("pwned")));
    sh.fx.tools.shutdown().await;
}
