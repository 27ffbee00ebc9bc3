//! The list of files a `grep` over a directory searches, in the order their lines are shown.
//!
//! The order is the one `ignore`'s sorted walk gives (and the reference's sorted walk): the
//! entries of each directory by name, byte order, a directory's contents right after its own
//! entry. `.git` and `node_modules` directories are skipped; symlinks are never followed (not
//! even listed: only regular files and directories are). Every directory is opened relative to
//! the search root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and read with
//! `getdents64` into memory and closed, so a walk holds one directory open at a time however
//! deep the tree, and a directory swapped for a symlink mid-walk is refused, not followed.
//! Entries are listed by name only: the search stats each file relative to its directory.

use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, ResolveFlags};
use tokio_util::sync::CancellationToken;

/// A file to search: the index of its directory in [`Listing::dirs`], and its name.
pub(crate) struct FileRef {
    pub dir: usize,
    pub name: OsString,
}

/// Why the listing ended before the end of the tree.
pub(crate) enum Stop {
    /// The time budget ran out.
    Time,
    /// The walk reached the cap on files.
    Entries,
}

/// The walk's result.
pub(crate) struct Listing {
    /// Directories holding the files, relative to the root (`""` is the root itself).
    pub dirs: Vec<PathBuf>,
    pub files: Vec<FileRef>,
    pub stopped: Option<Stop>,
}

/// The walk was cancelled.
pub(crate) struct Cancelled;

enum Kind {
    Dir,
    File,
}

/// Opens the directory `rel` beneath `root` (the root itself when `rel` is empty), refusing
/// symlinks anywhere on the way. `path_only` gives an `O_PATH` descriptor (enough to stat and
/// open entries), otherwise one that can be read.
pub(crate) fn open_dir(
    root: BorrowedFd<'_>,
    rel: &std::path::Path,
    path_only: bool,
) -> rustix::io::Result<OwnedFd> {
    let access = if path_only {
        OFlags::PATH
    } else {
        OFlags::RDONLY
    };
    let flags = access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if rel.as_os_str().is_empty() {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    }
    match rustix::fs::openat2(
        root,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        // Kernels before 5.6: only the last component is protected from a swap (O_NOFOLLOW).
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(root, rel, flags, Mode::empty()),
        other => other,
    }
}

/// The directories and regular files of directory `rel`, sorted by name. `buf` is the
/// `getdents64` buffer, reused from directory to directory.
fn read_dir(
    root: BorrowedFd<'_>,
    rel: &std::path::Path,
    buf: &mut [MaybeUninit<u8>],
) -> rustix::io::Result<Vec<(OsString, Kind)>> {
    let fd = open_dir(root, rel, false)?;
    let mut dir = RawDir::new(&fd, buf);
    let mut entries = Vec::new();
    while let Some(entry) = dir.next() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // File systems without d_type: ask, without following a symlink.
            kind = match rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            };
        }
        let kind = match kind {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            _ => continue,
        };
        entries.push((OsString::from_vec(name.to_vec()), kind));
    }
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// Size of the `getdents64` buffer: a few hundred entries per call (the default of
/// `rustix::fs::Dir` starts at a few dozen, and every call costs a directory lookup).
const DENTS_BUFFER: usize = 32 * 1024;

/// Lists the files beneath `root` in walk order, at most `max_files` of them, checking the
/// cancellation and the time budget at every file.
pub(crate) fn list(
    root: BorrowedFd<'_>,
    max_files: usize,
    cancel: &CancellationToken,
    deadline: &dyn Fn() -> bool,
) -> Result<Listing, Cancelled> {
    let mut listing = Listing {
        dirs: vec![PathBuf::new()],
        files: Vec::new(),
        stopped: None,
    };
    let mut buf = vec![MaybeUninit::<u8>::uninit(); DENTS_BUFFER];
    let Ok(top) = read_dir(root, std::path::Path::new(""), &mut buf) else {
        return Ok(listing);
    };
    // One frame per directory being listed: its index and its remaining entries.
    let mut stack = vec![(0usize, top.into_iter())];
    while let Some((dir, entries)) = stack.last_mut() {
        let dir = *dir;
        let Some((name, kind)) = entries.next() else {
            stack.pop();
            continue;
        };
        match kind {
            Kind::Dir => {
                if matches!(name.as_bytes(), b".git" | b"node_modules") {
                    continue;
                }
                let rel = listing.dirs[dir].join(&name);
                // A directory that cannot be read (permissions, swapped for a symlink) is
                // skipped, as the walk of `ignore` skips it.
                if let Ok(children) = read_dir(root, &rel, &mut buf) {
                    listing.dirs.push(rel);
                    stack.push((listing.dirs.len() - 1, children.into_iter()));
                }
            }
            Kind::File => {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                if deadline() {
                    listing.stopped = Some(Stop::Time);
                    break;
                }
                if listing.files.len() >= max_files {
                    listing.stopped = Some(Stop::Entries);
                    break;
                }
                listing.files.push(FileRef { dir, name });
            }
        }
    }
    Ok(listing)
}
