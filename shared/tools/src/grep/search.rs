//! Searching one file: its content from the cache when the file's stamp is unchanged,
//! otherwise read from disk (and cached when it may be); files over the cache's per-file limit
//! are searched as a stream.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use grep_searcher::{BinaryDetection, MmapChoice, Searcher, SearcherBuilder, Sink, SinkMatch};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tokio_util::sync::CancellationToken;

use super::cache::{CACHE_FILE_MAX, Cached, Content, ContentCache, Stamp};
use super::grams::{Grams, Needs};
use super::matchers::Matchers;
use super::watch::Trust;
use crate::Limits;

/// Largest line buffer the searcher may grow to; a longer line aborts that file's search.
const SEARCH_HEAP_LIMIT: usize = 8 * 1024 * 1024;

/// What one file contributed: its result lines (each within the line limit), and whether the
/// file's own lines overran the output budget (the merge then stops there too).
#[derive(Default)]
pub(crate) struct FileHits {
    pub lines: Vec<String>,
    pub full: bool,
    /// The file was searched as a stream (a large file): it may have taken a while.
    pub streamed: bool,
}

/// What every file of one call is searched with.
#[derive(Clone, Copy)]
pub(crate) struct Search<'a> {
    /// The pattern's matchers (this thread's): ASCII content gets the cheaper ASCII matcher.
    pub matchers: &'a Matchers<'a>,
    pub limits: &'a Limits,
    pub cancel: &'a CancellationToken,
    pub deadline: &'a (dyn Fn() -> bool + Sync),
    pub cache: &'a ContentCache,
    /// This call's number in the cache.
    pub call: u64,
    /// Content changed more recently than this is not cached (see the cache's module doc).
    pub settle: Duration,
    /// The trigram query every match satisfies, when the pattern has one: cached content
    /// whose trigrams make it false is not searched.
    pub needs: Option<&'a Needs>,
    /// The watcher's state as this call began (`watch`), when files may be served unstated.
    pub trust: Option<Trust<'a>>,
}

struct Collector<'a> {
    /// The path shown for the file, made on its first matching line.
    shown: &'a dyn Fn() -> String,
    path: Option<String>,
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
            let path = self.path.get_or_insert_with(self.shown);
            let line = format!("{path}:{}:{text}", first + i as u64);
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

/// A sink that records whether the file has a match, stopping at the first.
struct Probe(bool);

impl Sink for Probe {
    type Error = io::Error;

    fn matched(&mut self, _searcher: &Searcher, _mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.0 = true;
        Ok(false)
    }
}

/// The searchers of one thread, each reusing its line buffer from file to file. Each is built
/// on first use: a searcher allocates and zeroes a 64 KiB line buffer, which a search of
/// cached content (a slice) never touches, and a thread whose files are all ruled out by
/// their filters searches nothing.
#[derive(Default)]
pub(crate) struct Searchers {
    /// Streams: a first pass without line numbers.
    probe: Option<Searcher>,
    /// Streams and content that may be binary or transcoded.
    numbered: Option<Searcher>,
    /// Plain content in memory: no NUL byte anywhere, so the binary detection (a scan of up
    /// to 64 KiB per file, a fifth of a cached search's time) is left out.
    plain: Option<Searcher>,
}

fn searcher(line_number: bool, binary: BinaryDetection) -> Searcher {
    SearcherBuilder::new()
        .line_number(line_number)
        .binary_detection(binary)
        .memory_map(MmapChoice::never())
        .heap_limit(Some(SEARCH_HEAP_LIMIT))
        .build()
}

impl Searchers {
    pub(crate) fn new() -> Searchers {
        Searchers::default()
    }

    fn probe(&mut self) -> &mut Searcher {
        self.probe
            .get_or_insert_with(|| searcher(false, BinaryDetection::quit(0)))
    }

    pub(super) fn numbered(&mut self) -> &mut Searcher {
        self.numbered
            .get_or_insert_with(|| searcher(true, BinaryDetection::quit(0)))
    }

    pub(super) fn plain(&mut self) -> &mut Searcher {
        self.plain
            .get_or_insert_with(|| searcher(true, BinaryDetection::none()))
    }
}

