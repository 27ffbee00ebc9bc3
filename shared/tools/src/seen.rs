//! What the model last saw of each file, so `edit` refuses to apply an edit to a file that
//! changed behind its back (CATALOGUE T23: a stale read gives a conflict error).
//!
//! `read` records the SHA-256 of a text file it returned whole; `write` and `edit` record what
//! they wrote. `edit` compares the file it is about to change with that record: a difference
//! means something else (a bash command, another process) changed the file since the model
//! last saw it, and the edit is refused instead of applied to text the model never read.
//! A file the model never read through these tools has no record and is edited as the
//! reference does. Content hashes, not timestamps: a same-size rewrite within one clock tick is
//! still caught.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// A file's content digest.
pub(crate) type Digest256 = [u8; 32];

pub(crate) fn digest(bytes: &[u8]) -> Digest256 {
    Sha256::digest(bytes).into()
}

/// Per-session record of the content the model last saw, keyed by canonical path.
#[derive(Default)]
pub(crate) struct SeenFiles {
    files: Mutex<HashMap<PathBuf, Digest256>>,
}

/// The file differs from what the model last saw.
pub(crate) struct Stale;

impl SeenFiles {
    pub(crate) fn record(&self, path: &Path, content: &[u8]) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(path.to_path_buf(), digest(content));
        }
    }

    /// `Err(Stale)` when the model saw this file and its content changed since.
    pub(crate) fn check(&self, path: &Path, current: &[u8]) -> Result<(), Stale> {
        let Ok(files) = self.files.lock() else {
            return Ok(());
        };
        match files.get(path) {
            Some(seen) if *seen != digest(current) => Err(Stale),
            _ => Ok(()),
        }
    }
}
