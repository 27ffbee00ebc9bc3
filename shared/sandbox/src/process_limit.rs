//! The fork-bomb limit by default (`--limit-processes auto`): which mechanism can bound the
//! tasks of a tool process tree on this host, found once at start, and the `RLIMIT_NPROC`
//! value when that is the one.
//!
//! In order of preference:
//! 1. a pids cgroup per tool process tree ([`crate::PidsCgroup`]), when the worker can create
//!    one: it counts only that tree and works for every uid;
//! 2. else, for a worker that `RLIMIT_NPROC` binds, `RLIMIT_NPROC` set in each tool process
//!    (between `fork` and `exec`, like the other rlimits; the worker itself keeps its own limit). The
//!    kernel counts every task (process or thread) of the real uid against it, the worker's
//!    threads and every session's tools included, so the value is the uid's task count at start
//!    plus the per-tree count, and one session's fork bomb can make another session's forks
//!    fail until the call ends and the sweep kills it. It is kept below the worker's own
//!    `RLIMIT_NPROC` (the lower of its soft and hard limits) by [`WORKER_THREAD_RESERVE`]:
//!    Lambda gives the sandbox user a finite limit (1024), and tools that reached it would leave
//!    the worker unable to start a thread. The count comes from this pid namespace's `/proc`,
//!    but the kernel counts the uid's tasks in every container of the same user namespace (pods
//!    that all run as uid 1000), so the value is tried once at start ([`nproc_trial`]: a child
//!    under it forks once) and dropped, with a warning, when that fork is refused;
//! 3. else (root of the initial user namespace without a writable pids cgroup, as in most
//!    containers) nothing: the kernel exempts that root from `RLIMIT_NPROC`. Root inside a user
//!    namespace of its own (rootless podman, Kubernetes `hostUsers: false`) is not exempt, and
//!    takes 2.

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
    /// `RLIMIT_NPROC` in the tool processes of a worker the kernel does not exempt from it.
    Nproc {
        /// The worker's real uid.
        uid: u32,
        /// Tasks of that uid when the worker started (the worker's own threads included).
        uid_tasks: u64,
        /// The worker's own `RLIMIT_NPROC`, the lower of soft and hard (`None`: unlimited):
        /// its own threads are refused past the soft one.
        own: Option<u64>,
    },
    /// Nothing: why, in words for the log.
    Unavailable(String),
}

impl fmt::Display for ProcessLimitMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessLimitMechanism::Cgroup => {
                f.write_str("pids cgroup per tool process tree")?;
                match crate::cgroup::placement() {
                    Some(how) => write!(f, " ({how})"),
                    None => Ok(()),
                }
            }
            ProcessLimitMechanism::Nproc {
                uid,
                uid_tasks,
                own,
            } => {
                write!(
                    f,
                    "RLIMIT_NPROC in tool processes (uid {uid}: {uid_tasks} tasks at start, own limit "
                )?;
                match own {
                    Some(h) => write!(f, "{h})"),
                    None => f.write_str("unlimited)"),
                }
            }
            ProcessLimitMechanism::Unavailable(why) => write!(f, "none ({why})"),
        }
    }
}

/// The mechanism of this process, probed on the first call (a probe cgroup created and removed,
/// then gone workers' cgroups swept; or the uid's tasks counted) and the same ever after.
pub fn process_limit_mechanism() -> &'static ProcessLimitMechanism {
    static MECHANISM: OnceLock<ProcessLimitMechanism> = OnceLock::new();
    MECHANISM.get_or_init(probe)
}

fn probe() -> ProcessLimitMechanism {
    let cgroup = if std::env::var(TEST_MECHANISM_VAR).is_ok_and(|v| v == "nproc") {
        tracing::warn!("{TEST_MECHANISM_VAR}=nproc: the pids cgroup is not used (tests only)");
        Err(format!("skipped: {TEST_MECHANISM_VAR}=nproc"))
    } else {
        let probed = probe_cgroup();
        // Only where this worker can make cgroups can it remove others' (a uid that cannot
        // would only fail on each).
        if probed.is_ok() {
            sweep_orphans();
        }
        probed
    };
    let uid = rustix::process::getuid().as_raw();
    let exempt = uid == 0
        && std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| is_identity_map(&map));
    let own = getrlimit(Resource::Nproc);
    let own = match (own.current, own.maximum) {
        (Some(soft), Some(hard)) => Some(soft.min(hard)),
        (soft, hard) => soft.or(hard),
    };
    choose(cgroup, uid, exempt, || uid_task_count(uid), own)
}

