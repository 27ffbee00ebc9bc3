//! A pids cgroup per tool process tree: the fork-bomb limit that works for every uid.
//!
//! `RLIMIT_NPROC` counts every task of the uid and never applies to root (the kernel exempts
//! the initial user namespace's uid 0 whatever its capabilities), and many containers run the
//! worker as root. A cgroup's `pids.max` bounds the tree it contains, whoever runs it. The
//! process is moved into the cgroup between `fork` and `exec` (a `write` of `0` to a
//! `cgroup.procs` opened beforehand), so everything it ever starts is counted.
//!
//! Where: a cgroup v2 cgroup of the worker whose `cgroup.subtree_control` already lists `pids`
//! (the v2 root, for a worker in it); else the cgroup v1 `pids` hierarchy writable by the
//! worker; else, on cgroup v2, the worker's own cgroup once the worker has moved itself into a
//! leaf of it and enabled `pids` there (a systemd unit with `Delegate=yes`, a container with a
//! writable cgroup namespace root: [`crate::cgroup_leaf`]), where that is safe. None of these is
//! writable on Lambda or in most unprivileged containers; there the default (`auto`) takes
//! another mechanism or none, and an explicit count fails the start (see
//! [`crate::process_limit`]).
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

/// Where the worker's tool cgroups go, and how that came about (for the start's log).
#[derive(Clone, Debug)]
struct Placement {
    dir: PathBuf,
    how: String,
}

/// The worker's placement, found (and, on cgroup v2, arranged) on the first call; the worker
/// does not move between cgroups after that.
fn placed() -> &'static Result<Placement, (std::io::ErrorKind, String)> {
    static PARENT: OnceLock<Result<Placement, (std::io::ErrorKind, String)>> = OnceLock::new();
    PARENT.get_or_init(|| find_parent_dir().map_err(|e| (e.kind(), e.to_string())))
}

/// The directory the worker's cgroups go in.
fn parent_dir() -> std::io::Result<PathBuf> {
    match placed() {
        Ok(p) => Ok(p.dir.clone()),
        Err((kind, why)) => Err(std::io::Error::new(*kind, why.clone())),
    }
}

/// Where the tool trees' cgroups go and how that was arranged, in words for the start's log,
/// once the probe has looked (`None` before, or where there is none).
pub(crate) fn placement() -> Option<&'static str> {
    placed().as_ref().ok().map(|p| p.how.as_str())
}

fn find_parent_dir() -> std::io::Result<Placement> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    // Unreadable: as if no cgroup v2 were mounted (v1 is still looked for).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let leaf = format!("{}{}", owner_prefix(), crate::cgroup_leaf::LEAF_TAG);
    place(
        &own,
        cgroup2_mount(&mountinfo).as_deref(),
        Path::new("/sys/fs/cgroup/pids"),
        me,
        &leaf,
    )
    .map_err(|why| std::io::Error::new(std::io::ErrorKind::Unsupported, why))
}

/// Where the cgroup v2 hierarchy is mounted (its root, not a subtree), from
/// `/proc/self/mountinfo`: `/sys/fs/cgroup` on v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (root == "/").then(|| PathBuf::from(point))
    })
}

/// Where the tool trees' cgroups of the process `me` go, given its `/proc/self/cgroup`
/// (`self_cgroup`), the cgroup v2 mount (if any) and the v1 `pids` mount: its v2 cgroup if that
/// already delegates `pids`; else the v1 `pids` hierarchy; else its v2 cgroup after moving the
/// process into the leaf `leaf_name` and enabling `pids` there, where that is safe. Or why
/// none.
fn place(
    self_cgroup: &str,
    v2_mount: Option<&Path>,
    v1_pids: &Path,
    me: i32,
    leaf_name: &str,
) -> Result<Placement, String> {
    let v2_own = v2_mount.and_then(|mount| {
        let path = self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(mount.join(path.trim_start_matches('/')))
    });
    if let Some(own) = &v2_own {
        let delegated = std::fs::read_to_string(own.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
        if delegated {
            return Ok(Placement {
                how: format!("in {}, which delegates pids", own.display()),
                dir: own.clone(),
            });
        }
    }
    if let Some(path) = self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers.split(',').any(|c| c == "pids").then_some(path)
    }) {
        let dir = v1_pids.join(path.trim_start_matches('/'));
        if dir.join("pids.max").exists() || dir.join("cgroup.procs").exists() {
            return Ok(Placement {
                how: format!("in {} (cgroup v1)", dir.display()),
                dir,
            });
        }
    }
    let v2_why = match &v2_own {
        None => "no cgroup v2 hierarchy is mounted at its root".to_owned(),
        Some(own) => {
            use crate::cgroup_leaf::{check_own, move_into_leaf};
            match check_own(own, "pids", me) {
                Err(why) => format!(
                    "the worker's cgroup v2 cgroup {} does not delegate pids and is not one to \
                     move out of: {why}",
                    own.display()
                ),
                Ok(()) => match move_into_leaf(own, leaf_name, me, Some("pids")) {
                    Ok(leaf) => {
                        return Ok(Placement {
                            how: format!(
                                "in {}: the worker moved itself into {} and enabled pids there \
                                 for the tool trees' cgroups",
                                own.display(),
                                leaf.display()
                            ),
                            dir: own.clone(),
                        });
                    }
                    Err(why) => {
                        // A step the checks allowed failed: worth a line of its own.
                        tracing::warn!(
                            cgroup = %own.display(),
                            "moving the worker into a leaf cgroup to enable pids failed: {why}"
                        );
                        format!(
                            "the worker's cgroup v2 cgroup {} does not delegate pids, and moving \
                             the worker into a leaf of it to enable pids failed: {why}",
                            own.display()
                        )
                    }
                },
            }
        }
    };
    Err(format!(
        "no pids cgroup to create tool cgroups in: no cgroup v1 pids hierarchy, and {v2_why}"
    ))
}

