//! The list of files a `grep` over a directory searches, in the order their lines are shown.
//!
//! The order is the one `ignore`'s sorted walk gives (and the reference's sorted walk): the
//! entries of each directory by name, byte order, a directory's contents right after its own
//! entry. `.git` and `node_modules` directories are skipped; symlinks are never followed (not
//! even listed: only regular files and directories are). Every directory is opened relative to
//! the search root without following a symlink anywhere on the way (`open_dir`), and read with
//! `getdents64` into memory and closed, so a walk holds one directory open at a time however
//! deep the tree, and a directory swapped for a symlink mid-walk is refused, not followed.
//! Entries are listed by name and inode number (`d_ino`): the search stats each file relative
//! to its directory, unless the cache trusts the inode's content (`watch`).
//!
//! What the walk holds is bounded by the entry cap whatever the tree looks like (a tool can
//! make a million empty directories): every entry read from any directory counts against it,
//! a directory is read only up to what is left of it, a directory's path is kept only once one
//! of its files is listed, and the stack keeps names, not paths. The time budget and the
//! cancellation are checked at every directory opened as well as between entries.

use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, ResolveFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use super::cache::Stamp;
use super::listings::ListingCache;

/// A file to search: the index of its directory in [`Listing::dirs`], its name, and the inode
/// number its directory entry gave (`d_ino`).
pub(crate) struct FileRef {
    pub dir: usize,
    pub name: OsString,
    pub ino: u64,
}

/// Why the listing ended before the end of the tree.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The time budget ran out.
    Time,
    /// The walk read as many entries as the cap allows and there were more.
    Entries,
}

/// The walk's result.
pub(crate) struct Listing {
    /// Directories holding the listed files, relative to the root (`""` is the root itself):
    /// only those with at least one listed file.
    pub dirs: Vec<PathBuf>,
    /// The `st_dev` of each of [`Listing::dirs`], where the walk stated it (`read_listing`):
    /// with an entry's `d_ino`, the identity of the file the entry names.
    pub dir_devs: Vec<Option<u64>>,
    pub files: Vec<FileRef>,
    pub stopped: Option<Stop>,
    /// Entries read from directories (files, directories and skipped kinds alike): never more
    /// than the cap.
    pub entries_read: usize,
    /// The most entry names the walk's stack held at one time: never more than the cap.
    pub peak_held: usize,
}

/// The walk was cancelled.
#[derive(Debug)]
pub(crate) struct Cancelled;

/// How directories beneath the root are opened, decided by the first answer of `openat2`.
static OPENER: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const OPENAT2: u8 = 1;
const COMPONENTS: u8 = 2;

/// Opens the directory `rel` beneath `root` (the root itself when `rel` is empty), refusing
/// symlinks anywhere on the way. `path_only` gives an `O_PATH` descriptor (enough to stat and
/// open entries), otherwise one that can be read.
///
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does it in one call. Where it is missing
/// (`ENOSYS`: kernels before 5.6) or filtered (`EPERM`: seccomp profiles that predate it, such
/// as older Docker defaults), the path is opened one component at a time instead
/// ([`open_components`]); falling back to a plain `openat` of the whole path would follow a
/// symlink in a middle component, and giving up would skip every subdirectory silently.
pub(crate) fn open_dir(
    root: BorrowedFd<'_>,
    rel: &Path,
    path_only: bool,
) -> rustix::io::Result<OwnedFd> {
    let flags = dir_flags(path_only);
    if rel.as_os_str().is_empty() {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    }
    if OPENER.load(Ordering::Relaxed) != COMPONENTS {
        match rustix::fs::openat2(
            root,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(e @ (Errno::NOSYS | Errno::PERM)) => {
                if OPENER.swap(COMPONENTS, Ordering::Relaxed) != COMPONENTS {
                    tracing::warn!(
                        error = %e,
                        "file tools: openat2 is not available; directories are opened one \
                         component at a time with O_NOFOLLOW"
                    );
                }
            }
            other => {
                if OPENER
                    .compare_exchange(UNDECIDED, OPENAT2, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    tracing::info!(
                        "file tools: directories are opened with openat2(RESOLVE_BENEATH | \
                         RESOLVE_NO_SYMLINKS)"
                    );
                }
                return other;
            }
        }
    }
    open_components(root, rel, path_only)
}

