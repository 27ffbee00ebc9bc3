//! cgroup v2 hosts whose worker sits in a cgroup that could give `pids` to children but holds
//! the worker itself: a systemd unit with `Delegate=yes`, a container with a writable cgroup
//! namespace root. The kernel's no-internal-processes rule forbids enabling a controller in the
//! `cgroup.subtree_control` of a (non-root) cgroup that holds processes, so the worker first
//! moves itself into a leaf child of its cgroup, then enables `pids` for the children; the tool
//! trees' cgroups are the leaf's siblings.
//!
//! Done once at start, only where it is safe ([`check_own`]): a `domain` cgroup (a threaded one
//! migrates threads, not processes), not the v2 root (its controllers are the host's), `pids`
//! offered by the parent, and no process in it but the worker (a shell wrapper or a sidecar
//! left behind would make the enabling fail with EBUSY). [`move_into_leaf`] undoes its own
//! steps when one fails, so the worker ends either set up or where it was.
//!
//! Writing the worker's pid to a `domain` cgroup's `cgroup.procs` moves the whole thread group:
//! the runtime's threads already running go along. The leaf is named like the tool trees'
//! cgroups (`hands-<pid namespace>-<pid>-<start time>-worker`): a worker that is gone leaves it
//! empty, and the next start's sweep of gone workers' cgroups removes it; the live worker's own
//! leaf is never swept (its owner is alive).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The tag of the worker's own leaf cgroup's name.
pub(crate) const LEAF_TAG: &str = "worker";

/// Why the worker, as `me`, should not move out of its cgroup v2 cgroup `own` to enable
/// `controller` there, or `Ok` when it may.
pub(crate) fn check_own(own: &Path, controller: &str, me: i32) -> Result<(), String> {
    // A container without a cgroup namespace names a host path its mount does not show.
    if !own.join("cgroup.procs").exists() {
        return Err("it is not there (no cgroup.procs in it) in this mount".into());
    }
    // The root has no `cgroup.type` (nor `pids.max`): only the real root, not a cgroup
    // namespace's, which is an ordinary cgroup with that file.
    let kind = match std::fs::read_to_string(own.join("cgroup.type")) {
        Ok(kind) => kind,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(
                "it is the cgroup v2 root, whose controllers are the host's to enable".into(),
            );
        }
        Err(e) => return Err(format!("its cgroup.type could not be read: {e}")),
    };
    if kind.trim() != "domain" {
        return Err(format!(
            "its cgroup.type is {}, not domain (a threaded cgroup moves threads, not the worker)",
            kind.trim()
        ));
    }
    let offered = std::fs::read_to_string(own.join("cgroup.controllers"))
        .map_err(|e| format!("its cgroup.controllers could not be read: {e}"))?;
    if !offered.split_whitespace().any(|c| c == controller) {
        return Err(format!(
            "{controller} is not in its cgroup.controllers (the parent cgroup does not delegate it)"
        ));
    }
    let others: Vec<i32> = members(own)
        .map_err(|e| format!("its cgroup.procs could not be read: {e}"))?
        .into_iter()
        .filter(|&pid| pid != me)
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "it also holds {} other process(es) ({}), and a cgroup that holds processes cannot \
             enable {controller} for children (the no-internal-processes rule); start the worker \
             alone in its cgroup, or use the runtime's limit",
            others.len(),
            describe(&others)
        ));
    }
    Ok(())
}

