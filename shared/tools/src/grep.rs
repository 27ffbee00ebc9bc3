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

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, MmapChoice, Searcher, SearcherBuilder, Sink, SinkMatch};
use hands_protocol::toolset::{GrepInput, ToolOutput};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use tokio_util::sync::CancellationToken;

use crate::{Limits, Session};

/// Largest line buffer the searcher may grow to; a longer line aborts that file's search.
const SEARCH_HEAP_LIMIT: usize = 8 * 1024 * 1024;

/// What one file contributed: its result lines (each within the line limit), and whether the
/// file's own lines overran the output budget (the merge then stops there too).
#[derive(Default)]
struct FileHits {
    lines: Vec<String>,
    full: bool,
}

struct Collector<'a> {
    path: &'a Path,
    hits: FileHits,
    /// The whole output budget, for this file alone: a file's lines past it can never be shown.
    budget: usize,
    max_line: usize,
    cancel: &'a CancellationToken,
    deadline: &'a (dyn Fn() -> bool + Sync),
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
            let line = format!(
                "{}:{}:{}",
                self.path.to_string_lossy(),
                first + i as u64,
                text
            );
            // The reference's accounting: each line costs its length plus the newline.
            match self.budget.checked_sub(line.len() + 1) {
                Some(left) => self.budget = left,
                None => {
                    self.hits.full = true;
                    return Ok(false);
                }
            }
            self.hits.lines.push(line);
        }
        Ok(!self.cancel.is_cancelled() && !(self.deadline)())
    }
}

/// Searches one file (opened beneath `root`) with `searcher`, returning its lines.
#[allow(clippy::too_many_arguments)]
fn search_file(
    searcher: &mut Searchers,
    matcher: &RegexMatcher,
    root: BorrowedFd<'_>,
    rel: &Path,
    shown: &Path,
    limits: &Limits,
    cancel: &CancellationToken,
    deadline: &(dyn Fn() -> bool + Sync),
) -> FileHits {
    let Ok(file) = open_beneath(root, rel) else {
        return FileHits::default();
    };
    let mut sink = Collector {
        path: shown,
        hits: FileHits::default(),
        budget: limits.grep_output_bytes,
        max_line: limits.grep_max_line_bytes,
        cancel,
        deadline,
    };
    // Most files have no match: a first pass without line counting (a sizeable share of the
    // per-file cost) stops at the first match, and only a file with one is searched again,
    // from the start, with line numbers. Both passes see the same bytes with the same
    // binary, encoding and heap-limit rules, so the lines found are the same.
    let mut probe = Probe(false);
    let _ = searcher.probe.search_file(matcher, &file, &mut probe);
    if !probe.0 || (&file).seek(SeekFrom::Start(0)).is_err() {
        return sink.hits;
    }
    // A file that errors (a line over the heap limit, a read error) keeps the matches found
    // before the error and the search goes on with the next file.
    let _ = searcher.numbered.search_file(matcher, &file, &mut sink);
    sink.hits
}

/// A sink that records whether the file has a match, stopping at the first.
struct Probe(bool);

impl Sink for Probe {
    type Error = io::Error;

    fn matched(&mut self, _searcher: &Searcher, _mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.0 = true;
        Ok(false)
    }
}

/// A searcher per pass, each reusing its line buffer from file to file.
struct Searchers {
    probe: Searcher,
    numbered: Searcher,
}

fn new_searcher() -> Searchers {
    let builder = |line_number| {
        SearcherBuilder::new()
            .line_number(line_number)
            .binary_detection(BinaryDetection::quit(0))
            .memory_map(MmapChoice::never())
            .heap_limit(Some(SEARCH_HEAP_LIMIT))
            .build()
    };
    Searchers {
        probe: builder(false),
        numbered: builder(true),
    }
}

/// `path` relative to `root`: the walker's paths are `root` joined with names, so a byte
/// prefix test answers without `Path::strip_prefix`'s component walk (a visible share of
/// the per-file cost); anything else falls back to it.
pub(crate) fn relative<'p>(path: &'p Path, root: &Path) -> Option<&'p Path> {
    let root_bytes = root.as_os_str().as_bytes();
    let fast = path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root_bytes)
        .and_then(|rest| {
            if root_bytes.ends_with(b"/") {
                Some(rest)
            } else {
                rest.strip_prefix(b"/")
            }
        })
        .filter(|rest| !rest.is_empty() && !rest.starts_with(b"/"));
    match fast {
        Some(rest) => Some(Path::new(OsStr::from_bytes(rest))),
        None => path.strip_prefix(root).ok(),
    }
}