fn dir_flags(path_only: bool) -> OFlags {
    let access = if path_only {
        OFlags::PATH
    } else {
        OFlags::RDONLY
    };
    access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `rel` beneath `root` one component at a time, each relative to the
/// descriptor of the one before with `O_DIRECTORY | O_NOFOLLOW`, so a symlink anywhere on the
/// way is refused (`ENOTDIR` or `ELOOP`), never followed. A `..` or an absolute path is refused
/// with `EXDEV`, as `RESOLVE_BENEATH` refuses an escape.
pub(crate) fn open_components(
    root: BorrowedFd<'_>,
    rel: &Path,
    path_only: bool,
) -> rustix::io::Result<OwnedFd> {
    let mut names: Vec<&OsStr> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Errno::XDEV);
            }
        }
    }
    let Some((last, middle)) = names.split_last() else {
        return rustix::fs::openat(root, ".", dir_flags(path_only), Mode::empty());
    };
    // The directories on the way only need to be walked through: O_PATH.
    let mut at: Option<OwnedFd> = None;
    for name in middle {
        let parent = at.as_ref().map_or(root, |fd| fd.as_fd());
        at = Some(rustix::fs::openat(
            parent,
            *name,
            dir_flags(true),
            Mode::empty(),
        )?);
    }
    let parent = at.as_ref().map_or(root, |fd| fd.as_fd());
    rustix::fs::openat(parent, *last, dir_flags(path_only), Mode::empty())
}

/// One entry of a directory: its name, its type and its inode number (`d_ino`).
pub(crate) type DirEntry = (OsString, FileType, u64);

/// One directory's entries, read up to a number of them.
pub(crate) struct DirEntries {
    /// Every entry but `.` and `..`, sorted by name, with its type (asked with a stat that
    /// does not follow symlinks where the file system does not say; an entry that cannot be
    /// stated is left out) and inode number.
    pub entries: Vec<DirEntry>,
    /// The directory's `st_dev`, when it was stated (listings read with `Reuse`).
    pub dev: Option<u64>,
    /// Entries read (every kind).
    pub read: usize,
    /// The directory had more entries than it was allowed to read.
    pub truncated: bool,
}

/// The `getdents64` buffer, reused from directory to directory.
pub(crate) type DentsBuffer = Vec<MaybeUninit<u8>>;

pub(crate) fn dents_buffer() -> DentsBuffer {
    vec![MaybeUninit::<u8>::uninit(); DENTS_BUFFER]
}

/// Reads the open directory `fd`, at most `budget` of its entries.
fn read_entries(fd: &OwnedFd, budget: usize, buf: &mut [MaybeUninit<u8>]) -> DirEntries {
    let mut dir = RawDir::new(fd, buf);
    let mut out = DirEntries {
        entries: Vec::new(),
        dev: None,
        read: 0,
        truncated: false,
    };
    while let Some(entry) = dir.next() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if out.read == budget {
            out.truncated = true;
            break;
        }
        out.read += 1;
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // File systems without d_type: ask, without following a symlink.
            kind = match rustix::fs::statat(fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            };
        }
        out.entries
            .push((OsString::from_vec(name.to_vec()), kind, entry.ino()));
    }
    out.entries
        .sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

/// Where [`list`] finds and keeps the listings of unchanged directories.
#[derive(Clone, Copy)]
pub(crate) struct Reuse<'a> {
    pub listings: &'a ListingCache,
    /// Directories changed more recently than this are not kept (see `listings`).
    pub settle: Duration,
}