/// Whether a `/proc/self/uid_map` maps every uid to itself: the initial user namespace, whose
/// root alone the kernel exempts from `RLIMIT_NPROC`. Root of any other namespace is counted.
fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    matches!(lines.as_slice(), [only] if only.as_slice() == ["0", "0", "4294967295"])
}

/// Removes the cgroups of workers that died without removing them, killing what still runs in
/// them (a crashed worker's fork bomb), once at start, and says so.
fn sweep_orphans() {
    let (removed, failed) = crate::cgroup::sweep_orphan_cgroups();
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "removed pids cgroups left by workers that are gone, with what ran in them"
        );
    }
    for (dir, why) in failed {
        tracing::warn!(cgroup = %dir.display(), "a pids cgroup left by a worker that is gone could not be removed: {why}");
    }
}

/// Whether a pids cgroup can be created (and removed) here, or why not.
fn probe_cgroup() -> Result<(), String> {
    // A random name: a leftover of an earlier worker with the same pid (pid 1 in every
    // container) would otherwise fail the probe with EEXIST. Dropping it removes it (empty).
    PidsCgroup::create(&format!("probe-{:016x}", random_tag()), 1)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// 64 random bits (the pid and the time as a fallback, which only makes a clash likelier).
pub(crate) fn random_tag() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_le_bytes(bytes),
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            (u64::from(std::process::id()) << 32) | u64::from(nanos)
        }
    }
}

/// The mechanism for a host where creating a pids cgroup gave `cgroup` and the worker runs as
/// `uid` (`exempt`: root of the initial user namespace, which `RLIMIT_NPROC` does not bind);
/// `uid_tasks` counts that uid's tasks (only called when needed).
fn choose(
    cgroup: Result<(), String>,
    uid: u32,
    exempt: bool,
    uid_tasks: impl FnOnce() -> std::io::Result<u64>,
    own: Option<u64>,
) -> ProcessLimitMechanism {
    let no_cgroup = match cgroup {
        Ok(()) => return ProcessLimitMechanism::Cgroup,
        Err(why) => why,
    };
    if exempt {
        return ProcessLimitMechanism::Unavailable(format!(
            "no pids cgroup ({no_cgroup}), and RLIMIT_NPROC does not apply to the initial user \
             namespace's root"
        ));
    }
    match uid_tasks() {
        Ok(uid_tasks) => ProcessLimitMechanism::Nproc {
            uid,
            uid_tasks,
            own,
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
    /// The worker's own limit (the lower of soft and hard).
    pub own: u64,
}

/// The `RLIMIT_NPROC` of tool processes that leaves room for `per_tree` tasks beyond the
/// `uid_tasks` the uid ran at start, or, when that would pass the worker's own limit less
/// [`WORKER_THREAD_RESERVE`], how much room there is.
pub(crate) fn nproc_value(
    uid_tasks: u64,
    per_tree: u64,
    own: Option<u64>,
) -> Result<u64, NprocCeiling> {
    let want = uid_tasks.saturating_add(per_tree);
    match own {
        None => Ok(want),
        Some(own) => {
            let ceiling = own.saturating_sub(WORKER_THREAD_RESERVE);
            if want <= ceiling {
                Ok(want)
            } else {
                Err(NprocCeiling {
                    room: ceiling.saturating_sub(uid_tasks),
                    own,
                })
            }
        }
    }
}

/// What the start-up trial of an `RLIMIT_NPROC` value found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NprocTrial {
    /// A child under the limit could start a process.
    Forks,
    /// It could not (EAGAIN): the uid already runs that many tasks, counting ones this pid
    /// namespace does not show.
    Refused,
    /// The trial itself could not be run (why).
    Failed(String),
}

/// Tries `nproc` once, before any tool gets it: a child of the worker sets it as its
/// `RLIMIT_NPROC` and forks once. The kernel counts the uid's tasks across every pid namespace
/// (containers sharing a user namespace and a uid), which the count from `/proc` misses; a
/// value already below the real count would make every fork of every tool fail. The result is
/// remembered per value: the decision is made once.
pub fn nproc_trial(nproc: u64) -> NprocTrial {
    static TRIED: std::sync::Mutex<Vec<(u64, NprocTrial)>> = std::sync::Mutex::new(Vec::new());
    let mut tried = TRIED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, seen)) = tried.iter().find(|(n, _)| *n == nproc) {
        return seen.clone();
    }
    let seen = fork_under(nproc);
    tried.push((nproc, seen.clone()));
    seen
}

