//! The walk's bounds (entries read, paths kept, the clock and the token checked in trees
//! without files) and the component-wise directory opener used where `openat2` is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hands_protocol::toolset::{ContentBlock, GrepInput};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use super::ContentCache;
use super::walk::{self, Stop};
use crate::{Toolset, ToolsetConfig};

fn open_root(path: &Path) -> OwnedFd {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn mkdirs(parent: &Path, count: usize) {
    std::fs::create_dir_all(parent).unwrap();
    for i in 0..count {
        std::fs::create_dir(parent.join(format!("d{i:05}"))).unwrap();
    }
}

/// A temporary directory in memory when `/dev/shm` is there: removing tens of thousands of
/// directories from a busy ext4 disk takes minutes.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn never() -> bool {
    false
}

/// The names of the listed files, relative to the root.
fn listed(listing: &walk::Listing) -> Vec<String> {
    listing
        .files
        .iter()
        .map(|f| {
            listing.dirs[f.dir]
                .join(&f.name)
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn grep(ws: &Path, pattern: &str) -> String {
    let cache: &'static ContentCache = Box::leak(Box::new(ContentCache::new(1 << 20)));
    let tools = Toolset::with_grep_cache(ToolsetConfig::new(ws), cache).unwrap();
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

/// Tens of thousands of empty directories, in one directory and spread over many: the walk
/// reads no more entries than the cap (one directory's listing included), keeps the path of
/// no directory without a listed file, and says it stopped.
#[test]
fn many_empty_directories_stay_within_the_entry_cap() {
    let dir = scratch();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(ws.join("a.txt"), "needle\n").unwrap();
    // 25,000 in one directory, then 100 directories of 300: 55,103 entries in all.
    mkdirs(&ws.join("flat"), 25_000);
    for i in 0..100 {
        mkdirs(&ws.join(format!("many/m{i:03}")), 300);
    }
    // Past the cap in walk order: never listed.
    std::fs::create_dir(ws.join("zz")).unwrap();
    std::fs::write(ws.join("zz/hit.txt"), "needle\n").unwrap();
    let root = open_root(&ws);
    let cap = crate::Limits::default().walk_entries;
    assert_eq!(cap, 50_000);

    let listing = walk::list(root.as_fd(), cap, &CancellationToken::new(), &never, None).unwrap();
    assert_eq!(listing.stopped, Some(Stop::Entries));
    assert_eq!(listing.entries_read, cap);
    assert!(listing.peak_held <= cap, "{}", listing.peak_held);
    // Only the root holds a listed file; none of the 55,000 directories is kept.
    assert_eq!(listing.dirs.len(), 1);
    assert_eq!(listed(&listing), ["a.txt"]);

    // One directory bigger than the cap is read only up to it.
    let listing = walk::list(
        root.as_fd(),
        10_000,
        &CancellationToken::new(),
        &never,
        None,
    )
    .unwrap();
    assert_eq!(listing.stopped, Some(Stop::Entries));
    assert_eq!(listing.entries_read, 10_000);
    assert!(listing.peak_held <= 10_000, "{}", listing.peak_held);
    assert_eq!(listing.dirs.len(), 1);

    // The files already read when the cap is reached are still listed, in walk order.
    let listing = walk::list(root.as_fd(), 4, &CancellationToken::new(), &never, None).unwrap();
    assert_eq!(listing.stopped, Some(Stop::Entries));
    assert_eq!(listed(&listing), ["a.txt"]);

    assert_eq!(
        grep(&ws, "needle"),
        format!(
            "{}/a.txt:1:needle\n[search stopped after 50000 entries; narrow the path]",
            ws.display()
        )
    );
}

/// Directories are counted as entries: a tree under the cap is walked whole and says nothing.
#[test]
fn a_tree_within_the_cap_is_listed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    mkdirs(&ws.join("empty"), 10);
    std::fs::create_dir_all(ws.join("x/y")).unwrap();
    std::fs::write(ws.join("x/y/f.txt"), "needle\n").unwrap();
    std::fs::write(ws.join("x/g.txt"), "needle\n").unwrap();
    // root: empty, x (2); empty: 10; x: g.txt, y (2); y: f.txt (1): 15 entries.
    let root = open_root(&ws);
    let listing = walk::list(root.as_fd(), 15, &CancellationToken::new(), &never, None).unwrap();
    assert_eq!(listing.stopped, None);
    assert_eq!(listing.entries_read, 15);
    assert_eq!(listed(&listing), ["x/g.txt", "x/y/f.txt"]);
    assert_eq!(listing.dirs.len(), 2);
    let listing = walk::list(root.as_fd(), 14, &CancellationToken::new(), &never, None).unwrap();
    assert_eq!(listing.stopped, Some(Stop::Entries));
    assert_eq!(listed(&listing), ["x/g.txt"]);
}

/// In a tree of directories only, the time budget and the cancellation still stop the walk.
#[test]
fn a_tree_without_files_checks_the_clock_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    for i in 0..20 {
        mkdirs(&ws.join(format!("d{i:02}")), 20);
    }
    let root = open_root(&ws);
    let looks = Cell::new(0u32);
    let deadline = || {
        looks.set(looks.get() + 1);
        looks.get() > 5
    };
    let listing = walk::list(
        root.as_fd(),
        50_000,
        &CancellationToken::new(),
        &deadline,
        None,
    )
    .unwrap();
    assert_eq!(listing.stopped, Some(Stop::Time));
    assert_eq!(looks.get(), 6);
    assert!(
        listing.entries_read < 20 + 20 * 20,
        "{}",
        listing.entries_read
    );

    let cancel = CancellationToken::new();
    let looks = Cell::new(0u32);
    let deadline = || {
        looks.set(looks.get() + 1);
        if looks.get() == 5 {
            cancel.cancel();
        }
        false
    };
    assert!(walk::list(root.as_fd(), 50_000, &cancel, &deadline, None).is_err());
    assert_eq!(looks.get(), 5);
}

fn ino(fd: &OwnedFd) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino
}

/// The opener used where `openat2` is missing or filtered: a nested path opens the directory
/// it names; a symlink at any component, `..` and absolute paths are refused.
#[test]
fn the_component_wise_opener_never_follows_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let top = std::fs::canonicalize(dir.path()).unwrap();
    let ws = top.join("ws");
    let outside = top.join("outside");
    std::fs::create_dir_all(ws.join("a/b/c")).unwrap();
    std::fs::create_dir_all(outside.join("c")).unwrap();
    std::os::unix::fs::symlink(ws.join("a/b"), ws.join("a/inside")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("a/out")).unwrap();
    std::os::unix::fs::symlink("b", ws.join("a/rel")).unwrap();
    std::os::unix::fs::symlink(ws.join("a/b/c"), ws.join("a/b/leaf")).unwrap();
    let root = open_root(&ws);
    let root = root.as_fd();

    for path_only in [true, false] {
        let fd = walk::open_components(root, Path::new("a/b/c"), path_only).unwrap();
        assert_eq!(ino(&fd), std::fs::metadata(ws.join("a/b/c")).unwrap().ino());
        let fd = walk::open_components(root, Path::new("./a/./b"), path_only).unwrap();
        assert_eq!(ino(&fd), std::fs::metadata(ws.join("a/b")).unwrap().ino());
        let fd = walk::open_components(root, Path::new(""), path_only).unwrap();
        assert_eq!(ino(&fd), std::fs::metadata(&ws).unwrap().ino());
        // A symlinked middle component, pointing inside the root, outside, or relative.
        for linked in ["a/inside/c", "a/out/c", "a/rel/c", "a/b/leaf"] {
            let err = walk::open_components(root, Path::new(linked), path_only).unwrap_err();
            assert!(
                matches!(err, Errno::NOTDIR | Errno::LOOP),
                "{linked}: {err}"
            );
        }
        for escape in ["..", "a/../..", "a/b/../c", "/tmp"] {
            let err = walk::open_components(root, Path::new(escape), path_only).unwrap_err();
            assert_eq!(err, Errno::XDEV, "{escape}");
        }
    }
    // A readable descriptor can be listed.
    let fd = walk::open_components(root, Path::new("a"), false).unwrap();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut names = Vec::new();
    let mut dir = rustix::fs::RawDir::new(&fd, &mut buf);
    while let Some(entry) = dir.next() {
        names.push(entry.unwrap().file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(names, [".", "..", "b", "inside", "out", "rel"]);
}

/// A walk that opens every directory component by component lists exactly what the one
/// with `openat2` lists, and a directory swapped for a symlink is skipped by both.
#[test]
fn the_walk_lists_the_same_files_with_either_opener() {
    let dir = tempfile::tempdir().unwrap();
    let top = std::fs::canonicalize(dir.path()).unwrap();
    let ws = top.join("ws");
    let outside = top.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "x").unwrap();
    for rel in ["a.txt", "d/b.txt", "d/e/c.txt", "d/e/f/g/h.txt", "z/y.txt"] {
        let path = ws.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }
    std::os::unix::fs::symlink(&outside, ws.join("d/link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("d/e/f/g/up")).unwrap();
    let root = open_root(&ws);
    let expected = ["a.txt", "d/b.txt", "d/e/c.txt", "d/e/f/g/h.txt", "z/y.txt"];
    let cancel = CancellationToken::new();
    let with_openat2 = walk::list(root.as_fd(), 1000, &cancel, &never, None).unwrap();
    let by_components = walk::list_with(
        root.as_fd(),
        1000,
        &cancel,
        &never,
        walk::open_components,
        None,
    )
    .unwrap();
    assert_eq!(listed(&with_openat2), expected);
    assert_eq!(listed(&by_components), expected);
    assert_eq!(by_components.entries_read, with_openat2.entries_read);
}
