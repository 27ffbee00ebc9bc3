//! `grep`: regular-expression search in process, with ripgrep's library crates.
//!
//! The regex is compiled by `grep-regex` (the `regex` crate: finite automata, linear time, no
//! backtracking engine, so `(a+)+$` cannot explode) with size limits on the compiled program
//! and the lazy DFA, and a limit on the pattern's length (T25); a pattern naming only ASCII
//! characters is also compiled without Unicode, which is cheaper and, on content with no byte
//! above 0x7F, matches exactly the same (`matchers`). The walk follows the
//! reference's built-in search: it skips `.git` and `node_modules`, never follows symlinks,
//! reads only regular files, skips binary files (a NUL byte) and lines longer than 2,000 bytes,
//! and stops at 100 KiB of output with the reference marker. Every directory is opened
//! relative to the search root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one
//! component at a time with `O_NOFOLLOW` where `openat2` is missing or filtered) and every
//! file relative to its directory with `O_NOFOLLOW` (`walk`), so a directory swapped for a
//! symlink during the walk cannot lead the search out of the root. The walk reads at most
//! `Limits::walk_entries` directory entries (files and directories alike), which bounds its
//! memory however many directories a tool made. File contents and directory listings are kept
//! between calls in bounded caches validated by a stat of each file and directory (`cache`,
//! `listings`), or for a file by its inotify watch while it reports nothing (`watch`), so a
//! search of an unchanged tree reads nothing from disk, and cached content
//! carries a trigram filter and its set of byte values, which rule out files that cannot
//! satisfy the pattern's trigram query or lack a byte every match holds (`grams`, `query`,
//! `bytesets`). The searcher's buffer is capped, so a 1 GB single line costs
//! bounded memory. It runs on the blocking pool, on up to four threads, and checks a time
//! budget and the cancellation token as it goes (T11).

mod bytesets;
mod cache;
mod grams;
mod listings;
mod matchers;
mod query;
mod search;
#[cfg(test)]
mod tests;
pub(crate) mod walk;
#[cfg(test)]
mod walk_tests;
pub(crate) mod watch;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use hands_protocol::toolset::{GrepInput, ToolOutput};
use tokio_util::sync::CancellationToken;

use crate::Session;
pub(crate) use cache::ContentCache;
use matchers::{Compiled, Matchers};
use search::{FileHits, Search, Searchers};
use walk::{FileRef, Listing, Target};

/// Below this many files the search stays on the calling thread.
const PARALLEL_MIN_FILES: usize = 64;
/// At most this many threads search one call's files.
const MAX_THREADS: usize = 4;
/// Each search thread checks the time budget and the cancellation every this many files.
const CHECK_EVERY: usize = 16;

/// Searches the listed files on up to [`MAX_THREADS`] threads. Files are claimed in order from
/// a shared counter, so the files searched are always a prefix of the listing; the result is
/// the hits per file index (files with hits only) and whether the time budget or the
/// cancellation stopped the search before the end. Claiming stops once the lines found exceed
/// the output budget: the ordered merge is then certain to be truncated within the files
/// already claimed. Each thread keeps the directory of its last file open (`O_PATH`, opened
/// beneath the root without following symlinks), so a file costs one `fstatat` relative to it
/// when its content is cached, and nothing but a lookup when the cache trusts it (`watch`: the
/// directory is then not even opened).
fn search_parallel(
    listing: &Listing,
    root_path: &Path,
    root: BorrowedFd<'_>,
    search: &Search<'_>,
) -> (Vec<(usize, FileHits)>, bool) {
    let files = &listing.files;
    let next = AtomicUsize::new(0);
    let produced = AtomicUsize::new(0);
    let enough = AtomicBool::new(false);
    let stopped_early = AtomicBool::new(false);
    let worker = |search: &Search<'_>| -> Vec<(usize, FileHits)> {
        let mut searchers = Searchers::new();
        // The directory of the previous file: its index and descriptor (None: unopenable).
        let mut current: Option<(usize, Option<OwnedFd>)> = None;
        let mut found = Vec::new();
        // Files since the last look at the clock and the token.
        let mut unchecked = CHECK_EVERY;
        loop {
            if enough.load(Ordering::Acquire) {
                break;
            }
            // The clock and the token every few files (a cached file takes microseconds), and
            // after every file searched as a stream.
            if unchecked >= CHECK_EVERY {
                if search.cancel.is_cancelled() || (search.deadline)() {
                    stopped_early.store(true, Ordering::Release);
                    break;
                }
                unchecked = 0;
            }
            unchecked += 1;
            let i = next.fetch_add(1, Ordering::AcqRel);
            let Some(FileRef { dir, name, ino }) = files.get(i) else {
                break;
            };
            let dir_rel = &listing.dirs[*dir];
            let shown = || {
                let mut path = root_path.to_path_buf();
                if !dir_rel.as_os_str().is_empty() {
                    path.push(dir_rel);
                }
                path.push(name);
                path.to_string_lossy().into_owned()
            };
            // A file the cache trusts needs neither its directory opened nor a stat.
            let key = listing.dir_devs[*dir].map(|dev| (dev, *ino));
            let trusted = key.and_then(|key| search.file_trusted(&mut searchers, key, &shown));
            let hits = match trusted {
                Some(hits) => hits,
                None => {
                    if current.as_ref().is_none_or(|(d, _)| d != dir) {
                        let fd = if dir_rel.as_os_str().is_empty() {
                            None
                        } else {
                            walk::open_dir(root, dir_rel, true).ok()
                        };
                        current = Some((*dir, fd));
                    }
                    let dir_fd = match &current {
                        Some((_, Some(fd))) => fd.as_fd(),
                        Some((_, None)) if dir_rel.as_os_str().is_empty() => root,
                        _ => continue,
                    };
                    search.file(&mut searchers, dir_fd, name, &shown)
                }
            };
            if hits.streamed {
                unchecked = CHECK_EVERY;
            }
            if hits.lines.is_empty() && !hits.full {
                continue;
            }
            let bytes: usize = hits.lines.iter().map(|l| l.len() + 1).sum();
            let total = produced.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if hits.full || total > search.limits.grep_output_bytes {
                enough.store(true, Ordering::Release);
            }
            found.push((i, hits));
        }
        found
    };
    let threads = search_threads();
    let mut found = if threads <= 1 || files.len() < PARALLEL_MIN_FILES {
        worker(search)
    } else {
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads)
                .map(|_| {
                    let worker = &worker;
                    // Its own matchers: the regex engine's scratch space is then never shared.
                    scope.spawn(move || {
                        let matchers = search.matchers.for_thread();
                        worker(&Search {
                            matchers: &matchers,
                            ..*search
                        })
                    })
                })
                .collect();
            let mut found = worker(search);
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

