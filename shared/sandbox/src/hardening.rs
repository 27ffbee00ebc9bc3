//! Hardening of the worker process itself.
//!
//! Tool processes run as the worker's uid at tier 0. Without this, any of them can read
//! `/proc/<worker>/environ` (which keeps the environment the worker was started with even after
//! `remove_var`), `/proc/<worker>/mem`, or attach with ptrace, and so read every key the worker
//! holds (CATALOGUE pitfall 5, T2). A non-dumpable process is owned by root for the purpose of
//! those checks, so a same-uid process gets `EACCES`.

use rustix::process::{DumpableBehavior, Resource, Rlimit};

use crate::SandboxError;

/// Marks the calling process non-dumpable and disables its core dumps. Call it first thing in
/// `main`, before any secret is read. Both settings survive in threads started later; they are
/// reset by `execve` of a set-uid binary only, which the worker never does.
pub fn harden_worker_process() -> Result<(), SandboxError> {
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| SandboxError::Hardening(e.into()))?;
    // A core file would be a plain copy of the worker's memory, keys included, in the cwd. 1
    // byte, not 0: no core file is that small, and a `core_pattern` that pipes cores to a helper
    // (systemd-coredump, apport; with `fs.suid_dumpable = 2` even a non-dumpable process's)
    // ignores any other value, while 1 makes the kernel refuse the dump before starting the
    // helper (see `Rlimits::core_bytes`). Tool processes inherit this hard limit and set 1 too.
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(1),
            maximum: Some(1),
        },
    )
    .map_err(|e| SandboxError::Hardening(e.into()))?;
    Ok(())
}

/// Whether the calling process is currently dumpable (`false` after [`harden_worker_process`]).
pub fn is_dumpable() -> bool {
    !matches!(
        rustix::process::dumpable_behavior(),
        Ok(DumpableBehavior::NotDumpable)
    )
}

/// Capabilities that let a process read another process's memory or environment even when that
/// process is non-dumpable: `CAP_SYS_PTRACE` (ptrace, `/proc/<pid>/{environ,mem,fd}`),
/// `CAP_SYS_ADMIN`, `CAP_BPF` and `CAP_PERFMON` (BPF and perf probes read arbitrary memory),
/// `CAP_SYS_RAWIO` (`/dev/mem`), `CAP_SYS_MODULE` (kernel code). A worker running as root (many
/// containers) would otherwise hand all of them to the shell: `PR_SET_DUMPABLE=0` alone does not
/// stop a root child holding `CAP_SYS_PTRACE` (checked on this project's machines).
pub(crate) const MEMORY_READING_CAPS: [u32; 6] = [19, 21, 39, 38, 17, 16];

/// The capabilities of [`MEMORY_READING_CAPS`] that a child would get at `exec` and must lose:
/// for uid 0 everything in our bounding set (root regains its bounding set at `exec`), for any
/// other uid whatever we hold effectively. Read before `fork`, from `/proc/self/status`.
pub(crate) fn capabilities_to_drop() -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // Without the information, try to drop them all; failures are checked in the child.
        return MEMORY_READING_CAPS.to_vec();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let mask = if rustix::process::getuid().is_root() {
        field("CapBnd:")
    } else {
        field("CapEff:") | field("CapAmb:")
    };
    MEMORY_READING_CAPS
        .into_iter()
        .filter(|&c| mask & (1u64 << c) != 0)
        .collect()
}
