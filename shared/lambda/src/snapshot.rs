//! The workspace snapshot's archive: a gzip'd tar written to any `Write` (a temporary file, so
//! a workspace is never held in memory) and read back from any `Read`, with a size cap.
//!
//! The archive is built from the workspace only after every tool process is gone, without
//! following symlinks (a link planted by tool code is stored as a link, never as what it
//! points to); sockets, FIFOs, devices and unreadable entries are skipped with a warning.
//! Archives are unpacked with the `tar` crate's confinement (no entry lands outside the
//! workspace).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hands_worker::StoreError;

/// The archive grew past the configured cap (`HANDS_WORKSPACE_MAX_BYTES`).
#[derive(Debug, thiserror::Error)]
#[error(
    "the workspace snapshot is over HANDS_WORKSPACE_MAX_BYTES ({cap} bytes compressed); not saved: keep large build outputs out of the workspace or raise the cap"
)]
pub struct OverCap {
    pub cap: u64,
}

/// Counts what goes through and fails once more than `cap` bytes were written.
pub struct CappedWriter<W> {
    inner: W,
    written: u64,
    cap: u64,
}

impl<W: Write> CappedWriter<W> {
    pub fn new(inner: W, cap: u64) -> Self {
        CappedWriter {
            inner,
            written: 0,
            cap,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.cap {
            return Err(std::io::Error::other(OverCap { cap: self.cap }));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a failed write of the archive means to the operator: over the cap, or `/tmp` full
/// (on Lambda it holds the workspace and the archive, so a cap near the ephemeral storage
/// size fails this way before the cap is reached).
pub fn write_error(e: &std::io::Error, context: &str) -> StoreError {
    if let Some(over) = e.get_ref().and_then(|i| i.downcast_ref::<OverCap>()) {
        return StoreError(over.to_string());
    }
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StoreError(format!(
            "{context}: no space left for the snapshot in the temporary directory, which holds the workspace and its archive: lower HANDS_WORKSPACE_MAX_BYTES or raise the function's ephemeral storage (/tmp) size ({e})"
        ));
    }
    StoreError(format!("{context}: {e}"))
}

fn is_write_failure(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.get_ref()
            .is_some_and(|i| i.downcast_ref::<OverCap>().is_some())
}

/// Archives `dir` into `out` (gzip'd tar) by walking it (not `tar`'s `append_dir_all`, which fails on the first socket
/// or unreadable file): regular files, directories, and symlinks stored as links, never
/// followed. Sockets, FIFOs, devices and entries that cannot be read are skipped with a
/// warning; tool code leaving a `*.sock` behind must not cost the whole snapshot.
pub fn pack_into<W: Write>(dir: &Path, out: W) -> Result<W, StoreError> {
    let io = |e: std::io::Error| write_error(&e, &format!("archive {}", dir.display()));
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    // The root must be listable: a workspace that cannot be read is an error, not empty.
    std::fs::read_dir(dir).map_err(io)?;
    tar.append_dir(".", dir).map_err(io)?;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let abs = dir.join(&rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(path = %abs.display(), error = %e,
                    "cannot list a workspace directory; its contents are left out of the snapshot");
                continue;
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let abs = dir.join(&rel);
            if let Err(e) = append_entry(&mut tar, &abs, &rel, &mut pending) {
                // Writing the archive failed (over the cap, or `/tmp` full): nothing more fits,
                // so stop instead of walking the rest of the tree.
                if is_write_failure(&e) {
                    return Err(io(e));
                }
                tracing::warn!(path = %abs.display(), error = %e,
                    "cannot read a workspace entry; left out of the snapshot");
            }
        }
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
}

/// Appends one entry; a directory is queued on `pending` for its contents. An `Err` comes from
/// reading the entry before any of it was written, so skipping it keeps the archive valid.
fn append_entry<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
    pending: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(abs)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(abs)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, rel, target)
    } else if kind.is_dir() {
        // Listed when popped; one that cannot be listed is still created, empty.
        tar.append_dir(rel, abs)?;
        pending.push(rel.to_path_buf());
        Ok(())
    } else if kind.is_file() {
        let mut file = std::fs::File::open(abs)?;
        tar.append_file(rel, &mut file)
    } else {
        tracing::warn!(path = %abs.display(), kind = ?kind,
            "not a file, directory or symlink (socket, FIFO or device); left out of the snapshot");
        Ok(())
    }
}

/// Unpacks a gzip'd tar read from `input` into `dir`.
pub fn unpack_from<R: Read>(input: R, dir: &Path) -> Result<(), StoreError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    // `unpack` refuses entries that would land outside `dir` (absolute paths, `..`, links).
    archive
        .unpack(dir)
        .map_err(|e| StoreError(format!("unpack into {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    /// A writer on a full file system.
    struct Full;

    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_temp_dir_names_the_cap_and_the_ephemeral_storage() {
        let src = tempfile::tempdir().unwrap();
        // Incompressible content, so the gzip encoder writes through while packing.
        let bytes: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(src.path().join("big.bin"), bytes).unwrap();
        let err = match pack_into(src.path(), super::CappedWriter::new(Full, u64::MAX)) {
            Ok(_) => panic!("packed into a full file system"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("HANDS_WORKSPACE_MAX_BYTES"), "{err}");
        assert!(err.contains("ephemeral storage"), "{err}");
        assert!(err.contains("No space left on device"), "{err}");
    }

    use std::os::unix::fs::FileTypeExt as _;

    use super::*;

    fn pack(dir: &Path) -> Result<Vec<u8>, StoreError> {
        pack_into(dir, Vec::new())
    }

    fn unpack(bytes: &[u8], dir: &Path) -> Result<(), StoreError> {
        unpack_from(bytes, dir)
    }

    #[test]
    fn pack_and_unpack_keep_files_modes_and_links_as_links() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/f.txt"), "hello").unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        let bytes = pack(src.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(&bytes, dst.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("a/b/f.txt")).unwrap(),
            "hello"
        );
        let mode = std::fs::metadata(dst.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            std::fs::symlink_metadata(dst.path().join("link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn sockets_and_fifos_are_skipped_and_the_rest_is_kept() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("run")).unwrap();
        std::fs::write(src.path().join("run/keep.txt"), "kept").unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(src.path().join("run/agent.sock")).unwrap();
        let fifo = src.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let bytes = pack(src.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(&bytes, dst.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("run/keep.txt")).unwrap(),
            "kept"
        );
        assert!(std::fs::symlink_metadata(dst.path().join("run/agent.sock")).is_err());
        assert!(std::fs::symlink_metadata(dst.path().join("pipe")).is_err());
    }

    #[test]
    fn a_missing_workspace_is_an_error_not_an_empty_snapshot() {
        let parent = tempfile::tempdir().unwrap();
        assert!(pack(&parent.path().join("gone")).is_err());
    }

    #[test]
    fn an_archive_over_the_cap_is_refused_with_a_clear_error() {
        let src = tempfile::tempdir().unwrap();
        // Incompressible bytes: the archive is at least this big.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(src.path().join("noise.bin"), &noise).unwrap();
        let err = pack_into(src.path(), CappedWriter::new(Vec::new(), 64 * 1024))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("HANDS_WORKSPACE_MAX_BYTES (65536 bytes"),
            "{err}"
        );
        let fits = pack_into(src.path(), CappedWriter::new(Vec::new(), 1 << 20)).unwrap();
        assert!(fits.written() > 256 * 1024);
    }
}
