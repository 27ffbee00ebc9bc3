//! The directory a session's tools run in (DESIGN.md "Workspace").
//!
//! `--workdir` is used as is, like `ant beta:worker --workdir`, unless it contains
//! `{session_id}`: then each session gets its own directory, created fresh (anything left there
//! by an earlier invocation is removed first, never trusted: CATALOGUE T26) and removed at
//! teardown.

use std::path::{Path, PathBuf};

/// A `--workdir` value, possibly with `{session_id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkdirTemplate(String);

/// Why a workspace could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("session id {0:?} cannot name a directory (only letters, digits, '_' and '-')")]
    BadSessionId(String),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The placeholder replaced by the session id.
pub const SESSION_PLACEHOLDER: &str = "{session_id}";

impl WorkdirTemplate {
    pub fn new(template: impl Into<String>) -> Self {
        WorkdirTemplate(template.into())
    }

    /// Whether each session gets its own directory.
    pub fn is_per_session(&self) -> bool {
        self.0.contains(SESSION_PLACEHOLDER)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Creates (or, for a shared literal directory, ensures) the session's workspace.
    pub fn prepare(&self, session_id: &str) -> Result<Workdir, WorkdirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WorkdirError::Io { path, source }
        };
        if !self.is_per_session() {
            let path = PathBuf::from(&self.0);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            let path = std::fs::canonicalize(&path).map_err(io(&path))?;
            return Ok(Workdir { path, owned: false });
        }
        let safe = !session_id.is_empty()
            && session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !safe {
            return Err(WorkdirError::BadSessionId(session_id.to_owned()));
        }
        let path = PathBuf::from(self.0.replace(SESSION_PLACEHOLDER, session_id));
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                tracing::warn!(path = %path.display(), "leftover workspace found; removing it before use");
                // A planted file or symlink in its place (T26) is removed itself, not followed;
                // directories tool code closed with `chmod` are reopened.
                hands_sandbox::remove_tree(&path).map_err(io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // `create_dir` (not `_all`) fails if something raced us into the path.
        std::fs::create_dir(&path).map_err(io(&path))?;
        let path = std::fs::canonicalize(&path).map_err(io(&path))?;
        Ok(Workdir { path, owned: true })
    }
}

/// A prepared workspace.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
    /// Created for this session: removed at teardown.
    owned: bool,
}

impl Workdir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this directory belongs to one session (created for it, removed after it).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Removes a per-session workspace; a shared literal one is left as the operator set it up.
    pub fn cleanup(&self) {
        if self.owned {
            crate::item::remove_dir_logged(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_session_dirs_are_fresh_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let t = WorkdirTemplate::new(format!("{}/s/{{session_id}}", root.path().display()));
        assert!(t.is_per_session());
        let w = t.prepare("sesn_1").unwrap();
        std::fs::write(w.path().join("left.txt"), "x").unwrap();
        // A second invocation never sees the first one's files.
        let w2 = t.prepare("sesn_1").unwrap();
        assert!(!w2.path().join("left.txt").exists());
        w2.cleanup();
        assert!(!w2.path().exists());
    }

    #[test]
    fn planted_symlink_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("sesn_2")).unwrap();
        let t = WorkdirTemplate::new(format!("{}/{{session_id}}", root.path().display()));
        let w = t.prepare("sesn_2").unwrap();
        assert!(!w.path().is_symlink());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn hostile_session_ids_are_refused() {
        let t = WorkdirTemplate::new("/tmp/x/{session_id}");
        for bad in ["", "..", "a/b", "a b", "../../etc"] {
            assert!(
                matches!(t.prepare(bad), Err(WorkdirError::BadSessionId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn literal_dirs_are_shared_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let t = WorkdirTemplate::new(root.path().to_str().unwrap());
        let w = t.prepare("sesn_3").unwrap();
        w.cleanup();
        assert!(root.path().exists());
    }
}
