//! The fork-bomb limit by default (`--limit-processes auto`): which mechanism can bound the
//! tasks of a tool process tree on this host, found once at start, and the `RLIMIT_NPROC`
//! value when that is the one.
//!
//! In order of preference:
//! 1. a pids cgroup per tool process tree ([`crate::PidsCgroup`]), when the worker can create
//!    one: it counts only that tree and works for every uid;
//! 2. else, for a worker that is not root, `RLIMIT_NPROC` set in each tool process (between
//!    `fork` and `exec`, like the other rlimits; the worker itself keeps its own limit). The
//!    kernel counts every task (process or thread) of the real uid against it, the worker's
//!    threads and every session's tools included, so the value is the uid's task count at start
//!    plus the per-tree count, and one session's fork bomb can make another session's forks
//!    fail until the call ends and the sweep kills it. It is kept below the worker's own hard
//!    `RLIMIT_NPROC` by [`WORKER_THREAD_RESERVE`]: Lambda gives the sandbox user a finite limit
//!    (1024), and tools that reached it would leave the worker unable to start a thread;
//! 3. else (root without a writable pids cgroup, as in most containers) nothing: the kernel
//!    exempts the initial user namespace's root from `RLIMIT_NPROC`.

use std::fmt;
use std::sync::OnceLock;

use rustix::process::{Resource, getrlimit};

use crate::cgroup::PidsCgroup;

/// Tasks (processes and threads: `pids.max` and `RLIMIT_NPROC` both count threads) one tool
/// process tree may hold at once by default. Builds (`make -j`, cargo, with their compilers'
/// threads), a JVM (tens of threads each) or node (a thread pool per process) use a few hundred
/// at most; a fork bomb reaches any figure in milliseconds, so the figure only has to stay well
/// above real work and low enough that 1024 idle tasks cost the host little. It is also the
/// ceiling Lambda puts on a whole execution environment (1024 processes and threads), so the
/// same tools behave the same there and elsewhere.
pub const DEFAULT_PROCESSES: u64 = 1024;

/// Tasks kept free below the worker's own hard `RLIMIT_NPROC` for the worker itself when tools
/// are bounded by `RLIMIT_NPROC`: its runtime's blocking threads (one per file-tool call or
/// sweep in flight), the relay and clean-up threads, and the tool processes it forks (each
/// counts before its limit is set). More than one worker's peak of concurrent sessions needs,
/// and a small part of Lambda's 1024.
pub const WORKER_THREAD_RESERVE: u64 = 128;

/// Test knob: `nproc` skips the pids cgroup, so the `RLIMIT_NPROC` path (or, for root, none)
/// is chosen on a host that has a cgroup. Only the tests of the `RLIMIT_NPROC` path set it; it
/// can only choose a weaker mechanism, and its use is logged.
pub const TEST_MECHANISM_VAR: &str = "HANDS_TEST_PROCESS_LIMIT";

/// What can bound a tool process tree's tasks on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessLimitMechanism {
    /// A pids cgroup per tool process tree.
    Cgroup,
    /// `RLIMIT_NPROC` in the tool processes of a worker that is not root.
    Nproc {
        /// The worker's real uid.
        uid: u32,
        /// Tasks of that uid when the worker started (the worker's own threads included).
        uid_tasks: u64,
        /// The worker's own hard `RLIMIT_NPROC` (`None`: unlimited).
        hard: Option<u64>,
    },
    /// Nothing: why, in words for the log.
    Unavailable(String),
}

impl fmt::Display for ProcessLimitMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessLimitMechanism::Cgroup => f.write_str("pids cgroup per tool process tree"),
            ProcessLimitMechanism::Nproc {
                uid,
                uid_tasks,
                hard,
            } => {
                write!(
                    f,
                    "RLIMIT_NPROC in tool processes (uid {uid}: {uid_tasks} tasks at start, hard limit "
                )?;
                match hard {
                    Some(h) => write!(f, "{h})"),
                    None => f.write_str("unlimited)"),
                }
            }
            ProcessLimitMechanism::Unavailable(why) => write!(f, "none ({why})"),
        }
    }
}

/// The mechanism of this process, probed on the first call (a probe cgroup created and removed,
/// the uid's tasks counted) and the same ever after.
pub fn process_limit_mechanism() -> &'static ProcessLimitMechanism {
    static MECHANISM: OnceLock<ProcessLimitMechanism> = OnceLock::new();
    MECHANISM.get_or_init(probe)
}