/// Below this many files the search stays on the calling thread.
const PARALLEL_MIN_FILES: usize = 64;
/// At most this many threads search one call's files.
const MAX_THREADS: usize = 4;

/// Searches `files` (full paths under `root_path`, in walk order) on up to [`MAX_THREADS`]
/// threads. Files are claimed in order from a shared counter, so the files searched are always
/// a prefix of `files`; the result is the hits per file index (files with hits only) and
/// whether the time budget or the cancellation stopped the search before the end. Claiming
/// stops once the lines found exceed the output budget: the ordered merge is then certain to
/// be truncated within the files already claimed.
#[allow(clippy::too_many_arguments)]
fn search_parallel(
    files: &[std::path::PathBuf],
    root_path: &Path,
    root: BorrowedFd<'_>,
    matcher: &RegexMatcher,
    limits: &Limits,
    cancel: &CancellationToken,
    deadline: &(dyn Fn() -> bool + Sync),
) -> (Vec<(usize, FileHits)>, bool) {
    let next = AtomicUsize::new(0);
    let produced = AtomicUsize::new(0);
    let enough = AtomicBool::new(false);
    let stopped_early = AtomicBool::new(false);
    let worker = |matcher: &RegexMatcher| -> Vec<(usize, FileHits)> {
        let mut searcher = new_searcher();
        let mut found = Vec::new();
        loop {
            if enough.load(Ordering::Acquire) {
                break;
            }
            if cancel.is_cancelled() || deadline() {
                stopped_early.store(true, Ordering::Release);
                break;
            }
            let i = next.fetch_add(1, Ordering::AcqRel);
            let Some(path) = files.get(i) else { break };
            let Some(rel) = relative(path, root_path) else {
                continue;
            };
            let hits = search_file(
                &mut searcher,
                matcher,
                root,
                rel,
                path,
                limits,
                cancel,
                deadline,
            );
            if hits.lines.is_empty() && !hits.full {
                continue;
            }
            let bytes: usize = hits.lines.iter().map(|l| l.len() + 1).sum();
            let total = produced.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if hits.full || total > limits.grep_output_bytes {
                enough.store(true, Ordering::Release);
            }
            found.push((i, hits));
        }
        found
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let mut found = if threads <= 1 || files.len() < PARALLEL_MIN_FILES {
        worker(matcher)
    } else {
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads)
                .map(|_| {
                    let matcher = matcher.clone();
                    let worker = &worker;
                    scope.spawn(move || worker(&matcher))
                })
                .collect();
            let mut found = worker(matcher);
            for helper in helpers {
                // A helper that panicked lost its files' lines: treat the search as stopped.
                match helper.join() {
                    Ok(more) => found.extend(more),
                    Err(_) => stopped_early.store(true, Ordering::Release),
                }
            }
            found
        })
    };
    found.sort_unstable_by_key(|(i, _)| *i);
    let early = stopped_early.load(Ordering::Acquire) && next.load(Ordering::Acquire) < files.len();
    (found, early)
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
    let mut out = String::new();
    let mut budget = limits.grep_output_bytes;
    let mut full = false;
    let mut stopped: Option<String> = None;
    let time_note = || {
        format!(
            "[search stopped after {}s]",
            limits.search_time.as_secs_f64()
        )
    };
    // The lines of each file with hits, in walk order.
    let found: Vec<(usize, FileHits)> = if let Some(leaf) = single {
        let shown = root_path.join(&leaf);
        let hits = search_file(
            &mut new_searcher(),
            &matcher,
            root_fd.as_fd(),
            Path::new(&leaf),
            &shown,
            limits,
            cancel,
            &deadline,
        );
        vec![(0, hits)]
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
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for entry in walker {
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            if cancel.is_cancelled() {
                return err("cancelled".into());
            }
            if deadline() {
                stopped = Some(time_note());
                break;
            }
            if files.len() >= limits.walk_entries {
                stopped = Some(format!(
                    "[search stopped after {} files]",
                    limits.walk_entries
                ));
                break;
            }
            files.push(entry.into_path());
        }
        let (found, early) = search_parallel(
            &files,
            &root_path,
            root_fd.as_fd(),
            &matcher,
            limits,
            cancel,
            &deadline,
        );
        if early {
            stopped = Some(time_note());
        }
        found
    };
    'merge: for (_, hits) in found {
        for line in hits.lines {
            match budget.checked_sub(line.len() + 1) {
                Some(left) => budget = left,
                None => {
                    full = true;
                    break 'merge;
                }
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&line);
        }
        if hits.full {
            full = true;
            break;
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
