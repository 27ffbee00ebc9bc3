//! A pids cgroup per tool process tree: the fork-bomb limit that works for every uid.
//!
//! `RLIMIT_NPROC` counts every task of the uid and never applies to root (the kernel exempts
//! the initial user namespace's uid 0 whatever its capabilities), and many containers run the
//! worker as root. A cgroup's `pids.max` bounds the tree it contains, whoever runs it. The
//! process is moved into the cgroup between `fork` and `exec` (a `write` of `0` to a
//! `cgroup.procs` opened beforehand), so everything it ever starts is counted.
//!
//! Where: the cgroup v1 `pids` hierarchy writable by the worker, or a cgroup v2 cgroup of the
//! worker whose `cgroup.subtree_control` already lists `pids` (the v2 root, for a worker in
//! it). A v2 cgroup holding the worker cannot enable controllers for children (the kernel's
//! no-internal-processes rule), so on other cgroup v2 hosts (most current distributions,
//! systemd `Delegate=`) no cgroup is used yet: that needs moving the worker into a leaf cgroup
//! of its own first. Neither is writable on Lambda or in most unprivileged containers; there
//! the default (`auto`) takes another mechanism or none, and an explicit count fails the start
//! (see [`crate::process_limit`]).
//!
//! Names: `hands-<pid namespace>-<worker pid>-<worker start time>-<tag>`, so that a worker
//! that died without removing its cgroups (a crash, a kill) leaves them recognisable:
//! [`sweep_orphan_cgroups`] (run by the probe at start) kills what still runs in them and
//! removes them. Another worker's, in another pid namespace, are never touched.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// A cgroup that bounds one process tree. Dropping it kills whatever is still inside and
/// removes it.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
    procs: File,
    max: u64,
}

/// The directory the worker's cgroups go in, found on the first call (the worker does not move
/// between cgroups).
fn parent_dir() -> std::io::Result<PathBuf> {
    static PARENT: OnceLock<Result<PathBuf, (std::io::ErrorKind, String)>> = OnceLock::new();
    PARENT
        .get_or_init(|| find_parent_dir().map_err(|e| (e.kind(), e.to_string())))
        .clone()
        .map_err(|(kind, why)| std::io::Error::new(kind, why))
}

fn find_parent_dir() -> std::io::Result<PathBuf> {
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
        "no pids cgroup to create tool cgroups in (no cgroup v1 pids hierarchy, and the \
         worker's cgroup v2 cgroup does not list pids in its cgroup.subtree_control)",
    ))
}

/// What names this worker's cgroups: its pid namespace, pid and start time.
fn owner_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let pid = std::process::id();
        let start = i32::try_from(pid)
            .ok()
            .and_then(crate::sweep::start_time)
            .unwrap_or(0);
        format!("hands-{}-{pid}-{start}-", pid_namespace().unwrap_or(0))
    })
}

/// The inode of this process's pid namespace (`pid:[4026531836]`).
fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The owner a cgroup's name gives, in this pid namespace: (pid, start time). `None` for other
/// names, and for another pid namespace's (whose pids mean nothing here).
fn owner_of(name: &str, namespace: u64) -> Option<(i32, u64)> {
    let mut parts = name.strip_prefix("hands-")?.splitn(4, '-');
    let ns: u64 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    (ns == namespace).then_some((pid, start))
}

/// Removes the cgroups of workers of this pid namespace that are gone (their pid is dead or
/// now another process's, by its start time): what still runs in one (a fork bomb a crashed
/// worker left behind) is killed first. Returns the cgroups removed, and those that could not
/// be, with why.
pub fn sweep_orphan_cgroups() -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (Ok(parent), Some(namespace)) = (parent_dir(), pid_namespace()) else {
        return (Vec::new(), Vec::new());
    };
    sweep_orphans_in(&parent, namespace, crate::sweep::start_time)
}

/// [`sweep_orphan_cgroups`] in `parent`, for `namespace`, with `start_of` giving a live pid's
/// start time.
fn sweep_orphans_in(
    parent: &Path,
    namespace: u64,
    start_of: impl Fn(i32) -> Option<u64>,
) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return (removed, failed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(|n| owner_of(n, namespace)) else {
            continue;
        };
        if start_of(pid) == Some(start) {
            continue;
        }
        let dir = entry.path();
        match empty_and_remove(&dir, ORPHAN_ATTEMPTS) {
            Ok(()) => removed.push(dir),
            Err(why) => failed.push((dir, why)),
        }
    }
    (removed, failed)
}

/// Tries for an orphan's removal: 10 ms apart, as for a tree's own cgroup.
const ORPHAN_ATTEMPTS: u32 = 500;

