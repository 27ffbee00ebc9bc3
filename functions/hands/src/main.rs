//! `hands`: see `cli.rs` for the subcommands.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    cli::run(cli::Cli::parse()).await
}
