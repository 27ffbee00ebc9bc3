//! `glob`: files and directories matching a doublestar pattern under the workdir (or `path`),
//! newest first.
//!
//! The tree is walked over directory descriptors, as `grep` walks it (`grep::walk`): every
//! directory opened beneath the walk's root without following a symlink anywhere on the way,
//! read with `getdents64`, its entries sorted by name, and each matching entry stated relative
//! to its directory, so a symlink swapped in mid-walk is never followed and a path is never
//! looked up from `/`. The listing of a directory unchanged since an earlier `grep` or `glob`
//! read it is taken from the listings they keep (`grep::listings`: checked by an `fstat` of the
//! directory just opened), not read again. The matches' modification times are stated afresh,
//! except a regular file's whose content `grep` caches and trusts (`grep::watch`: its inotify
//! watch reported nothing since it was stated, and a change of times is an event), which is
//! taken from the cache without a system call. Nothing is filtered (the reference lists hidden
//! files, `.git` and ignored files too). Patterns are `globset` globs with `literal_separator`
//! (`*` stays within one component, `**` crosses them), matched against the path relative to
//! the root by a lazy DFA of the glob's regex (`automaton`), which also tells which directories
//! can hold a match: no other is entered. A pattern that starts with literal directory names
//! (`src/mod05/*.rs`) starts its walk in that directory, opened beneath the root in one
//! `openat2` that refuses symlinks, as the walk would have reached it, instead of reading the
//! root's and `src`'s listings to find it ([`literal_start`]); so `src/mod05/*.rs` reads one
//! directory, however large the ones above it. Symlinks are never followed, so a link to `/` or
//! a link loop is one entry, not a way out or a hang (T24); a matching symlink is listed only
//! if its target is inside the permitted roots, as the reference filters. The walk reads at
//! most `Limits::walk_entries` directory entries (one directory's listing included), checks a
//! time budget, and is cancellable.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use globset::GlobBuilder;
use hands_protocol::toolset::{GlobInput, ToolOutput};
use rustix::fs::{AtFlags, FileType};
use tokio_util::sync::CancellationToken;

use crate::Session;
use crate::grep::walk::{self, Target};
use crate::grep::watch::Trust;

mod automaton;
#[cfg(test)]
mod automaton_props;

/// Entries matched between two looks at the clock and the token (every directory opened
/// looks too).
const CHECK_EVERY: usize = 256;

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
    let glob = match compile(pattern) {
        Ok(g) => g,
        Err(e) => return err(format!("invalid pattern: {e}")),
    };
    let automaton = automaton::GlobAutomaton::new(glob);
    let (root_path, root_fd) = match input.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => match session.roots.resolve(p) {
            Ok(r) => match walk::target(r) {
                Ok(Target::Dir(path, fd)) => (path, fd),
                // A file or a missing path has nothing beneath it.
                Ok(Target::File { .. } | Target::Missing) => return ToolOutput::ok("no matches"),
                Err(e) => return err(e.to_string()),
            },
            Err(e) => return err(e.to_string()),
        },
        None => match session.roots.workdir.fd().try_clone_to_owned() {
            Ok(fd) => (session.roots.workdir.path.clone(), fd),
            Err(e) => return err(e.to_string()),
        },
    };
    let mut globber = Globber::new(
        session,
        crate::grep::trust(session),
        automaton,
        pattern,
        &root_path,
        cancel,
    );
    let start = literal_start(pattern, &mut globber.automaton);
    if globber.walk(root_fd.as_fd(), start).is_err() {
        return err("cancelled".into());
    }
    let Globber {
        mut matches,
        stopped,
        ..
    } = globber;
    if matches.is_empty() && stopped.is_none() {
        return ToolOutput::ok("no matches");
    }
    // Newest first; equal times by path, so the order is deterministic.
    matches.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
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
        Some(Stop::Entries) => text.push_str(&format!(
            "\n[walk stopped after {} entries; narrow the pattern or path]",
            limits.walk_entries
        )),
        Some(Stop::Time) => text.push_str(&format!(
            "\n[walk stopped after {}s; narrow the pattern or path]",
            limits.search_time.as_secs_f64()
        )),
        None => {}
    }
    ToolOutput::ok(text.trim_start_matches('\n').to_owned())
}

