//! `hands`: see `cli.rs` for the subcommands.

mod cli;
mod dev;
mod egress_cmd;
mod egress_secrets;
mod janitor_cmd;
mod serve;
mod signals;
mod verify_cmd;
mod work_cmds;
mod worker_args;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    // Before anything else: a same-user tool process must not read this process's memory or
    // /proc/<pid>/environ (CATALOGUE pitfall 5, T2).
    if let Err(e) = hands_sandbox::harden_worker_process() {
        eprintln!("hands: cannot harden the worker process: {e}");
        return Ok(std::process::ExitCode::FAILURE);
    }
    cli::run(cli::Cli::parse()).await
}