impl Search<'_> {
    fn collector<'c>(&'c self, shown: &'c dyn Fn() -> String) -> Collector<'c> {
        Collector {
            shown,
            path: None,
            hits: FileHits::default(),
            budget: self.limits.grep_output_bytes,
            max_line: self.limits.grep_max_line_bytes,
            cancel: self.cancel,
            deadline: self.deadline,
        }
    }

    /// Searches the regular file `name` in directory `dir` (a descriptor opened beneath the
    /// search root without following symlinks; `name` is one component, never followed if it
    /// is a symlink). Anything that is not a regular file, or cannot be opened, has no lines.
    pub(crate) fn file(
        &self,
        searchers: &mut Searchers,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        shown: &dyn Fn() -> String,
    ) -> FileHits {
        #[cfg(test)]
        self.cache
            .stated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return FileHits::default();
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return FileHits::default();
        }
        // The filter is asked under the cache's lock: content it rules out is not even
        // touched (its allocation is a cache miss per file).
        let stamp = Stamp::of(&st);
        let cached = self.cache.lookup(&stamp, self.call, |f| !self.ruled_out(f));
        if !matches!(cached, Cached::Miss) {
            // Stated unchanged: the next search may skip the stat again.
            if let Some(trust) = &self.trust
                && self.cache.watched_untrusted(&stamp, trust)
            {
                trust.watcher.retrust(self.cache, &stamp, trust.now);
            }
        }
        if let Some(hits) = self.serve(searchers, &stamp, cached, shown) {
            return hits;
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
            return FileHits::default();
        };
        let file = File::from(fd);
        // The stamp of what is read, taken before reading, and the time before that: content
        // settled by then gets a later ctime from any change during or after the read, so
        // such a change never matches this stamp.
        let now = SystemTime::now();
        let Ok(st) = rustix::fs::fstat(&file) else {
            return FileHits::default();
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return FileHits::default();
        }
        let stamp = Stamp::of(&st);
        let size = u64::try_from(stamp.size).unwrap_or(u64::MAX);
        if size > CACHE_FILE_MAX {
            return self.stream(searchers, &file, shown);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
        let read = (&file).take(CACHE_FILE_MAX + 1).read_to_end(&mut bytes);
        if read.is_err() || bytes.len() as u64 > CACHE_FILE_MAX {
            // Grew past the limit, or a read error: search it from disk, uncached.
            if (&file).seek(SeekFrom::Start(0)).is_err() {
                return FileHits::default();
            }
            return self.stream(searchers, &file, shown);
        }
        let content = Content::new(bytes);
        if content.bytes.len() as u64 == size && stamp.settled(self.settle, now) {
            // Cached without a filter: that is built if the content is searched again.
            let content = Arc::new(content);
            if self.cache.insert(stamp, Arc::clone(&content), self.call)
                && let Some(trust) = &self.trust
            {
                trust.watcher.attach(self.cache, file.as_fd(), &stamp);
            }
            return self.search_content(searchers, &content, shown);
        }
        self.search_content(searchers, &content, shown)
    }

    /// Searches the file `key` (`(st_dev, st_ino)`, from its directory's listing) without a
    /// stat, if the cache holds it trusted (`watch`); `None` when it must be stated.
    pub(crate) fn file_trusted(
        &self,
        searchers: &mut Searchers,
        key: (u64, u64),
        shown: &dyn Fn() -> String,
    ) -> Option<FileHits> {
        let trust = self.trust.as_ref()?;
        let (stamp, cached) = self
            .cache
            .lookup_trusted(key, trust, self.call, |f| !self.ruled_out(f))?;
        self.serve(searchers, &stamp, cached, shown)
    }

    /// What a cache lookup found, searched: `None` for a miss.
    fn serve(
        &self,
        searchers: &mut Searchers,
        stamp: &Stamp,
        cached: Cached,
        shown: &dyn Fn() -> String,
    ) -> Option<FileHits> {
        match cached {
            Cached::Content(content) => Some(self.search_content(searchers, &content, shown)),
            Cached::RuledOut => Some(FileHits::default()),
            Cached::Unfiltered(content) => {
                // The second search of this content: its filter is worth building now.
                let filter = content.filter();
                let skip = self.ruled_out(filter.as_ref());
                if let Some(filter) = filter {
                    self.cache.add_filter(stamp, filter);
                }
                if skip {
                    return Some(FileHits::default());
                }
                Some(self.search_content(searchers, &content, shown))
            }
            Cached::Miss => None,
        }
    }

    /// Whether a content's filter says it holds no match (content without a filter: no).
    fn ruled_out(&self, filter: Option<&Grams>) -> bool {
        matches!((self.needs, filter), (Some(needs), Some(grams)) if !needs.may_match(grams))
    }

    /// Searches content held in memory, with the same results as searching the file.
    fn search_content(
        &self,
        searchers: &mut Searchers,
        content: &Content,
        shown: &dyn Fn() -> String,
    ) -> FileHits {
        // The Unicode matcher is compiled here, on first need, if it was not already.
        let Some(matcher) = self.matchers.get(content.ascii) else {
            return FileHits::default();
        };
        let mut sink = self.collector(shown);
        // A search of a slice counts lines only up to each match, so one numbered pass is
        // cheap. Content with a NUL byte or a byte-order mark goes through the reader, whose
        // binary detection and transcoding are exactly the file search's.
        let _ = if content.plain {
            searchers
                .plain()
                .search_slice(matcher, &content.bytes, &mut sink)
        } else {
            searchers
                .numbered()
                .search_reader(matcher, &content.bytes[..], &mut sink)
        };
        sink.hits
    }

    /// Searches a file from its current offset (the start) as a stream.
    fn stream(
        &self,
        searchers: &mut Searchers,
        file: &File,
        shown: &dyn Fn() -> String,
    ) -> FileHits {
        let Some(matcher) = self.matchers.get(false) else {
            return FileHits::default();
        };
        let mut sink = self.collector(shown);
        // Most files have no match: a first pass without line counting (a sizeable share of
        // the per-file cost when reading a stream) stops at the first match, and only a file
        // with one is searched again, from the start, with line numbers. Both passes see the
        // same bytes with the same binary, encoding and heap-limit rules.
        let mut probe = Probe(false);
        let _ = searchers.probe().search_file(matcher, file, &mut probe);
        sink.hits.streamed = true;
        if !probe.0 || (&*file).seek(SeekFrom::Start(0)).is_err() {
            return sink.hits;
        }
        // A file that errors (a line over the heap limit, a read error) keeps the matches
        // found before the error.
        let _ = searchers.numbered().search_file(matcher, file, &mut sink);
        sink.hits
    }
}
