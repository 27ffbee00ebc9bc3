//! What a session's toolset is built from.

use std::path::PathBuf;
use std::time::Duration;

use hands_sandbox::{EnvPolicy, Isolation, Rlimits};

/// Limits of the toolset. Defaults are the reference workers' (PROTOCOL.md §8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `bash` timeout when the call gives none (`timeout_ms` absent or 0).
    pub bash_timeout: Duration,
    /// `bash` output kept: the last this many bytes.
    pub bash_output_bytes: usize,
    /// Whole-file `read` and `edit` cap.
    pub max_file_bytes: u64,
    /// Cap on the base64 size of an image returned by `read`.
    pub max_image_base64_bytes: u64,
    /// Cap on the raw size of a PDF returned by `read`.
    pub max_pdf_bytes: u64,
    /// `glob` results returned.
    pub glob_results: usize,
    /// Directory entries a `glob` or `grep` walk may visit.
    pub walk_entries: usize,
    /// `grep` output cap.
    pub grep_output_bytes: usize,
    /// `grep` skips lines longer than this (bytes, newline included, as the reference).
    pub grep_max_line_bytes: usize,
    /// Wall-clock budget of one `grep` or `glob` walk.
    pub search_time: Duration,
    /// `grep` keeps file contents in memory between calls only once they are older than this
    /// (a change within one tick of the file system's clock could otherwise leave a file's
    /// stamp unchanged); younger files are read from disk at every search.
    pub grep_cache_settle: Duration,
    /// How long `grep` serves a cached file without a stat after it was last stated, while
    /// the file's inotify watch reports nothing (`grep/watch.rs`); zero: every cached file is
    /// stated at every search.
    pub grep_watch_trust: Duration,
    /// Longest `grep` regex or `glob` pattern accepted.
    pub pattern_bytes: usize,
    /// The regex compiler's size limits (T25): a pattern whose program would exceed them is an
    /// error, never a stall.
    pub regex_size_limit: usize,
    pub regex_dfa_size_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bash_timeout: Duration::from_secs(120),
            bash_output_bytes: 100 * 1024,
            max_file_bytes: 256 * 1024,
            max_image_base64_bytes: 5 * 1024 * 1024,
            max_pdf_bytes: 20 * 1024 * 1024,
            glob_results: 200,
            walk_entries: 50_000,
            grep_output_bytes: 100 * 1024,
            grep_max_line_bytes: 2000,
            search_time: Duration::from_secs(30),
            // Two seconds: the coarsest timestamps in use (FAT) and any clock tick.
            grep_cache_settle: Duration::from_secs(2),
            // Long enough that a tree searched again and again is stated a few times a minute,
            // short enough to bound what no event reports (`grep/watch.rs`).
            grep_watch_trust: Duration::from_secs(10),
            pattern_bytes: 8 * 1024,
            regex_size_limit: 8 * 1024 * 1024,
            regex_dfa_size_limit: 8 * 1024 * 1024,
        }
    }
}

/// Everything a [`crate::Toolset`] needs.
#[derive(Clone, Debug)]
pub struct ToolsetConfig {
    /// Where relative paths resolve and the shell starts. Must exist.
    pub workdir: PathBuf,
    /// Other directories the file tools may reach (memory stores). Each must exist.
    pub allowed_roots: Vec<PathBuf>,
    /// Directories `write` and `edit` refuse to modify.
    pub read_only_roots: Vec<PathBuf>,
    pub limits: Limits,
    /// The shell's environment: allow-list, deny-list, fixed values.
    pub env: EnvPolicy,
    /// Resource limits set in the shell before `exec`.
    pub rlimits: Rlimits,
    /// The shell, by absolute path (`/bin/bash`, never looked up on `PATH`).
    pub bash_path: PathBuf,
    /// The isolation tier the shell runs in (tier 0 unless the worker selected another). File
    /// tools run in process at every tier, confined by the path policy.
    pub isolation: Isolation,
}

impl ToolsetConfig {
    /// The reference defaults for a session working in `workdir`.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        ToolsetConfig {
            workdir: workdir.into(),
            allowed_roots: Vec::new(),
            read_only_roots: Vec::new(),
            limits: Limits::default(),
            env: EnvPolicy::default(),
            rlimits: Rlimits::default(),
            bash_path: PathBuf::from("/bin/bash"),
            isolation: Isolation::Tier0,
        }
    }
}
