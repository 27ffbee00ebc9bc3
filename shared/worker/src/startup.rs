//! The start-of-invocation sweep of a reused execution environment (DESIGN.md "Lambda deadline
//! and continuation", CATALOGUE T26): a warm Lambda environment keeps `/tmp` and *resumes*
//! processes frozen at the end of the previous invocation, so whatever a tool left behind
//! there, processes or files, must be gone before the next item is served.
//!
//! Processes: the serving process makes itself a child subreaper ([`adopt_orphans`]), so an
//! orphan whose shell died is re-parented to it instead of to init; everything left below it
//! between invocations is then, by construction, a leftover (the toolset shuts every session's
//! processes down before an invocation returns). [`kill_leftover_processes`] kills exactly that
//! tree and nothing else: on a shared machine no other process of the same uid is touched.
//! The tree is read from the `children` files where the kernel has them
//! (`CONFIG_PROC_CHILDREN`), else from the parent pid in every `/proc/*/stat`
//! ([`ChildrenSource`]).
//!
//! Files: [`wipe_stale_workspaces`] removes session directories left beside the template's
//! `{session_id}` by earlier invocations; what a session needs again comes from the workspace
//! store, never from a previous invocation's leftovers. [`sweep_leftover_tmp_dirs`] removes
//! the private temporary directories of sessions whose worker died without ending them
//! (SIGKILL, OOM: CATALOGUE P3, P4); it runs at the start of every serving command (`hands
//! poll`, `run`, `serve`) and of every Lambda invocation, and never touches a directory a live
//! session holds, whichever worker process on the host it belongs to.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal, WaitOptions};

use crate::workdir::{SESSION_PLACEHOLDER, WorkdirTemplate};

/// Makes this process the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`).
pub fn adopt_orphans() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(std::io::Error::from)
}

/// How the children of a process are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildrenSource {
    /// `/proc/<pid>/task/<tid>/children` of every thread: a few small reads, but only on
    /// kernels built with `CONFIG_PROC_CHILDREN`.
    ProcChildren,
    /// Every `/proc/<pid>/stat`, selecting by parent pid (field 4): works on every kernel, one
    /// pass over all processes per tree level.
    StatScan,
}

impl ChildrenSource {
    /// `ProcChildren` when this kernel has the `children` files, else `StatScan`.
    pub fn detect() -> Self {
        let me = std::process::id();
        if std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists() {
            ChildrenSource::ProcChildren
        } else {
            ChildrenSource::StatScan
        }
    }
}

/// State and parent pid of `pid`, from `/proc/<pid>/stat` (parsed as the per-call sweep does,
/// hostile command names included).
fn stat_of(pid: i32) -> Option<(char, i32)> {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|raw| hands_sandbox::parse_stat(&raw))
        .map(|s| (char::from(s.state), s.ppid))
}

/// The children of `pid`, zombies included, from every thread's `children` file.
fn children_from_files(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The children of `pid`, zombies included, by parent pid in every `/proc/*/stat`.
fn children_from_stat(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| stat_of(p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

fn children_any_state(pid: i32, source: ChildrenSource) -> Vec<i32> {
    match source {
        ChildrenSource::ProcChildren => children_from_files(pid),
        ChildrenSource::StatScan => children_from_stat(pid),
    }
}

/// The live (non-zombie) children of `pid`.
fn children(pid: i32, source: ChildrenSource) -> Vec<i32> {
    let mut out = children_any_state(pid, source);
    out.retain(|&p| !is_zombie(p));
    out
}

fn is_zombie(pid: i32) -> bool {
    stat_of(pid).is_none_or(|(state, _)| state == 'Z')
}

/// The live descendants of `root` (not `root` itself).
pub fn descendants(root: i32, source: ChildrenSource) -> Vec<i32> {
    let mut tree = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for c in children(p, source) {
            if !tree.contains(&c) {
                tree.push(c);
                frontier.push(c);
            }
        }
    }
    tree
}

/// Kills every descendant of this process and reaps the direct children among them; rounds
/// repeat until one finds nothing (a killed process cannot fork any more). Returns how many
/// processes were killed. Call it only when this process has no child of its own running
/// (between invocations). Uses the `children` files when the kernel has them, else a scan of
/// every `/proc/*/stat` by parent pid.
pub fn kill_leftover_processes() -> usize {
    let source = ChildrenSource::detect();
    let killed = kill_tree(std::process::id() as i32, source);
    if killed > 0 {
        tracing::warn!(
            count = killed,
            ?source,
            "killed processes left over from an earlier invocation"
        );
    }
    killed
}

/// Kills every descendant of `root`, in rounds until none is left, reaping those that are this
/// process's children. Returns how many processes were killed.
pub fn kill_tree(root: i32, source: ChildrenSource) -> usize {
    let me = std::process::id() as i32;
    let mut killed = HashSet::new();
    let reap = || {
        // Our direct children (re-parented orphans included) stay zombies until reaped.
        for c in children_any_state(me, source) {
            if let Some(pid) = Pid::from_raw(c) {
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
            }
        }
    };
    for _round in 0..16 {
        let tree = descendants(root, source);
        if tree.is_empty() {
            break;
        }
        for &p in &tree {
            if let Some(pid) = Pid::from_raw(p) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                killed.insert(p);
            }
        }
        reap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    reap();
    killed.len()
}

/// Whether `name` looks like a session directory the template made (`sesn_...`; the docs also
/// show `session_...`). Anything else in the parent directory is not ours and is left alone.
fn is_session_dir_name(name: &str) -> bool {
    (name.starts_with("sesn_") || name.starts_with("session_"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The directory whose entries are the per-session directories of `template`, when the
/// placeholder is a whole path component (`/tmp/hands/{session_id}[/...]`).
fn sessions_parent(template: &WorkdirTemplate) -> Option<PathBuf> {
    let t = template.as_str();
    let at = t.find(SESSION_PLACEHOLDER)?;
    let (before, after) = (&t[..at], &t[at + SESSION_PLACEHOLDER.len()..]);
    if !before.ends_with('/') || !(after.is_empty() || after.starts_with('/')) {
        return None;
    }
    Some(PathBuf::from(before))
}

/// Removes the session directories earlier invocations left under the template's parent
/// directory. Returns the paths removed. A literal (shared) workdir is never touched.
pub fn wipe_stale_workspaces(template: &WorkdirTemplate) -> Vec<PathBuf> {
    let Some(parent) = sessions_parent(template) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_session_dir_name(name) {
            continue;
        }
        let path = entry.path();
        if remove_entry(&path).is_ok() {
            removed.push(path);
        } else {
            tracing::warn!(path = %path.display(), "cannot remove a stale workspace");
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), parent = %parent.display(), "removed stale workspaces");
    }
    removed
}

/// Removes the private temporary directories (`hands-tmp-*` in the worker's temporary
/// directory) of sessions no live process holds: what workers killed without a clean end left.
/// Returns the paths removed.
pub fn sweep_leftover_tmp_dirs() -> Vec<PathBuf> {
    let parent = std::env::temp_dir();
    let removed = hands_tools::sweep_leftover_tmp_dirs(&parent);
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), parent = %parent.display(),
            "removed temporary directories of sessions whose worker died");
    }
    removed
}

