//! `write`: replace a whole file, creating parent directories.
//!
//! The new content goes to a temporary file in the target's directory, which is then renamed
//! over the target: readers see the old file or the new one, never a truncated one (T23), and a
//! hard link from the target to a file outside the root is replaced rather than written through
//! (T19). Permission bits of an existing file are kept.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use hands_protocol::toolset::{ToolOutput, WriteInput};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

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
        Err(rustix::io::Errno::NOENT) => Ok(None),
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

/// Writes `data` to a new temporary file in `dir` and renames it to `leaf`. `mode` is applied
/// with `fchmod` (so the umask does not change a preserved mode); without it the file gets
/// `0666 & !umask`, as a plain `open` would give. No `fsync`: the rename is atomic against
/// process crashes, which is the reference's durability too, at a fraction of the latency.
/// On ext4, renaming over an existing file starts writeback of the new data first
/// (`auto_da_alloc`: after a power loss the file holds the old or the new content, not
/// nothing); that is most of a write's cost there (~0.3-0.9 ms against ~0.1 ms for an exchange
/// and unlink, which would lose it), and it is kept on purpose (README, "How fast the tools are").
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
        rustix::fs::renameat(dir, tmp.as_str(), dir, leaf)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result
}
