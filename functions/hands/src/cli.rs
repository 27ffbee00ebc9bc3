//! The `hands` command line: one subcommand per way of running. Each arm hands its parsed
//! arguments to a library; nothing here does real work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hands",
    version,
    about = "A worker for Claude Managed Agents self_hosted environments"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run devplane, the local control-plane emulator with its scripted agent.
    Devplane(hands_devplane::cli::DevplaneArgs),
}

/// Logs go to stderr so stdout stays machine-readable (devplane prints one JSON line there).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging();
    match cli.command {
        Command::Devplane(args) => {
            let passed = hands_devplane::cli::run(args).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
