//! `hands`: see `cli.rs` for the subcommands.

mod cli;
mod dev;
mod egress_cmd;
mod isolation_start;
mod janitor_cmd;
mod secret_files;
mod serve;
mod signals;
mod verify_cmd;
mod work_cmds;
mod worker_args;

use clap::Parser;

// The unit tests' harness stands in for this binary as the tier-1 helper of the tests that
// select tier 1 (`/proc/self/exe` is the test binary there).
#[cfg(test)]
hands_sandbox::helper_dispatch_for_tests!();

fn main() -> anyhow::Result<std::process::ExitCode> {
    // First of all, before the runtime starts any thread: when this process was started as a
    // sandbox helper (tier 1), it becomes that helper here and never returns.
    hands_sandbox::helper::run_if_requested();
    // Before anything else: a same-user tool process must not read this process's memory or
    // /proc/<pid>/environ (CATALOGUE pitfall 5, T2).
    if let Err(e) = hands_sandbox::harden_worker_process() {
        eprintln!("hands: cannot harden the worker process: {e}");
        return Ok(std::process::ExitCode::FAILURE);
    }
    // Logging and the worker commands' host probe before the runtime: the probe's trial run
    // is the longest part of a worker's start, so it starts as early as its mode is known.
    let ready = cli::prepare(cli::Cli::parse());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli::run(ready))
}