/// The glob of `pattern` with the syntax options the tool uses: `*` stays within one
/// component, `\` escapes, and `{a,}` may hold an empty alternative.
fn compile(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
}

/// Why the walk ended before the end of the tree.
#[derive(Clone, Copy)]
enum Stop {
    Entries,
    Time,
}

/// The walk was cancelled.
struct Cancelled;

/// One glob call's walk and what it found.
struct Globber<'a> {
    session: &'a Session,
    /// Where a trusted file's modification time is taken from (`grep::watch`).
    trust: Option<Trust<'static>>,
    /// What matches, and which subdirectories can hold a match.
    automaton: automaton::GlobAutomaton,
    dirs_only: bool,
    root_path: &'a Path,
    started: Instant,
    cancel: &'a CancellationToken,
    /// Each match's modification time (seconds, nanoseconds) and shown path.
    matches: Vec<((i64, i64), String)>,
    /// Directory entries read so far.
    read: usize,
    /// Entries since the last look at the clock and the token.
    unchecked: usize,
    stopped: Option<Stop>,
}

impl<'a> Globber<'a> {
    /// A walk for `pattern` (its `automaton`) beneath `root_path`, nothing read yet.
    fn new(
        session: &'a Session,
        trust: Option<Trust<'static>>,
        automaton: automaton::GlobAutomaton,
        pattern: &str,
        root_path: &'a Path,
        cancel: &'a CancellationToken,
    ) -> Self {
        Globber {
            session,
            trust,
            automaton,
            // Python's pathlib yields only directories for a pattern ending in `**`.
            dirs_only: pattern.trim_end_matches('/').rsplit('/').next() == Some("**"),
            root_path,
            started: Instant::now(),
            cancel,
            matches: Vec::new(),
            read: 0,
            unchecked: 0,
            stopped: None,
        }
    }

    /// Whether to stop: the token (an error) or the time budget (recorded).
    fn check(&mut self) -> Result<bool, Cancelled> {
        self.unchecked = 0;
        if self.cancel.is_cancelled() {
            return Err(Cancelled);
        }
        if self.started.elapsed() > self.session.limits.search_time {
            self.stopped = Some(Stop::Time);
            return Ok(true);
        }
        Ok(false)
    }

    /// Walks the tree beneath `root` depth first from directory `start` (relative to `root`;
    /// empty for the root itself), each directory's entries in name order. The stack holds,
    /// per level, the names of the subdirectories still to visit (not paths), so what it
    /// holds is bounded by the entries read.
    fn walk(&mut self, root: BorrowedFd<'_>, start: PathBuf) -> Result<(), Cancelled> {
        let mut buf = walk::dents_buffer();
        let mut current = start;
        let mut stack: Vec<std::vec::IntoIter<OsString>> = Vec::new();
        if let Some(subdirs) = self.read_dir(root, &current, &mut buf)? {
            stack.push(subdirs.into_iter());
        }
        while let Some(level) = stack.last_mut() {
            let Some(name) = level.next() else {
                stack.pop();
                current.pop();
                continue;
            };
            if self.stopped.is_some() {
                break;
            }
            current.push(&name);
            match self.read_dir(root, &current, &mut buf)? {
                Some(subdirs) => stack.push(subdirs.into_iter()),
                // Unreadable (permissions, swapped for a symlink): skipped.
                None => {
                    current.pop();
                }
            }
        }
        Ok(())
    }

