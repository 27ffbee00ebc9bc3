//! The content cache seen through `grep`: a file changed between two searches, by any means,
//! is searched as it is now, never as it was cached; nothing outside the root is reached.
//! Each test has a cache of its own, so what it caches can be counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hands_protocol::toolset::{ContentBlock, GrepInput};
use tokio_util::sync::CancellationToken;

use super::ContentCache;
use crate::{Toolset, ToolsetConfig};

struct Tree {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
    tools: Toolset,
    cache: &'static ContentCache,
}

fn tree(settle: Duration) -> Tree {
    tree_with(settle, crate::Limits::default().grep_watch_trust)
}

/// Held for writing by the test that mounts (any change to the mount table voids every
/// watcher's trust, `watch`), and for reading by the tests that count the files stated, which
/// run in the same process.
static MOUNT_TABLE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// For a test that counts the files stated: `None` (skip) where the temporary directory's file
/// system gets no watches, otherwise a guard that keeps the mount table unchanged meanwhile.
fn counting_stats() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    watchable().then(|| {
        MOUNT_TABLE
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    })
}

/// Whether the tests' temporary directories are on a file system whose files get inotify
/// watches (`watch`); the tests of the watches say so and skip where not (an overlay `/tmp`).
fn watchable() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = File::open(dir.path()).unwrap();
    let yes = super::watch::watched_file_system(std::os::fd::AsFd::as_fd(&file));
    if !yes {
        eprintln!("skipped: the temporary directory's file system gets no inotify watches");
    }
    yes
}

fn tree_with(settle: Duration, trust: Duration) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (ws, outside) = (root.join("ws"), root.join("outside"));
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let mut config = ToolsetConfig::new(&ws);
    config.limits.grep_cache_settle = settle;
    config.limits.grep_watch_trust = trust;
    let cache: &'static ContentCache = Box::leak(Box::new(ContentCache::new(8 << 20)));
    let tools = Toolset::with_grep_cache(config, cache).unwrap();
    Tree {
        _dir: dir,
        ws,
        outside,
        tools,
        cache,
    }
}

impl Tree {
    fn grep(&self, pattern: &str) -> String {
        self.grep_in(pattern, None)
    }

    fn grep_in(&self, pattern: &str, path: Option<&str>) -> String {
        let input = GrepInput {
            pattern: pattern.into(),
            path: path.map(Into::into),
        };
        let out = super::run(&self.tools.session, input, &CancellationToken::new());
        assert!(!out.is_error, "{out:?}");
        match out.content.as_slice() {
            [ContentBlock::Text { text }] => text.clone(),
            other => panic!("expected one text block, got {other:?}"),
        }
    }

    /// The file names (relative to the workdir) in a grep result, sorted as shown.
    fn files(&self, pattern: &str) -> Vec<String> {
        let prefix = format!("{}/", self.ws.display());
        self.grep(pattern)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect()
    }

