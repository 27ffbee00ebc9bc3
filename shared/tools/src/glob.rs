//! `glob`: files and directories matching a doublestar pattern under the workdir (or `path`),
//! newest first.
//!
//! Built on `ignore`'s walker with every filter off (the reference lists hidden and ignored
//! files too) and `globset` with `literal_separator` (`*` stays within one component, `**`
//! crosses them). Symlinks are never followed, so a link to `/` or a link loop is one entry,
//! not a way out or a hang (T24); a matching symlink is listed only if its target is inside
//! the permitted roots, as the reference filters. The walk is bounded by an entry count and a
//! time budget, and is cancellable.

use std::path::Path;
use std::time::{Instant, SystemTime};

use globset::GlobBuilder;
use hands_protocol::toolset::{GlobInput, ToolOutput};
use tokio_util::sync::CancellationToken;

use crate::Session;

pub(crate) fn run(session: &Session, input: GlobInput, cancel: &CancellationToken) -> ToolOutput {
    let err = |msg: String| ToolOutput::error(format!("glob: {msg}"));
    let limits = &session.limits;
    let pattern = input.pattern.as_str();
    if pattern.starts_with('/') {
        return err(
            "absolute pattern not permitted; pass a relative pattern (and optionally path)".into(),
        );
    }
    if pattern.split('/').any(|part| part == "..") {
        return err("'..' is not permitted in the pattern".into());
    }
    if pattern.is_empty() {
        return err("pattern is empty".into());
    }
    if pattern.len() > limits.pattern_bytes {
        return err(format!(
            "pattern is longer than {} bytes",
            limits.pattern_bytes
        ));
    }
    let root = match input.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => match session.roots.resolve(p) {
            Ok(r) => r.path,
            Err(e) => return err(e.to_string()),
        },
        None => session.roots.workdir.path.clone(),
    };
    let matcher = match GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
    {
        Ok(g) => g.compile_matcher(),
        Err(e) => return err(format!("invalid pattern: {e}")),
    };
    // Python's pathlib yields only directories for a pattern ending in `**`.
    let dirs_only = pattern.trim_end_matches('/').rsplit('/').next() == Some("**");

    let started = Instant::now();
    let mut matches: Vec<(SystemTime, String)> = Vec::new();
    let mut visited = 0usize;
    let mut stopped: Option<&str> = None;
    let walker = ignore::WalkBuilder::new(&root)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let Ok(entry) = entry else { continue };
        if entry.depth() == 0 {
            continue;
        }
        visited += 1;
        if visited > limits.walk_entries {
            stopped = Some("entry");
            break;
        }
        if visited.is_multiple_of(256) {
            if cancel.is_cancelled() {
                return err("cancelled".into());
            }
            if started.elapsed() > limits.search_time {
                stopped = Some("time");
                break;
            }
        }
        let Some(rel) = crate::grep::relative(entry.path(), &root) else {
            continue;
        };
        if !matcher.is_match(rel) {
            continue;
        }
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if dirs_only && !kind.is_dir() {
            continue;
        }
        if kind.is_symlink() && !symlink_target_permitted(session, entry.path()) {
            continue;
        }
        let mtime = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        matches.push((mtime, entry.path().to_string_lossy().into_owned()));
    }
    if matches.is_empty() && stopped.is_none() {
        return ToolOutput::ok("no matches");
    }
    // Newest first; equal times by path, so the order is deterministic.
    matches.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = matches.len();
    let mut text = matches
        .into_iter()
        .take(limits.glob_results)
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("\n");
    if total > limits.glob_results {
        text.push_str(&format!(
            "\n[showing {} of {total} matches, newest first]",
            limits.glob_results
        ));
    }
    match stopped {
        Some("entry") => text.push_str(&format!(
            "\n[walk stopped after {} entries; narrow the pattern or path]",
            limits.walk_entries
        )),
        Some(_) => text.push_str(&format!(
            "\n[walk stopped after {}s; narrow the pattern or path]",
            limits.search_time.as_secs_f64()
        )),
        None => {}
    }
    ToolOutput::ok(text.trim_start_matches('\n').to_owned())
}

fn symlink_target_permitted(session: &Session, path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| session.roots.resolve(p).is_ok())
}