/// Exit codes of the trial child.
const TRIAL_FORKED: i32 = 0;
const TRIAL_REFUSED: i32 = 11;
const TRIAL_NO_SETRLIMIT: i32 = 12;
const TRIAL_OTHER: i32 = 13;

fn fork_under(nproc: u64) -> NprocTrial {
    let limit = libc::rlimit {
        rlim_cur: nproc,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: the child calls only async-signal-safe functions (getrlimit, setrlimit, fork,
    // waitpid, _exit) on stack data before it exits; no allocation, no lock.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above, in the child.
        unsafe {
            let mut own = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let mut set = limit;
            if libc::getrlimit(libc::RLIMIT_NPROC, &mut own) == 0 {
                // The hard limit stays the worker's (it cannot be raised).
                set.rlim_max = own.rlim_max;
            }
            if libc::setrlimit(libc::RLIMIT_NPROC, &set) != 0 {
                libc::_exit(TRIAL_NO_SETRLIMIT);
            }
            let grandchild = libc::fork();
            if grandchild == 0 {
                libc::_exit(0);
            }
            if grandchild < 0 {
                // Reads errno; no allocation.
                let errno = std::io::Error::last_os_error().raw_os_error();
                libc::_exit(if errno == Some(libc::EAGAIN) {
                    TRIAL_REFUSED
                } else {
                    TRIAL_OTHER
                });
            }
            let mut status = 0;
            libc::waitpid(grandchild, &mut status, 0);
            libc::_exit(TRIAL_FORKED);
        }
    }
    if pid < 0 {
        return NprocTrial::Failed(format!(
            "the trial child could not be started: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above, whose pid is ours to reap.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid {
        return NprocTrial::Failed(format!(
            "the trial child could not be waited for: {}",
            std::io::Error::last_os_error()
        ));
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(TRIAL_FORKED) => NprocTrial::Forks,
        Some(TRIAL_REFUSED) => NprocTrial::Refused,
        Some(TRIAL_NO_SETRLIMIT) => {
            NprocTrial::Failed(format!("RLIMIT_NPROC {nproc} could not be set"))
        }
        _ => NprocTrial::Failed(format!(
            "the trial child's fork failed otherwise (wait status {status})"
        )),
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

/// Words that alone say a process or thread could not be started: dash's and perl's "Cannot
/// fork" / "Can't fork", node's "spawn EAGAIN", the JVM's "unable to create (new) native
/// thread", Python's "can't start new thread".
const REFUSED_START: &[&str] = &[
    "Cannot fork",
    "Can't fork",
    "spawn EAGAIN",
    "native thread",
    "can't start new thread",
];

/// Words that name a process or thread start, which say it was refused for lack of room only
/// next to EAGAIN's words ([`EAGAIN`]): bash's "fork: retry: Resource temporarily
/// unavailable", Python's `os.fork()` traceback, glibc's and Rust's thread errors. EAGAIN
/// alone is not enough: a `cat` of a log, apt's lock or a non-blocking read print it too.
const START_CONTEXT: &[&str] = &["fork:", "os.fork", "pthread_create", "failed to spawn"];

/// `strerror(EAGAIN)`, and the name.
const EAGAIN: &[&str] = &["Resource temporarily unavailable", "EAGAIN"];

/// With `RLIMIT_NPROC` (`nproc`) in force: the note for the output of a call that FAILED (the
/// caller checks) showing a refused process or thread start. There is no kernel counter of
/// forks refused by `RLIMIT_NPROC` (unlike a cgroup's `pids.events`), so this reads the
/// output: a program that reports the failure in other words (or not at all), or whose report
/// fell outside the kept part of a long output, gets no note.
pub fn nproc_note(nproc: u64, output: &str) -> Option<String> {
    let refused = REFUSED_START.iter().any(|w| output.contains(w))
        || (START_CONTEXT.iter().any(|w| output.contains(w))
            && EAGAIN.iter().any(|w| output.contains(w)));
    refused.then(|| {
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
            choose(Ok(()), 0, true, never, None),
            ProcessLimitMechanism::Cgroup
        );
        assert_eq!(
            choose(Ok(()), 1000, false, never, Some(10)),
            ProcessLimitMechanism::Cgroup
        );
        assert_eq!(
            choose(Err("read-only".into()), 1000, false, || Ok(12), Some(4096)),
            ProcessLimitMechanism::Nproc {
                uid: 1000,
                uid_tasks: 12,
                own: Some(4096)
            }
        );
        let root = choose(Err("read-only".into()), 0, true, never, None);
        assert!(
            matches!(&root, ProcessLimitMechanism::Unavailable(why)
                if why.contains("read-only") && why.contains("root")),
            "{root:?}"
        );
        // Root of a user namespace of its own: counted like any uid.
        assert_eq!(
            choose(Err("read-only".into()), 0, false, || Ok(5), None),
            ProcessLimitMechanism::Nproc {
                uid: 0,
                uid_tasks: 5,
                own: None
            }
        );
        let uncounted = choose(
            Err("none".into()),
            1000,
            false,
            || Err(std::io::Error::other("no /proc")),
            None,
        );
        assert!(
            matches!(&uncounted, ProcessLimitMechanism::Unavailable(why) if why.contains("no /proc")),
            "{uncounted:?}"
        );
    }

    // The start's isolation line says where the tool trees' cgroups go (and, on cgroup v2, that
    // the worker moved into a leaf to enable pids).
    #[test]
    fn the_cgroup_mechanism_says_where_its_cgroups_go() {
        let mechanism = process_limit_mechanism();
        if *mechanism != ProcessLimitMechanism::Cgroup {
            eprintln!("skipping: no pids cgroup here ({mechanism})");
            return;
        }
        let how = crate::cgroup::placement().unwrap();
        assert!(how.starts_with("in /"), "{how}");
        assert_eq!(
            mechanism.to_string(),
            format!("pids cgroup per tool process tree ({how})")
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
                own: 1024
            }
        );
        assert_eq!(
            nproc_value(20, lambda.room, Some(1024)),
            Ok(1024 - WORKER_THREAD_RESERVE)
        );
        // Already past the ceiling: no room at all.
        assert_eq!(
            nproc_value(200, 10, Some(256)),
            Err(NprocCeiling { room: 0, own: 256 })
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
    fn only_the_initial_namespaces_identity_map_is_exempt_root() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        // Rootless podman, Kubernetes hostUsers: false.
        assert!(!is_identity_map(
            "         0       1000          1\n         1     100000      65536\n"
        ));
        assert!(!is_identity_map("         0     100000      65536\n"));
        assert!(!is_identity_map(""));
    }

    #[test]
    fn the_trial_forks_under_a_roomy_limit_and_is_refused_under_a_full_one() {
        // Well above this uid's tasks: the child's fork goes through.
        let me = rustix::process::getuid().as_raw();
        let exempt = me == 0
            && std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_identity_map(&m));
        let own = getrlimit(Resource::Nproc).maximum;
        let roomy = uid_task_count(me).unwrap() + 4096;
        if own.is_none_or(|h| roomy <= h) {
            assert_eq!(fork_under(roomy), NprocTrial::Forks);
        }
        // 1: the uid runs at least the worker and the trial child already. Root of the initial
        // namespace is exempt, so its fork goes through.
        let full = fork_under(1);
        if exempt {
            assert_eq!(full, NprocTrial::Forks);
        } else {
            assert_eq!(full, NprocTrial::Refused);
        }
        // Remembered: the same answer without another child.
        assert_eq!(nproc_trial(1), nproc_trial(1));
    }

    #[test]
    fn the_nproc_note_reads_the_output_for_a_refused_start() {
        assert_eq!(nproc_note(1064, "ok\n"), None);
        // EAGAIN without a process start: a log line, a non-blocking read, apt's lock.
        for output in [
            "BlockingIOError: [Errno 11] Resource temporarily unavailable",
            "E: Could not get lock /var/lib/dpkg/lock - open (11: Resource temporarily unavailable)",
            "read: EAGAIN",
        ] {
            assert_eq!(nproc_note(1064, output), None, "{output}");
        }
        for output in [
            "bash: fork: retry: Resource temporarily unavailable",
            "sh: 1: Cannot fork",
            "    pid = os.fork()\nBlockingIOError: [Errno 11] Resource temporarily unavailable",
            "Error: spawn EAGAIN",
            "pthread_create failed: Resource temporarily unavailable",
            "java.lang.OutOfMemoryError: unable to create native thread: possibly out of memory",
            "RuntimeError: can't start new thread",
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
                own: None
            }
            .to_string(),
            "RLIMIT_NPROC in tool processes (uid 993: 7 tasks at start, own limit unlimited)"
        );
        assert_eq!(
            ProcessLimitMechanism::Unavailable("why".into()).to_string(),
            "none (why)"
        );
    }
}
