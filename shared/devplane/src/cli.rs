//! `hands devplane`: run the emulator as a standalone server. Prints one JSON line with the
//! base URL and credentials on stdout (logs go to stderr), runs the given scripts in order,
//! writes the report, and with `--exit-when-done` exits with the overall verdict.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, StopReply, WebhookConfig};
use crate::error::DevplaneError;
use crate::faults::{
    AckLoss, AckRace, FailHeartbeats, FailPosts, Faults, PostKind, ResetAfterCommit, ResetMode,
};
use crate::report::RunReport;
use crate::script::Script;
use crate::server::DevPlane;

#[derive(Debug, Clone, clap::Args)]
pub struct DevplaneArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    #[arg(long)]
    pub environment_id: Option<String>,
    #[arg(long)]
    pub environment_key: Option<String>,
    #[arg(long)]
    pub api_key: Option<String>,
    /// Session script to run (repeatable; run in order).
    #[arg(long = "script")]
    pub scripts: Vec<PathBuf>,
    /// Where to write the JSON report once all scripts finished.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Exit after all scripts finished: code 0 iff every script passed.
    #[arg(long)]
    pub exit_when_done: bool,
    /// How a successful stop answers: 204 (empty) or 200 (work JSON).
    #[arg(long, default_value = "204", value_parser = ["204", "200"])]
    pub stop_reply: String,
    /// Default lease TTL in seconds.
    #[arg(long, default_value_t = 90)]
    pub default_ttl_secs: u64,
    /// Leave items whose lease lapsed alone instead of re-queueing them.
    #[arg(long)]
    pub no_requeue_on_lease_expiry: bool,
    /// Reject sessions tokens on the skills endpoints (the quickstart's observation).
    #[arg(long)]
    pub skills_reject_sessions_token: bool,
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    #[arg(long, requires = "webhook_url")]
    pub webhook_secret: Option<String>,
    /// First webhook retry delay in milliseconds (the real sender: 5000).
    #[arg(long, default_value_t = 5000)]
    pub webhook_base_delay_ms: u64,
    /// Fault: close SSE connections after N events.
    #[arg(long)]
    pub sse_drop_after: Option<u32>,
    /// Fault: how many SSE connections the drop applies to.
    #[arg(long)]
    pub sse_drop_connections: Option<u32>,
    /// Fault: fail the first K result posts.
    #[arg(long)]
    pub fail_posts: Option<u32>,
    /// Status for --fail-posts (500, 503, 429...).
    #[arg(long, default_value_t = 500)]
    pub fail_posts_status: u16,
    /// Which posts --fail-posts applies to.
    #[arg(long, default_value = "any", value_parser = ["any", "tool_result", "custom_tool_result"])]
    pub fail_posts_kind: String,
    /// `retry-after` seconds sent with --fail-posts.
    #[arg(long)]
    pub retry_after_s: Option<u64>,
    /// Fault: answer the N-th heartbeat with 412.
    #[arg(long)]
    pub heartbeat_412_at: Option<u32>,
    /// Fault: commit the first K result posts, then lose the answer.
    #[arg(long)]
    pub reset_after_commit: Option<u32>,
    /// How --reset-after-commit loses the answer.
    #[arg(long, default_value = "drop", value_parser = ["drop", "500"])]
    pub reset_mode: String,
    /// Fault: delay every answer by this many milliseconds.
    #[arg(long)]
    pub slow_ms: Option<u64>,
    /// Fault: answer K heartbeats with a 5xx without storing them.
    #[arg(long)]
    pub fail_heartbeats: Option<u32>,
    /// The first heartbeat (1-based) --fail-heartbeats applies to.
    #[arg(long, default_value_t = 1)]
    pub fail_heartbeats_from: u32,
    /// Status for --fail-heartbeats.
    #[arg(long, default_value_t = 503)]
    pub fail_heartbeats_status: u16,
    /// Fault: store the N-th heartbeat, then lose its answer.
    #[arg(long)]
    pub heartbeat_reset_at: Option<u32>,
    /// Fault: the first K acks lose a race (409 taken, or 404 gone).
    #[arg(long)]
    pub ack_race: Option<u32>,
    /// What --ack-race acks find.
    #[arg(long, default_value = "taken", value_parser = ["taken", "gone"])]
    pub ack_race_outcome: String,
}