    /// The paths (relative to the workdir) a `glob` of `pattern` lists, in its order.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let input = hands_protocol::toolset::GlobInput {
            pattern: pattern.into(),
            path: None,
        };
        let out = crate::glob::run(&self.tools.session, input, &CancellationToken::new());
        assert!(!out.is_error, "{out:?}");
        let [ContentBlock::Text { text }] = out.content.as_slice() else {
            panic!("expected one text block, got {out:?}");
        };
        let prefix = format!("{}/", self.ws.display());
        text.lines()
            .map(|l| l.strip_prefix(&prefix).unwrap().to_owned())
            .collect()
    }

    /// Files the searches stated since the last call.
    fn stated(&self) -> usize {
        self.cache
            .stated
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.ws.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Puts the modification time back, so only the size, the inode or the ctime can tell.
fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// Waits until files written now are older than the default settle time, so they are cached.
fn settle() {
    std::thread::sleep(crate::Limits::default().grep_cache_settle + Duration::from_millis(200));
}

#[test]
fn every_kind_of_change_between_two_searches_is_seen() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    // Each file starts with "old" on its line and is changed to "new", same size, a different
    // way. "kept" never changes.
    for name in ["inplace", "truncated", "renamed", "recreated", "linked"] {
        t.write(&format!("{name}.txt"), &format!("{name} old\n"));
    }
    t.write("kept.txt", "kept old\n");
    t.write("sub/moved.txt", "moved old\n");
    std::fs::hard_link(t.ws.join("linked.txt"), t.outside.join("link.txt")).unwrap();
    settle();
    let before = t.files("old");
    assert_eq!(
        before,
        [
            "inplace.txt",
            "kept.txt",
            "linked.txt",
            "recreated.txt",
            "renamed.txt",
            "sub/moved.txt",
            "truncated.txt"
        ]
    );
    assert_eq!(t.cache.len(), 7, "every settled file is cached");
    // A second search of the unchanged tree is answered from the cache, identically.
    assert_eq!(t.files("old"), before);

    // Overwritten in place (no truncation), modification time put back: only ctime changes.
    let p = t.ws.join("inplace.txt");
    let old_mtime = mtime(&p);
    {
        use std::os::unix::fs::FileExt;
        let f = File::options().write(true).open(&p).unwrap();
        f.write_all_at(b"inplace new\n", 0).unwrap();
    }
    set_mtime(&p, old_mtime);
    // Truncated and rewritten, as `echo > file` does, modification time put back.
    let p = t.ws.join("truncated.txt");
    let old_mtime = mtime(&p);
    std::fs::write(&p, "truncated new\n").unwrap();
    set_mtime(&p, old_mtime);
    // Replaced by rename, as `sed -i` does.
    std::fs::write(t.ws.join("renamed.tmp"), "renamed new\n").unwrap();
    std::fs::rename(t.ws.join("renamed.tmp"), t.ws.join("renamed.txt")).unwrap();
    // Deleted and created again (the inode number may be reused).
    std::fs::remove_file(t.ws.join("recreated.txt")).unwrap();
    std::fs::write(t.ws.join("recreated.txt"), "recreated new\n").unwrap();
    // Written through a hard link outside the workdir.
    {
        use std::os::unix::fs::FileExt;
        let f = File::options()
            .write(true)
            .open(t.outside.join("link.txt"))
            .unwrap();
        f.write_all_at(b"linked new\n", 0).unwrap();
    }
    // The directory moved outside and replaced by a symlink to where it went.
    std::fs::rename(t.ws.join("sub"), t.outside.join("sub")).unwrap();
    std::os::unix::fs::symlink(t.outside.join("sub"), t.ws.join("sub")).unwrap();

    assert_eq!(t.files("old"), ["kept.txt"]);
    assert_eq!(
        t.files("new"),
        [
            "inplace.txt",
            "linked.txt",
            "recreated.txt",
            "renamed.txt",
            "truncated.txt"
        ]
    );
    // The moved file is still cached (same inode, unchanged), yet never shown: the walk does
    // not follow the symlink.
    assert!(!t.grep("moved").contains("moved.txt"));
}

#[test]
fn recently_changed_files_are_not_cached() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("fresh.txt", "fresh\n");
    assert_eq!(t.files("fresh"), ["fresh.txt"]);
    assert_eq!(t.cache.len(), 0);
    // A settle time of zero caches at once.
    let t = tree(Duration::ZERO);
    t.write("fresh.txt", "fresh\n");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(t.files("fresh"), ["fresh.txt"]);
    assert_eq!(t.cache.len(), 1);
}

#[test]
fn cached_content_is_searched_as_the_file_would_be() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("crlf.txt", "one needle\r\ntwo\r\nthree needle\r\n");
    t.write("no-newline.txt", "a\nb needle");
    std::fs::write(t.ws.join("nul.bin"), b"needle\0binary\n").unwrap();
    // UTF-8 and UTF-16 byte-order marks: the searcher strips or transcodes them.
    std::fs::write(t.ws.join("bom8.txt"), b"\xEF\xBB\xBFneedle eight\n").unwrap();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("needle sixteen\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(t.ws.join("bom16.txt"), utf16).unwrap();
    t.write(
        "long.txt",
        &format!("needle {}\nneedle short\n", "y".repeat(3000)),
    );
    // Above the per-file limit: searched as a stream, never cached.
    t.write(
        "big.txt",
        &format!(
            "{}needle big\n",
            "z\n".repeat(super::cache::CACHE_FILE_MAX as usize)
        ),
    );
    settle();
    let first = t.grep("needle");
    assert_eq!(t.cache.len(), 6, "all but the big file");
    let second = t.grep("needle");
    assert_eq!(first, second);
    let ws = t.ws.display();
    let big_line = super::cache::CACHE_FILE_MAX + 1;
    assert_eq!(
        first,
        format!(
            "{ws}/big.txt:{big_line}:needle big\n\
             {ws}/bom16.txt:1:needle sixteen\n\
             {ws}/bom8.txt:1:needle eight\n\
             {ws}/crlf.txt:1:one needle\n\
             {ws}/crlf.txt:3:three needle\n\
             {ws}/long.txt:2:needle short\n\
             {ws}/no-newline.txt:2:b needle"
        )
    );
}

