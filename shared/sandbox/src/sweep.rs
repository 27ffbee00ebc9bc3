//! The descendant sweep: after every tool call, find and kill whatever the call left running.
//!
//! Why not just `killpg`: the shell is the leader of its own session and process group, and
//! without job control every command and background job it starts stays in that group, so the
//! group covers the common case — but the shell itself must survive between calls, so the
//! group cannot simply be killed, and a child can leave the group and session with `setsid`
//! (`setsid sleep 1000 &`, `nohup`, double forks). So the sweep walks `/proc` once and selects a
//! process when any of these holds:
//! 1. its session or process group is the shell's (everything that did not call `setsid`);
//! 2. its parent is the shell or an already selected process (a `setsid` child whose parent is
//!    still alive);
//! 3. it started after the shell and its initial environment carries the shell's random tag
//!    variable (orphans that called `setsid`: they inherit the tag through `exec`).
//!
//! Then it `SIGKILL`s the selection and scans again until a scan finds nothing, so children
//! forked while we were killing are caught too (a killed process cannot fork any more, so the
//! rounds converge).
//!
//! Residual gap at tier 0 (documented in the crate README): a process that clears its
//! environment *and* leaves the session *and* is orphaned (`(env -i setsid sleep 1000 &)`) has
//! no mark left that ties it to the shell. Tier 2 closes this with a PID namespace; a
//! cgroup would too. We never widen the net to "any process of this uid started after the
//! shell": on a shared machine that would kill unrelated work.

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
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub start: u64,
}

/// Parses the fields we need from `/proc/<pid>/stat`. The command name (field 2) is chosen by
/// the process and may contain spaces and parentheses, so parsing starts after the *last* `)`.
pub(crate) fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7..=21 (tty_nr .. itrealvalue) are not needed; starttime is the 16th after session.
    let start = fields.nth(15)?.parse().ok()?;
    Some(Stat {
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
    stat: Stat,
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

fn select(scope: &SweepScope, spare_leader: bool, table: &[Entry], buf: &mut Vec<u8>) -> Vec<i32> {
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
    if spare_leader {
        chosen.remove(&scope.leader);
    }
    chosen.into_iter().collect()
}

/// Kills every process tied to `scope` (see the module docs), sparing the shell itself when
/// `spare_leader` is set. Returns how many processes were signalled. Synchronous `/proc` I/O:
/// async callers run it on the blocking pool.
pub fn sweep(scope: &SweepScope, spare_leader: bool) -> usize {
    let mut buf = Vec::with_capacity(4096);
    let mut env_buf = Vec::new();
    let mut signalled = 0;
    // Each round kills everything it found; a process forked during the round is found in the
    // next one. 64 rounds is far more than a tree can need unless something forks faster than
    // we can kill, which the pids rlimit bounds.
    for _ in 0..64 {
        let table = scan(&mut buf);
        let victims = select(scope, spare_leader, &table, &mut env_buf);
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
        assert_eq!(s.state, b'R');
        assert!(s.start > 0);
    }
}
