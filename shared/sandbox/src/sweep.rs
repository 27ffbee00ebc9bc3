//! The descendant sweep: after every tool call, find and kill whatever the call left running.
//!
//! The shell is started as a *child subreaper* (`PR_SET_CHILD_SUBREAPER`, kept across `exec`):
//! an orphan anywhere below it — a double fork, `(setsid cmd &)`, `nohup` — is re-parented to
//! the shell instead of to init, so while the shell lives every descendant is in its process
//! tree, whatever session, group or environment it chose. That makes the common case cheap: one
//! read of `/proc/<shell>/task/<shell>/children` says whether anything is left at all (the
//! shell reaps the re-parented orphans itself, and none of them is in its job table, so it
//! prints nothing about them).
//!
//! When something is left, [`sweep`] kills the tree (walking `children` of every thread), and
//! then, as a second line for the moments when the shell is already dead (timeout, restart,
//! kernels without `children` files), walks all of `/proc` once and selects a process when:
//! 1. its session or process group is the shell's (everything that did not call `setsid`);
//! 2. its parent is the shell or an already selected process;
//! 3. it started after the shell and its initial environment carries the shell's random tag
//!    variable (`setsid` orphans inherit it through `exec`).
//!
//! Each round `SIGKILL`s the selection, and rounds repeat until one finds nothing, so children
//! forked while we were killing are caught too (a killed process cannot fork any more, so the
//! rounds converge). We never widen the net to "any process of this uid started after the
//! shell": on a shared machine that would kill unrelated work. Residual gap at tier 0: once the
//! shell itself is dead, an orphan that cleared its environment *and* left the session has
//! nothing that ties it to us; the tree kill runs before the shell is killed to keep that
//! window closed, and tier 2 (a PID namespace) removes it.
//!
//! At tier 2 the process we spawn is bubblewrap, and the shell is its one child, pid 1 of a new
//! pid namespace ([`SweepScope::wrapped`]). Orphans of the namespace are re-parented to that
//! shell, so the tree below it is still complete; sparing the shell spares bubblewrap too, and
//! when either dies the kernel kills the whole namespace.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;

use rustix::process::{Pid, Signal};

/// The name of the variable that tags a shell's descendants.
pub const TAG_VAR: &str = "HANDS_SWEEP_TAG";

/// A random per-shell value placed in the shell's environment (inherited by everything it
/// execs unless a program clears its environment on purpose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTag {
    value: String,
}

impl ProcessTag {
    /// A fresh tag: 128 random bits from the kernel.
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; 16];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
        Ok(ProcessTag {
            value: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The `(name, value)` pair to put in the child's environment.
    pub fn env_pair(&self) -> (OsString, OsString) {
        (TAG_VAR.into(), self.value.clone().into())
    }

    /// The random value (hex), also usable in names.
    pub fn value(&self) -> &str {
        &self.value
    }

    fn needle(&self) -> Vec<u8> {
        format!("{TAG_VAR}={}", self.value).into_bytes()
    }
}

/// What the sweep looks for: the shell (leader of its own session and group), its tag, and
/// when it started (in clock ticks since boot, `/proc/<pid>/stat` field 22).
#[derive(Clone, Debug)]
pub struct SweepScope {
    pub leader: i32,
    pub leader_start: u64,
    pub tag: ProcessTag,
    /// The leader is a sandbox wrapper (bubblewrap, tier 2) whose one child is the real shell:
    /// the shell is found as the leader's child, spared with it, and the root of the tree that
    /// is swept between calls.
    pub wrapped: bool,
}

/// The fields of `/proc/<pid>/stat` the sweeps use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`, ...
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks since boot.
    pub start: u64,
}

/// Parses the fields we need from `/proc/<pid>/stat`. The command name (field 2) is chosen by
/// the process and may contain spaces and parentheses, so parsing starts after the *last* `)`.
pub fn parse_stat(raw: &[u8]) -> Option<ProcStat> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7..=21 (tty_nr .. itrealvalue) are not needed; starttime is the 16th after session.
    let start = fields.nth(15)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        session,
        start,
    })
}