/// The brief's case exactly: bash rewrites a cached file between two greps, same size, and
/// puts its modification time back (`touch -r`), so size and mtime are what they were.
#[tokio::test]
async fn a_file_rewritten_by_bash_between_two_greps_is_searched_anew() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "alpha\n");
    t.write("b.txt", "alpha\n");
    settle();
    assert_eq!(t.files("alpha"), ["a.txt", "b.txt"]);
    assert_eq!(t.cache.len(), 2);
    let bash = |command: &str| {
        let tools = t.tools.clone();
        let input = serde_json::json!({ "command": command });
        async move {
            let out = tools.call("bash", input, &CancellationToken::new()).await;
            assert!(!out.is_error, "{out:?}");
        }
    };
    let before = mtime(&t.ws.join("a.txt"));
    bash("touch -r a.txt ../stamp && printf 'omega\\n' > a.txt && touch -r ../stamp a.txt").await;
    assert_eq!(mtime(&t.ws.join("a.txt")), before);
    bash("sed -i s/alpha/gamma/ b.txt").await;
    assert_eq!(
        std::fs::metadata(t.ws.join("a.txt")).unwrap().len(),
        "alpha\n".len() as u64
    );
    assert_eq!(t.grep("alpha"), "no matches");
    assert_eq!(t.files("omega"), ["a.txt"]);
    assert_eq!(t.files("gamma"), ["b.txt"]);
    t.tools.shutdown().await;
}

/// Directory listings are kept between searches like file contents: an entry added, removed,
/// renamed or replaced by a directory in a kept directory is seen by the next search.
#[test]
fn a_changed_directory_is_listed_again() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    for name in ["a", "b", "c", "d"] {
        t.write(&format!("sub/{name}.txt"), "hit\n");
    }
    settle();
    assert_eq!(
        t.files("hit"),
        ["sub/a.txt", "sub/b.txt", "sub/c.txt", "sub/d.txt"]
    );
    // The root and sub.
    assert_eq!(t.cache.listings.len(), 2);
    assert_eq!(t.files("hit").len(), 4);
    std::fs::remove_file(t.ws.join("sub/a.txt")).unwrap();
    std::fs::rename(t.ws.join("sub/b.txt"), t.ws.join("sub/b2.txt")).unwrap();
    std::fs::remove_file(t.ws.join("sub/c.txt")).unwrap();
    t.write("sub/c.txt/inner.txt", "hit\n");
    t.write("sub/e.txt", "hit\n");
    assert_eq!(
        t.files("hit"),
        [
            "sub/b2.txt",
            "sub/c.txt/inner.txt",
            "sub/d.txt",
            "sub/e.txt"
        ]
    );
}

/// `glob` keeps and reuses the same directory listings as `grep`: a listing kept by either
/// serves the other, each sees what it lists (glob a symlink too, grep regular files only),
/// and a directory changed after being kept is read again by both.
#[test]
fn glob_and_grep_share_the_kept_listings() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("sub/a.txt", "hit\n");
    t.write("b.txt", "hit\n");
    std::os::unix::fs::symlink("b.txt", t.ws.join("link.txt")).unwrap();
    settle();
    let glob = |pattern: &str| {
        let mut listed = t.glob(pattern);
        listed.sort_unstable();
        listed
    };
    assert_eq!(glob("**/*.txt"), ["b.txt", "link.txt", "sub/a.txt"]);
    // The root and sub, kept by the glob with the symlink among the root's entries.
    assert_eq!(t.cache.listings.len(), 2);
    // grep walks the kept listings and searches the regular files only.
    assert_eq!(t.files("hit"), ["b.txt", "sub/a.txt"]);
    assert_eq!(t.cache.listings.len(), 2);
    // A glob served from the kept listings lists the same.
    assert_eq!(glob("**/*.txt"), ["b.txt", "link.txt", "sub/a.txt"]);
    // A change to a kept directory is seen by both.
    std::fs::remove_file(t.ws.join("link.txt")).unwrap();
    t.write("sub/c.txt", "hit\n");
    assert_eq!(glob("**/*.txt"), ["b.txt", "sub/a.txt", "sub/c.txt"]);
    assert_eq!(t.files("hit"), ["b.txt", "sub/a.txt", "sub/c.txt"]);
}

