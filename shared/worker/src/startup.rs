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
//!
//! Files: [`wipe_stale_workspaces`] removes session directories left beside the template's
//! `{session_id}` by earlier invocations; what a session needs again comes from the workspace
//! store, never from a previous invocation's leftovers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal, WaitOptions};

use crate::workdir::{SESSION_PLACEHOLDER, WorkdirTemplate};

/// Makes this process the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`).
pub fn adopt_orphans() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(std::io::Error::from)
}

/// The live (non-zombie) children of `pid`, from every thread's `children` file.
fn children(pid: i32) -> Vec<i32> {
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
    out.retain(|&p| !is_zombie(p));
    out
}

fn is_zombie(pid: i32) -> bool {
    // The state follows the last ')' (the command name may contain spaces and parentheses).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}

/// Kills every descendant of this process and reaps the direct children among them; rounds
/// repeat until one finds nothing (a killed process cannot fork any more). Returns how many
/// processes were killed. Call it only when this process has no child of its own running
/// (between invocations).
pub fn kill_leftover_processes() -> usize {
    let me = std::process::id() as i32;
    let mut killed = HashSet::new();
    for _round in 0..16 {
        let mut tree = Vec::new();
        let mut frontier = vec![me];
        while let Some(p) = frontier.pop() {
            for c in children(p) {
                if !tree.contains(&c) {
                    tree.push(c);
                    frontier.push(c);
                }
            }
        }
        if tree.is_empty() {
            break;
        }
        for &p in &tree {
            if let Some(pid) = Pid::from_raw(p) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                killed.insert(p);
            }
        }
        // Our direct children (re-parented orphans included) stay zombies until reaped.
        for c in children_any_state(me) {
            if let Some(pid) = Pid::from_raw(c) {
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for c in children_any_state(me) {
        if let Some(pid) = Pid::from_raw(c) {
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
        }
    }
    if !killed.is_empty() {
        tracing::warn!(
            count = killed.len(),
            "killed processes left over from an earlier invocation"
        );
    }
    killed.len()
}

fn children_any_state(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
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

fn remove_entry(path: &Path) -> std::io::Result<()> {
    // A symlink (planted, T26) is removed itself, never followed.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
