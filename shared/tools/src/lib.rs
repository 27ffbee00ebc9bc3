//! The agent toolset `agent_toolset_20260401` (PROTOCOL.md §8): `bash`, `read`, `write`,
//! `edit`, `glob` and `grep`, executed the way the reference workers do it, with their result
//! texts, only bounded, confined and in process.
//!
//! The crate does not talk HTTP: [`Toolset::call`] takes a tool name and its JSON input and
//! returns the content blocks and `is_error` that will be posted.
//!
//! What it must never do:
//! - let a tool process see the worker's credentials: the shell starts from a cleared
//!   environment plus an allow-list, never `ANTHROPIC_*` or `AWS_*` (CATALOGUE T1);
//! - let a file tool touch anything outside the workdir and the allowed roots, through `..`,
//!   symlinks, or a symlink swapped in mid-call (T17, T18), or write through a hard link (T19);
//! - block the async runtime: file tools run on the blocking pool, and the heartbeat of the same
//!   process keeps going while grep chews a big tree (T11);
//! - hold unbounded output in memory, or wait for a pipe a background process keeps open (T7,
//!   pitfall 4);
//! - leave a process behind: every call ends with a sweep of what it started (T9);
//! - panic on any input: bad JSON, NUL bytes, invalid UTF-8 are results the model reads (T13).

mod bash;
mod config;
mod disk_full;
mod edit;
mod glob;
mod grep;
pub mod output;
mod paths;
mod read;
mod seen;
mod tmp_dir;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hands_protocol::toolset::{BuiltinTool, ToolOutput};
use hands_sandbox::{Binds, ShellSpec};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use config::{Limits, ToolsetConfig};
pub use disk_full::{DiskPlace, full_disk_note};
pub use hands_protocol::toolset::{ContentBlock, MediaSource};
pub use paths::{PathError, Resolved, Roots};
pub use tmp_dir::{set_tmp_vars, sweep_leftover_tmp_dirs};

/// Why a toolset could not be built. Tool failures are never errors of this type: they are
/// results with `is_error: true`.
#[derive(Debug, thiserror::Error)]
pub enum ToolsetError {
    /// The workdir or an allowed root does not exist or cannot be opened.
    #[error("cannot use {path} as a tool root: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The shell is not an absolute path.
    #[error("the shell must be given by absolute path, not {0}")]
    ShellPath(PathBuf),
}

/// The private temporary directory of a session whose shell runs at tier 0 or 1 (tier 2 has a
/// tmpfs of its own). Without one the session still runs, with the host's `TMPDIR`.
fn session_tmp(isolation: &hands_sandbox::Isolation) -> Option<tmp_dir::SessionTmp> {
    if isolation.tier() == hands_sandbox::Tier::Bwrap {
        return None;
    }
    let parent = std::env::temp_dir();
    match tmp_dir::SessionTmp::create(&parent) {
        Ok(tmp) => Some(tmp),
        Err(e) => {
            tracing::warn!(parent = %parent.display(), error = %e,
                "cannot create the session's temporary directory; tools use the host's");
            None
        }
    }
}

/// State shared by the tools of one session.
pub(crate) struct Session {
    pub(crate) roots: Roots,
    pub(crate) limits: Limits,
    /// What the model last saw of each file (stale-edit check, T23).
    pub(crate) seen: seen::SeenFiles,
    /// Where `grep` keeps file contents between calls (the process's cache).
    pub(crate) grep_cache: &'static grep::ContentCache,
    bash: tokio::sync::Mutex<bash::BashState>,
    /// Set by `shutdown`: a prewarm still waiting for its slot must not start a shell then.
    shut_down: std::sync::atomic::AtomicBool,
    /// The session's private temporary directory (tiers 0 and 1), for the shell and custom
    /// tools; last, so it is removed after the shell is gone.
    tmp: Option<tmp_dir::SessionTmp>,
}

/// The toolset of one session. Cheap to clone; calls are meant to be serialised by the
/// session runner (the bash tool serialises itself on its shell).
#[derive(Clone)]
pub struct Toolset {
    session: Arc<Session>,
}