/// `grep` with `tools`, its one text block.
fn grep_with(tools: &Toolset, pattern: &str) -> String {
    let input = GrepInput {
        pattern: pattern.into(),
        path: None,
    };
    let out = super::run(&tools.session, input, &CancellationToken::new());
    assert!(!out.is_error, "{out:?}");
    match out.content.as_slice() {
        [ContentBlock::Text { text }] => text.clone(),
        other => panic!("expected one text block, got {other:?}"),
    }
}

/// The entry cap counts as without the listing cache: a kept listing with more entries than
/// are left under the cap is not used (the directory is read up to the cap, and the search
/// says it stopped, word for word as a search without kept listings); one that fits changes
/// nothing either.
#[test]
fn a_kept_listing_larger_than_the_cap_left_is_not_used() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "hit\n");
    for i in 0..10 {
        t.write(&format!("sub/f{i}.txt"), "hit\n");
    }
    settle();
    // The root (a.txt, sub) and sub (10 files) are kept.
    assert_eq!(t.files("hit").len(), 11);
    assert_eq!(t.cache.listings.len(), 2);
    let capped = |cap: usize, cache: &'static ContentCache, settle: Duration| {
        let mut config = ToolsetConfig::new(&t.ws);
        config.limits.walk_entries = cap;
        config.limits.grep_cache_settle = settle;
        Toolset::with_grep_cache(config, cache).unwrap()
    };
    // Without kept listings: a cache of its own that keeps nothing (nothing is that settled).
    let never = Duration::from_secs(100 * 365 * 24 * 3600);
    let fresh = || -> &'static ContentCache { Box::leak(Box::new(ContentCache::new(8 << 20))) };
    let settle_time = crate::Limits::default().grep_cache_settle;
    // 2 root entries read, 4 left for sub's 10.
    let with_kept = grep_with(&capped(6, t.cache, settle_time), "hit");
    let without = grep_with(&capped(6, fresh(), never), "hit");
    assert_eq!(with_kept, without);
    assert!(
        with_kept.contains("[search stopped after 6 entries; narrow the path]"),
        "{with_kept}"
    );
    assert_eq!(with_kept.lines().filter(|l| l.ends_with(":hit")).count(), 5);
    // Exactly enough left for sub: the kept listing is used, and nothing is cut.
    let fits = grep_with(&capped(12, t.cache, settle_time), "hit");
    assert_eq!(fits, grep_with(&capped(12, fresh(), never), "hit"));
    assert!(!fits.contains("search stopped"), "{fits}");
    assert_eq!(fits.lines().filter(|l| l.ends_with(":hit")).count(), 11);
}

/// ASCII files are searched with the pattern's ASCII matcher and the others with its Unicode
/// matcher (`matchers`): the answer is the Unicode pattern's either way, from disk and from
/// the cache. The non-ASCII file holds what only Unicode `\w`, `\d` and case folding match.
#[test]
fn ascii_and_non_ascii_files_both_get_the_unicode_answer() {
    let never = Duration::from_secs(100 * 365 * 24 * 3600);
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "fn item_2024\nstrasse\nKelvin\n");
    t.write(
        "u.txt",
        "na\u{ef}ve_\u{663}\u{664}\u{665}\u{666}\n\u{17f}tra\u{df}e\n\u{212a}elvin\n",
    );
    settle();
    let ws = t.ws.display();
    let expected = [
        (
            r"\w+_\d{4}",
            format!(
                "{ws}/a.txt:1:fn item_2024\n{ws}/u.txt:1:na\u{ef}ve_\u{663}\u{664}\u{665}\u{666}"
            ),
        ),
        (
            r"(?i)^s\w+e$",
            format!("{ws}/a.txt:2:strasse\n{ws}/u.txt:2:\u{17f}tra\u{df}e"),
        ),
        (
            "(?i)kelvin",
            format!("{ws}/a.txt:3:Kelvin\n{ws}/u.txt:3:\u{212a}elvin"),
        ),
    ];
    let mut config = ToolsetConfig::new(&t.ws);
    config.limits.grep_cache_settle = never;
    let uncached = Toolset::with_grep_cache(config, t.cache).unwrap();
    for (pattern, want) in &expected {
        assert_eq!(&grep_with(&uncached, pattern), want, "{pattern}, from disk");
        // The first search caches both files; the second searches the cached content.
        assert_eq!(&t.grep(pattern), want, "{pattern}");
        assert_eq!(&t.grep(pattern), want, "{pattern}, cached");
    }
    assert_eq!(t.cache.len(), 2);
}

