use std::io;

/// Why the sandbox could not do what was asked. Tool-level callers turn these into a result the
/// model reads; none of them is a reason to panic.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The shell binary could not be started.
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// A pipe for the child's input or output could not be created.
    #[error("could not create a pipe: {0}")]
    Pipe(io::Error),
    /// `prctl`/`setrlimit` on the worker process failed.
    #[error("could not harden the worker process: {0}")]
    Hardening(io::Error),
    /// Signalling a process group failed for a reason other than "already gone".
    #[error("could not signal process group {pgid}: {source}")]
    Kill { pgid: i32, source: io::Error },
}
