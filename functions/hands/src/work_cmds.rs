//! `hands poll`, `hands run` and `hands stats`: the always-on poller, the one-item sandbox
//! entrypoint, and the queue's numbers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use hands_protocol::work::{WorkData, WorkItem, WorkKind, WorkState};
use hands_secrets::Resolver;
use hands_worker::{ItemEnd, NoObserver, Resume, RunEnd, Worker};
use tokio_util::sync::CancellationToken;

use crate::isolation_start::PendingProbe;
use crate::signals::cancel_on_signal;
use crate::worker_args::{ConnectArgs, NO_ENVIRONMENT_KEY, WorkerArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct PollArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// The claimed work item.
    #[arg(long, env = "ANTHROPIC_WORK_ID")]
    pub work_id: String,
    /// Its session.
    #[arg(long, env = "ANTHROPIC_SESSION_ID")]
    pub session_id: String,
    /// A file holding the item's `secret` (e.g. /dev/stdin); else `ANTHROPIC_WORK_SECRET`.
    #[arg(long)]
    pub work_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The worker, once the isolation is chosen. The host probe started with the command and ran
/// while the environment key was read; no item is claimed before its result is known.
async fn worker(args: &WorkerArgs, probe: PendingProbe) -> anyhow::Result<Worker> {
    // Session temporary directories of workers that were killed (P3, P4); live ones stay.
    hands_worker::startup::sweep_leftover_tmp_dirs();
    let environment_key = args.connect.environment_key(&Resolver::new()).await?;
    // The client before the wait: building it (and, for an `https://` base URL, starting the
    // TLS roots' load) overlaps the probe's trial run instead of following it.
    let control_plane = args.connect.control_plane()?;
    let (isolation, probe) = crate::isolation_start::select(args, probe).await?;
    let mut config = args.worker_config(isolation)?;
    crate::egress_cmd::attach(args, &mut config, probe.as_ref()).await?;
    config.environment_key = environment_key;
    // Every secret is read by now: tool code must not read their files either.
    crate::secret_files::hide_from_tools(&mut config);
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    Ok(Worker::new(
        control_plane,
        config,
        Arc::new(NoObserver),
        shutdown,
    ))
}

/// `hands poll`, with the host probe started for `args` (see `cli::prepare`).
pub async fn poll(args: PollArgs, probe: PendingProbe) -> anyhow::Result<()> {
    let worker = worker(&args.worker, probe).await?;
    if worker.config().environment_key.is_none() {
        bail!(NO_ENVIRONMENT_KEY);
    }
    tracing::info!(environment_id = %worker.config().environment_id,
        worker_id = %worker.config().worker_id, workdir = %worker.config().workdir.as_str(),
        "polling for work");
    if !worker.config().workdir.is_per_session() && args.worker.max_sessions > 1 {
        tracing::warn!(workdir = %worker.config().workdir.as_str(),
            "several sessions may share this workdir; use a {{session_id}} template to give each its own");
    }
    worker.poll_forever(args.worker.max_sessions).await?;
    Ok(())
}

/// `hands run`, with the host probe started for `args` (see `cli::prepare`).
pub async fn run(args: RunArgs, probe: PendingProbe) -> anyhow::Result<bool> {
    let secret = match &args.work_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the work secret from {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("ANTHROPIC_WORK_SECRET").ok(),
    };
    let worker = worker(&args.worker, probe).await?;
    if secret.is_none() && worker.config().environment_key.is_none() {
        bail!("neither a work secret nor an environment key: nothing to authenticate with");
    }
    let item = WorkItem {
        kind: WorkKind::Work,
        id: args.work_id.clone(),
        environment_id: worker.config().environment_id.clone(),
        data: WorkData::session(args.session_id.clone()),
        state: WorkState::Starting,
        metadata: Default::default(),
        secret,
        created_at: String::new(),
        acknowledged_at: None,
        started_at: None,
        latest_heartbeat_at: None,
        stop_requested_at: None,
        stopped_at: None,
    };
    let outcome = worker.serve(&item, Resume::default()).await;
    Ok(matches!(
        outcome.end,
        ItemEnd::Ran(RunEnd::Idle | RunEnd::Terminated | RunEnd::Deleted | RunEnd::Shutdown)
            | ItemEnd::SessionOver
            | ItemEnd::Healthcheck
    ))
}

pub async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let cp = args.connect.control_plane()?;
    let env = args.connect.environment_id()?;
    let Some(key) = args.connect.environment_key(&Resolver::new()).await? else {
        bail!(NO_ENVIRONMENT_KEY);
    };
    let s = cp.stats(&key, &env).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("environment      {env}");
        println!("depth            {}", s.depth);
        println!("pending          {}", s.pending);
        println!(
            "oldest queued    {}",
            s.oldest_queued_at.as_deref().unwrap_or("-")
        );
        println!(
            "workers polling  {}",
            s.workers_polling
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
