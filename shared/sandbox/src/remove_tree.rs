//! Removing a directory tree that tool code may have made hard to remove. Landlock does not
//! govern `chmod`, so a tool can leave `mkdir d; fallocate -l 9G d/x; chmod 0500 d` (or 000) in
//! its workspace or temporary directory; for a worker that is not root, `remove_dir_all` then
//! fails with EACCES on every try and the space stays taken (on a warm Lambda, `/tmp` stays
//! full). [`remove_tree`] gives each directory it owns owner rights (rwx) before emptying it.
//!
//! Nothing is ever followed: every entry is reached relative to its directory's descriptor with
//! `O_NOFOLLOW`, a mode is changed only on the very inode just opened (through its descriptor),
//! and a symlink anywhere in the tree, also one swapped in meanwhile, is unlinked, never
//! entered, so nothing outside the tree changes mode or content.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

/// Each level holds two descriptors while its entries are removed; a tree deeper than this is
/// refused rather than running the worker out of descriptors.
const MAX_DEPTH: usize = 256;

/// The owner's read, write and search bits: what emptying a directory needs.
const OWNER_RWX: u32 = 0o700;

/// Removes `path` and everything below it. A symlink at `path` is removed itself; below it
/// nothing is followed. A directory this process owns that lacks owner read, write or search
/// rights (tool code's `chmod 0500` or `chmod 000`) is given them first; one owned by someone
/// else is left to fail as the kernel decides (root needs no rights). An absent `path` is not an
/// error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a removable path", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    // The parent (the host's /tmp, the sessions' directory) is opened as given and never changed.
    let parent = open_dir_path(parent)?;
    let euid = rustix::process::geteuid().as_raw();
    remove_entry(parent.as_fd(), name, euid, 0)
}