/// A pattern whose Unicode program is over the size limit while its ASCII one fits: found in
/// ASCII files, refused with the Unicode build's error once a file that is not ASCII must be
/// searched (the error grep always gave for it).
#[test]
fn a_pattern_over_the_limit_only_with_unicode_is_refused_for_a_non_ascii_file() {
    let t = tree(crate::Limits::default().grep_cache_settle);
    let pattern = r"\w{64}";
    let mut config = ToolsetConfig::new(&t.ws);
    config.limits.regex_size_limit = 1024;
    while super::matchers::build(pattern, &config.limits, false).is_err() {
        config.limits.regex_size_limit *= 2;
        assert!(config.limits.regex_size_limit < 1 << 24);
    }
    let unicode_error = super::matchers::build(pattern, &config.limits, true)
        .unwrap_err()
        .to_string();
    let tools = Toolset::with_grep_cache(config, t.cache).unwrap();
    let word = "w".repeat(64);
    t.write("a.txt", &format!("{word}\n"));
    assert_eq!(
        grep_with(&tools, pattern),
        format!("{}/a.txt:1:{word}", t.ws.display())
    );
    t.write("b.txt", "caf\u{e9}\n");
    let input = GrepInput {
        pattern: pattern.into(),
        path: None,
    };
    let out = super::run(&tools.session, input, &CancellationToken::new());
    assert!(out.is_error, "{out:?}");
    assert_eq!(
        out.content,
        vec![ContentBlock::Text {
            text: format!("grep: invalid regex: {unicode_error}")
        }]
    );
}

/// The output cap stops the walk's search early (files are no longer claimed once the lines
/// found exceed it, and a file's search stops inside it): what is shown is still exactly the
/// uncapped search's first lines that fit, then the marker, for caps that fall between files,
/// inside a file and inside the first file, searched from disk and from the cache, over enough
/// files to be searched in parallel.
#[test]
fn a_capped_search_shows_the_first_lines_of_the_uncapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    for i in 0..300 {
        let path = ws.join(format!("d{:02}/f{i:03}.txt", i / 40));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Every file has matching lines, of varied lengths, and one that does not match.
        let mut text = String::from("nothing here\n");
        for j in 0..(i % 7 + 1) {
            text.push_str(&format!("match {j} of file {i}{}\n", "-".repeat(i % 13)));
        }
        std::fs::write(path, text).unwrap();
    }
    let tools = |cap: usize| {
        let mut config = ToolsetConfig::new(&ws);
        config.limits.grep_output_bytes = cap;
        config.limits.grep_cache_settle = Duration::ZERO;
        let cache: &'static ContentCache = Box::leak(Box::new(ContentCache::new(8 << 20)));
        Toolset::with_grep_cache(config, cache).unwrap()
    };
    let whole = grep_with(&tools(1 << 20), "match");
    let lines: Vec<&str> = whole.lines().collect();
    assert!(lines.len() > 1000, "{} lines", lines.len());
    assert!(!whole.contains("[output truncated"));
    for cap in [1, 40, 1000, 4321, 30_000, whole.len()] {
        let mut budget = cap;
        let shown: Vec<&str> = lines
            .iter()
            .take_while(|l| match budget.checked_sub(l.len() + 1) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            })
            .copied()
            .collect();
        let mut expected = shown.join("\n");
        if shown.len() < lines.len() {
            if !expected.is_empty() {
                expected.push('\n');
            }
            expected.push_str(&format!("[output truncated at {cap} bytes]"));
        }
        let capped = tools(cap);
        // From disk (the first call), then from the cache.
        for _ in 0..2 {
            assert_eq!(grep_with(&capped, "match"), expected, "cap {cap}");
        }
    }
}

