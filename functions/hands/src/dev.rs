//! `hands dev`: the end-to-end demo. Starts devplane in process on loopback, runs the real
//! worker against it, plays a session script (the embedded `events/sessions/demo.json` unless
//! `--script` names another), prints a live transcript and a summary, and exits 0 only if every
//! step passed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, DevPlane, Script};
use hands_protocol::toolset::{ContentBlock, ToolOutput};
use hands_worker::ledger::Call;
use hands_worker::results::Posted;
use hands_worker::{NoObserver, Observer, WorkdirTemplate, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::worker_args::parse_duration;

const DEMO_SCRIPT: &str = include_str!("../../../events/sessions/demo.json");

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// A session script to play instead of the built-in demo.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Where sessions' workspaces go (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Idle time before the worker lets a finished session go.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub max_idle: Duration,
    /// Print no transcript, only the summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Prints one line per tool call as results are posted.
struct Transcript {
    out: Mutex<std::io::Stdout>,
    exec: Mutex<std::collections::HashMap<String, (Duration, bool, String)>>,
}

impl Observer for Transcript {
    fn call_executed(&self, _session: &str, call: &Call, output: &ToolOutput, elapsed: Duration) {
        if let Ok(mut m) = self.exec.lock() {
            m.insert(
                call.id.clone(),
                (elapsed, output.is_error, first_line(output)),
            );
        }
    }

    fn result_posted(&self, _session: &str, call: &Call, posted: &Posted) {
        let (elapsed, is_error, text) = self
            .exec
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&call.id))
            .unwrap_or((Duration::ZERO, false, String::new()));
        let outcome = match posted {
            Posted::Accepted { .. } if is_error => "error",
            Posted::Accepted { .. } => "ok",
            Posted::Failed { .. } => "NOT POSTED",
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(
                out,
                "  {:<5} {:<44} {:>9}  {:<5} {}",
                call.name,
                clip(&summary(call), 44),
                format_duration(elapsed),
                outcome,
                clip(&text, 50)
            );
        }
    }
}

fn summary(call: &Call) -> String {
    let field = |k: &str| call.input.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match call.name.as_str() {
        "bash" => field("command").lines().next().unwrap_or("").to_owned(),
        "read" | "write" | "edit" => field("file_path").to_owned(),
        "glob" | "grep" => field("pattern").to_owned(),
        _ => call.input.to_string(),
    }
}

fn first_line(output: &ToolOutput) -> String {
    match output.content.first() {
        Some(ContentBlock::Text { text }) => text.lines().next().unwrap_or("").to_owned(),
        Some(_) => "[non-text content]".to_owned(),
        None => String::new(),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn format_duration(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<bool> {
    let script = match &args.script {
        Some(path) => Script::load(path)?,
        None => Script::from_json(DEMO_SCRIPT, "events/sessions/demo.json (built in)")?,
    };
    let devplane = DevPlane::start(Config::default(), "127.0.0.1:0")
        .await
        .context("starting devplane")?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let root = args
        .workdir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let template = WorkdirTemplate::new(format!("{}/{{session_id}}", root.display()));

    let cp = ControlPlane::new(ClientConfig::with_base_url(devplane.base_url()))?;
    let mut config = WorkerConfig::new(devplane.environment_id(), template);
    config.environment_key = Some(Credential::environment_key(devplane.environment_key()));
    config.max_idle = Some(args.max_idle);
    let observer: Arc<dyn Observer> = if args.quiet {
        Arc::new(NoObserver)
    } else {
        Arc::new(Transcript {
            out: Mutex::new(std::io::stdout()),
            exec: Mutex::new(Default::default()),
        })
    };
    let shutdown = CancellationToken::new();
    let worker = Worker::new(cp, config, observer, shutdown.clone());

    println!(
        "hands dev: devplane on {}, playing script {:?}",
        devplane.base_url(),
        script.name,
    );
    println!(
        "  {:<5} {:<44} {:>9}  {:<5} first line of the result",
        "tool", "input", "took", ""
    );
    let poller = tokio::spawn({
        let worker = worker.clone();
        async move { worker.poll_forever(4).await }
    });
    let report = devplane.run_script(&script).await;
    shutdown.cancel();
    match poller.await {
        Ok(Err(e)) => eprintln!("worker stopped with an error: {e}"),
        Err(e) => eprintln!("worker task failed: {e}"),
        Ok(Ok(())) => {}
    }

    println!();
    let passed_steps = report.steps.iter().filter(|s| s.passed).count();
    for step in report.steps.iter().filter(|s| !s.passed) {
        println!(
            "  FAILED step {} ({}{}): {}",
            step.index,
            step.step,
            step.label
                .as_deref()
                .map(|l| format!(" {l}"))
                .unwrap_or_default(),
            step.detail
        );
    }
    let mut latencies: Vec<u64> = report.steps.iter().filter_map(|s| s.latency_ms).collect();
    latencies.sort_unstable();
    let median = latencies.get(latencies.len() / 2).copied();
    println!(
        "{}: {passed_steps}/{} steps passed{}",
        if report.passed { "PASS" } else { "FAIL" },
        report.steps.len(),
        median
            .map(|m| format!(
                "; median emit-to-result {m} ms over {} calls",
                latencies.len()
            ))
            .unwrap_or_default()
    );
    Ok(report.passed)
}