/// What names this worker's cgroups: its pid namespace, pid and start time.
pub(crate) fn owner_prefix() -> &'static str {
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
pub(crate) fn pid_namespace() -> Option<u64> {
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
pub(crate) fn sweep_orphans_in(
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

    /// A fake cgroup v2 cgroup `own` under `mount`: its type (`None`: the root, which has no
    /// `cgroup.type`), the controllers its parent offers, its `cgroup.subtree_control` and
    /// processes.
    fn fake_v2(own: &Path, kind: Option<&str>, offered: &str, subtree: &str, procs: &[i32]) {
        std::fs::create_dir_all(own).unwrap();
        if let Some(kind) = kind {
            std::fs::write(own.join("cgroup.type"), format!("{kind}\n")).unwrap();
        }
        std::fs::write(own.join("cgroup.controllers"), format!("{offered}\n")).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), format!("{subtree}\n")).unwrap();
        let procs: String = procs.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(own.join("cgroup.procs"), procs).unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    const ME: i32 = 4242;
    const LEAF: &str = "hands-1-4242-99-worker";
    const SELF_V2: &str = "0::/system.slice/hands.service\n";

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A bind mount of a subtree is not the hierarchy's root: paths would not join onto it.
        let subtree = "40 30 0:27 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(subtree), None);
        assert_eq!(
            cgroup2_mount("40 30 0:27 / /sys/fs/cgroup rw,nsdelegate - cgroup2 cgroup2 rw\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount(""), None);
    }

    /// `place` for this test's worker (`ME`, its v2 cgroup `SELF_V2`, leaf `LEAF`) on a host
    /// whose only cgroup hierarchy is the fake v2 tree at `mount` (no v1 `pids`).
    fn place_in_v2(mount: &Path) -> Result<Placement, String> {
        place(SELF_V2, Some(mount), Path::new("/nonexistent"), ME, LEAF)
    }

    #[test]
    fn a_v2_cgroup_already_delegating_pids_is_used_as_it_is() {
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/hands.service");
        fake_v2(&own, Some("domain"), "cpu pids", "pids", &[]);
        let placed = place_in_v2(mount.path()).unwrap();
        assert_eq!(placed.dir, own);
        assert!(
            placed.how.contains("which delegates pids"),
            "{}",
            placed.how
        );
        assert!(!own.join(LEAF).exists());
    }

    // A systemd unit with Delegate=yes, or a container's writable cgroup namespace root, holding
    // only the worker: the worker moves into its leaf, then pids is enabled, and the tool trees'
    // cgroups go beside the leaf. (The real kernel's side of it, on this host's v2 hierarchy:
    // `cgroup_leaf::tests`.)
    #[test]
    fn the_worker_moves_into_a_leaf_and_enables_pids_where_that_is_safe() {
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/hands.service");
        fake_v2(&own, Some("domain"), "cpu memory pids", "", &[ME]);
        let placed = place_in_v2(mount.path()).unwrap();
        assert_eq!(placed.dir, own);
        assert_eq!(read(&own.join(LEAF).join("cgroup.procs")), ME.to_string());
        assert_eq!(read(&own.join("cgroup.subtree_control")), "+pids");
        assert!(
            placed.how.contains("moved itself into") && placed.how.contains(LEAF),
            "{}",
            placed.how
        );
        // A leftover leaf of this very name (the same pid namespace, pid and start time), empty:
        // used again.
        fake_v2(&own, Some("domain"), "cpu memory pids", "", &[ME]);
        std::fs::write(own.join(LEAF).join("cgroup.procs"), "").unwrap();
        let again = place_in_v2(mount.path()).unwrap();
        assert_eq!(again.dir, own);
        assert_eq!(read(&own.join(LEAF).join("cgroup.procs")), ME.to_string());
    }

    // Where moving out is not safe, nothing is touched and the reason says why: the worker
    // stays where it was, its cgroup as it was.
    #[test]
    fn the_worker_stays_put_where_moving_out_is_not_safe() {
        for (kind, offered, procs, why) in [
            (
                Some("domain"),
                "cpu pids",
                &[ME, 77][..],
                "also holds 1 other process(es) (77",
            ),
            (
                Some("domain threaded"),
                "cpu pids",
                &[ME][..],
                "cgroup.type is domain threaded",
            ),
            (Some("threaded"), "pids", &[][..], "cgroup.type is threaded"),
            (
                Some("domain"),
                "cpu memory",
                &[ME][..],
                "pids is not in its cgroup.controllers",
            ),
            (
                None,
                "cpu memory pids",
                &[ME][..],
                "it is the cgroup v2 root",
            ),
        ] {
            let mount = tempfile::tempdir().unwrap();
            let own = mount.path().join("system.slice/hands.service");
            fake_v2(&own, kind, offered, "", procs);
            let before = read(&own.join("cgroup.procs"));
            let err = place_in_v2(mount.path()).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
            assert!(err.contains("no cgroup v1 pids hierarchy"), "{err}");
            assert!(!own.join(LEAF).exists(), "{why}");
            assert_eq!(read(&own.join("cgroup.procs")), before, "{why}");
            assert_eq!(read(&own.join("cgroup.subtree_control")), "\n", "{why}");
        }
        // A leftover leaf of this name that holds a process is not used.
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/hands.service");
        fake_v2(&own, Some("domain"), "pids", "", &[ME]);
        fake_v2(&own.join(LEAF), Some("domain"), "", "", &[78]);
        let err = place_in_v2(mount.path()).unwrap_err();
        assert!(err.contains("holds process(es) 78"), "{err}");
        assert_eq!(read(&own.join("cgroup.procs")), format!("{ME}\n"));
        assert_eq!(read(&own.join("cgroup.subtree_control")), "\n");
        // No cgroup v2 at all.
        let err = place(SELF_V2, None, Path::new("/nonexistent"), ME, LEAF).unwrap_err();
        assert!(err.contains("no cgroup v2 hierarchy is mounted"), "{err}");
        // A path the mount does not show (a container without a cgroup namespace).
        let mount = tempfile::tempdir().unwrap();
        let err = place_in_v2(mount.path()).unwrap_err();
        assert!(err.contains("it is not there"), "{err}");
    }

    // Enabling pids fails after the move (here: the file cannot be written; on a real host EBUSY
    // when a process joined meanwhile): the worker is moved back and the reason says so. (The
    // leaf's removal is the kernel's part, checked on the real hierarchy in
    // `cgroup_leaf::tests`: a fake leaf holds a regular file and cannot be removed.)
    #[test]
    fn a_failed_enabling_moves_the_worker_back() {
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/hands.service");
        fake_v2(&own, Some("domain"), "pids", "", &[ME]);
        std::fs::remove_file(own.join("cgroup.subtree_control")).unwrap();
        std::fs::create_dir(own.join("cgroup.subtree_control")).unwrap();
        std::fs::write(own.join("cgroup.procs"), "").unwrap();
        let err = place_in_v2(mount.path()).unwrap_err();
        assert!(
            err.contains("pids could not be enabled") && err.contains("the worker moved back"),
            "{err}"
        );
        assert_eq!(read(&own.join("cgroup.procs")), ME.to_string());
    }

    // cgroup v1 `pids` comes before moving the worker on v2 (a host has pids on one of them
    // only; the move is the last resort either way).
    #[test]
    fn a_v1_pids_hierarchy_is_used_without_moving_the_worker() {
        let mount = tempfile::tempdir().unwrap();
        let v1 = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/hands.service");
        fake_v2(&own, Some("domain"), "pids", "", &[ME]);
        std::fs::create_dir_all(v1.path().join("user.slice")).unwrap();
        std::fs::write(v1.path().join("user.slice/cgroup.procs"), "").unwrap();
        let self_cgroup = format!("8:pids:/user.slice\n{SELF_V2}");
        let placed = place(&self_cgroup, Some(mount.path()), v1.path(), ME, LEAF).unwrap();
        assert_eq!(placed.dir, v1.path().join("user.slice"));
        assert!(placed.how.contains("cgroup v1"), "{}", placed.how);
        assert!(!own.join(LEAF).exists());
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
