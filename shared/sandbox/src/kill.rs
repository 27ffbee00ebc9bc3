//! Signalling a whole process group.

use rustix::process::{Pid, Signal};

use crate::SandboxError;

/// Sends `SIGKILL` to every process in group `pgid`. A group that is already empty is not an
/// error: the point is that nothing is left.
pub fn kill_group(pgid: i32) -> Result<(), SandboxError> {
    let Some(pid) = Pid::from_raw(pgid) else {
        // Group 0 would mean "our own group": the worker must never signal itself.
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SandboxError::Kill {
            pgid,
            source: e.into(),
        }),
    }
}

/// Whether `pid` is a live process: it exists and is not a zombie waiting to be reaped (a
/// zombie runs no code and holds no resources but its table slot).
pub fn pid_is_alive(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            crate::sweep::parse_stat(&stat).is_some_and(|s| s.state != b'Z' && s.state != b'X')
        }
        Err(_) => false,
    }
}

/// Sends `SIGSTOP` to every process in group `pgid`: frozen processes neither fork nor write, so
/// a tree can be swept without its members reacting to each other's deaths (a shell would print
/// `Killed` for its foreground child), and a stopped leader still holds its orphans as their
/// subreaper. An empty group is not an error.
pub fn stop_group(pgid: i32) -> Result<(), SandboxError> {
    let Some(pid) = Pid::from_raw(pgid) else {
        // Group 0 would mean "our own group": the worker must never signal itself.
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, Signal::STOP) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SandboxError::Kill {
            pgid,
            source: e.into(),
        }),
    }
}
