//! A pids cgroup per tool process tree: the fork-bomb limit that works for every uid.
//!
//! `RLIMIT_NPROC` counts every task of the uid and never applies to root (the kernel exempts
//! the initial user namespace's uid 0 whatever its capabilities), and many containers run the
//! worker as root. A cgroup's `pids.max` bounds the tree it contains, whoever runs it. The
//! process is moved into the cgroup between `fork` and `exec` (a `write` of `0` to a
//! `cgroup.procs` opened beforehand), so everything it ever starts is counted.
//!
//! Where: cgroup v2 when the worker's own cgroup already delegates the `pids` controller to its
//! children, else the v1 `pids` hierarchy. Neither is writable on Lambda or in most unprivileged
//! containers; there the default (`auto`) takes another mechanism or none, and an explicit count
//! fails the start (see [`crate::process_limit`]).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cgroup that bounds one process tree. Dropping it kills whatever is still inside and
/// removes it.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
    procs: File,
    max: u64,
}

fn parent_dir() -> std::io::Result<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    // v2: the unified hierarchy mounted at /sys/fs/cgroup, delegating `pids` below us.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
        if delegated {
            return Ok(dir);
        }
    }
    // v1: the `pids` hierarchy.
    if let Some(path) = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers.split(',').any(|c| c == "pids").then_some(path)
    }) {
        let dir = Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/'));
        if dir.join("pids.max").exists() || dir.join("cgroup.procs").exists() {
            return Ok(dir);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no writable pids cgroup (neither a delegated cgroup v2 pids controller nor a v1 pids \
         hierarchy)",
    ))
}

impl PidsCgroup {
    /// Creates a cgroup named after `tag` that admits at most `max` tasks.
    pub fn create(tag: &str, max: u64) -> std::io::Result<PidsCgroup> {
        let dir = parent_dir()?.join(format!("hands-{tag}"));
        std::fs::create_dir(&dir)?;
        let made = (|| {
            std::fs::write(dir.join("pids.max"), max.to_string())?;
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join("cgroup.procs"))
        })();
        match made {
            Ok(procs) => Ok(PidsCgroup { dir, procs, max }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The descriptor the child writes `0` to (moving itself in) before `exec`.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The configured limit.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// How many times a fork was refused because the limit was reached (`pids.events`).
    pub fn refused_forks(&self) -> u64 {
        let mut text = String::new();
        if File::open(self.dir.join("pids.events"))
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_err()
        {
            return 0;
        }
        text.lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The sentence the model reads when forks were refused since the count was `since`
    /// (read with [`PidsCgroup::refused_forks`] before the call).
    pub fn limit_note(&self, since: u64) -> Option<String> {
        process_limit_note(self.max, self.refused_forks().saturating_sub(since))
    }

    fn members(dir: &Path) -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// The note for `refused` forks refused at a limit of `max`, or `None` when none were.
fn process_limit_note(max: u64, refused: u64) -> Option<String> {
    (refused > 0).then(|| {
        format!(
            "[resource limit: the process limit ({max} at once) was reached; {refused} attempt(s) \
             to start a process were refused]"
        )
    })
}

/// Runs in the forked child: joins the cgroup behind `fd`. Async-signal-safe (one `write`).
pub(crate) fn join(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: writes one byte from a static buffer to a descriptor the parent opened and keeps
    // open until after the spawn; no allocation.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        let clean = move || {
            // Members are killed until the cgroup is empty; it can be removed once the killed
            // processes are reaped by their parents, which may take a moment.
            for _ in 0..500 {
                for pid in PidsCgroup::members(&dir) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                if std::fs::remove_dir(&dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        if std::fs::remove_dir(&self.dir).is_err() {
            // Not empty yet: finish on a thread so the owner is not held up.
            let _ = std::thread::Builder::new()
                .name("hands-cgroup-cleanup".into())
                .spawn(clean);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_limit_note_reads_as_one_sentence() {
        assert_eq!(process_limit_note(64, 0), None);
        assert_eq!(
            process_limit_note(64, 3).as_deref(),
            Some(
                "[resource limit: the process limit (64 at once) was reached; 3 attempt(s) to start a process were refused]"
            )
        );
    }
}
