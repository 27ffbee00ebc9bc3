//! `write`: replace a whole file, creating parent directories.
//!
//! The new content goes to a temporary file in the target's directory, which then takes the
//! target's place (an exchange of the two names, or a rename for a new file): readers see the
//! old file or the new one, never a missing or truncated one (T23), and a hard link from the
//! target to a file outside the root is replaced rather than written through (T19).
//! Permission bits of an existing file are kept.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use hands_protocol::toolset::{ToolOutput, WriteInput};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::Session;
use crate::output::fs_reason;
use crate::paths::make_parents;

pub(crate) fn run(session: &Session, input: WriteInput) -> ToolOutput {
    let p = &input.file_path;
    let resolved = match session.roots.resolve(p) {
        Ok(r) => r,
        Err(e) => return ToolOutput::error(format!("write: {e}")),
    };
    if let Some(root) = session.roots.read_only_root_of(&resolved.path) {
        return ToolOutput::error(format!("write: {p} is inside read-only directory {root}"));
    }
    let written = make_parents(&resolved).and_then(|(dir, leaf)| {
        let mode = existing_mode(dir.as_fd(), leaf)?;
        replace_file(dir.as_fd(), leaf, input.content.as_bytes(), mode)
    });
    match written {
        Ok(()) => {
            session
                .seen
                .record(&resolved.path, input.content.as_bytes());
            ToolOutput::ok(format!("wrote {} bytes to {p}", input.content.len()))
        }
        Err(e) => ToolOutput::error(format!("write: {p}: {}", fs_reason(&e))),
    }
}