impl std::fmt::Debug for Toolset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolset")
            .field("workdir", &self.session.roots.workdir.path)
            .finish_non_exhaustive()
    }
}

fn parse<T: DeserializeOwned>(tool: &str, input: serde_json::Value) -> Result<T, ToolOutput> {
    serde_json::from_value(input)
        .map_err(|e| ToolOutput::error(format!("{tool}: invalid input: {e}")))
}

impl Toolset {
    /// Builds the toolset of a session. The shell is started on the first `bash` call.
    pub fn new(config: ToolsetConfig) -> Result<Toolset, ToolsetError> {
        Toolset::with_grep_cache(config, grep::ContentCache::global())
    }

    /// [`Toolset::new`] with `grep`'s content cache given (tests look into their own).
    pub(crate) fn with_grep_cache(
        config: ToolsetConfig,
        grep_cache: &'static grep::ContentCache,
    ) -> Result<Toolset, ToolsetError> {
        if !config.bash_path.is_absolute() {
            return Err(ToolsetError::ShellPath(config.bash_path));
        }
        let roots = Roots::new(
            &config.workdir,
            &config.allowed_roots,
            &config.read_only_roots,
        )
        .map_err(|source| {
            // Name the root that failed: the workdir first, then each allowed root.
            let path = std::iter::once(&config.workdir)
                .chain(&config.allowed_roots)
                .find(|p| std::fs::canonicalize(p).is_err())
                .unwrap_or(&config.workdir)
                .clone();
            ToolsetError::Root { path, source }
        })?;
        let mut env = config.env.build(std::env::vars_os());
        let tmp = session_tmp(&config.isolation);
        if let Some(tmp) = &tmp {
            tmp.apply(&mut env);
        }
        let mut spec = ShellSpec {
            program: config.bash_path.clone(),
            args: vec!["--noprofile".into(), "--norc".into()],
            cwd: roots.workdir.path.clone(),
            env,
            rlimits: config.rlimits.clone(),
            isolation: config.isolation.clone(),
            // Memory stores: writable ones read-write, read-only ones read-only, so bash sees
            // the same tree the file tools do (and cannot write where they may not).
            binds: Binds {
                read_write: config
                    .allowed_roots
                    .iter()
                    .filter(|r| !config.read_only_roots.contains(r))
                    .filter_map(|r| std::fs::canonicalize(r).ok())
                    .collect(),
                read_only: config
                    .read_only_roots
                    .iter()
                    .filter_map(|r| std::fs::canonicalize(r).ok())
                    .collect(),
            },
        };
        // Where a failed command may have run out of space (tier 2's own tmpfs is found
        // through the shell when it matters).
        let mut disk = vec![DiskPlace::workspace(&roots.workdir.path)];
        if let Some(tmp) = &tmp {
            spec.binds.read_write.push(tmp.path().to_path_buf());
            disk.push(DiskPlace::tmp_dir(tmp.path()));
        }
        let bash = bash::BashState::new(
            spec,
            config.limits.bash_timeout,
            config.limits.bash_output_bytes,
            disk,
        );
        Ok(Toolset {
            session: Arc::new(Session {
                roots,
                limits: config.limits,
                seen: seen::SeenFiles::default(),
                grep_cache,
                bash: tokio::sync::Mutex::new(bash),
                shut_down: std::sync::atomic::AtomicBool::new(false),
                tmp,
            }),
        })
    }

    /// Whether this toolset executes tool `name` (the six built-ins; §7.5 ownership).
    pub fn owns(name: &str) -> bool {
        BuiltinTool::from_name(name).is_some()
    }

    /// The canonical workdir.
    pub fn workdir(&self) -> &Path {
        &self.session.roots.workdir.path
    }

    /// The session's private temporary directory, when it has one (tiers 0 and 1): custom
    /// tools get it too ([`set_tmp_vars`], granted writable like the shell's).
    pub fn tmp_dir(&self) -> Option<&Path> {
        self.session.tmp.as_ref().map(tmp_dir::SessionTmp::path)
    }