/// The first search of a file caches its content only; the second builds its filter (once),
/// and the answers stay the same throughout.
#[test]
fn a_file_gets_its_filter_from_its_second_search_not_its_first() {
    let t = tree(Duration::ZERO);
    for i in 0..20 {
        t.write(
            &format!("f{i:02}.txt"),
            &format!("line {i}\n{}", "filler text\n".repeat(50)),
        );
    }
    t.write("needle.txt", "the needle_here\n");
    let first = t.files("needle_here");
    assert_eq!(first, ["needle.txt"]);
    let contents: usize = std::fs::read_dir(&t.ws)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() as usize)
        .sum();
    assert_eq!(t.cache.len(), 21);
    assert_eq!(
        t.cache.bytes(),
        contents + 21 * super::cache::ENTRY_OVERHEAD,
        "the first search keeps the contents and no filter"
    );
    assert_eq!(t.files("needle_here"), first);
    let filtered = t.cache.bytes();
    assert!(filtered > contents + 21 * super::cache::ENTRY_OVERHEAD);
    assert_eq!(t.files("needle_here"), first);
    assert_eq!(t.files("filler"), t.files("filler"));
    assert_eq!(t.cache.bytes(), filtered, "each filter is built once");
}

/// Files cached with an inotify watch are searched again without a stat while nothing happens
/// to them (`watch`); without watches (a trust time of zero) every search states every file.
#[test]
fn an_unchanged_tree_is_searched_again_without_a_stat_per_file() {
    let Some(_mounts) = counting_stats() else {
        return;
    };
    let t = tree(crate::Limits::default().grep_cache_settle);
    for i in 0..20 {
        t.write(&format!("d{}/f{i}.txt", i % 3), &format!("line {i}\n"));
    }
    settle();
    assert_eq!(t.files("line").len(), 20);
    assert_eq!(
        t.stated(),
        20,
        "the first search reads and watches every file"
    );
    assert_eq!(t.cache.watcher().unwrap().watches(), 20);
    // The second builds the filters, the third asks them: neither states a file.
    assert_eq!(t.files("line").len(), 20);
    assert_eq!(t.files("line 7").len(), 1);
    assert_eq!(t.stated(), 0);

    let t = tree_with(crate::Limits::default().grep_cache_settle, Duration::ZERO);
    for i in 0..20 {
        t.write(&format!("d{}/f{i}.txt", i % 3), &format!("line {i}\n"));
    }
    settle();
    assert_eq!(t.files("line").len(), 20);
    assert_eq!(t.files("line").len(), 20);
    assert_eq!(t.stated(), 40);
}

/// Trust lasts the configured time at most: then each file is stated once more and, found
/// unchanged, trusted again.
#[test]
fn trust_runs_out_and_a_stat_renews_it() {
    let Some(_mounts) = counting_stats() else {
        return;
    };
    // Long enough that the second search comes within it even on a loaded machine.
    let trust = Duration::from_secs(3);
    let t = tree_with(crate::Limits::default().grep_cache_settle, trust);
    t.write("a.txt", "alpha\n");
    t.write("b.txt", "beta\n");
    settle();
    assert_eq!(t.files("a").len(), 2);
    t.stated();
    assert_eq!(t.files("a").len(), 2);
    assert_eq!(t.stated(), 0);
    std::thread::sleep(trust + Duration::from_millis(200));
    assert_eq!(t.files("a").len(), 2);
    assert_eq!(t.stated(), 2, "expired: stated again");
    assert_eq!(t.files("a").len(), 2);
    assert_eq!(t.stated(), 0, "and trusted again");
}

