//! Each session's private temporary directory. Tier 1 makes `/tmp` and `/dev/shm` read-only
//! for tools (Landlock grants writes beneath the workspace only), so `mktemp`, pip and
//! compilers would fail; tier 0 shares the host's `/tmp` with every other session. The worker
//! creates one directory per session, mode 0700, outside the workspace (so it is neither
//! snapshotted nor listed by the file tools), grants it to the shell like a writable store, and
//! points `TMPDIR`, `TMP` and `TEMP` at it. It is removed when the session's toolset is
//! dropped. Tier 2 has its own private tmpfs on `/tmp` and does not use it.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The variables programs read for their temporary directory.
pub const TMP_VARS: [&str; 3] = ["TMPDIR", "TMP", "TEMP"];

/// The directory; removed on drop.
#[derive(Debug)]
pub struct SessionTmp {
    path: PathBuf,
}

impl SessionTmp {
    /// Creates a fresh directory under `parent` (the worker's own temporary directory). The
    /// name is random and `mkdir` is exclusive, so a name planted in advance is never reused.
    pub fn create(parent: &Path) -> std::io::Result<SessionTmp> {
        let parent = std::fs::canonicalize(parent)?;
        let mut last = None;
        for _ in 0..8 {
            let mut bytes = [0u8; 8];
            rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
            let name = format!("hands-tmp-{:016x}", u64::from_le_bytes(bytes));
            let path = parent.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(SessionTmp { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary directory name")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the temporary-directory variables of `env` with this directory.
    pub fn apply(&self, env: &mut Vec<(OsString, OsString)>) {
        env.retain(|(k, _)| !TMP_VARS.iter().any(|v| k == v));
        for var in TMP_VARS {
            env.push((var.into(), self.path.clone().into_os_string()));
        }
    }
}

impl Drop for SessionTmp {
    fn drop(&mut self) {
        // Removed here and now: a removal left to the blocking pool was lost whenever the
        // runtime shut down first (one directory per session left in /tmp). The directory holds
        // what the session's tools put in it, usually little; `remove_dir_all` never follows a
        // symlink a tool left inside.
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a session's temporary directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_private_set_in_the_environment_and_removed_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let tmp = SessionTmp::create(parent.path()).unwrap();
        let path = tmp.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::create_dir(path.join("sub")).unwrap();
        std::fs::write(path.join("sub/f"), "x").unwrap();
        // A link to something outside: removing the directory must not follow it.
        let outside = parent.path().join("keep");
        std::fs::write(&outside, "kept").unwrap();
        std::os::unix::fs::symlink(&outside, path.join("link")).unwrap();

        let mut env = vec![
            ("PATH".into(), "/bin".into()),
            ("TMPDIR".into(), "/somewhere".into()),
        ];
        tmp.apply(&mut env);
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        for var in TMP_VARS {
            assert_eq!(get(var), vec![path.clone().into_os_string()], "{var}");
        }
        assert_eq!(get("PATH").len(), 1);

        let other = SessionTmp::create(parent.path()).unwrap();
        assert_ne!(other.path(), tmp.path());
        drop(tmp);
        assert!(!path.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "kept");
    }
}