fn probe() -> ProcessLimitMechanism {
    let cgroup = if std::env::var(TEST_MECHANISM_VAR).is_ok_and(|v| v == "nproc") {
        tracing::warn!("{TEST_MECHANISM_VAR}=nproc: the pids cgroup is not used (tests only)");
        Err(format!("skipped: {TEST_MECHANISM_VAR}=nproc"))
    } else {
        probe_cgroup()
    };
    let uid = rustix::process::getuid().as_raw();
    choose(
        cgroup,
        uid,
        || uid_task_count(uid),
        getrlimit(Resource::Nproc).maximum,
    )
}

/// Whether a pids cgroup can be created (and removed) here, or why not.
fn probe_cgroup() -> Result<(), String> {
    // Dropping it removes it (it is empty).
    PidsCgroup::create(&format!("probe-{}", std::process::id()), 1)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The mechanism for a host where creating a pids cgroup gave `cgroup` and the worker runs as
/// `uid`; `uid_tasks` counts that uid's tasks (only called when needed).
fn choose(
    cgroup: Result<(), String>,
    uid: u32,
    uid_tasks: impl FnOnce() -> std::io::Result<u64>,
    hard: Option<u64>,
) -> ProcessLimitMechanism {
    let no_cgroup = match cgroup {
        Ok(()) => return ProcessLimitMechanism::Cgroup,
        Err(why) => why,
    };
    if uid == 0 {
        return ProcessLimitMechanism::Unavailable(format!(
            "no pids cgroup ({no_cgroup}), and RLIMIT_NPROC does not apply to root"
        ));
    }
    match uid_tasks() {
        Ok(uid_tasks) => ProcessLimitMechanism::Nproc {
            uid,
            uid_tasks,
            hard,
        },
        Err(e) => ProcessLimitMechanism::Unavailable(format!(
            "no pids cgroup ({no_cgroup}), and the tasks of uid {uid} could not be counted for \
             RLIMIT_NPROC: {e}"
        )),
    }
}

/// Why an `RLIMIT_NPROC` for tools cannot hold `per_tree` more tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NprocCeiling {
    /// The most tasks tools could be given beyond the uid's current ones (0: none at all).
    pub room: u64,
    /// The worker's own hard limit.
    pub hard: u64,
}

/// The `RLIMIT_NPROC` of tool processes that leaves room for `per_tree` tasks beyond the
/// `uid_tasks` the uid ran at start, or, when that would pass the worker's own hard limit less
/// [`WORKER_THREAD_RESERVE`], how much room there is.
pub(crate) fn nproc_value(
    uid_tasks: u64,
    per_tree: u64,
    hard: Option<u64>,
) -> Result<u64, NprocCeiling> {
    let want = uid_tasks.saturating_add(per_tree);
    match hard {
        None => Ok(want),
        Some(hard) => {
            let ceiling = hard.saturating_sub(WORKER_THREAD_RESERVE);
            if want <= ceiling {
                Ok(want)
            } else {
                Err(NprocCeiling {
                    room: ceiling.saturating_sub(uid_tasks),
                    hard,
                })
            }
        }
    }
}

/// Tasks (threads included) whose real uid is `uid`, as `RLIMIT_NPROC` counts them (as far as
/// this pid namespace's `/proc` shows them).
pub fn uid_task_count(uid: u32) -> std::io::Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // A process may end while we read: skip it.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(threads) = threads_of(&status, uid) {
            total += threads;
        }
    }
    Ok(total)
}

/// The `Threads:` of a `/proc/<pid>/status` whose real uid is `uid`.
fn threads_of(status: &str, uid: u32) -> Option<u64> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    (field("Uid:")? == u64::from(uid))
        .then(|| field("Threads:"))
        .flatten()
}

/// Words in a tool's output that say a process or thread could not be started for lack of
/// room (EAGAIN from `fork`, `clone` or `pthread_create`): `strerror(EAGAIN)` as bash ("fork:
/// retry: Resource temporarily unavailable"), coreutils, Python and Rust print it; node's
/// "spawn EAGAIN"; the JVM's "unable to create native thread".
const REFUSED_START: &[&str] = &[
    "Resource temporarily unavailable",
    "spawn EAGAIN",
    "unable to create native thread",
    "unable to create new native thread",
];