/// Kills everything in the cgroup `dir` and removes it, trying `attempts` times 10 ms apart
/// (killed processes leave the cgroup once reaped). Forks are stopped first (`pids.max` 0), so
/// a fork bomb cannot outrun the kills; cgroup v2's `cgroup.kill` is used where there is one.
fn empty_and_remove(dir: &Path, attempts: u32) -> Result<(), String> {
    let _ = std::fs::write(dir.join("pids.max"), "0");
    let kill_file = dir.join("cgroup.kill");
    let mut last = String::new();
    for _ in 0..attempts {
        if kill_file.exists() {
            let _ = std::fs::write(&kill_file, "1");
        } else {
            for pid in PidsCgroup::members(dir) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Busy until the killed are reaped; anything else (no permission) will not pass.
            Err(e) if e.kind() != std::io::ErrorKind::ResourceBusy => return Err(e.to_string()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "still not removable after {attempts} tries ({last}); {} process(es) left in it",
        PidsCgroup::members(dir).len()
    ))
}

impl PidsCgroup {
    /// Creates a cgroup named after `tag` that admits at most `max` tasks.
    pub fn create(tag: &str, max: u64) -> std::io::Result<PidsCgroup> {
        let dir = parent_dir()?.join(format!("{}{tag}", owner_prefix()));
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
            // processes are reaped by their parents, which may take a moment. One left behind
            // (or one of a worker that died meanwhile) is swept at the next start.
            if let Err(why) = empty_and_remove(&dir, ORPHAN_ATTEMPTS) {
                tracing::warn!(
                    cgroup = %dir.display(),
                    "a tool process tree's pids cgroup was left behind: {why}; the next start \
                     of a worker sweeps it"
                );
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
    fn cgroup_names_give_their_owner_in_this_pid_namespace() {
        assert_eq!(
            owner_of("hands-4026531836-812-99731-a1b2", 4026531836),
            Some((812, 99731))
        );
        assert_eq!(
            owner_of("hands-4026531836-812-99731-probe-ff", 4026531836),
            Some((812, 99731))
        );
        // Another pid namespace's, the names before owners were in them, others'.
        assert_eq!(
            owner_of("hands-4026532000-812-99731-a1b2", 4026531836),
            None
        );
        assert_eq!(
            owner_of("hands-b6b06734980c3481c4ecdc9a73d22ac3", 4026531836),
            None
        );
        assert_eq!(owner_of("hands-probe-812", 4026531836), None);
        assert_eq!(owner_of("system.slice", 4026531836), None);
        let own = owner_prefix();
        let (pid, start) = owner_of(&format!("{own}tag"), pid_namespace().unwrap()).unwrap();
        assert_eq!(u32::try_from(pid).unwrap(), std::process::id());
        assert_eq!(Some(start), crate::sweep::start_time(pid));
    }

    // On a host where this process can create pids cgroups (this project's machines: cgroup v1
    // pids): a cgroup named for a worker that is gone (this pid, another start time) with a
    // sleeping member is emptied and removed; a live owner's (this process's) is left alone.
    #[test]
    fn the_sweep_kills_and_removes_a_gone_workers_cgroup_only() {
        let live = match PidsCgroup::create(&format!("sweep-test-{}", rand_suffix()), 8) {
            Ok(live) => live,
            Err(e) => {
                assert!(
                    std::env::var("REQUIRE_ISOLATION").as_deref() != Ok("1"),
                    "REQUIRE_ISOLATION=1 but no pids cgroup can be made here: {e}"
                );
                eprintln!("skipping: no pids cgroup can be made here: {e}");
                return;
            }
        };
        let parent = parent_dir().unwrap();
        let namespace = pid_namespace().unwrap();
        let me = std::process::id();
        let gone = parent.join(format!(
            "hands-{namespace}-{me}-1-sweep-test-{}",
            rand_suffix()
        ));
        std::fs::create_dir(&gone).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("7307")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        std::fs::write(gone.join("cgroup.procs"), pid.to_string()).unwrap();
        assert_eq!(
            PidsCgroup::members(&gone),
            vec![i32::try_from(pid).unwrap()]
        );
        // Reaped as soon as it dies, as a gone worker's orphans are by their new parent.
        let reaper = std::thread::spawn(move || sleeper.wait().unwrap());

        let (removed, failed) = sweep_orphan_cgroups();
        assert!(removed.contains(&gone), "{removed:?} {failed:?}");
        assert!(!gone.exists());
        let status = reaper.join().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(live.dir.exists(), "a live owner's cgroup was swept");
    }

    fn rand_suffix() -> u64 {
        crate::process_limit::random_tag()
    }

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