/// Moves the process `me` from `own` into `own/<leaf_name>` (created, or reused when empty)
/// and, with `controller`, enables it in `own`'s `cgroup.subtree_control`. On failure each
/// step done is undone (the process moved back, a leaf it made removed), and the error says
/// what failed and whether the undoing did too. Returns the leaf.
pub(crate) fn move_into_leaf(
    own: &Path,
    leaf_name: &str,
    me: i32,
    controller: Option<&str>,
) -> Result<PathBuf, String> {
    let leaf = own.join(leaf_name);
    let made = match std::fs::create_dir(&leaf) {
        Ok(()) => true,
        // A leftover of this very name (same pid namespace, pid and start time): reused when
        // empty.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match members(&leaf) {
            Ok(m) if m.is_empty() => false,
            Ok(m) => {
                return Err(format!(
                    "{} exists and holds process(es) {}",
                    leaf.display(),
                    describe(&m)
                ));
            }
            Err(e) => return Err(format!("{} exists and is unreadable: {e}", leaf.display())),
        },
        Err(e) => return Err(format!("{} could not be created: {e}", leaf.display())),
    };
    let remove_leaf = |why: String| -> String {
        match made.then(|| std::fs::remove_dir(&leaf)) {
            Some(Err(e)) => format!("{why}; and {} could not be removed: {e}", leaf.display()),
            _ => why,
        }
    };
    if let Err(e) = std::fs::write(leaf.join("cgroup.procs"), me.to_string()) {
        return Err(remove_leaf(format!(
            "the worker could not move into {}: {e}",
            leaf.display()
        )));
    }
    let Some(controller) = controller else {
        return Ok(leaf);
    };
    let Err(e) = std::fs::write(own.join("cgroup.subtree_control"), format!("+{controller}"))
    else {
        return Ok(leaf);
    };
    let mut why = format!(
        "{controller} could not be enabled in {}: {e}",
        own.join("cgroup.subtree_control").display()
    );
    if e.raw_os_error() == Some(libc::EBUSY) {
        why.push_str(" (a process other than the worker joined the cgroup meanwhile)");
    }
    match std::fs::write(own.join("cgroup.procs"), me.to_string()) {
        Ok(()) => Err(remove_leaf(format!("{why}; the worker moved back"))),
        Err(back) => Err(format!(
            "{why}; and the worker could not move back ({back}): it stays in {}, without the \
             pids limit",
            leaf.display()
        )),
    }
}

