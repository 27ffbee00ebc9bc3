//! Starting a one-shot tool process (an operator's custom tool): the same isolation as the
//! session shell — cleared environment plus the sweep tag, own session and process group, child
//! subreaper, memory-reading capabilities dropped, limits set before `exec` — but with stdin,
//! stdout and stderr as three separate pipes, because the caller writes one input, then reads
//! the result from stdout and keeps stderr apart for error reports.
//!
//! What the caller still owes (see `hands_worker::custom_tools`): reading both output pipes at
//! the same time and never until EOF alone (a background grandchild may hold them open;
//! pitfall 4), and ending every call with [`crate::kill_group`] plus [`crate::sweep`]. The
//! process is the subreaper of its own orphans only while it lives: once it has exited, what it
//! left behind is found by session, process group or tag (the sweep's rules 1 and 3).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use crate::bwrap::Binds;
use crate::cgroup::PidsCgroup;
use crate::relay::{EgressRelay, PendingBridge};
use crate::spawn::{Isolation, become_subreaper, drop_capabilities, isolated_command, start_relay};
use crate::sweep::{ProcessTag, SweepScope, start_time};
use crate::{Rlimits, SandboxError};

/// How to start a one-shot process.
#[derive(Clone, Debug)]
pub struct OneShotSpec {
    /// An absolute path, never looked up on `PATH` (a tool could plant a program of the same
    /// name in the workspace; T15). No shell is involved: `args` reach the program as they are.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The complete environment (see [`crate::EnvPolicy::build`]); the sweep tag is added.
    pub env: Vec<(OsString, OsString)>,
    pub rlimits: Rlimits,
    /// Tier 0, or a stronger tier to run the process in.
    pub isolation: Isolation,
    /// Roots besides `cwd` the process must reach (tier 2 binds them; tier 0 ignores this).
    pub binds: Binds,
}

/// A running one-shot process and its pipes.
#[derive(Debug)]
pub struct OneShotProcess {
    /// The process. `kill_on_drop` is set as a backstop: owners kill the whole tree explicitly.
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// What the descendant sweep needs to find everything this process starts.
    pub scope: SweepScope,
    /// The pids cgroup holding the tree, when `max_pids` was set.
    pub pids: Option<PidsCgroup>,
    /// Tier 2 with an egress proxy: the relay into the sandbox, which lives as long as this.
    pub egress_relay: Option<EgressRelay>,
}

/// Starts the process described by `spec`. Must be called within a tokio runtime. Async because
/// of the tier-2 relay, whose set-up waits for bubblewrap (off the runtime's threads).
pub async fn spawn_oneshot(spec: &OneShotSpec) -> Result<OneShotProcess, SandboxError> {
    let program = spec.program.display().to_string();
    let spawn_error = |source: std::io::Error| SandboxError::Spawn {
        program: program.clone(),
        source,
    };
    if !spec.program.is_absolute() {
        return Err(spawn_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the program must be an absolute path",
        )));
    }
    let tag = ProcessTag::random().map_err(spawn_error)?;
    let limits = spec.rlimits.pairs();
    let drop_caps = crate::hardening::capabilities_to_drop();
    let pids = spec.rlimits.pids_cgroup(&tag).map_err(spawn_error)?;
    let pids_fd = pids.as_ref().map(PidsCgroup::procs_fd);

    let mut env = spec.env.clone();
    env.push(tag.env_pair());
    let bridge = PendingBridge::prepare(&spec.isolation).map_err(spawn_error)?;
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called. It makes plain system calls only (`write`, `setsid`,
    // `setrlimit`, `prctl`): no allocation, no locks. `limits`, `drop_caps` and `pids_fd` were
    // built before the fork and are only read. (The same steps as `spawn_shell`, for the same
    // reasons.)
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = pids_fd {
                crate::cgroup::join(fd)?;
            }
            // Own session and process group: the group is killed as a unit, and the sweep
            // recognises descendants by session id after the process itself is gone.
            rustix::process::setsid().map_err(std::io::Error::from)?;
            for &(resource, soft, hard) in &limits {
                rustix::process::setrlimit(
                    resource,
                    rustix::process::Rlimit {
                        current: Some(soft),
                        maximum: Some(hard),
                    },
                )
                .map_err(std::io::Error::from)?;
            }
            // While the tool runs, its orphans stay in its tree, so a timeout or a cancellation
            // finds every one of them by walking `children` from the tool.
            become_subreaper()?;
            drop_capabilities(&drop_caps)
        });
    }
    let mut child = cmd.spawn().map_err(spawn_error)?;
    drop(cmd);
    // On failure `child` is dropped, which kills bubblewrap and with it the waiting sandbox.
    let egress_relay = start_relay(bridge, &program).await?;
    let missing = |what: &str| spawn_error(std::io::Error::other(format!("{what} pipe missing")));
    let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| spawn_error(std::io::Error::other("the process exited at once")))?;
    // The start time is fixed at fork, so reading it after spawn is exact. The process cannot
    // have been reaped yet (only `child.wait` reaps it), so the pid is still ours.
    let leader_start = start_time(leader).unwrap_or(0);
    Ok(OneShotProcess {
        child,
        stdin,
        stdout,
        stderr,
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::EnvPolicy;

    fn spec(script: &str) -> OneShotSpec {
        OneShotSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: EnvPolicy::default().build(std::env::vars_os()),
            rlimits: Rlimits::default(),
            isolation: Isolation::Tier0,
            binds: Binds::default(),
        }
    }

    #[tokio::test]
    async fn pipes_are_separate_and_the_process_leads_its_own_session() {
        let mut p = spawn_oneshot(&spec("read line; echo \"out:$line\"; echo err >&2"))
            .await
            .unwrap();
        // Blocked on `read` now: its own session and group, led by itself.
        let stat = std::fs::read(format!("/proc/{}/stat", p.scope.leader)).unwrap();
        let stat = crate::sweep::parse_stat(&stat).unwrap();
        assert_eq!((stat.session, stat.pgrp), (p.scope.leader, p.scope.leader));
        p.stdin.write_all(b"hello\n").await.unwrap();
        drop(p.stdin);
        let mut out = String::new();
        let mut err = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        p.stderr.read_to_string(&mut err).await.unwrap();
        assert!(p.child.wait().await.unwrap().success());
        assert_eq!(out, "out:hello\n");
        assert_eq!(err, "err\n");
    }

    #[tokio::test]
    async fn a_relative_program_is_refused() {
        let mut s = spec("true");
        s.program = "sh".into();
        assert!(matches!(
            spawn_oneshot(&s).await,
            Err(SandboxError::Spawn { .. })
        ));
    }

    #[tokio::test]
    async fn the_tag_reaches_the_process_and_nothing_else_leaks() {
        let mut p = spawn_oneshot(&spec("env")).await.unwrap();
        drop(p.stdin);
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        p.child.wait().await.unwrap();
        assert!(out.contains("HANDS_SWEEP_TAG="), "{out}");
        assert!(!out.contains("ANTHROPIC_"), "{out}");
        // The sweep finds nothing left of a process that started nothing.
        let scope = p.scope.clone();
        let left = tokio::task::spawn_blocking(move || crate::sweep(&scope, false))
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