/// Reads directory `rel`, at most `budget` of its entries, keeping its directories and regular
/// files (what grep walks into and searches); with `reuse`, from the listing kept of it when
/// the directory is unchanged (see [`read_listing`]).
fn read_dir(
    root: BorrowedFd<'_>,
    rel: &Path,
    open: Opener,
    budget: usize,
    buf: &mut [MaybeUninit<u8>],
    reuse: Option<Reuse<'_>>,
) -> rustix::io::Result<DirEntries> {
    let fd = open(root, rel, false)?;
    let mut out = read_listing(&fd, budget, buf, reuse);
    out.entries
        .retain(|(_, kind, _)| matches!(kind, FileType::Directory | FileType::RegularFile));
    Ok(out)
}

/// Reads the open directory `fd`, at most `budget` of its entries (every kind: `glob` lists
/// symlinks and the rest too); with `reuse`, from the listing kept of it when an `fstat` of
/// `fd` gives the stamp it was kept under, and keeping what is read when the directory has
/// settled (see `listings`).
pub(crate) fn read_listing(
    fd: &OwnedFd,
    budget: usize,
    buf: &mut [MaybeUninit<u8>],
    reuse: Option<Reuse<'_>>,
) -> DirEntries {
    // The stamp of what is read, taken before reading, and the time before that (as for file
    // content: a change during or after the read gets a later ctime).
    let now = SystemTime::now();
    let stamp = match reuse {
        Some(reuse) => match rustix::fs::fstat(fd) {
            Ok(st) => {
                let stamp = Stamp::of(&st);
                if let Some(kept) = reuse.listings.get(&stamp, budget) {
                    return kept;
                }
                Some((reuse, stamp))
            }
            Err(_) => None,
        },
        None => None,
    };
    let mut out = read_entries(fd, budget, buf);
    if let Some((reuse, stamp)) = stamp {
        out.dev = Some(stamp.dev);
        if stamp.settled(reuse.settle, now) {
            reuse.listings.insert(stamp, &out);
        }
    }
    out
}

