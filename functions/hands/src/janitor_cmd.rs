//! `hands janitor`: force-stops the items of failed Lambda invocations (destination records,
//! e.g. exported from an SQS on-failure destination) and lists items that hold a lease without
//! heartbeating (with `--stop-stale`, force-stops them too: for a control plane that leaves a
//! lapsed lease in place instead of queueing the item again). The Lambda `webhook` function does
//! the first two when it is the destination and on its schedule; this is the operator's command
//! for other setups and for looking.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hands_worker::{Cleanup, FailedInvocation, NoObserver, WorkdirTemplate, Worker, WorkerConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::worker_args::{ConnectArgs, parse_duration};

#[derive(Debug, Clone, clap::Args)]
pub struct JanitorArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Lambda destination records of failed `session` invocations: a JSON array, or one JSON
    /// object per line; `-` reads stdin. Each record's item is force-stopped.
    #[arg(long, value_name = "FILE")]
    pub records: Option<PathBuf>,
    /// List items in `starting`/`active` whose last heartbeat is older than this.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// Force-stop the stale items too (their worker is gone or wedged; the agent sees the run
    /// end instead of waiting). Only items without a heartbeat for `--stale-after`: a live
    /// worker beats every few seconds.
    #[arg(long)]
    pub stop_stale: bool,
}

/// Records from a JSON array or JSON lines.
fn parse_records(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).context("records: not a JSON array");
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("records line {}: not JSON", i + 1))
        })
        .collect()
}

/// Returns false if a record's item could not be stopped.
pub async fn run(args: JanitorArgs) -> anyhow::Result<bool> {
    let mut config = WorkerConfig::new(args.connect.environment_id()?, WorkdirTemplate::new("."));
    config.environment_key = args
        .connect
        .environment_key(&hands_secrets::Resolver::new())
        .await?;
    let worker = Worker::new(
        args.connect.control_plane()?,
        config,
        Arc::new(NoObserver),
        CancellationToken::new(),
    );
    let mut all_ok = true;
    if let Some(path) = &args.records {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        for (i, record) in parse_records(&text)?.iter().enumerate() {
            let Some(failed) = FailedInvocation::from_record(record) else {
                bail!(
                    "record {}: not a Lambda destination record (no requestContext.condition / requestPayload)",
                    i + 1
                );
            };
            match worker.clean_up_failed(&failed).await {
                Cleanup::Stopped { work_id } => {
                    println!("stopped   {work_id}  ({})", failed.condition)
                }
                Cleanup::StopFailed { work_id } => {
                    all_ok = false;
                    println!("FAILED    {work_id}  (could not force-stop)");
                }
                Cleanup::NoItem => println!("skipped   record {} names no work item", i + 1),
            }
        }
    }
    if worker.config().environment_key.is_some() {
        let stale = worker.stale_items(args.stale_after).await?;
        if stale.is_empty() {
            println!(
                "no stale items (none without a heartbeat for {}s)",
                args.stale_after.as_secs()
            );
        }
        for s in &stale {
            println!(
                "stale     {}  session {}  {}  since {}",
                s.work_id,
                s.session_id,
                s.state.as_str(),
                s.since.as_deref().unwrap_or("-")
            );
        }
        if args.stop_stale
            && let Some(key) = worker.config().environment_key.clone()
        {
            let env = worker.config().environment_id.clone();
            for s in &stale {
                if worker.force_stop(&key, &env, &s.work_id).await {
                    println!("stopped   {}  (stale)", s.work_id);
                } else {
                    all_ok = false;
                    println!("FAILED    {}  (could not force-stop)", s.work_id);
                }
            }
        }
    } else {
        println!("no environment key: stale items not listed");
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_as_an_array_or_as_lines() {
        assert_eq!(parse_records("[{\"a\":1},{\"b\":2}]").unwrap().len(), 2);
        assert_eq!(parse_records("{\"a\":1}\n\n{\"b\":2}\n").unwrap().len(), 2);
        let err = parse_records("{\"a\":1}\nnope\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
