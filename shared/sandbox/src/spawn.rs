//! Starting the session shell: cleared environment, own session and process group, stdin a
//! pipe we write commands to, stdout and stderr one pipe we read, limits set before `exec`.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;

use rustix::pipe::PipeFlags;
use rustix::process::{Resource, Rlimit};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};

use crate::SandboxError;
use crate::bwrap::{Binds, BwrapSandbox};
use crate::cgroup::PidsCgroup;
use crate::probe::Tier;
use crate::relay::{EgressRelay, PendingBridge};
use crate::sweep::{ProcessTag, SweepScope, start_time};
use crate::tier1::Tier1Sandbox;

/// How far a tool process is confined beyond tier 0 (which always applies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Tier 0 only.
    #[default]
    Tier0,
    /// Tier 1: Landlock and seccomp, applied by the helper that then execs the program.
    Landlock(Tier1Sandbox),
    /// Tier 2: inside bubblewrap.
    Bwrap(BwrapSandbox),
}

impl Isolation {
    pub fn tier(&self) -> Tier {
        match self {
            Isolation::Tier0 => Tier::None,
            Isolation::Landlock(_) => Tier::Landlock,
            Isolation::Bwrap(_) => Tier::Bwrap,
        }
    }
}

/// The command that starts `program args` in `cwd` with exactly `env` under `isolation`, and
/// whether the process it starts is a wrapper whose child is the program (see
/// [`SweepScope::wrapped`]). The workspace (`cwd`) is always bound read-write; `binds` adds
/// the other roots the toolset reaches.
pub(crate) fn isolated_command(
    program: &std::path::Path,
    args: &[OsString],
    cwd: &std::path::Path,
    env: &[(OsString, OsString)],
    isolation: &Isolation,
    binds: &Binds,
) -> (Command, bool) {
    match isolation {
        Isolation::Tier0 => {
            let mut cmd = Command::new(program);
            cmd.args(args)
                .current_dir(cwd)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)));
            (cmd, false)
        }
        Isolation::Landlock(sandbox) => {
            // The helper execs the program in place: the process started is the program.
            let mut cmd = Command::new(&sandbox.helper);
            cmd.args(sandbox.args(&with_workspace(binds, cwd), program, args))
                .current_dir(cwd)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)));
            (cmd, false)
        }
        Isolation::Bwrap(sandbox) => {
            let all = with_workspace(binds, cwd);
            let mut cmd = Command::new(&sandbox.program);
            cmd.args(sandbox.args(&all, env, cwd, program, args))
                .current_dir(cwd)
                // bwrap itself needs nothing from the environment; the sandbox gets `env`
                // through `--clearenv` and `--setenv`.
                .env_clear();
            (cmd, true)
        }
    }
}

/// `binds` with the workspace (`cwd`) first among the writable roots.
fn with_workspace(binds: &Binds, cwd: &std::path::Path) -> Binds {
    let mut all = Binds {
        read_write: vec![cwd.to_path_buf()],
        read_only: binds.read_only.clone(),
    };
    all.read_write.extend(
        binds
            .read_write
            .iter()
            .filter(|p| p.as_path() != cwd)
            .cloned(),
    );
    all
}