/// A file someone opens is stated while open; content written through a shared writable
/// mapping is dropped from the cache when the mapping's file is closed, even a write to a page
/// already dirty (which sends no event and leaves the times alone, so a stat cannot see it);
/// a file that was open before it was cached is never served unstated.
#[test]
fn open_files_are_stated_and_a_mapping_written_is_seen_once_closed() {
    let Some(_mounts) = counting_stats() else {
        return;
    };
    use std::os::fd::AsFd;
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("mapped.txt", "mapped old\n");
    t.write("h/held.txt", "held old\n");
    // Open before it is ever cached, and kept open.
    let held = File::open(t.ws.join("h/held.txt")).unwrap();
    settle();
    assert_eq!(t.files("old"), ["h/held.txt", "mapped.txt"]);
    t.stated();
    assert_eq!(t.files("old").len(), 2);
    assert_eq!(t.stated(), 0, "both trusted after the first search");

    let file = File::options()
        .read(true)
        .write(true)
        .open(t.ws.join("mapped.txt"))
        .unwrap();
    let len = "mapped old\n".len();
    // SAFETY: a fresh shared mapping of `len` bytes of a file that long, unmapped below;
    // nothing else refers to it.
    let map = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            file.as_fd(),
            0,
        )
    }
    .unwrap();
    drop(file);
    let write = |text: &[u8]| {
        assert_eq!(text.len(), len);
        // SAFETY: within the mapping made above, which is still mapped.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), map.cast::<u8>(), len) };
    };
    // The first write faults the page writable, which stamps the file's times.
    write(b"mapped mid\n");
    // Open (through its mapping): stated at the next search, which sees the new stamp. (The
    // held file is not: its opener came before its watch, which cannot know of it until it
    // closes; that gap is what the trust time bounds.)
    t.stated();
    assert_eq!(t.files("mid"), ["mapped.txt"]);
    assert_eq!(t.stated(), 1);
    // Cached again once settled, while still mapped.
    settle();
    assert_eq!(t.files("mid"), ["mapped.txt"]);
    // The page is dirty and writable now: this write changes neither times nor size.
    write(b"mapped new\n");
    // SAFETY: the mapping made above, no longer used.
    unsafe { rustix::mm::munmap(map, len) }.unwrap();
    assert_eq!(t.files("new"), ["mapped.txt"]);
    assert_eq!(t.files("old"), ["h/held.txt"]);

    // The descriptor opened before the watch closes with no open event to match it: from
    // then on the file is stated at every search.
    drop(held);
    t.stated();
    for _ in 0..2 {
        assert!(
            t.grep_in("held", Some("h"))
                .ends_with("h/held.txt:1:held old")
        );
    }
    assert_eq!(t.stated(), 2);
}

/// After lost events the cache starts over: empty, then filled and watched again.
#[test]
fn an_overflow_of_the_event_queue_empties_the_cache() {
    let Some(_mounts) = counting_stats() else {
        return;
    };
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "alpha\n");
    settle();
    assert_eq!(t.files("alpha"), ["a.txt"]);
    assert_eq!(t.cache.len(), 1);
    let watcher = t.cache.watcher().unwrap();
    watcher.overflowed(t.cache);
    assert_eq!((t.cache.len(), watcher.watches()), (0, 0));
    t.stated();
    assert_eq!(t.files("alpha"), ["a.txt"]);
    assert_eq!(t.files("alpha"), ["a.txt"]);
    assert_eq!(t.stated(), 1, "read and watched again, then trusted");
}

/// Something mounted over a cached file changes what its name shows without touching its
/// directory: any change to the mount table voids all trust. Needs the right to mount (root);
/// skipped without it.
#[test]
fn a_mount_over_a_cached_file_is_seen() {
    if !watchable() {
        return;
    }
    let _mounts = MOUNT_TABLE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "alpha under\n");
    std::fs::write(t.outside.join("over.txt"), "alpha over\n").unwrap();
    settle();
    assert_eq!(t.grep("alpha").lines().count(), 1);
    assert!(t.grep("alpha").ends_with("alpha under"));
    let target = t.ws.join("a.txt");
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(t.outside.join("over.txt"))
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot bind-mount here");
        return;
    }
    let seen = t.grep("alpha");
    let unmounted = std::process::Command::new("umount")
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    assert!(seen.ends_with("alpha over"), "{seen}");
    assert!(unmounted);
    assert!(t.grep("alpha").ends_with("alpha under"));
}

/// `glob` takes a file's modification time from the cache while grep trusts it, and a change
/// of times (an event) is seen: the newest-first order follows `touch` at once.
#[test]
fn glob_orders_by_the_times_of_now_with_trusted_files() {
    if !watchable() {
        return;
    }
    let t = tree(crate::Limits::default().grep_cache_settle);
    t.write("a.txt", "hit\n");
    t.write("b.txt", "hit\n");
    let day = Duration::from_secs(86_400);
    set_mtime(&t.ws.join("a.txt"), SystemTime::now() - 2 * day);
    set_mtime(&t.ws.join("b.txt"), SystemTime::now() - day);
    settle();
    assert_eq!(t.files("hit"), ["a.txt", "b.txt"]);
    assert_eq!(t.glob("*.txt"), ["b.txt", "a.txt"]);
    // Trusted now; a.txt becomes the newest without a change to its content or size, and
    // without being opened (as `touch` does it: only an attribute event tells).
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        t.ws.join("a.txt"),
        &now,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    assert_eq!(t.glob("*.txt"), ["a.txt", "b.txt"]);
}
