//! Confined file operations inside one store directory (blocking; callers use
//! `spawn_blocking`).
//!
//! Tool code owns the store's contents, so every path is walked one component at a time with
//! `O_NOFOLLOW`: a symlink anywhere below the root (a file, or a directory swapped in between a
//! listing and a read) makes the operation fail instead of leaving the store. Files are opened
//! `O_NONBLOCK` so a FIFO cannot hang the worker, checked to be regular with `fstat`, and their
//! size is checked before a single byte is read (CATALOGUE M1, M2).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

/// What reading a store file found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Absent,
    Content(String),
    /// Over the limit: the size, never read.
    TooLarge(u64),
    NotUtf8,
    /// A symlink, FIFO, socket, device or directory where a file was expected.
    NotRegular,
    /// The worker may not open it or a directory on the way (tool code ran `chmod 000`): its
    /// content is unknown, which is not the same as absent.
    Unreadable,
}

/// A permission refusal (the worker is not root and tool code took its rights away).
fn is_denied(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::ACCESS.raw_os_error() || c == rustix::io::Errno::PERM.raw_os_error()
    )
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the store root itself (which must not be a symlink).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(CWD, root, dir_flags(), Mode::empty())?)
}

/// Opens the directory holding `rel` (creating missing directories when asked) and returns it
/// with the file name. `rel` has already been validated: no empty, `.` or `..` segment.
fn open_parent(root: &Path, rel: &str, create: bool) -> io::Result<(OwnedFd, String)> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts
        .pop()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
    let mut dir = open_root(root)?;
    for part in parts {
        let next = match rustix::fs::openat(&dir, part, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT && create => {
                match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&dir, part, dir_flags(), Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        dir = next;
    }
    Ok((dir, name.to_owned()))
}

/// Reads one file of the store, refusing anything that is not a regular file of at most
/// `max` bytes of UTF-8.
pub fn read_file(root: &Path, rel: &str, max: u64) -> io::Result<ReadOutcome> {
    let (dir, name) = match open_parent(root, rel, false) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadOutcome::Absent),
        // A symlinked or non-directory component.
        Err(e) if is_not_dir_or_loop(&e) => return Ok(ReadOutcome::NotRegular),
        Err(e) if is_denied(&e) => return Ok(ReadOutcome::Unreadable),
        Err(e) => return Err(e),
    };
    let fd = match rustix::fs::openat(
        &dir,
        name.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(ReadOutcome::Absent),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::MLINK) => {
            return Ok(ReadOutcome::NotRegular);
        }
        // A device or socket that refuses to open.
        Err(rustix::io::Errno::NXIO) => return Ok(ReadOutcome::NotRegular),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => {
            return Ok(ReadOutcome::Unreadable);
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(ReadOutcome::NotRegular);
    }
    let size = st.st_size.max(0) as u64;
    if size > max {
        return Ok(ReadOutcome::TooLarge(size));
    }
    // The file may grow between fstat and read: never read more than `max + 1` bytes.
    let mut buf = Vec::with_capacity(size as usize);
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Ok(ReadOutcome::TooLarge(buf.len() as u64));
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(ReadOutcome::Content(s)),
        Err(_) => Ok(ReadOutcome::NotUtf8),
    }
}

fn is_not_dir_or_loop(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_codes::ENOTDIR) | Some(libc_codes::ELOOP)
    )
}

mod libc_codes {
    pub const ENOTDIR: i32 = rustix::io::Errno::NOTDIR.raw_os_error();
    pub const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
}

/// Writes `content` to `rel` atomically (temp file + rename in the same directory), creating
/// missing directories below the root. Never creates the root: a store folder removed
/// mid-session stays removed until the next sync re-downloads it.
pub fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = open_parent(root, rel, true)?;
    let tmp = format!(".hands-{:016x}.tmp", rand::random::<u64>());
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(content).and_then(|()| {
        rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(mode))?;
        Ok(())
    });
    drop(file);
    let renamed = written.and_then(|()| {
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name.as_str())?;
        Ok(())
    });
    if renamed.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    }
    renamed
}

/// Removes the file at `rel` (absent is fine; a directory is left alone).
pub fn remove_file(root: &Path, rel: &str) -> io::Result<()> {
    let (dir, name) = match open_parent(root, rel, false) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What a walk saw of one entry, without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// One walk of a store: regular files with their stamps, and what was skipped (symlinks,
/// FIFOs, sockets, devices) by relative path.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: BTreeMap<String, Stamp>,
    pub skipped: BTreeMap<String, &'static str>,
    /// The root itself is missing.
    pub root_missing: bool,
    /// The walk stopped at its entry cap: entries it did not reach are unknown, not absent.
    pub truncated: bool,
    /// Entries the worker may not look into (tool code took its rights away), as relative
    /// paths: a directory ends with `/` (the root is `""`), anything below it is unknown, not
    /// absent. A file it may not open is found later, by the read (`ReadOutcome::Unreadable`).
    pub unreadable: BTreeSet<String>,
}

