//! `*_FILE`: a secret read from a file, the way container orchestrators mount them.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::SecretError;
use crate::value::SecretValue;

/// The largest secret accepted, from a file or AWS: Secrets Manager's own limit (64 KiB). A
/// bigger file is almost certainly the wrong path, and reading it whole would be a waste.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Reads a secret file: at most [`MAX_SECRET_BYTES`], UTF-8, trailing whitespace (the newline
/// editors and `echo` add) trimmed. A file other users may read is accepted with a warning:
/// Kubernetes and Docker mount secrets world-readable by default, and refusing them would break
/// the common case; the warning says what to tighten.
pub fn read_secret_file(var: &str, path: &Path) -> Result<SecretValue, SecretError> {
    let unreadable = |source| SecretError::FileUnreadable {
        var: var.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    remember(path);
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::other("it is a directory")));
    }
    warn_if_world_readable(var, path, &meta);
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(SecretError::FileTooLarge {
            var: var.to_owned(),
            path: path.to_owned(),
            limit: MAX_SECRET_BYTES,
        });
    }
    let from = format!("file {}", path.display());
    let text = String::from_utf8(bytes).map_err(|_| SecretError::NotText {
        var: var.to_owned(),
        from: from.clone(),
    })?;
    crate::value_from_text(var, &from, text)
}

/// Every secret file this process has opened, and where its symlinks led.
static FILES_READ: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn remember(path: &Path) {
    let mut files = FILES_READ
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // As an absolute path: tier 1 refuses a relative hidden path and bwrap cannot mask one, so
    // a relative NAME_FILE would otherwise break every tool call. `absolute` keeps a symlink as
    // it is (the sandbox masks a link differently from a file).
    files.insert(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    // Kubernetes mounts secrets as symlinks into a `..data` directory: the sandbox masks the
    // target too, since a mask over the link alone leaves the target readable.
    if let Ok(real) = std::fs::canonicalize(path) {
        files.insert(real);
    }
}

/// The secret files (`NAME_FILE`) this process has read so far, with the targets of those that
/// are symlinks: what tool code must never read. The worker hides them from every sandbox
/// after it has read its last secret at start (tier 2 masks them, tier 1 leaves them out of
/// the Landlock grants).
pub fn secret_files() -> Vec<PathBuf> {
    FILES_READ
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

#[cfg(unix)]
fn warn_if_world_readable(var: &str, path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        tracing::warn!(
            var,
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "secret file is readable by every user on this host; prefer mode 0400 or 0440 (Kubernetes: defaultMode)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_: &str, _: &Path, _: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newlines_are_trimmed_and_inner_text_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "sk-ant-oat01 abc\r\n\n").unwrap();
        let v = read_secret_file("K_FILE", &p).unwrap();
        assert_eq!(v.expose_secret(), "sk-ant-oat01 abc");
    }

    #[test]
    fn the_files_read_are_remembered_with_their_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), "sk-canary").unwrap();
        let link = dir.path().join("token");
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
        let missing = dir.path().join("missing");
        assert!(!secret_files().contains(&link));
        read_secret_file("K_FILE", &link).unwrap();
        let _ = read_secret_file("M_FILE", &missing);
        let files = secret_files();
        assert!(files.contains(&link), "{files:?}");
        let target = std::fs::canonicalize(data.join("token")).unwrap();
        assert!(files.contains(&target), "{files:?}");
        assert!(!files.contains(&missing), "{files:?}");
    }

    #[test]
    fn a_relative_path_is_remembered_as_an_absolute_one() {
        let dir = tempfile::tempdir_in(".").unwrap();
        std::fs::write(dir.path().join("key"), "k").unwrap();
        let name = dir.path().file_name().unwrap();
        let relative = Path::new(".").join(name).join("key");
        assert!(relative.is_relative());
        read_secret_file("R_FILE", &relative).unwrap();
        let expected = std::env::current_dir().unwrap().join(name).join("key");
        let files = secret_files();
        assert!(files.contains(&expected), "{files:?}");
        assert!(files.iter().all(|f| f.is_absolute()), "{files:?}");
    }

    /// Captures what the crate logs while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Another test's thread may have registered a callsite of this crate while this
            // subscriber was being set up, and cached "no one is interested" for it: ask every
            // callsite again now that the subscriber is in place (a run under load once lost
            // the warning this way).
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_world_readable_file_is_read_with_a_warning_naming_the_path_not_the_value() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "sk-canary").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = logged(|| {
            read_secret_file("K_FILE", &p).unwrap();
        });
        assert!(
            log.contains("readable by every user") && log.contains("mode=\"644\""),
            "{log}"
        );
        assert!(
            log.contains(&p.display().to_string()) && !log.contains("canary"),
            "{log}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = logged(|| {
            read_secret_file("K_FILE", &p).unwrap();
        });
        assert!(log.is_empty(), "{log}");
    }

    #[test]
    fn empty_missing_directory_binary_and_oversized_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n  \n").unwrap();
        let err = read_secret_file("K_FILE", &empty).unwrap_err();
        assert!(err.is_empty_value(), "{err}");
        assert!(err.to_string().starts_with("K_FILE: "), "{err}");

        let missing = dir.path().join("missing");
        let err = read_secret_file("K_FILE", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("K_FILE") && err.contains("missing") && err.contains("No such file"),
            "{err}"
        );

        let err = read_secret_file("K_FILE", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("directory"), "{err}");

        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'c', b'a', b'n']).unwrap();
        let err = read_secret_file("K_FILE", &binary).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");

        let big = dir.path().join("big");
        std::fs::write(&big, "canary".repeat(MAX_SECRET_BYTES / 6 + 1)).unwrap();
        let err = read_secret_file("K_FILE", &big).unwrap_err().to_string();
        assert!(
            err.contains("larger than 65536 bytes") && !err.contains("canary"),
            "{err}"
        );

        // Exactly the limit is fine.
        std::fs::write(&big, "x".repeat(MAX_SECRET_BYTES)).unwrap();
        assert_eq!(
            read_secret_file("K_FILE", &big)
                .unwrap()
                .expose_secret()
                .len(),
            MAX_SECRET_BYTES
        );
    }
}