/// Reads the start time of `pid`, for [`SweepScope::leader_start`].
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|raw| parse_stat(&raw))
        .map(|s| s.start)
}

struct Entry {
    pid: i32,
    stat: ProcStat,
}

fn scan(buf: &mut Vec<u8>) -> Vec<Entry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        buf.clear();
        let read = File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read_to_end(buf));
        if read.is_err() {
            continue; // exited between the listing and the read
        }
        if let Some(stat) = parse_stat(buf) {
            out.push(Entry { pid, stat });
        }
    }
    out
}

fn environ_has(pid: i32, needle: &[u8], buf: &mut Vec<u8>) -> bool {
    buf.clear();
    // Bounded: a process can have a huge environment, and the tag, when present, was put there
    // by its ancestors' exec and sits among the first variables only if few came before it.
    const MAX: u64 = 1 << 20;
    let read =
        File::open(format!("/proc/{pid}/environ")).and_then(|f| f.take(MAX).read_to_end(buf));
    read.is_ok() && buf.split(|&b| b == 0).any(|var| var == needle)
}

fn select(
    scope: &SweepScope,
    spared: &HashSet<i32>,
    table: &[Entry],
    buf: &mut Vec<u8>,
) -> Vec<i32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let my_parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    let eligible = |e: &Entry| {
        e.pid > 1 && e.pid != me && e.pid != my_parent && !matches!(e.stat.state, b'Z' | b'X')
    };
    let needle = scope.tag.needle();
    let mut chosen: HashSet<i32> = HashSet::new();
    for e in table.iter().filter(|e| eligible(e)) {
        let in_group = e.stat.session == scope.leader || e.stat.pgrp == scope.leader;
        if in_group || (e.stat.start >= scope.leader_start && environ_has(e.pid, &needle, buf)) {
            chosen.insert(e.pid);
        }
    }
    // Rule 2: children of the shell or of anything selected, to a fixpoint. Each pass adds at
    // least one process or stops, so it is bounded by the table size.
    let mut parents: HashSet<i32> = chosen.clone();
    parents.insert(scope.leader);
    parents.extend(spared);
    loop {
        let before = chosen.len();
        for e in table.iter().filter(|e| eligible(e)) {
            if parents.contains(&e.stat.ppid) && chosen.insert(e.pid) {
                parents.insert(e.pid);
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    chosen.retain(|p| !spared.contains(p));
    chosen.into_iter().collect()
}

fn parse_pids(raw: &[u8]) -> impl Iterator<Item = i32> + '_ {
    raw.split(|b| b.is_ascii_whitespace())
        .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
}

/// The direct children of `pid` as its main thread's `children` file lists them, or `None` when
/// the file cannot be read.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    std::fs::read(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .map(|raw| parse_pids(&raw).collect())
}

/// The processes that are the session's shell: the leader, and when it is a sandbox wrapper,
/// its child too.
fn shell_chain(scope: &SweepScope) -> Vec<i32> {
    let mut chain = vec![scope.leader];
    if scope.wrapped {
        chain.extend(children_of(scope.leader).unwrap_or_default());
    }
    chain
}

/// Where a tier-2 sandbox's own filesystem is seen from outside: `/proc/<shell>/root` of the
/// shell inside the wrapper (its `/tmp` is the sandbox's tmpfs). `None` when `scope` is not
/// wrapped or the shell is gone.
pub fn sandbox_root(scope: &SweepScope) -> Option<std::path::PathBuf> {
    if !scope.wrapped {
        return None;
    }
    let shell = *children_of(scope.leader)?.first()?;
    Some(format!("/proc/{shell}/root").into())
}