/// Whether `rel` is in `set` or below one of its directories (entries ending with `/`; `""`
/// is the root). One lookup per ancestor, so a set of thousands costs nothing per path.
pub fn is_below_any(set: &BTreeSet<String>, rel: &str) -> bool {
    if set.is_empty() {
        return false;
    }
    if set.contains(rel) || set.contains("") {
        return true;
    }
    rel.match_indices('/')
        .any(|(i, _)| set.contains(&rel[..=i]))
}

/// Lists the store without following symlinks and without reading any file. Directories
/// deeper than `max_depth` are not entered (memory paths have at most 20 segments). At most
/// `max_entries` entries (files, directories and skipped entries alike) are looked at; past
/// that the walk stops with `truncated` set, so a tool that fills the folder with a million
/// files costs one bounded pass, not an unbounded one.
pub fn walk(root: &Path, max_depth: usize, max_entries: usize) -> io::Result<Walk> {
    let mut out = Walk::default();
    let mut seen = 0usize;
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            out.root_missing = true;
            return Ok(out);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            out.root_missing = true;
            return Ok(out);
        }
        Err(e) if is_denied(&e) => {
            out.unreadable.insert(String::new());
            return Ok(out);
        }
        Err(e) => return Err(e),
    }
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed while walking: a listing is a snapshot.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // Unlistable (`chmod 000`), or replaced by a file since it was listed: what it
            // holds is unknown this pass. One such directory must not stop the others' sync.
            Err(e) if is_denied(&e) || is_not_dir_or_loop(&e) => {
                out.unreadable.insert(prefix);
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            if seen >= max_entries {
                out.truncated = true;
                return Ok(out);
            }
            seen += 1;
            let Ok(entry) = entry else {
                // A failed read of the listing: the rest of this directory is unknown.
                out.unreadable.insert(prefix.clone());
                break;
            };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                out.skipped.insert(
                    format!("{prefix}{}", entry.file_name().to_string_lossy()),
                    "name is not UTF-8",
                );
                continue;
            };
            let rel = format!("{prefix}{name}");
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                // Gone since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A directory listable but not searchable (`chmod 600`): the entry exists, what
                // it is does not show. Unknown, not absent; as a directory, so is its content.
                Err(_) => {
                    out.unreadable.insert(format!("{rel}/"));
                    out.unreadable.insert(rel);
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if depth + 1 < max_depth {
                    stack.push((entry.path(), format!("{rel}/"), depth + 1));
                } else {
                    out.skipped.insert(rel, "directory nested too deep");
                }
            } else if ft.is_file() {
                use std::os::unix::fs::MetadataExt;
                out.files.insert(
                    rel,
                    Stamp {
                        ino: meta.ino(),
                        size: meta.size(),
                        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                            + i128::from(meta.mtime_nsec()),
                        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000
                            + i128::from(meta.ctime_nsec()),
                    },
                );
            } else if ft.is_symlink() {
                out.skipped.insert(rel, "symlink (never followed)");
            } else {
                out.skipped
                    .insert(rel, "not a regular file (FIFO, socket or device)");
            }
        }
    }
    Ok(out)
}

/// What a single path of the store is, looked up without the walk (and without following a
/// symlink anywhere on the way).
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Absent,
    File(Stamp),
    /// A symlink, FIFO, socket, device or directory, or a symlinked directory on the way.
    NotRegular,
    /// The worker may not look (a directory on the way took its rights away).
    Unreadable,
}

/// Looks `rel` up directly: used for the paths a truncated walk did not reach, so a known
/// memory's file is seen (or known to be gone) whatever else the folder holds.
pub fn lookup(root: &Path, rel: &str) -> io::Result<Lookup> {
    let (dir, name) = match open_parent(root, rel, false) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Absent),
        Err(e) if is_not_dir_or_loop(&e) => return Ok(Lookup::NotRegular),
        Err(e) if is_denied(&e) => return Ok(Lookup::Unreadable),
        Err(e) => return Err(e),
    };
    let st = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(Lookup::Absent),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => {
            return Ok(Lookup::Unreadable);
        }
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Lookup::NotRegular);
    }
    Ok(Lookup::File(Stamp {
        ino: st.st_ino,
        size: st.st_size.max(0) as u64,
        mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
        ctime_ns: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
    }))
}