    /// Reads directory `rel` (relative to the root), records its matching entries, and
    /// returns its subdirectories in name order; `None` when it cannot be opened.
    fn read_dir(
        &mut self,
        root: BorrowedFd<'_>,
        rel: &Path,
        buf: &mut walk::DentsBuffer,
    ) -> Result<Option<Vec<OsString>>, Cancelled> {
        if self.check()? {
            return Ok(None);
        }
        let Ok(fd) = walk::open_dir(root, rel, false) else {
            return Ok(None);
        };
        let budget = self.session.limits.walk_entries - self.read;
        let reuse = walk::Reuse {
            listings: &self.session.grep_cache.listings,
            settle: self.session.limits.grep_cache_settle,
        };
        let listing = walk::read_listing(&fd, budget, buf, Some(reuse));
        self.read += listing.read;
        if listing.truncated {
            self.stopped = Some(Stop::Entries);
        }
        let mut subdirs = Vec::new();
        let mut path = rel.as_os_str().as_bytes().to_vec();
        let prefix = path.len();
        for (name, kind, ino) in listing.entries {
            self.unchecked += 1;
            if self.unchecked >= CHECK_EVERY && self.check()? {
                break;
            }
            path.truncate(prefix);
            if prefix > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            if (!self.dirs_only || kind == FileType::Directory) && self.automaton.is_match(&path) {
                let key = listing.dev.map(|dev| (dev, ino));
                self.record(&fd, &name, kind, key, &path);
            }
            if kind == FileType::Directory && self.automaton.may_match_beneath(&path) {
                subdirs.push(name);
            }
        }
        Ok(Some(subdirs))
    }

    /// Lists the matching entry `name` of directory `dir`, `rel` beneath the root: with its
    /// own modification time (a symlink's, not its target's; a trusted regular file's from
    /// grep's cache, found by `key`, its `(st_dev, d_ino)` where known), and a symlink only
    /// when its target is within the permitted roots.
    fn record(
        &mut self,
        dir: &OwnedFd,
        name: &OsString,
        kind: FileType,
        key: Option<(u64, u64)>,
        rel: &[u8],
    ) {
        let mut shown = self.root_path.as_os_str().as_bytes().to_vec();
        if !shown.ends_with(b"/") {
            shown.push(b'/');
        }
        shown.extend_from_slice(rel);
        let shown = match String::from_utf8(shown) {
            Ok(s) => s,
            // A symlink whose path is not UTF-8 cannot be resolved to check its target.
            Err(_) if kind == FileType::Symlink => return,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if kind == FileType::Symlink && self.session.roots.resolve(&shown).is_err() {
            return;
        }
        let trusted = match (&self.trust, key) {
            (Some(trust), Some(key)) if kind == FileType::RegularFile => self
                .session
                .grep_cache
                .trusted_stamp(key, trust)
                .map(|stamp| stamp.mtime),
            _ => None,
        };
        let mtime = trusted.unwrap_or_else(|| {
            rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_or((0, 0), |st| mtime_of(&st))
        });
        self.matches.push((mtime, shown));
    }
}

/// The directory every match of `pattern` lies beneath, as far as the pattern spells it
/// literally: its leading components before the last one, up to the first that holds a
/// glob character (`*?[]{}` or an escape), is empty, or is `.`. A match's path must begin
/// with those components (`literal_separator`: no wildcard crosses a `/`), so the walk from
/// the root would only ever enter that directory through them, reading the listings above it
/// for nothing. Should a prefix of it itself be a match (`globset` matches neither `src` with
/// `src/**` nor `src/a` with `src/a/`, as the tests check, but this does not rely on it), the
/// walk starts at the root, which lists that match.
fn literal_start(pattern: &str, automaton: &mut automaton::GlobAutomaton) -> PathBuf {
    let mut parts: Vec<&str> = pattern.split('/').collect();
    parts.pop();
    let mut start = PathBuf::new();
    let mut spelled = String::new();
    for part in parts {
        if part.is_empty() || part == "." || part.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            break;
        }
        if !spelled.is_empty() {
            spelled.push('/');
        }
        spelled.push_str(part);
        if automaton.is_match(spelled.as_bytes()) {
            return PathBuf::new();
        }
        start.push(part);
    }
    start
}