/// How many threads search one call's files: the CPUs this process may use, at most
/// [`MAX_THREADS`]. Asked once per process: `available_parallelism` reads the cgroup's CPU
/// quota files at every call (a tenth of a millisecond of a cached search); a quota changed
/// while the worker runs takes effect at its next start.
fn search_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
    })
}

/// The watcher's state for one `grep` or `glob` call, with the pending events read first, so
/// every change made before the call is seen by it (`watch`); `None` when cached files are
/// stated (no inotify, or a trust time of zero).
pub(crate) fn trust(session: &Session) -> Option<watch::Trust<'static>> {
    let lifetime = session.limits.grep_watch_trust;
    if lifetime.is_zero() {
        return None;
    }
    let cache = session.grep_cache;
    let watcher = cache.watcher()?;
    Some(watch::Trust {
        watcher,
        epoch: watcher.drain(cache),
        now: Instant::now(),
        lifetime,
    })
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
    let compiled = match Compiled::new(&input.pattern, limits) {
        Ok(c) => c,
        Err(e) => return err(format!("invalid regex: {e}")),
    };
    let matchers = Matchers::new(&compiled);
    let needs = grams::Needs::recall(&input.pattern);
    let resolved = match input.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => match session.roots.resolve(p) {
            Ok(r) => Some(r),
            Err(e) => return err(e.to_string()),
        },
        None => None,
    };
    // The directory searched (held open), and the single file when `path` names one.
    let (root_path, root_fd, single): (PathBuf, OwnedFd, Option<std::ffi::OsString>) =
        match resolved {
            None => match session.roots.workdir.fd().try_clone_to_owned() {
                Ok(fd) => (session.roots.workdir.path.clone(), fd, None),
                Err(e) => return err(e.to_string()),
            },
            Some(r) => match walk::target(r) {
                Ok(Target::Dir(path, fd)) => (path, fd, None),
                Ok(Target::File { parent, dir, name }) => (parent, dir, Some(name)),
                Ok(Target::Missing) => return ToolOutput::ok("no matches"),
                Err(e) => return err(e.to_string()),
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
    let cache = session.grep_cache;
    let trust = trust(session);
    let search = Search {
        matchers: &matchers,
        limits,
        cancel,
        deadline: &deadline,
        cache,
        call: cache.begin_call(),
        settle: limits.grep_cache_settle,
        needs: needs.as_deref(),
        trust,
    };
    // The lines of each file with hits, in walk order.
    let found: Vec<(usize, FileHits)> = if let Some(leaf) = single {
        let shown = || root_path.join(&leaf).to_string_lossy().into_owned();
        let hits = search.file(&mut Searchers::new(), root_fd.as_fd(), &leaf, &shown);
        vec![(0, hits)]
    } else {
        let reuse = walk::Reuse {
            listings: &cache.listings,
            settle: limits.grep_cache_settle,
        };
        let Ok(listing) = walk::list(
            root_fd.as_fd(),
            limits.walk_entries,
            cancel,
            &deadline,
            Some(reuse),
        ) else {
            return err("cancelled".into());
        };
        tracing::debug!(
            files = listing.files.len(),
            entries_read = listing.entries_read,
            peak_held = listing.peak_held,
            "grep walk"
        );
        stopped = match listing.stopped {
            Some(walk::Stop::Time) => Some(time_note()),
            Some(walk::Stop::Entries) => Some(format!(
                "[search stopped after {} entries; narrow the path]",
                limits.walk_entries
            )),
            None => None,
        };
        let (found, early) = search_parallel(&listing, &root_path, root_fd.as_fd(), &search);
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
    // Content that was not ASCII needed the Unicode matcher, and it is over the limits.
    if let Some(e) = compiled.failed() {
        return err(format!("invalid regex: {e}"));
    }
    tracing::debug!(unicode_built = compiled.unicode_built(), "grep matchers");
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