/// Creates `path` and its missing ancestors (mode 0700); returns whether `path` was created.
pub fn create_dir_all_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates `path` itself (mode 0700), failing with `AlreadyExists` if anything is there
/// (a symlink included: it is not followed).
pub fn create_dir_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Directories deeper than this below a store root are not removed (the removal recurses
/// once per level; memory paths have at most 20 segments, so only tool code nests deeper).
const MAX_REMOVE_DEPTH: usize = 256;

/// Sets the mode of `name` in `dir` if it is a directory (`dir_mode`) or a regular file
/// (`file_mode`), never through a symlink: the entry is opened `O_PATH | O_NOFOLLOW`, its type
/// checked on that descriptor, and the mode set on that very inode through
/// `/proc/self/fd/N` (`fchmod` refuses `O_PATH` descriptors, and `fchmodat`'s
/// `AT_SYMLINK_NOFOLLOW` needs Linux 6.6). Returns the entry's type (`None`: absent);
/// anything else (a symlink, FIFO, socket, device) is left alone.
fn chmod_entry(
    dir: impl AsFd,
    name: &std::ffi::OsStr,
    dir_mode: u32,
    file_mode: u32,
) -> io::Result<Option<FileType>> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ft = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    let mode = match ft {
        FileType::Directory => dir_mode,
        FileType::RegularFile => file_mode,
        _ => return Ok(Some(ft)),
    };
    use std::os::fd::AsRawFd;
    match rustix::fs::chmodat(
        CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    ) {
        Ok(()) => {}
        // No /proc: a directory can still be reopened through its own descriptor (which needs
        // read rights on it); a file cannot be reached without following a path again.
        Err(rustix::io::Errno::NOENT) if ft == FileType::Directory => {
            let dir = rustix::fs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Some(ft))
}

/// Removes `path` and everything below it, never following a symlink below `path` (a symlink
/// at `path` itself is removed, not followed). Every directory is made owner-accessible
/// (0700) before it is emptied, so a read-only store and tool code's `chmod 000` on a file or
/// a folder do not leave anything behind (unlinking needs rights on the directory only).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a removable path",
        ));
    };
    // The parent is the host's (above the store): opened as given.
    let parent = rustix::fs::openat(
        CWD,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    remove_entry(parent.as_fd(), name, 0)
}

fn remove_entry(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    depth: usize,
) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        // Linux answers EISDIR for a directory.
        Err(rustix::io::Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(io::Error::other(format!(
            "directories nested deeper than {MAX_REMOVE_DEPTH} levels are not removed"
        )));
    }
    match chmod_entry(parent, name, 0o700, 0o600) {
        Ok(Some(FileType::Directory)) => {}
        // The mode could not be set (no /proc and no read rights): the directory may be
        // removable as it is; opening it below says if not.
        Err(_) => {}
        Ok(_) => {
            // Replaced by something else since the unlink: one more try, no recursion.
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
    }
    let dir = rustix::fs::openat(parent, name, dir_flags(), Mode::empty())?;
    // The listing reads through its own descriptor; unlinks go through `dir`. Entries are
    // removed while the listing goes on, as `std::fs::remove_dir_all` does.
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        use std::os::unix::ffi::OsStrExt;
        remove_entry(dir.as_fd(), std::ffi::OsStr::from_bytes(child), depth + 1)?;
    }
    drop(dir);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes every directory and file of the tree read-only (0555 / 0444) or owner-writable again
/// (0700 / 0600), looking at no more than [`crate::scan::MAX_WALK_ENTRIES`] entries, 64 levels
/// deep. Every entry is reached relative to its directory's descriptor, opened with
/// `O_NOFOLLOW`, and changed through [`chmod_entry`]: a symlink anywhere in the tree (also one
/// swapped in for a directory by tool code meanwhile) is never followed, so nothing outside the
/// store changes mode. Symlinks, FIFOs, sockets and devices are left as they are; a directory
/// the worker may not open while locking (tool code's `chmod 000`) is left as it is too
/// (it is already more closed than read-only).
pub fn set_tree_writable(root: &Path, writable: bool) -> io::Result<()> {
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a store folder",
        ));
    };
    let parent = rustix::fs::openat(
        CWD,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let modes = if writable {
        TreeModes {
            dir: 0o700,
            file: 0o600,
            open_first: true,
        }
    } else {
        TreeModes {
            dir: 0o555,
            file: 0o444,
            open_first: false,
        }
    };
    let mut budget = crate::scan::MAX_WALK_ENTRIES;
    set_dir_modes(parent.as_fd(), name, &modes, 0, &mut budget)
}

struct TreeModes {
    dir: u32,
    file: u32,
    /// Unlocking: a directory is made writable before its contents (and when locking, after
    /// them), so the walk can always get in.
    open_first: bool,
}