/// How [`list_with`] opens a directory (see [`open_dir`]).
pub(crate) type Opener = fn(BorrowedFd<'_>, &Path, bool) -> rustix::io::Result<OwnedFd>;

/// Size of the `getdents64` buffer: a few hundred entries per call (the default of
/// `rustix::fs::Dir` starts at a few dozen, and every call costs a directory lookup).
const DENTS_BUFFER: usize = 32 * 1024;

/// Entries visited between two looks at the clock and the token (directories opened look
/// every time: an open is a system call anyway).
const CHECK_EVERY: u32 = 32;

/// Lists the files beneath `root` in walk order, reading at most `max_entries` entries in all,
/// checking the cancellation and the time budget as it goes. Once the cap is reached no
/// further directory is read, but the files already read are still listed.
pub(crate) fn list(
    root: BorrowedFd<'_>,
    max_entries: usize,
    cancel: &CancellationToken,
    deadline: &dyn Fn() -> bool,
    reuse: Option<Reuse<'_>>,
) -> Result<Listing, Cancelled> {
    list_with(root, max_entries, cancel, deadline, open_dir, reuse)
}

/// One directory being listed: its index in [`Listing::dirs`] once one of its files is
/// listed, and its remaining entries.
struct Frame {
    index: Option<usize>,
    dev: Option<u64>,
    entries: std::vec::IntoIter<DirEntry>,
}

/// [`list`], opening directories with `open`.
pub(crate) fn list_with(
    root: BorrowedFd<'_>,
    max_entries: usize,
    cancel: &CancellationToken,
    deadline: &dyn Fn() -> bool,
    open: Opener,
    reuse: Option<Reuse<'_>>,
) -> Result<Listing, Cancelled> {
    let mut listing = Listing {
        dirs: Vec::new(),
        dir_devs: Vec::new(),
        files: Vec::new(),
        stopped: None,
        entries_read: 0,
        peak_held: 0,
    };
    if cancel.is_cancelled() {
        return Err(Cancelled);
    }
    let mut buf = dents_buffer();
    let Ok(top) = read_dir(root, Path::new(""), open, max_entries, &mut buf, reuse) else {
        return Ok(listing);
    };
    listing.entries_read = top.read;
    if top.truncated {
        listing.stopped = Some(Stop::Entries);
    }
    // Names held by the frames, not yet visited.
    let mut held = top.entries.len();
    listing.peak_held = held;
    // The path of the directory on top of the stack, relative to the root.
    let mut current = PathBuf::new();
    let mut stack = vec![Frame {
        index: None,
        dev: top.dev,
        entries: top.entries.into_iter(),
    }];
    let mut unchecked = 0u32;
    while let Some(frame) = stack.last_mut() {
        let Some((name, kind, ino)) = frame.entries.next() else {
            stack.pop();
            current.pop();
            continue;
        };
        held -= 1;
        unchecked += 1;
        if unchecked >= CHECK_EVERY {
            unchecked = 0;
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            if deadline() {
                listing.stopped = Some(Stop::Time);
                break;
            }
        }
        match kind {
            FileType::Directory => {
                // Past the cap, only the files already read are listed.
                if listing.stopped.is_some() || matches!(name.as_bytes(), b".git" | b"node_modules")
                {
                    continue;
                }
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                if deadline() {
                    listing.stopped = Some(Stop::Time);
                    break;
                }
                current.push(&name);
                let budget = max_entries.saturating_sub(listing.entries_read);
                // A directory that cannot be read (permissions, swapped for a symlink) is
                // skipped, as the walk of `ignore` skips it.
                match read_dir(root, &current, open, budget, &mut buf, reuse) {
                    Ok(children) => {
                        listing.entries_read += children.read;
                        if children.truncated {
                            listing.stopped = Some(Stop::Entries);
                        }
                        held += children.entries.len();
                        listing.peak_held = listing.peak_held.max(held);
                        stack.push(Frame {
                            index: None,
                            dev: children.dev,
                            entries: children.entries.into_iter(),
                        });
                    }
                    Err(_) => {
                        current.pop();
                    }
                }
            }
            // A regular file: `read_dir` keeps nothing else.
            _ => {
                let dir = match frame.index {
                    Some(dir) => dir,
                    None => {
                        listing.dirs.push(current.clone());
                        listing.dir_devs.push(frame.dev);
                        let dir = listing.dirs.len() - 1;
                        frame.index = Some(dir);
                        dir
                    }
                };
                listing.files.push(FileRef { dir, name, ino });
            }
        }
    }
    Ok(listing)
}

/// What a resolved `path` argument of `grep` or `glob` names.
pub(crate) enum Target {
    /// A directory: its path and a descriptor of it (`O_PATH`).
    Dir(PathBuf, OwnedFd),
    /// A regular file: its directory's path and descriptor, and its name.
    File {
        parent: PathBuf,
        dir: OwnedFd,
        name: OsString,
    },
    /// Nothing, or something that is neither.
    Missing,
}

/// Opens what `resolved` names, without following a symlink in its last component.
pub(crate) fn target(resolved: crate::paths::Resolved) -> rustix::io::Result<Target> {
    let crate::paths::Resolved { path, dir, rest } = resolved;
    let [leaf] = rest.as_slice() else {
        // No name left: `dir` is the target itself; several: directories are missing.
        return Ok(if rest.is_empty() {
            Target::Dir(path, dir)
        } else {
            Target::Missing
        });
    };
    let Ok(st) = rustix::fs::statat(&dir, leaf.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(Target::Missing);
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let fd = rustix::fs::openat(&dir, leaf.as_os_str(), dir_flags(true), Mode::empty())?;
            Ok(Target::Dir(path, fd))
        }
        FileType::RegularFile => Ok(Target::File {
            parent: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            dir,
            name: leaf.clone(),
        }),
        _ => Ok(Target::Missing),
    }
}