    /// Executes one tool call. Never panics and never fails: every problem is a result with
    /// `is_error: true` whose text the model reads. When `cancel` fires, the call stops (a bash
    /// command's whole process tree is killed) and an error result is returned.
    pub async fn call(
        &self,
        name: &str,
        input: serde_json::Value,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        let Some(tool) = BuiltinTool::from_name(name) else {
            return ToolOutput::error(format!("unknown tool: {name}"));
        };
        match tool {
            BuiltinTool::Bash => {
                let input = match parse(name, input) {
                    Ok(i) => i,
                    Err(out) => return out,
                };
                let mut bash = tokio::select! {
                    guard = self.session.bash.lock() => guard,
                    () = cancel.cancelled() => return ToolOutput::error("bash: cancelled"),
                };
                bash.call(input, cancel).await
            }
            BuiltinTool::Read => {
                self.blocking(name, input, cancel, |s, i, _| read::run(s, i))
                    .await
            }
            BuiltinTool::Write => {
                self.blocking(name, input, cancel, |s, i, _| write::run(s, i))
                    .await
            }
            BuiltinTool::Edit => {
                self.blocking(name, input, cancel, |s, i, _| edit::run(s, i))
                    .await
            }
            BuiltinTool::Glob => self.blocking(name, input, cancel, glob::run).await,
            BuiltinTool::Grep => self.blocking(name, input, cancel, grep::run).await,
        }
    }

    /// Runs a file tool on the blocking pool, racing the cancellation token.
    async fn blocking<I, F>(
        &self,
        name: &str,
        input: serde_json::Value,
        cancel: &CancellationToken,
        f: F,
    ) -> ToolOutput
    where
        I: DeserializeOwned + Send + 'static,
        F: FnOnce(&Session, I, &CancellationToken) -> ToolOutput + Send + 'static,
    {
        let input: I = match parse(name, input) {
            Ok(i) => i,
            Err(out) => return out,
        };
        let session = Arc::clone(&self.session);
        let token = cancel.clone();
        let task = tokio::task::spawn_blocking(move || f(&session, input, &token));
        tokio::select! {
            biased;
            () = cancel.cancelled() => ToolOutput::error(format!("{name}: cancelled")),
            joined = task => joined.unwrap_or_else(|_| ToolOutput::error(format!("{name}: internal error"))),
        }
    }

    /// Starts the session's shell in the background, so that the first `bash` call does not
    /// wait for it: building the sandbox of tier 1 or 2 and starting bash take 3-60 ms, which
    /// would otherwise be the slowest round trip of most sessions. The model's first turn
    /// takes far longer, so the shell is ready by then. The first call waits for a start in
    /// progress (the shell's lock); a start that failed is retried by that call, which
    /// reports the reason. Needs a Tokio runtime.
    ///
    /// Starts ahead of use are throttled process-wide to one per CPU: when a hundred
    /// sessions attach at once, a hundred sandbox builds at once would take the CPU from the
    /// worker for a second or more (with the kernel's autogroups each `setsid`-ed shell even
    /// weighs as much as the whole worker), and every call of every session in that second
    /// would wait behind them. A call that comes before its session's turn does not queue:
    /// it starts its shell itself, and the prewarm then finds it running.
    pub fn prewarm_shell(&self) {
        let session = Arc::downgrade(&self.session);
        tokio::spawn(async move {
            let Ok(_slot) = prewarm_slots().acquire().await else {
                return;
            };
            // The toolset may be gone by now (the session ended while this waited).
            let Some(session) = session.upgrade() else {
                return;
            };
            // Checked under the shell's lock, which `shutdown` takes after setting the flag:
            // a session shut down while this waited (its teardown may still be running with
            // the toolset alive) gets no shell.
            if let Ok(mut bash) = session.bash.try_lock()
                && !session.shut_down.load(std::sync::atomic::Ordering::Acquire)
            {
                bash.warm().await;
            }
        });
    }

    /// Kills the shell and every process it started. The toolset stays usable: a later `bash`
    /// call starts a new shell (a prewarm still pending does not).
    pub async fn shutdown(&self) {
        self.session
            .shut_down
            .store(true, std::sync::atomic::Ordering::Release);
        self.session.bash.lock().await.shutdown().await;
    }
}

/// How many shells may be started ahead of use at the same time (see `prewarm_shell`).
fn prewarm_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}
