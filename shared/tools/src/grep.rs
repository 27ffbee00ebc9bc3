//! `grep`: regular-expression search in process, with ripgrep's library crates.
//!
//! The regex is compiled by `grep-regex` (the `regex` crate: finite automata, linear time, no
//! backtracking engine, so `(a+)+$` cannot explode) with size limits on the compiled program
//! and the lazy DFA, and a limit on the pattern's length (T25). The walk follows the
//! reference's built-in search: it skips `.git` and `node_modules`, never follows symlinks,
//! reads only regular files, skips binary files (a NUL byte) and lines longer than 2,000 bytes,
//! and stops at 100 KiB of output with the reference marker. Each file is opened relative to
//! the search root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a directory
//! swapped for a symlink during the walk cannot lead the search out of the root. The searcher's
//! buffer is capped, so a 1 GB single line costs bounded memory. It runs on the blocking pool
//! and checks a time budget and the cancellation token as it goes (T11).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use grep_regex::RegexMatcherBuilder;
use grep_searcher::{BinaryDetection, MmapChoice, Searcher, SearcherBuilder, Sink, SinkMatch};
use hands_protocol::toolset::{GrepInput, ToolOutput};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use tokio_util::sync::CancellationToken;

use crate::Session;

/// Largest line buffer the searcher may grow to; a longer line aborts that file's search.
const SEARCH_HEAP_LIMIT: usize = 8 * 1024 * 1024;

struct Collector<'a> {
    path: &'a str,
    out: &'a mut String,
    budget: &'a mut usize,
    max_line: usize,
    full: bool,
    cancel: &'a CancellationToken,
    deadline: &'a dyn Fn() -> bool,
}

impl Sink for Collector<'_> {
    type Error = io::Error;

    fn matched(&mut self, _searcher: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        let first = mat.line_number().unwrap_or(0);
        for (i, raw) in mat.lines().enumerate() {
            if raw.len() > self.max_line {
                continue;
            }
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches(['\r', '\n']);
            let line = format!("{}:{}:{}", self.path, first + i as u64, text);
            // The reference's accounting: each line costs its length plus the newline.
            match self.budget.checked_sub(line.len() + 1) {
                Some(left) => *self.budget = left,
                None => {
                    self.full = true;
                    return Ok(false);
                }
            }
            if !self.out.is_empty() {
                self.out.push('\n');
            }
            self.out.push_str(&line);
        }
        Ok(!self.cancel.is_cancelled() && !(self.deadline)())
    }
}

fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd: OwnedFd = match rustix::fs::openat2(
        root,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Kernels before 5.6: only the last component is protected from a swap (O_NOFOLLOW).
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(root, rel, flags, Mode::empty())?,
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

pub(crate) fn run(session: &Session, input: GrepInput, cancel: &CancellationToken) -> ToolOutput {
    let err = |msg: String| ToolOutput::error(format!("grep: {msg}"));
    let limits = &session.limits;
    if input.pattern.len() > limits.pattern_bytes {
        return err(format!(
            "pattern is longer than {} bytes",
            limits.pattern_bytes
        ));
    }
    let matcher = match RegexMatcherBuilder::new()
        .size_limit(limits.regex_size_limit)
        .dfa_size_limit(limits.regex_dfa_size_limit)
        .line_terminator(Some(b'\n'))
        .build(&input.pattern)
    {
        Ok(m) => m,
        Err(e) => return err(format!("invalid regex: {e}")),
    };
    let resolved = match input.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => match session.roots.resolve(p) {
            Ok(r) => Some(r),
            Err(e) => return err(e.to_string()),
        },
        None => None,
    };
    // The directory searched (held open), and the single file when `path` names one.
    let (root_path, root_fd, single): (std::path::PathBuf, OwnedFd, Option<std::ffi::OsString>) =
        match resolved {
            None => match session.roots.workdir.fd().try_clone_to_owned() {
                Ok(fd) => (session.roots.workdir.path.clone(), fd, None),
                Err(e) => return err(e.to_string()),
            },
            Some(r) => match r.rest.as_slice() {
                [] => (r.path, r.dir, None),
                [leaf] => match rustix::fs::statat(
                    r.dir.as_fd(),
                    leaf.as_os_str(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        match rustix::fs::openat(
                            r.dir.as_fd(),
                            leaf.as_os_str(),
                            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) {
                            Ok(fd) => (r.path, fd, None),
                            Err(e) => return err(e.to_string()),
                        }
                    }
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                        let parent = r.path.parent().map(Path::to_path_buf).unwrap_or_default();
                        (parent, r.dir, Some(leaf.clone()))
                    }
                    _ => return ToolOutput::ok("no matches"),
                },
                _ => return ToolOutput::ok("no matches"),
            },
        };

    let started = Instant::now();
    let deadline = || started.elapsed() > limits.search_time;
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .binary_detection(BinaryDetection::quit(0))
        .memory_map(MmapChoice::never())
        .heap_limit(Some(SEARCH_HEAP_LIMIT))
        .build();
    let mut out = String::new();
    let mut budget = limits.grep_output_bytes;
    let mut full = false;
    let mut stopped: Option<String> = None;
    let mut search_one = |rel: &Path, shown: &str, out: &mut String, budget: &mut usize| -> bool {
        let Ok(file) = open_beneath(root_fd.as_fd(), rel) else {
            return true;
        };
        let mut sink = Collector {
            path: shown,
            out,
            budget,
            max_line: limits.grep_max_line_bytes,
            full: false,
            cancel,
            deadline: &deadline,
        };
        // A file that errors (a line over the heap limit, a read error) keeps the matches
        // found before the error and the search goes on with the next file.
        let _ = searcher.search_file(&matcher, &file, &mut sink);
        !sink.full
    };

    if let Some(leaf) = single {
        let shown = root_path.join(&leaf);
        full = !search_one(
            Path::new(&leaf),
            &shown.to_string_lossy(),
            &mut out,
            &mut budget,
        );
    } else {
        let walker = ignore::WalkBuilder::new(&root_path)
            .standard_filters(false)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(|e| {
                !(e.file_type().is_some_and(|t| t.is_dir())
                    && matches!(e.file_name().to_str(), Some(".git" | "node_modules")))
            })
            .build();
        let mut files = 0usize;
        for entry in walker {
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            if cancel.is_cancelled() {
                return err("cancelled".into());
            }
            if deadline() {
                stopped = Some(format!(
                    "[search stopped after {}s]",
                    limits.search_time.as_secs_f64()
                ));
                break;
            }
            files += 1;
            if files > limits.walk_entries {
                stopped = Some(format!(
                    "[search stopped after {} files]",
                    limits.walk_entries
                ));
                break;
            }
            let Ok(rel) = entry.path().strip_prefix(&root_path) else {
                continue;
            };
            if !search_one(rel, &entry.path().to_string_lossy(), &mut out, &mut budget) {
                full = true;
                break;
            }
        }
    }
    if cancel.is_cancelled() {
        return err("cancelled".into());
    }
    if full {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "[output truncated at {} bytes]",
            limits.grep_output_bytes
        ));
    } else if let Some(note) = stopped {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&note);
    } else if deadline() {
        // The budget ran out inside the last file searched.
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "[search stopped after {}s]",
            limits.search_time.as_secs_f64()
        ));
    }
    if out.is_empty() {
        return ToolOutput::ok("no matches");
    }
    ToolOutput::ok(out)
}
