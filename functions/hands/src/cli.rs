//! The `hands` command line: one subcommand per way of running. Each arm hands its parsed
//! arguments to a library; nothing here does real work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::isolation_start::PendingProbe;

#[derive(Debug, Parser)]
#[command(
    name = "hands",
    version,
    about = "A worker for Claude Managed Agents self_hosted environments"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Parser)]
pub struct Global {
    /// Log format on stderr.
    #[arg(long, global = true, env = "HANDS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The end-to-end demo: devplane in process, the worker against it, a scripted session.
    Dev(crate::dev::DevArgs),
    /// Serve webhooks: verify deliveries, drain the queue, run sessions in process (containers).
    Serve(crate::serve::ServeArgs),
    /// Check a captured webhook delivery (stdin) against signing secrets.
    Verify(crate::verify_cmd::VerifyArgs),
    /// Poll the environment's queue and serve sessions (hosts that cannot receive webhooks).
    Poll(crate::work_cmds::PollArgs),
    /// Serve one already-claimed work item and exit (a sandbox-per-session entrypoint).
    Run(crate::work_cmds::RunArgs),
    /// Print the queue's depth, pending items, oldest item and pollers.
    Stats(crate::work_cmds::StatsArgs),
    /// Force-stop the items of failed Lambda invocations (destination records) and list items
    /// holding a lease without heartbeating.
    Janitor(crate::janitor_cmd::JanitorArgs),
    /// Run devplane, the local control-plane emulator with its scripted agent.
    Devplane(hands_devplane::cli::DevplaneArgs),
    /// Check an egress policy, or ask what it does with a request.
    Egress(crate::egress_cmd::EgressArgs),
}

/// Logs go to stderr so stdout stays machine-readable (devplane prints one JSON line there,
/// `hands dev` its transcript). Colours only on a terminal: a log file, the journal or a
/// container runtime's log would otherwise hold escape sequences on every line.
fn init_logging(format: &str, default_level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn verdict(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A parsed command line whose process is set up: logging, descriptors, and the host probe of
/// the commands that run tools, already running.
pub struct Ready {
    cli: Cli,
    probe: Option<PendingProbe>,
}

/// Sets the process up for `cli` without a runtime (`main` builds it after this).
pub fn prepare(cli: Cli) -> Ready {
    // The demo's transcript is the output; logs only when something is wrong.
    let default_level = if matches!(
        cli.command,
        Command::Dev(_) | Command::Verify(_) | Command::Egress(_)
    ) {
        "warn"
    } else {
        "info"
    };
    init_logging(&cli.global.log_format, default_level);
    // Before any command runs: the worker's connections (proxy, relay) and sessions need more
    // descriptors than a default soft limit of 1024 allows; tools get their own limit.
    hands_sandbox::raise_open_files_limit();
    let isolation = match &cli.command {
        Command::Poll(args) => Some(args.worker.isolation),
        Command::Serve(args) => Some(args.worker.isolation),
        Command::Run(args) => Some(args.worker.isolation),
        _ => None,
    };
    Ready {
        probe: isolation.map(crate::isolation_start::start),
        cli,
    }
}

pub async fn run(ready: Ready) -> anyhow::Result<ExitCode> {
    let Ready { cli, probe } = ready;
    // `prepare` started the probe for exactly the three commands that take it, so it is there;
    // starting one here only keeps this total.
    let probe = |mode| probe.unwrap_or_else(|| crate::isolation_start::start(mode));
    match cli.command {
        Command::Dev(args) => Ok(verdict(crate::dev::run(args).await?)),
        Command::Poll(args) => {
            let probe = probe(args.worker.isolation);
            crate::work_cmds::poll(args, probe).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let probe = probe(args.worker.isolation);
            crate::serve::run(args, probe).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => Ok(verdict(crate::verify_cmd::run(args).await?)),
        Command::Egress(args) => Ok(verdict(crate::egress_cmd::run(args).await?)),
        Command::Run(args) => {
            let probe = probe(args.worker.isolation);
            Ok(verdict(crate::work_cmds::run(args, probe).await?))
        }
        Command::Stats(args) => {
            crate::work_cmds::stats(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Janitor(args) => Ok(verdict(crate::janitor_cmd::run(args).await?)),
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