/// The processes in the cgroup `dir`.
fn members(dir: &Path) -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Up to five processes by pid and command name, for a log line.
fn describe(pids: &[i32]) -> String {
    let mut named: Vec<String> = pids
        .iter()
        .take(5)
        .map(
            |pid| match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                Ok(comm) => format!("{pid} {}", comm.trim()),
                Err(_) => pid.to_string(),
            },
        )
        .collect();
    if pids.len() > 5 {
        named.push(format!("{} more", pids.len() - 5));
    }
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    /// Set (to the fresh cgroup it runs in) in the child of
    /// [`the_worker_moves_into_a_leaf_on_the_real_cgroup_v2_hierarchy`].
    const CHILD_CGROUP: &str = "HANDS_CGROUP_LEAF_TEST_CGROUP";

    /// This process's cgroup v2 path, and each of its threads'.
    fn cgroups_of_self() -> (String, Vec<String>) {
        let of = |file: &Path| {
            std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
                .unwrap()
        };
        let threads = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|t| of(&t.unwrap().path().join("cgroup")))
            .collect();
        (of(Path::new("/proc/self/cgroup")), threads)
    }

    fn members_of(dir: &Path) -> Vec<i32> {
        members(dir).unwrap()
    }

    /// The real kernel's side of the move, on this host's cgroup v2 hierarchy (mounted at
    /// `/sys/fs/cgroup/unified` on this project's hybrid machines, where `pids` is bound to v1,
    /// so pids itself cannot be enabled there). The test runs itself again in a fresh cgroup
    /// of its own (the test harness never moves), as a worker with threads already running:
    /// it moves into its leaf (every thread goes), the sweep of gone workers' cgroups leaves
    /// the live worker's leaf alone, a controller that cannot be enabled moves it back and
    /// removes the leaf; where the hierarchy offers `hugetlb` (this host's does), the
    /// no-internal-processes rule is met for real: with another process in the cgroup enabling
    /// it fails (EBUSY) and the worker moves back, alone it works. Once the child has exited,
    /// its leaf is empty and the sweep a next worker runs at start removes it.
    #[test]
    fn the_worker_moves_into_a_leaf_on_the_real_cgroup_v2_hierarchy() {
        if let Some(own) = std::env::var_os(CHILD_CGROUP) {
            return as_the_worker(Path::new(&own));
        }
        let required = std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = crate::cgroup::cgroup2_mount(&mountinfo) else {
            assert!(
                !required,
                "REQUIRE_ISOLATION=1 but no cgroup v2 hierarchy is mounted"
            );
            eprintln!("skipping: no cgroup v2 hierarchy is mounted");
            return;
        };
        let own = mount.join(format!(
            "hands-leaf-test-{:016x}",
            crate::process_limit::random_tag()
        ));
        if let Err(e) = std::fs::create_dir(&own) {
            assert!(
                !required,
                "REQUIRE_ISOLATION=1 but no cgroup v2 cgroup can be made: {e}"
            );
            eprintln!(
                "skipping: no cgroup can be made in {}: {e}",
                mount.display()
            );
            return;
        }
        let cleanup = RemoveOnDrop(own.clone());
        // On this project's hybrid hosts the v2 hierarchy offers hugetlb only: enabled for the
        // root's children (a root may hold processes), so that the child's cgroup has a
        // controller to enable. Left enabled: nothing else uses that hierarchy here, and a
        // concurrent run may rely on it.
        let root_has = |file: &str, c: &str| {
            std::fs::read_to_string(mount.join(file))
                .is_ok_and(|t| t.split_whitespace().any(|w| w == c))
        };
        if root_has("cgroup.controllers", "hugetlb")
            && !root_has("cgroup.subtree_control", "hugetlb")
        {
            match std::fs::write(mount.join("cgroup.subtree_control"), "+hugetlb") {
                Ok(()) => println!(
                    "enabled hugetlb in {}/cgroup.subtree_control",
                    mount.display()
                ),
                Err(e) => println!("hugetlb could not be enabled in the v2 root: {e}"),
            }
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(own.join("cgroup.procs"))
            .unwrap();
        let procs_fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "cgroup_leaf::tests::the_worker_moves_into_a_leaf_on_the_real_cgroup_v2_hierarchy",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_CGROUP, &own);
        // SAFETY: one `write` to a descriptor held open until after the spawn; no allocation.
        unsafe {
            child.pre_exec(move || crate::cgroup::join(procs_fd));
        }
        let out = child.output().unwrap();
        drop(procs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the child: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The child ran exactly that test, not zero tests.
        assert!(stdout.contains("1 passed"), "{stdout}");
        println!("the child:\n{stdout}");
        if root_has("cgroup.subtree_control", "hugetlb") {
            assert!(
                stdout.contains("the no-internal-processes rule met"),
                "{stdout}"
            );
        }
        // It left its leaf, now empty, and nothing in its cgroup.
        let leaves: Vec<PathBuf> = std::fs::read_dir(&own)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(leaves.len(), 1, "{leaves:?}");
        let leaf = &leaves[0];
        assert!(leaf.to_string_lossy().ends_with("-worker"), "{leaf:?}");
        assert_eq!(members_of(leaf), Vec::<i32>::new());
        assert_eq!(members_of(&own), Vec::<i32>::new());
        // The next start's sweep removes it: its owner is gone.
        let namespace = crate::cgroup::pid_namespace().unwrap();
        let (removed, failed) =
            crate::cgroup::sweep_orphans_in(&own, namespace, crate::sweep::start_time);
        assert_eq!((removed, failed), (vec![leaf.clone()], vec![]));
        assert!(!leaf.exists());
        drop(cleanup);
        assert!(!own.exists());
    }

    /// The child: a worker alone in the cgroup `own`, with threads running.
    fn as_the_worker(own: &Path) {
        let me = i32::try_from(std::process::id()).unwrap();
        let rel = own
            .to_string_lossy()
            .split_once("/hands-leaf-test-")
            .map(|(_, tag)| format!("/hands-leaf-test-{tag}"))
            .unwrap();
        // Threads already running, as a runtime's are at the probe.
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let parked = std::sync::Arc::new(std::sync::Mutex::new(parked));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let parked = parked.clone();
                std::thread::spawn(move || {
                    let _ = parked.lock().unwrap().recv();
                })
            })
            .collect();
        let (mine, all) = cgroups_of_self();
        assert_eq!(mine, rel);
        assert!(all.len() >= 4 && all.iter().all(|c| *c == rel), "{all:?}");
        assert_eq!(members_of(own), vec![me]);

        // The checks on the real files: a domain cgroup, not the root, only the worker in it.
        // This host's hierarchy offers no pids.
        let offered = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap();
        match check_own(own, "pids", me) {
            Ok(()) => assert!(offered.split_whitespace().any(|c| c == "pids")),
            Err(why) => assert!(
                why.contains("pids is not in its cgroup.controllers"),
                "{why}"
            ),
        }
        let root = own.parent().unwrap();
        assert!(
            check_own(root, "pids", me)
                .unwrap_err()
                .contains("the cgroup v2 root")
        );

        // A controller the hierarchy does not offer: the move is undone, the leaf removed.
        let name = |tag: &str| format!("{}{tag}", crate::cgroup::owner_prefix());
        let err = move_into_leaf(own, &name("not-offered"), me, Some("pids")).unwrap_err();
        assert!(err.contains("the worker moved back"), "{err}");
        assert!(!err.contains("could not be removed"), "{err}");
        assert!(!own.join(name("not-offered")).exists());
        let (mine, all) = cgroups_of_self();
        assert!(mine == rel && all.iter().all(|c| *c == rel), "{all:?}");

        // The no-internal-processes rule, where a controller can be enabled here.
        let hugetlb = offered.split_whitespace().any(|c| c == "hugetlb");
        if hugetlb {
            let mut other = std::process::Command::new("sleep")
                .arg("7308")
                .spawn()
                .unwrap();
            let pid = i32::try_from(other.id()).unwrap();
            assert!(members_of(own).contains(&pid));
            assert!(
                check_own(own, "hugetlb", me)
                    .unwrap_err()
                    .contains(&format!("({pid} sleep"))
            );
            // Past the check (a process that joins meanwhile): EBUSY, and back.
            let err = move_into_leaf(own, &name("busy"), me, Some("hugetlb")).unwrap_err();
            assert!(
                err.contains("joined the cgroup meanwhile")
                    && err.contains("the worker moved back"),
                "{err}"
            );
            assert!(!own.join(name("busy")).exists());
            assert_eq!(cgroups_of_self().0, rel);
            other.kill().unwrap();
            other.wait().unwrap();
            check_own(own, "hugetlb", me).unwrap();
            println!("the no-internal-processes rule met: EBUSY with another process, moved back");
        } else {
            println!("no controller offered here: the no-internal-processes rule is not met");
        }

        // The move itself, with the controller where there is one.
        let leaf = move_into_leaf(own, &name(LEAF_TAG), me, hugetlb.then_some("hugetlb")).unwrap();
        let in_leaf = format!("{rel}/{}", name(LEAF_TAG));
        let (mine, all) = cgroups_of_self();
        assert_eq!(mine, in_leaf);
        assert!(all.iter().all(|c| *c == in_leaf), "{all:?}");
        assert_eq!(members_of(own), Vec::<i32>::new());
        assert_eq!(members_of(&leaf), vec![me]);
        if hugetlb {
            let enabled = std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap();
            assert!(
                enabled.split_whitespace().any(|c| c == "hugetlb"),
                "{enabled}"
            );
            // A tool tree's cgroup beside the leaf gets the controller's files.
            let sibling = own.join(name("tool"));
            std::fs::create_dir(&sibling).unwrap();
            let has = std::fs::read_dir(&sibling).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("hugetlb.")
            });
            std::fs::remove_dir(&sibling).unwrap();
            assert!(has, "no hugetlb files beside the leaf");
        }
        // The start's sweep leaves the live worker's leaf alone.
        let namespace = crate::cgroup::pid_namespace().unwrap();
        let (removed, failed) =
            crate::cgroup::sweep_orphans_in(own, namespace, crate::sweep::start_time);
        assert!(
            removed.is_empty() && failed.is_empty(),
            "{removed:?} {failed:?}"
        );
        assert!(leaf.exists());
        assert_eq!(cgroups_of_self().0, in_leaf);
        drop(stop);
        for t in threads {
            t.join().unwrap();
        }
    }

    /// Removes a test's cgroup and what is left in it (children first; processes killed).
    struct RemoveOnDrop(PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            fn remove(dir: &Path) {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for e in entries.flatten() {
                        if e.path().is_dir() {
                            remove(&e.path());
                        }
                    }
                }
                for pid in members(dir).unwrap_or_default() {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                for _ in 0..500 {
                    match std::fs::remove_dir(dir) {
                        Err(e) if e.kind() == ErrorKind::ResourceBusy => {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        _ => return,
                    }
                }
            }
            remove(&self.0);
        }
    }
}