/// With `RLIMIT_NPROC` (`nproc`) in force: the note for an output that shows a refused process
/// start. There is no kernel counter of forks refused by `RLIMIT_NPROC` (unlike a cgroup's
/// `pids.events`), so this reads the output: a program that reports the failure in other words
/// (or not at all), or whose report fell outside the kept part of a long output, gets no note,
/// and EAGAIN of another cause (a non-blocking read, a full lock table) worded the same gets
/// one.
pub fn nproc_note(nproc: u64, output: &str) -> Option<String> {
    REFUSED_START.iter().any(|w| output.contains(w)).then(|| {
        format!(
            "[resource limit: a process could not be started, most likely because this worker's \
             user reached its limit of {nproc} processes and threads (RLIMIT_NPROC), which counts \
             every session's tools and the worker itself; what this command left running is \
             killed when the call ends]"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_wins_then_nproc_for_non_root_then_nothing() {
        let never = || -> std::io::Result<u64> { panic!("counted without need") };
        assert_eq!(
            choose(Ok(()), 0, never, None),
            ProcessLimitMechanism::Cgroup
        );
        assert_eq!(
            choose(Ok(()), 1000, never, Some(10)),
            ProcessLimitMechanism::Cgroup
        );
        assert_eq!(
            choose(Err("read-only".into()), 1000, || Ok(12), Some(4096)),
            ProcessLimitMechanism::Nproc {
                uid: 1000,
                uid_tasks: 12,
                hard: Some(4096)
            }
        );
        let root = choose(Err("read-only".into()), 0, never, None);
        assert!(
            matches!(&root, ProcessLimitMechanism::Unavailable(why)
                if why.contains("read-only") && why.contains("root")),
            "{root:?}"
        );
        let uncounted = choose(
            Err("none".into()),
            1000,
            || Err(std::io::Error::other("no /proc")),
            None,
        );
        assert!(
            matches!(&uncounted, ProcessLimitMechanism::Unavailable(why) if why.contains("no /proc")),
            "{uncounted:?}"
        );
    }

    #[test]
    fn the_nproc_value_adds_the_tree_and_keeps_the_reserve_below_the_hard_limit() {
        assert_eq!(nproc_value(40, DEFAULT_PROCESSES, None), Ok(1064));
        assert_eq!(nproc_value(40, 1024, Some(100_000)), Ok(1064));
        // Lambda: 1024 for the whole sandbox user.
        let lambda = nproc_value(20, 1024, Some(1024)).unwrap_err();
        assert_eq!(
            lambda,
            NprocCeiling {
                room: 1024 - WORKER_THREAD_RESERVE - 20,
                hard: 1024
            }
        );
        assert_eq!(
            nproc_value(20, lambda.room, Some(1024)),
            Ok(1024 - WORKER_THREAD_RESERVE)
        );
        // Already past the ceiling: no room at all.
        assert_eq!(
            nproc_value(200, 10, Some(256)),
            Err(NprocCeiling { room: 0, hard: 256 })
        );
    }

    #[test]
    fn status_files_are_counted_by_real_uid_and_threads() {
        let status =
            "Name:\tjava\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\nThreads:\t37\n";
        assert_eq!(threads_of(status, 1000), Some(37));
        assert_eq!(threads_of(status, 0), None);
        assert_eq!(threads_of("Name:\tx\n", 1000), None);
        // This process: at least this thread.
        let me = rustix::process::getuid().as_raw();
        assert!(uid_task_count(me).unwrap() >= 1);
    }

    #[test]
    fn the_nproc_note_reads_the_output_for_a_refused_start() {
        assert_eq!(nproc_note(1064, "ok\n"), None);
        for output in [
            "bash: fork: retry: Resource temporarily unavailable",
            "BlockingIOError: [Errno 11] Resource temporarily unavailable",
            "Error: spawn EAGAIN",
            "java.lang.OutOfMemoryError: unable to create native thread: possibly out of memory",
        ] {
            let note = nproc_note(1064, output).unwrap();
            assert!(
                note.starts_with("[resource limit: a process could not be started")
                    && note.contains("1064 processes and threads (RLIMIT_NPROC)"),
                "{note}"
            );
        }
    }

    #[test]
    fn the_mechanism_reads_as_one_phrase() {
        assert_eq!(
            ProcessLimitMechanism::Nproc {
                uid: 993,
                uid_tasks: 7,
                hard: None
            }
            .to_string(),
            "RLIMIT_NPROC in tool processes (uid 993: 7 tasks at start, hard limit unlimited)"
        );
        assert_eq!(
            ProcessLimitMechanism::Unavailable("why".into()).to_string(),
            "none (why)"
        );
    }
}