fn remove_entry(path: &Path) -> std::io::Result<()> {
    // A symlink (planted, T26) is removed itself, never followed; directories tool code closed
    // with `chmod` are reopened.
    std::fs::symlink_metadata(path)?;
    hands_sandbox::remove_tree(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels without `children` files (no CONFIG_PROC_CHILDREN): the stat
    /// scan sees the same tree as the files (when they exist) and kills all of it. Only the
    /// tree below the spawned shell is touched, so other tests' processes are safe.
    #[test]
    fn the_stat_scan_finds_and_kills_a_process_tree() {
        let mut shell = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 300 & (sleep 300 & wait) & wait")
            .spawn()
            .unwrap();
        let root = shell.id() as i32;
        // sh -> sleep, sh -> sh -> sleep: three processes below the root once all started.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = descendants(root, ChildrenSource::StatScan);
        while seen.len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "tree never started: {seen:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
            seen = descendants(root, ChildrenSource::StatScan);
        }
        seen.sort();
        if ChildrenSource::detect() == ChildrenSource::ProcChildren {
            let mut from_files = descendants(root, ChildrenSource::ProcChildren);
            from_files.sort();
            assert_eq!(seen, from_files);
        }
        let killed = kill_tree(root, ChildrenSource::StatScan);
        assert_eq!(killed, seen.len(), "{seen:?}");
        assert!(descendants(root, ChildrenSource::StatScan).is_empty());
        for p in &seen {
            assert!(is_zombie(*p), "{p} still alive");
        }
        let _ = shell.kill();
        let _ = shell.wait();
    }

    #[test]
    fn only_session_directories_under_the_template_parent_are_wiped() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let base = root.path().join("hands");
        std::fs::create_dir_all(base.join("sesn_old/deep")).unwrap();
        std::fs::write(base.join("sesn_old/deep/file"), "x").unwrap();
        std::fs::create_dir_all(base.join("not-a-session")).unwrap();
        std::os::unix::fs::symlink(outside.path(), base.join("sesn_link")).unwrap();
        let t = WorkdirTemplate::new(format!("{}/{{session_id}}", base.display()));
        let mut removed = wipe_stale_workspaces(&t);
        removed.sort();
        assert_eq!(removed, vec![base.join("sesn_link"), base.join("sesn_old")]);
        assert!(base.join("not-a-session").exists());
        // The symlink went, not what it pointed to.
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn literal_and_odd_templates_wipe_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sesn_x")).unwrap();
        let literal = WorkdirTemplate::new(root.path().to_str().unwrap());
        assert!(wipe_stale_workspaces(&literal).is_empty());
        let glued = WorkdirTemplate::new(format!("{}/w-{{session_id}}", root.path().display()));
        assert!(wipe_stale_workspaces(&glued).is_empty());
        assert!(root.path().join("sesn_x").exists());
    }
}