impl DevplaneArgs {
    pub fn faults(&self) -> Faults {
        Faults {
            sse_drop_after_events: self.sse_drop_after,
            sse_drop_connections: self.sse_drop_connections,
            fail_posts: self.fail_posts.map(|count| FailPosts {
                kind: match self.fail_posts_kind.as_str() {
                    "tool_result" => PostKind::ToolResult,
                    "custom_tool_result" => PostKind::CustomToolResult,
                    _ => PostKind::Any,
                },
                count,
                status: self.fail_posts_status,
                retry_after_s: self.retry_after_s,
            }),
            heartbeat_412_at: self.heartbeat_412_at,
            reset_after_commit: self.reset_after_commit.map(|count| ResetAfterCommit {
                count,
                mode: if self.reset_mode == "500" {
                    ResetMode::Error500
                } else {
                    ResetMode::Drop
                },
            }),
            slow_ms: self.slow_ms,
            fail_heartbeats: self.fail_heartbeats.map(|count| FailHeartbeats {
                from: self.fail_heartbeats_from,
                count,
                status: self.fail_heartbeats_status,
            }),
            heartbeat_reset_at: self.heartbeat_reset_at,
            ack_race: self.ack_race.map(|count| AckRace {
                count,
                outcome: if self.ack_race_outcome == "gone" {
                    AckLoss::Gone
                } else {
                    AckLoss::Taken
                },
            }),
            // Scripts set it in their `faults` block.
            fail_memory_writes: None,
            fail_memory_reads: None,
            lose_memory_write_answers: None,
            race_memory_updates: None,
            slow_memory_ms: None,
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::default();
        if let Some(v) = &self.environment_id {
            c.environment_id = v.clone();
        }
        if let Some(v) = &self.environment_key {
            c.environment_key = v.clone();
        }
        if let Some(v) = &self.api_key {
            c.api_key = v.clone();
        }
        c.stop_reply = if self.stop_reply == "200" {
            StopReply::Json
        } else {
            StopReply::NoContent
        };
        c.default_ttl = Duration::from_secs(self.default_ttl_secs.max(1));
        c.requeue_on_lease_expiry = !self.no_requeue_on_lease_expiry;
        c.skills_accept_sessions_token = !self.skills_reject_sessions_token;
        c.faults = self.faults();
        if let (Some(url), Some(secret)) = (&self.webhook_url, &self.webhook_secret) {
            let mut w = WebhookConfig::new(url.clone(), secret.clone());
            w.base_delay = Duration::from_millis(self.webhook_base_delay_ms);
            c.webhook = Some(w);
        }
        c
    }
}

/// The line printed on stdout once the server listens.
pub fn announcement(dp: &DevPlane) -> String {
    serde_json::json!({
        "base_url": dp.base_url(),
        "environment_id": dp.environment_id(),
        "environment_key": dp.environment_key(),
        "api_key": dp.api_key(),
    })
    .to_string()
}

/// Runs the scripts in order and writes the report; returns it.
pub async fn run_scripts(
    dp: &DevPlane,
    scripts: &[Script],
    report: Option<&PathBuf>,
) -> Result<RunReport, DevplaneError> {
    let mut reports = Vec::new();
    for s in scripts {
        tracing::info!(script = %s.name, "running script");
        let r = dp.run_script(s).await;
        tracing::info!(script = %s.name, passed = r.passed, "script finished");
        reports.push(r);
    }
    let run = RunReport::new(reports);
    if let Some(path) = report {
        let text = serde_json::to_string_pretty(&run).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| DevplaneError::WriteReport {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(run)
}

/// `hands devplane`. Returns `Ok(true)` when every script passed (or it ran until stopped).
pub async fn run(args: DevplaneArgs) -> Result<bool, DevplaneError> {
    // Load scripts before listening so a typo fails fast, before any harness connects.
    let scripts = args
        .scripts
        .iter()
        .map(|p| Script::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(w) = &args.webhook_secret {
        hands_protocol::webhook::SigningSecret::parse(w)
            .map_err(|e| DevplaneError::WebhookSecret(e.to_string()))?;
    }
    let dp = DevPlane::start(args.config(), &args.listen).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // The harness reads exactly one line; flush so it is not stuck in a buffer.
        let _ = writeln!(out, "{}", announcement(&dp));
        let _ = out.flush();
    }
    tracing::info!(base_url = %dp.base_url(), "devplane listening");
    let report = run_scripts(&dp, &scripts, args.report.as_ref()).await?;
    if args.exit_when_done {
        return Ok(report.passed);
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(report.passed)
}
