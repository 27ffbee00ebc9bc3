//! The start-up both function binaries share: harden the process, set up logging, run the
//! function on a multi-threaded tokio runtime, and turn its end into an exit code.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Runs `run` as the body of function `name`'s `main`.
pub fn main_with<F, Fut, E>(name: &str, run: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    // First of all: when this process was started as a sandbox helper (tier 1), it becomes that
    // helper here and never returns. Landlock and seccomp apply to the calling thread only, so
    // this must run before any thread exists.
    hands_sandbox::helper::run_if_requested();
    // Before any thread exists: a same-uid tool must not read this process's memory or
    // /proc/<pid>/environ, where Lambda put the execution role's credentials.
    if let Err(e) = hands_sandbox::harden_worker_process() {
        eprintln!("{name}: cannot harden the worker process: {e}");
        return ExitCode::FAILURE;
    }
    crate::logging::init();
    // As `hands` does: the worker's connections need more descriptors than a soft limit of 1024.
    hands_sandbox::raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} function stopped");
            ExitCode::FAILURE
        }
    }
}