/// Whether the shell has any child (live or not yet reaped). `None` when the kernel has no
/// `children` files (`CONFIG_PROC_CHILDREN`), so the caller must sweep to be sure. One or two
/// small reads: this is the per-call fast path.
pub fn has_descendants(scope: &SweepScope) -> Option<bool> {
    let roots = if scope.wrapped {
        children_of(scope.leader)?
    } else {
        vec![scope.leader]
    };
    for root in roots {
        if !children_of(root)?.is_empty() {
            return Some(true);
        }
    }
    Some(false)
}

/// The live descendants of `root`, through the `children` file of every thread.
fn tree(root: i32, buf: &mut Vec<u8>) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            buf.clear();
            let path = task.path().join("children");
            if File::open(path)
                .and_then(|mut f| f.read_to_end(buf))
                .is_err()
            {
                continue;
            }
            for child in parse_pids(buf).collect::<Vec<_>>() {
                if out.len() < 1 << 16 && !out.contains(&child) {
                    out.push(child);
                    queue.push(child);
                }
            }
        }
    }
    out
}

/// Kills every process tied to `scope` (see the module docs), sparing the shell itself when
/// `spare_leader` is set. Returns how many processes were signalled. Synchronous `/proc` I/O:
/// async callers run it on the blocking pool.
pub fn sweep(scope: &SweepScope, spare_leader: bool) -> usize {
    let mut buf = Vec::with_capacity(4096);
    let mut env_buf = Vec::new();
    let mut signalled = 0;
    // What must survive, and where the tree to kill starts: the shell's children when it is
    // spared (below a sandbox wrapper, the shell is the wrapper's child), else the leader.
    let (spared, roots): (HashSet<i32>, Vec<i32>) = if spare_leader {
        let chain = shell_chain(scope);
        let roots = if scope.wrapped {
            chain.iter().skip(1).copied().collect()
        } else {
            vec![scope.leader]
        };
        (chain.into_iter().collect(), roots)
    } else {
        (HashSet::new(), vec![scope.leader])
    };
    // First the tree, while the shell (the subreaper holding it together) is alive.
    for _ in 0..64 {
        let live: Vec<i32> = roots
            .iter()
            .flat_map(|&root| tree(root, &mut buf))
            .filter(|p| !spared.contains(p) && crate::kill::pid_is_alive(*p))
            .collect();
        if live.is_empty() {
            break;
        }
        for pid in live {
            if let Some(pid) = Pid::from_raw(pid)
                && rustix::process::kill_process(pid, Signal::KILL).is_ok()
            {
                signalled += 1;
            }
        }
    }
    // Each round kills everything it found; a process forked during the round is found in the
    // next one. 64 rounds is far more than a tree can need unless something forks faster than
    // we can kill, which the pids rlimit bounds.
    for _ in 0..64 {
        let table = scan(&mut buf);
        let victims = select(scope, &spared, &table, &mut env_buf);
        if victims.is_empty() {
            break;
        }
        for pid in victims {
            if let Some(pid) = Pid::from_raw(pid)
                && rustix::process::kill_process(pid, Signal::KILL).is_ok()
            {
                signalled += 1;
            }
        }
    }
    signalled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_hostile_command_names() {
        let raw = b"4242 (evil) 1 2 3) S 100 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3";
        let s = parse_stat(raw).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.session, s.start),
            (b'S', 100, 4242, 4242, 987654)
        );
        assert!(parse_stat(b"12 (x) S 1 2").is_none());
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(&[0xff, b')', b' ', 0xfe]).is_none());
    }

    #[test]
    fn own_stat_parses() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let raw = std::fs::read(format!("/proc/{me}/stat")).unwrap();
        let s = parse_stat(&raw).unwrap();
        // `/proc/<pid>/stat` describes the main thread, which may be running or waiting.
        assert!(matches!(s.state, b'R' | b'S'), "{}", s.state as char);
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        assert_eq!(s.ppid, parent);
        assert!(s.start > 0);
    }
}
