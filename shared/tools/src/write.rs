//! `write`: replace a whole file, creating parent directories.
//!
//! The new content goes to a temporary file in the target's directory, which is then renamed
//! over the target: readers see the old file or the new one, never a missing or truncated one
//! (T23), and a hard link from the target to a file outside the root is replaced rather than
//! written through (T19). Permission bits of an existing file are kept.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use hands_protocol::toolset::{ToolOutput, WriteInput};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
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

/// Writes `data` to a new temporary file in `dir` and renames it over `leaf`. `mode` is
/// applied with `fchmod` (so the umask does not change a preserved mode); without it the file
/// gets `0666 & !umask`, as a plain `open` would give.
///
/// No `fsync` (it would cost milliseconds per call): the rename is atomic against a crash of
/// the worker or a tool, as the reference's write is. Against a power loss the rename is what
/// protects the file on ext4: renaming over an existing file makes ext4 start writing the new
/// data out (`auto_da_alloc`, on by default), so after a power loss the file holds the old or
/// the new content, never nothing (T23). That writeback is most of a write's cost on ext4,
/// and it is kept on purpose: a `renameat2(RENAME_EXCHANGE)` and unlink of the old file skips
/// it (tens of microseconds less per call on ext4) but can leave a replaced file empty after a
/// power loss, and `--workdir` may be the user's own checkout (README, "How fast the tools
/// are").
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
        // A directory swapped in after `existing_mode` makes this fail with EISDIR and stays.
        rustix::fs::renameat(dir, tmp.as_str(), dir, leaf)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result
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

    /// The replaced file is only unlinked by the rename, never written: another name for it
    /// keeps the old content (T19), and only that name is left.
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