/// Opens the directory `dir` (`O_PATH`, close-on-exec) as the base of `*at` calls: nothing is
/// read through it, so a directory without read rights opens too.
pub fn open_dir_path(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` under `parent` for listing and unlinking, read-only and without
/// following a symlink, giving it owner rwx first if this process owns it and they are missing
/// (also when it is not even readable: `chmod 000`). The descriptor returned is a plain one on
/// the very inode found under `name` (never an `O_PATH` one), so it can be locked and listed.
pub fn open_dir_for_emptying(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_for_emptying(parent, name, rustix::process::geteuid().as_raw())
}

fn remove_entry(parent: BorrowedFd<'_>, name: &OsStr, euid: u32, depth: usize) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // Linux answers EISDIR for a directory.
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directories nested deeper than {MAX_DEPTH} levels are not removed"
        )));
    }
    let dir = match open_for_emptying(parent, name, euid) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return Ok(()),
        // Replaced by a link or a file since the unlink: one more unlink, nothing entered.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    remove_entries(dir.as_fd(), euid, depth + 1)?;
    drop(dir);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside the open directory `dir`, leaving `dir` itself (empty) in place:
/// for a caller that checked and locked a directory through its descriptor and must not go by
/// its name again (a name can be swapped between the check and the removal; the descriptor
/// cannot). Owner rights are given to `dir` first if this process owns it and they are missing;
/// below it the rules of [`remove_tree`] apply.
pub fn empty_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    let st = rustix::fs::fstat(dir)?;
    if st.st_uid == euid && st.st_mode & OWNER_RWX != OWNER_RWX {
        rustix::fs::fchmod(dir, Mode::from_raw_mode(st.st_mode | OWNER_RWX))?;
    }
    remove_entries(dir, euid, 1)
}

/// Removes every entry of `dir` (at nesting `depth`).
fn remove_entries(dir: BorrowedFd<'_>, euid: u32, depth: usize) -> io::Result<()> {
    // The listing reads through its own descriptor; unlinks go through `dir`.
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        remove_entry(dir, OsStr::from_bytes(child), euid, depth)?;
    }
    Ok(())
}

/// Opens the directory `name` under `parent` for listing and unlinking, after giving it owner
/// rwx if this process owns it and they are missing.
fn open_for_emptying(parent: BorrowedFd<'_>, name: &OsStr, euid: u32) -> Result<OwnedFd, Errno> {
    let readable = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, readable, Mode::empty()) {
        Ok(dir) => {
            // Readable, but perhaps not writable (0500): unlinking inside would fail.
            let st = rustix::fs::fstat(&dir)?;
            if st.st_uid == euid && st.st_mode & OWNER_RWX != OWNER_RWX {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(st.st_mode | OWNER_RWX))?;
            }
            Ok(dir)
        }
        Err(Errno::ACCESS | Errno::PERM) => {
            // Not even readable (000): the mode is set on the inode held by an `O_PATH`
            // descriptor, then the directory is opened through that descriptor, not by name.
            let held = rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rustix::fs::fstat(&held)?;
            if st.st_uid != euid {
                return Err(Errno::ACCESS);
            }
            chmod_held(&held, parent, name, st.st_mode | OWNER_RWX)?;
            rustix::fs::openat(
                &held,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        }
        Err(e) => Err(e),
    }
}

/// Sets the mode of the directory `held` (an `O_PATH` descriptor, which `fchmod` refuses)
/// through `/proc/self/fd/N`, which names that inode and no path. Without `/proc`, by name
/// with `AT_SYMLINK_NOFOLLOW` (`fchmodat2`, Linux 6.6 and later): a symlink swapped in is
/// refused, never followed.
fn chmod_held(
    held: &OwnedFd,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
) -> Result<(), Errno> {
    let mode = Mode::from_raw_mode(mode);
    match rustix::fs::chmodat(
        CWD,
        format!("/proc/self/fd/{}", held.as_raw_fd()),
        mode,
        AtFlags::empty(),
    ) {
        Err(Errno::NOENT) => rustix::fs::chmodat(parent, name, mode, AtFlags::SYMLINK_NOFOLLOW),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A tree as tool code can leave it: a directory at 0500 and one at 000, both holding files
    /// and a subdirectory, the tree's own root at 0500, and links to a directory and a file
    /// outside (closed too). Everything goes; what the links name keeps its content and mode.
    #[test]
    fn closed_directories_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("ws");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(outside.join("inner")).unwrap();
        std::fs::write(outside.join("inner/keep"), "kept").unwrap();
        for (dir, mode) in [("read_only", 0o500), ("closed", 0o000)] {
            let d = root.join(dir);
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("file"), vec![0u8; 64 * 1024]).unwrap();
            std::fs::write(d.join("sub/deeper"), "x").unwrap();
            chmod(&d.join("sub"), mode);
            std::os::unix::fs::symlink(&outside, d.join("link_dir")).unwrap();
            std::os::unix::fs::symlink(outside.join("inner/keep"), d.join("link_file")).unwrap();
            chmod(&d, mode);
        }
        chmod(&outside, 0o500);
        chmod(&root, 0o500);
        let outside_mode = std::fs::metadata(&outside).unwrap().permissions().mode();

        remove_tree(&root).unwrap();

        assert!(
            std::fs::symlink_metadata(&root).is_err(),
            "the tree is still there"
        );
        assert_eq!(
            std::fs::metadata(&outside).unwrap().permissions().mode(),
            outside_mode
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("inner/keep")).unwrap(),
            "kept"
        );
        chmod(&outside, 0o700);
        // Absent: nothing to do.
        remove_tree(&root).unwrap();
    }

    /// The same as a worker that is not root, for which the modes are real obstacles (root's
    /// CAP_DAC_OVERRIDE ignores them): run in a child as uid 65534 when the suite runs as root.
    #[test]
    fn closed_directories_are_removed_unprivileged() {
        use hands_test_support::{NOBODY, is_rerun, rerun_as};
        if is_rerun() || !rustix::process::geteuid().is_root() {
            return closed_directories_are_removed();
        }
        rerun_as(
            NOBODY,
            "remove_tree::tests::closed_directories_are_removed_unprivileged",
            &[],
        );
    }

    /// The `path` itself may be a link (planted in a workspace's place): the link goes, its
    /// target stays. A plain file is removed too.
    #[test]
    fn a_link_or_file_at_the_path_is_removed_itself() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "kept").unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(
            std::fs::read_to_string(target.join("keep")).unwrap(),
            "kept"
        );
        let file = base.path().join("file");
        std::fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