/// Sets the modes of the directory `name` in `parent` and of everything below it.
fn set_dir_modes(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    modes: &TreeModes,
    depth: usize,
    budget: &mut usize,
) -> io::Result<()> {
    if modes.open_first
        && chmod_entry(parent, name, modes.dir, modes.file)? != Some(FileType::Directory)
    {
        return Ok(());
    }
    let dir = match rustix::fs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        // Gone, or no longer a directory (a symlink swapped in: never followed).
        Err(rustix::io::Errno::NOENT)
        | Err(rustix::io::Errno::NOTDIR)
        | Err(rustix::io::Errno::LOOP) => return Ok(()),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) if !modes.open_first => {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for entry in rustix::fs::Dir::read_from(&dir)? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        use std::os::unix::ffi::OsStrExt;
        let child = std::ffi::OsStr::from_bytes(child);
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => matches!(
                rustix::fs::statat(&dir, child, AtFlags::SYMLINK_NOFOLLOW),
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory
            ),
            _ => false,
        };
        if is_dir {
            if depth + 1 < 64 {
                set_dir_modes(dir.as_fd(), child, modes, depth + 1, budget)?;
            }
        } else {
            // Re-checked on the entry itself: only a regular file's mode is changed.
            chmod_entry(&dir, child, modes.dir, modes.file)?;
        }
    }
    if !modes.open_first {
        chmod_entry(parent, name, modes.dir, modes.file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_refuse_symlinks_fifos_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        rustix::fs::mknodat(
            CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::write(root.join("big"), vec![b'a'; 2000]).unwrap();
        std::fs::write(root.join("bin"), [0xff, 0xfe]).unwrap();
        write_file(root, "sub/ok.md", b"fine", 0o600).unwrap();
        assert_eq!(
            read_file(root, "link", 100).unwrap(),
            ReadOutcome::NotRegular
        );
        assert_eq!(
            read_file(root, "etc/passwd", 100).unwrap(),
            ReadOutcome::NotRegular
        );
        assert_eq!(
            read_file(root, "fifo", 100).unwrap(),
            ReadOutcome::NotRegular
        );
        assert_eq!(
            read_file(root, "big", 100).unwrap(),
            ReadOutcome::TooLarge(2000)
        );
        assert_eq!(read_file(root, "bin", 100).unwrap(), ReadOutcome::NotUtf8);
        assert_eq!(read_file(root, "nope", 100).unwrap(), ReadOutcome::Absent);
        assert_eq!(
            read_file(root, "sub/ok.md", 100).unwrap(),
            ReadOutcome::Content("fine".into())
        );
        // Writes do not go through a symlinked directory either.
        assert!(write_file(root, "etc/hands-memory-test", b"x", 0o600).is_err());
        let w = walk(root, 20, 100).unwrap();
        assert_eq!(
            w.files.keys().collect::<Vec<_>>(),
            vec!["big", "bin", "sub/ok.md"]
        );
        assert_eq!(w.skipped.len(), 3);
    }

    #[test]
    fn read_only_trees_refuse_writes_and_can_be_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        create_dir_all_private(&root).unwrap();
        write_file(&root, "a/b.md", b"x", 0o600).unwrap();
        set_tree_writable(&root, false).unwrap();
        let is_root = rustix::process::geteuid().is_root();
        if !is_root {
            assert!(std::fs::write(root.join("a/b.md"), "y").is_err());
            assert!(std::fs::write(root.join("new.md"), "y").is_err());
        }
        set_tree_writable(&root, true).unwrap();
        write_file(&root, "a/b.md", b"z", 0o600).unwrap();
        write_file(&root, "c.md", b"z", 0o600).unwrap();
    }

    #[test]
    fn tree_modes_never_follow_symlinks_and_reach_every_directory() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::set_permissions(
            outside.join("secret"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let root = dir.path().join("store");
        create_dir_all_private(&root).unwrap();
        write_file(&root, "a/b/c.md", b"x", 0o600).unwrap();
        std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("link.md")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/dirlink")).unwrap();
        rustix::fs::mknodat(
            CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        set_tree_writable(&root, false).unwrap();
        assert_eq!(mode(&root), 0o555);
        assert_eq!(mode(&root.join("a/b")), 0o555);
        assert_eq!(mode(&root.join("a/b/c.md")), 0o444);
        // Directories without files are locked too.
        assert_eq!(mode(&root.join("empty/deeper")), 0o555);
        assert_eq!(mode(&root.join("fifo")), 0o600);
        // Nothing behind a symlink changed.
        assert_eq!(mode(&outside), 0o751);
        assert_eq!(mode(&outside.join("secret")), 0o640);
        set_tree_writable(&root, true).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("a/b/c.md")), 0o600);
        assert_eq!(mode(&root.join("empty/deeper")), 0o700);
        assert_eq!(mode(&outside), 0o751);
        assert_eq!(mode(&outside.join("secret")), 0o640);
        // The store root itself swapped for a symlink: its target is left alone.
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, &root).unwrap();
        set_tree_writable(&root, false).unwrap();
        assert_eq!(mode(&outside), 0o751);
        assert_eq!(mode(&outside.join("secret")), 0o640);
    }
}
