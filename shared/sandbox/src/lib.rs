//! Process spawning and isolation for tool execution (DESIGN.md, "Isolation tiers": tier 0
//! always, tier 1 with Landlock and seccomp or tier 2 with bubblewrap when the host allows it;
//! [`HostProbe`] says which).
//!
//! What this crate is for: starting the one long-lived process a session's `bash` tool talks to,
//! with a cleared environment plus an allow-list, its own session and process group, stdin and
//! output under our control and resource limits applied before `exec` (and, with the same
//! isolation, one-shot processes such as operators' custom tools); killing that process tree
//! as a group; sweeping away every descendant a tool call left behind (including those that left
//! the process group with `setsid`); and hardening the worker process itself so a same-uid tool
//! cannot read its memory or `/proc/<pid>/environ`.
//!
//! What it must never do:
//! - hand a child any variable it was not explicitly allowed to see (credentials live in the
//!   worker's environment; CATALOGUE T1, pitfall 5);
//! - wait for a pipe to close to decide that a command finished (a background grandchild can keep
//!   it open forever; pitfall 4);
//! - signal a process it cannot tie to the shell it spawned (the machine is shared with other
//!   work of the same uid);
//! - panic on anything read from `/proc`, which tool code controls in part.

mod bwrap;
mod cgroup;
mod cgroup_leaf;
mod env;
mod error;
mod fs_rules;
mod hardening;
pub mod helper;
mod kill;
mod limits;
mod oneshot;
mod open_files;
mod probe;
pub mod process_limit;
mod proxy_route;
mod relay;
mod remove_tree;
mod spawn;
mod sweep;
mod syscall_filter;
mod tier1;

pub use bwrap::{Binds, BwrapSandbox, DEFAULT_HIDDEN, SocketBind, Tier2Options};
pub use cgroup::PidsCgroup;
pub use env::{DEFAULT_ALLOW, DEFAULT_DENY, EnvPolicy};
pub use error::SandboxError;
pub use hardening::{harden_worker_process, is_dumpable};
pub use kill::{kill_group, pid_is_alive, stop_group};
pub use limits::{DEFAULT_FILE_SIZE_BYTES, DEFAULT_OPEN_FILES, LimitSetting, LimitSettings};
pub use oneshot::{OneShotProcess, OneShotSpec, spawn_oneshot};
pub use open_files::{OpenFilesLimit, raise_open_files_limit};
pub use probe::{
    BWRAP_DIRS, HostProbe, IsolationError, IsolationMode, Selection, Tier, Trial, find_bwrap,
    landlock_abi,
};
pub use process_limit::{
    DEFAULT_PROCESSES, NprocTrial, ProcessLimitMechanism, nproc_note, nproc_trial,
    process_limit_mechanism, uid_task_count,
};
pub use proxy_route::{ProxyRoute, Routed, route_to_proxy};
pub use relay::{EgressBridge, EgressRelay, MAX_CONNECTIONS as MAX_EGRESS_CONNECTIONS};
pub use remove_tree::{empty_dir, open_dir_for_emptying, open_dir_path, remove_tree};
pub use spawn::{Isolation, Rlimits, ShellProcess, ShellSpec, spawn_shell};
pub use sweep::{
    ProcStat, ProcessTag, SweepScope, has_descendants, parse_stat, sandbox_root, sweep,
};
pub use tier1::{
    HELPER_ERROR_PREFIX, HELPER_EXIT_CODE, MIN_LANDLOCK_ABI, NET_LANDLOCK_ABI, TIER1_MARKER,
    Tier1Options, Tier1Sandbox,
};

// The unit tests' harness is the tier-1 helper of the tests that spawn through it.
#[cfg(test)]
helper_dispatch_for_tests!();