// The field types of `struct stat` differ between architectures; these casts only widen.
#[allow(clippy::unnecessary_cast)]
fn mtime_of(st: &rustix::fs::Stat) -> (i64, i64) {
    (st.st_mtime as i64, st.st_mtime_nsec as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use hands_protocol::toolset::ContentBlock;

    use super::*;
    use crate::{Toolset, ToolsetConfig};

    /// The matches (shown paths, sorted) of `pattern` under the workdir and the entries read,
    /// walking from `literal_start`'s directory or, with `from_root`, from the root.
    fn walk_from(tools: &Toolset, pattern: &str, from_root: bool) -> (Vec<String>, usize) {
        let glob = compile(pattern).unwrap();
        let session = &tools.session;
        let cancel = CancellationToken::new();
        let mut globber = Globber::new(
            session,
            None,
            automaton::GlobAutomaton::new(glob),
            pattern,
            &session.roots.workdir.path,
            &cancel,
        );
        let start = if from_root {
            PathBuf::new()
        } else {
            literal_start(pattern, &mut globber.automaton)
        };
        assert!(globber.walk(session.roots.workdir.fd(), start).is_ok());
        let mut shown: Vec<String> = globber.matches.into_iter().map(|(_, p)| p).collect();
        shown.sort_unstable();
        (shown, globber.read)
    }

    /// Starting at the pattern's literal directory finds exactly what the walk from the root
    /// finds, links and all, while reading only that directory's entries and below.
    #[test]
    fn a_literal_start_finds_what_the_walk_from_the_root_finds() {
        let dir = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["src/a/deep", "src/b", "docs", "real"] {
            std::fs::create_dir_all(ws.join(d)).unwrap();
        }
        for f in [
            "src/a/x.rs",
            "src/a/y.py",
            "src/a/deep/z.rs",
            "src/b/w.rs",
            "docs/r.md",
        ] {
            std::fs::write(ws.join(f), "x").unwrap();
        }
        std::fs::write(ws.join("real/v.rs"), "x").unwrap();
        for i in 0..40 {
            std::fs::write(ws.join(format!("top{i}.txt")), "x").unwrap();
        }
        // A link to a directory inside: the walk never enters it, nor may the shortcut.
        std::os::unix::fs::symlink("real", ws.join("src/link")).unwrap();
        std::os::unix::fs::symlink("src", ws.join("lsrc")).unwrap();
        let tools = Toolset::new(ToolsetConfig::new(&ws)).unwrap();
        let patterns = [
            ("src/a/*.rs", true),
            ("src/a/**/*.rs", true),
            ("src/**", true),
            ("src/a/", false),
            ("src/a", false),
            ("src/link/*.rs", false),
            ("lsrc/a/*.rs", false),
            ("src/missing/*.rs", false),
            ("src/a/x.rs/*", false),
            ("src/{a,b}/*.rs", false),
            ("./src/a/*.rs", false),
            ("src//a/*.rs", false),
            ("**/*.rs", false),
            ("*.txt", false),
        ];
        for (pattern, shorter) in patterns {
            let (short, short_read) = walk_from(&tools, pattern, false);
            let (full, full_read) = walk_from(&tools, pattern, true);
            assert_eq!(short, full, "{pattern}");
            if shorter {
                assert!(
                    short_read < full_read,
                    "{pattern}: {short_read} entries, not fewer than {full_read}"
                );
            }
        }
        let (found, _) = walk_from(&tools, "src/a/*.rs", false);
        assert_eq!(found, [ws.join("src/a/x.rs").to_str().unwrap()]);
    }

    /// A symlink that matches is listed only when what it points at is inside the roots: one
    /// to a file or a directory outside is left out, one to a file inside is listed.
    #[test]
    fn a_matching_symlink_to_outside_the_roots_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (ws, outside) = (root.join("ws"), root.join("outside"));
        std::fs::create_dir(&ws).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "s").unwrap();
        std::fs::write(ws.join("in.txt"), "i").unwrap();
        std::os::unix::fs::symlink("in.txt", ws.join("in-link.txt")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), ws.join("out-link.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("outdir.txt")).unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", ws.join("rel-out.txt")).unwrap();
        let tools = Toolset::new(ToolsetConfig::new(&ws)).unwrap();
        let input = GlobInput {
            pattern: "*.txt".into(),
            path: None,
        };
        let out = run(&tools.session, input, &CancellationToken::new());
        assert!(!out.is_error, "{out:?}");
        let [ContentBlock::Text { text }] = out.content.as_slice() else {
            panic!("expected one text block, got {out:?}");
        };
        let mut listed: Vec<&str> = text.lines().collect();
        listed.sort_unstable();
        let (a, b) = (ws.join("in-link.txt"), ws.join("in.txt"));
        assert_eq!(listed, [a.to_str().unwrap(), b.to_str().unwrap()]);
    }
}