/// The permission bits of `dir/leaf` when it is a regular file; `None` when it does not exist.
/// A directory (or anything else that is not a file) is refused.
pub(crate) fn existing_mode(dir: BorrowedFd<'_>, leaf: &OsStr) -> io::Result<Option<u32>> {
    match rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(Some(st.st_mode & 0o777)),
            FileType::Directory => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            // A symlink can only be here if one was swapped in after resolution; renaming over
            // it replaces the link itself, never its target.
            FileType::Symlink => Ok(None),
            _ => Err(io::Error::other("not a regular file")),
        },
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn temp_name() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    Ok(format!(
        ".hands-{}.tmp",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Writes `data` to a new temporary file in `dir` and puts it in place of `leaf`. `mode` is
/// applied with `fchmod` (so the umask does not change a preserved mode); without it the file
/// gets `0666 & !umask`, as a plain `open` would give. No `fsync`, as the reference: see
/// [`put_in_place`] for what a crash of the host can leave.
pub(crate) fn replace_file(
    dir: BorrowedFd<'_>,
    leaf: &OsStr,
    data: &[u8],
    mode: Option<u32>,
) -> io::Result<()> {
    let tmp = temp_name()?;
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )?;
    let result = (|| {
        if let Some(mode) = mode {
            rustix::fs::fchmod(&fd, Mode::from_bits_truncate(mode))?;
        }
        let mut file = std::fs::File::from(fd);
        file.write_all(data)?;
        drop(file);
        put_in_place(dir, tmp.as_str(), leaf)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// Puts the complete temporary file `tmp` at `leaf`, atomically for readers: the name always
/// names the old file or the new one, never nothing and never a partial file.
///
/// An existing file is swapped with the new one by `renameat2(RENAME_EXCHANGE)`, and the old
/// file, now under the temporary name, is unlinked; a name that does not exist yet is a plain
/// rename. Why not rename over the old file: on ext4 (`auto_da_alloc`, the default), renaming
/// over an existing file starts writeback of the new file's data inside the rename, which made
/// a 1 KiB write cost 0.3-0.9 ms on this project's VMs against ~0.1 ms for the exchange (the
/// exchange path of ext4 has no such hook). What that hook bought, and this gives up: after a
/// power loss or kernel crash within the kernel's writeback delay (by default up to ~35 s:
/// 30 s dirty expiry plus the 5 s journal commit) a file replaced by `write` or `edit` may be
/// empty on ext4, where the rename would have left the old or the new content. A process crash
/// (the worker's or a tool's) loses nothing either way. The trade-off is taken because the
/// per-session workspaces of `hands serve` and the Lambda functions are created fresh and
/// removed at teardown (they do not outlive a crash of their host) and an `fsync` per write
/// would cost 8-10 ms here. With a persistent `--workdir` (the `.` default of `hands poll` and
/// `hands run`) it is weaker than the rename was, and than the reference's truncate-and-write,
/// which ext4 also flushes on close; neither `fsync`s. File systems without the exchange
/// (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`) get the plain rename.
fn put_in_place(dir: BorrowedFd<'_>, tmp: &str, leaf: &OsStr) -> io::Result<()> {
    // Asked every time (a failed call costs about a microsecond): the roots may span file
    // systems that differ.
    match rustix::fs::renameat_with(dir, tmp, dir, leaf, RenameFlags::EXCHANGE) {
        Ok(()) => return drop_replaced(dir, tmp, leaf),
        // Nothing to exchange with (a new file), or no exchange on this kernel or file system.
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::renameat(dir, tmp, dir, leaf)?;
    Ok(())
}

/// Unlinks the file the exchange put under the temporary name `tmp`. The leaf was checked to
/// be a file, but something could have swapped a directory in since; a rename over a directory
/// fails, so the exchange is undone and the write fails the same way.
fn drop_replaced(dir: BorrowedFd<'_>, tmp: &str, leaf: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, tmp, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR) => {
            rustix::fs::renameat_with(dir, tmp, dir, leaf, RenameFlags::EXCHANGE)?;
            Err(io::Error::from_raw_os_error(libc::EISDIR))
        }
        // The new content is in place; only the old file's name is left over.
        Err(e) => {
            tracing::warn!(error = %e, file = tmp, "write: could not remove the replaced file");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn open(dir: &Path) -> OwnedFd {
        rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    /// Names in `dir` left by a write: none may remain.
    fn temp_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".hands-"))
            .collect()
    }

    /// The replacement is atomic for readers: a reader opening the file by name while it is
    /// replaced over and over always finds it, whole, with the old or the new content.
    #[test]
    fn a_reader_never_sees_a_missing_or_partial_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path());
        let path = tmp.path().join("f.txt");
        let (a, b) = ("a".repeat(1000), "b".repeat(3000));
        replace_file(dir.as_fd(), OsStr::new("f.txt"), a.as_bytes(), None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stop, path, a, b) = (stop.clone(), path.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let seen = std::fs::read_to_string(&path).expect("the file is always there");
                    assert!(
                        seen == a || seen == b,
                        "partial content: {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..2000 {
            let data = if i % 2 == 0 { &b } else { &a };
            replace_file(
                dir.as_fd(),
                OsStr::new("f.txt"),
                data.as_bytes(),
                Some(0o640),
            )
            .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), a);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert!(temp_files(tmp.path()).is_empty());
    }

    /// The replaced file is unlinked, never written: another name for it keeps the old content
    /// (T19), and only that name is left.
    #[test]
    fn a_hard_link_keeps_the_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path());
        std::fs::write(tmp.path().join("outside"), "secret").unwrap();
        std::fs::hard_link(tmp.path().join("outside"), tmp.path().join("f")).unwrap();
        replace_file(dir.as_fd(), OsStr::new("f"), b"new", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("outside")).unwrap(),
            "secret"
        );
        assert_eq!(
            std::fs::metadata(tmp.path().join("outside"))
                .unwrap()
                .nlink(),
            1
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("f")).unwrap(),
            "new"
        );
        assert!(temp_files(tmp.path()).is_empty());
    }

    /// A directory where the file was expected (swapped in after the check) stays where it
    /// is, with its content, and the write fails as a rename over it would.
    #[test]
    fn a_directory_in_the_way_is_left_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path());
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/inner"), "kept").unwrap();
        let err = replace_file(dir.as_fd(), OsStr::new("d"), b"new", None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("d/inner")).unwrap(),
            "kept"
        );
        assert!(temp_files(tmp.path()).is_empty());
    }

    /// A new file is created by the rename, with the umask's mode.
    #[test]
    fn a_new_file_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path());
        replace_file(dir.as_fd(), OsStr::new("new.txt"), b"hello", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("new.txt")).unwrap(),
            "hello"
        );
        assert!(temp_files(tmp.path()).is_empty());
    }
}