/// Resource limits applied in the child between `fork` and `exec`. `None` leaves the limit
/// inherited from the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlimits {
    /// `RLIMIT_CORE`: a crashing tool must not write a core file into the workspace (and a
    /// core of a tool is no secret, but the disk is the user's). Default 1, not 0: a host whose
    /// `core_pattern` pipes cores to a helper (systemd-coredump, apport) ignores the limit and
    /// starts the helper for every SIGSEGV or SIGXCPU of a tool (core(5): "RLIMIT_CORE is not
    /// enforced for core dumps that are piped to a program"), except for the value 1, which
    /// the kernel reserves to stop a crashing helper's recursion and answers with "RLIMIT_CORE
    /// is set to 1, aborting core" before starting anything (fs/coredump.c). A core file is
    /// still never written, since 1 byte is below the smallest core (a page). Lowered to the
    /// inherited hard limit when that is lower (0 in some containers), which a process cannot
    /// raise.
    pub core_bytes: Option<u64>,
    /// `RLIMIT_NPROC`, which is uid-wide: bounds a fork bomb (T5) where no pids cgroup can
    /// (see [`crate::process_limit`]). It counts every task of the uid, threads and other
    /// sessions' tools included, and the initial user namespace's root ignores it; set only for
    /// a worker it binds, to the uid's tasks at start plus the per-tree count.
    pub nproc: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: Option<u64>,
    /// `RLIMIT_AS`: bounds a memory hog (T12) per process.
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_FSIZE`: bounds a single file written by a tool (T6).
    pub file_size_bytes: Option<u64>,
    /// `RLIMIT_CPU`: CPU seconds of each process (T11); the wall-clock timeout stays the
    /// outer bound. This is the soft limit, and the hard one is a second above it: at the soft
    /// limit the kernel sends SIGXCPU, which ends the process with the words "CPU time limit
    /// exceeded"; at the hard one SIGKILL, for a process that ignores SIGXCPU. (With both
    /// equal the kernel sends SIGKILL first, and the result reads only "Killed".)
    pub cpu_seconds: Option<u64>,
    /// Tasks the whole tree may hold at once, through a pids cgroup (T5): unlike
    /// `RLIMIT_NPROC` it works for root and counts only this tree. Setting it on a host
    /// without a writable pids cgroup makes the spawn fail (see [`crate::PidsCgroup`]).
    pub max_pids: Option<u64>,
}

impl Default for Rlimits {
    fn default() -> Self {
        Rlimits {
            core_bytes: Some(1),
            nproc: None,
            max_open_files: None,
            address_space_bytes: None,
            file_size_bytes: None,
            cpu_seconds: None,
            max_pids: None,
        }
    }
}

impl Rlimits {
    /// The pids cgroup `max_pids` asks for, created and named after `tag`.
    pub(crate) fn pids_cgroup(&self, tag: &ProcessTag) -> std::io::Result<Option<PidsCgroup>> {
        self.max_pids
            .map(|max| {
                PidsCgroup::create(tag.value(), max)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("process limit {max}: {e}")))
            })
            .transpose()
    }

    /// With `RLIMIT_NPROC` in force, the note for the `output` of a failed call that shows a
    /// refused process start (a heuristic: see [`crate::nproc_note`]; the caller checks that
    /// the call failed). The pids cgroup's own note is [`PidsCgroup::limit_note`].
    pub fn nproc_note(&self, output: &str) -> Option<String> {
        self.nproc
            .and_then(|n| crate::process_limit::nproc_note(n, output))
    }

    /// The limits to set: resource, soft limit, hard limit.
    pub(crate) fn pairs(&self) -> Vec<(Resource, u64, u64)> {
        self.pairs_under(rustix::process::getrlimit(Resource::Core).maximum)
    }

    /// [`Self::pairs`] with the inherited hard limit of core files given (`None` = unlimited).
    fn pairs_under(&self, core_hard: Option<u64>) -> Vec<(Resource, u64, u64)> {
        let cpu = [(
            Resource::Cpu,
            self.cpu_seconds.map(|s| (s, s.saturating_add(1))),
        )];
        // Never above the inherited hard limit (a worker or container may have made it 0):
        // raising it would fail every spawn, and any value this low writes no core file.
        let core = self.core_bytes.map(|c| core_hard.map_or(c, |h| c.min(h)));
        [
            (Resource::Core, core),
            (Resource::Nproc, self.nproc),
            (Resource::Nofile, self.max_open_files),
            (Resource::As, self.address_space_bytes),
            (Resource::Fsize, self.file_size_bytes),
        ]
        .into_iter()
        .map(|(r, v)| (r, v.map(|v| (v, v))))
        .chain(cpu)
        .filter_map(|(r, v)| v.map(|(soft, hard)| (r, soft, hard)))
        .collect()
    }
}

/// How to start the shell.
#[derive(Clone, Debug)]
pub struct ShellSpec {
    /// An absolute path, never looked up on `PATH` (a tool could plant `./bash`; T15).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The complete environment (see [`crate::EnvPolicy::build`]); the sweep tag is added.
    pub env: Vec<(OsString, OsString)>,
    pub rlimits: Rlimits,
    /// Tier 0, or a stronger tier to start the shell in.
    pub isolation: Isolation,
    /// Roots besides `cwd` the shell must reach (tier 2 binds them; tier 0 ignores this).
    pub binds: Binds,
}

/// A running shell and the handles to talk to it.
#[derive(Debug)]
pub struct ShellProcess {
    /// The shell. `kill_on_drop` is set, as a backstop: owners kill the whole tree explicitly.
    pub child: Child,
    /// Where commands are written.
    pub stdin: ChildStdin,
    /// The shell's stdout and stderr, one pipe, so the order of the two streams is kept.
    pub output: pipe::Receiver,
    /// What the descendant sweep needs to find everything this shell starts.
    pub scope: SweepScope,
    /// The pids cgroup holding the tree, when `max_pids` was set.
    pub pids: Option<PidsCgroup>,
    /// Tier 2 with an egress proxy: the relay into the sandbox, which lives as long as this.
    pub egress_relay: Option<EgressRelay>,
}

/// Runs in the forked child: removes `caps` from the bounding set and clears the ambient set,
/// so the shell (and anything it execs, set-uid programs included) can never hold them. Failing
/// to drop one we would otherwise pass on fails the spawn: fail closed.
pub(crate) fn drop_capabilities(caps: &[u32]) -> std::io::Result<()> {
    // SAFETY: `prctl` with integer arguments only; no memory is passed to the kernel.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if cleared != 0 {
        let err = std::io::Error::last_os_error();
        // EINVAL: a kernel without ambient capabilities, so there is nothing to clear.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    for &cap in caps {
        // SAFETY: as above, integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs in the forked child: marks it a child subreaper, an attribute kept across `exec`.
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: `prctl` with integer arguments only; no memory is passed to the kernel.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the shell described by `spec`. Must be called within a tokio runtime. Async because
/// of the tier-2 relay, whose set-up waits for bubblewrap (off the runtime's threads).
pub async fn spawn_shell(spec: &ShellSpec) -> Result<ShellProcess, SandboxError> {
    let program = spec.program.display().to_string();
    let tag = ProcessTag::random().map_err(|e| SandboxError::Spawn {
        program: program.clone(),
        source: e,
    })?;
    let (read_end, write_end) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| SandboxError::Pipe(e.into()))?;
    let write_dup: OwnedFd = write_end.try_clone().map_err(SandboxError::Pipe)?;
    let limits = spec.rlimits.pairs();
    let drop_caps = crate::hardening::capabilities_to_drop();
    let pids = spec
        .rlimits
        .pids_cgroup(&tag)
        .map_err(|e| SandboxError::Spawn {
            program: program.clone(),
            source: e,
        })?;
    let pids_fd = pids.as_ref().map(PidsCgroup::procs_fd);

    let mut env = spec.env.clone();
    env.push(tag.env_pair());
    let bridge = PendingBridge::prepare(&spec.isolation).map_err(SandboxError::Pipe)?;
    let (mut cmd, wrapped) = isolated_command(
        &spec.program,
        &spec.args,
        &spec.cwd,
        &env,
        bridge
            .as_ref()
            .map_or(&spec.isolation, PendingBridge::isolation),
        &spec.binds,
    );
    if let Some(bridge) = &bridge {
        bridge.pass_fds(&mut cmd);
    }
    cmd.envs([tag.env_pair()])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_dup))
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called. It makes plain system calls only (`write`, `setsid`,
    // `setrlimit`, `prctl`): no allocation, no locks. `limits`, `drop_caps` and `pids_fd` were
    // built before the fork and are only read; the cgroup file stays open in the parent until
    // the spawn returned.
    unsafe {
        cmd.pre_exec(move || {
            // Into the pids cgroup first, so everything started from here on is counted.
            if let Some(fd) = pids_fd {
                crate::cgroup::join(fd)?;
            }
            // Own session, hence own process group with the shell as leader: the group can be
            // killed as a unit, and the sweep recognises descendants by session id.
            rustix::process::setsid().map_err(std::io::Error::from)?;
            for &(resource, soft, hard) in &limits {
                rustix::process::setrlimit(
                    resource,
                    Rlimit {
                        current: Some(soft),
                        maximum: Some(hard),
                    },
                )
                .map_err(std::io::Error::from)?;
            }
            // Orphans below the shell are re-parented to it, not to init, so the sweep finds
            // every descendant in its tree (see `sweep`). Kept across `exec`.
            become_subreaper()?;
            drop_capabilities(&drop_caps)
        });
    }
    let mut child = cmd.spawn().map_err(|e| SandboxError::Spawn {
        program: program.clone(),
        source: e,
    })?;
    // Drop our copies of the write end now (they live in `cmd`): otherwise the read end would
    // never see EOF when the shell dies.
    drop(cmd);
    // On failure `child` is dropped, which kills bubblewrap and with it the waiting sandbox.
    let egress_relay = start_relay(bridge, &program).await?;
    let stdin = child.stdin.take().ok_or_else(|| SandboxError::Spawn {
        program: program.clone(),
        source: std::io::Error::other("stdin pipe missing"),
    })?;
    let output = pipe::Receiver::from_owned_fd(read_end).map_err(SandboxError::Pipe)?;
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| SandboxError::Spawn {
            program: program.clone(),
            source: std::io::Error::other("shell exited at once"),
        })?;
    // The start time is fixed at fork, so reading it after spawn is exact.
    let leader_start = start_time(leader).unwrap_or(0);
    Ok(ShellProcess {
        child,
        stdin,
        output,
        scope: SweepScope {
            leader,
            leader_start,
            tag,
            wrapped,
        },
        pids,
        egress_relay,
    })
}

/// Starts the egress relay of a just-spawned tier-2 sandbox, when it has one (the shell's spawn
/// and a one-shot spawn alike). A relay that could not be set up fails the spawn, saying so.
pub(crate) async fn start_relay(
    bridge: Option<PendingBridge>,
    program: &str,
) -> Result<Option<EgressRelay>, SandboxError> {
    let Some(bridge) = bridge else {
        return Ok(None);
    };
    bridge
        .start()
        .await
        .map(Some)
        .map_err(|e| SandboxError::Spawn {
            program: program.to_string(),
            source: std::io::Error::new(
                e.kind(),
                format!("the egress relay into the tier 2 sandbox failed: {e}"),
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(pairs: &[(Resource, u64, u64)]) -> Option<(u64, u64)> {
        pairs
            .iter()
            .find(|(r, _, _)| *r == Resource::Core)
            .map(|&(_, soft, hard)| (soft, hard))
    }

    #[test]
    fn core_is_one_byte_and_never_above_the_inherited_hard_limit() {
        let r = Rlimits::default();
        assert_eq!(core(&r.pairs_under(None)), Some((1, 1)));
        assert_eq!(core(&r.pairs_under(Some(1))), Some((1, 1)));
        assert_eq!(core(&r.pairs_under(Some(0))), Some((0, 0)));
        // The CPU limit's hard limit is a second above its soft one; the others are equal.
        let r = Rlimits {
            cpu_seconds: Some(5),
            max_open_files: Some(64),
            ..Rlimits::default()
        };
        let pairs = r.pairs_under(None);
        assert!(pairs.contains(&(Resource::Cpu, 5, 6)), "{pairs:?}");
        assert!(pairs.contains(&(Resource::Nofile, 64, 64)), "{pairs:?}");
    }
}
