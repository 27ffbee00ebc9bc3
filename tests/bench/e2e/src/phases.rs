//! The measurements. Every round trip comes from devplane's own instants (emit of the tool use,
//! storage of the accepted result); the benchmark only starts processes and reads the figures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use hands_devplane::{Config, DevPlane, Script, WebhookConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::procs::{self, Launch, Sampler, Target};
use crate::trace;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Worker {
    Hands,
    Sdk,
    /// The floor: answers every call at once without running it (`null_worker.rs`). Played
    /// the trace only, without its expectations.
    Null,
}

impl Worker {
    pub fn name(self) -> &'static str {
        match self {
            Worker::Hands => "hands poll",
            Worker::Sdk => "SDK EnvironmentWorker",
            Worker::Null => "null worker (the floor)",
        }
    }

    /// The worker's webhook-driven form.
    pub fn webhook_name(self) -> &'static str {
        match self {
            Worker::Hands => "hands serve",
            Worker::Sdk => "SDK receiver + handle_item",
            Worker::Null => "null worker",
        }
    }
}

/// One run of `sessions` concurrent sessions playing the trace.
#[derive(Debug, Default)]
pub struct TraceRun {
    /// Round trips in µs per tool, and all together.
    pub per_tool: BTreeMap<String, Vec<u64>>,
    pub all: Vec<u64>,
    /// Every call as (session, call number, tool, when it was emitted in µs since its
    /// session was created, round trip in µs): where in the run the slow ones fell.
    pub calls: Vec<(usize, usize, String, u64, u64)>,
    /// From the scripts' start (worker already polling) to the last session's end.
    pub wall: Duration,
    pub worker_peak_kib: u64,
    pub shells_peak_kib: u64,
}

async fn devplane(config: Config) -> anyhow::Result<Arc<DevPlane>> {
    Ok(Arc::new(DevPlane::start(config, "127.0.0.1:0").await?))
}

fn target(dp: &DevPlane) -> (String, String, String, String) {
    (
        dp.base_url(),
        dp.environment_id().to_owned(),
        dp.environment_key().to_owned(),
        dp.api_key().to_owned(),
    )
}

fn spawn_worker(
    launch: &Launch,
    dp: &DevPlane,
    worker: Worker,
    workdir: &Path,
    sessions: usize,
) -> anyhow::Result<std::process::Child> {
    let (base_url, environment_id, environment_key, api_key) = target(dp);
    let t = Target {
        base_url: &base_url,
        environment_id: &environment_id,
        environment_key: &environment_key,
        api_key: &api_key,
    };
    match worker {
        Worker::Hands => launch.hands_poll(&t, workdir, sessions),
        Worker::Sdk => launch.sdk(&t, workdir, sessions),
        Worker::Null => launch.null_worker(&t, sessions),
    }
}

/// Waits for the first poll; returns its instant.
async fn first_poll(
    dp: &DevPlane,
    child: &mut std::process::Child,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = dp.first_poll_at() {
            return Ok(t);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the worker exited before its first poll ({status}); see its log");
        }
        if Instant::now() > deadline {
            bail!("no poll within {within:?}");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Plays scripts concurrently; fails with the first failing step's detail.
async fn play(
    dp: &Arc<DevPlane>,
    scripts: Vec<Script>,
) -> anyhow::Result<Vec<hands_devplane::ScriptReport>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in scripts.into_iter().enumerate() {
        let dp = dp.clone();
        set.spawn(async move { (i, dp.run_script(&s).await) });
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        reports.push(r?);
    }
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<_> = reports.into_iter().map(|(_, r)| r).collect();
    for r in &reports {
        if !r.passed {
            let bad = r.steps.iter().find(|s| !s.passed);
            bail!(
                "script {} failed at step {}: {}",
                r.name,
                bad.map(|s| s.index).unwrap_or(0),
                bad.map(|s| s.detail.as_str()).unwrap_or("?")
            );
        }
    }
    Ok(reports)
}

/// Removes what earlier runs wrote into the repository.
pub fn clean_outputs(repo: &Path) -> anyhow::Result<()> {
    let out = repo.join("out");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    Ok(())
}

/// Item 1 and 4: `sessions` concurrent sessions each playing the 200-call trace, back to back
/// (`think_mean_ms` 0) or with that mean think time before each call (seeded by `seed`).
pub async fn trace_run(
    launch: &Launch,
    worker: Worker,
    repo: &Path,
    sessions: usize,
    think_mean_ms: u64,
    seed: u64,
) -> anyhow::Result<TraceRun> {
    clean_outputs(repo)?;
    let dp = devplane(Config::default()).await?;
    let mut child = spawn_worker(launch, &dp, worker, repo, sessions)?;
    let result = async {
        first_poll(&dp, &mut child, Duration::from_secs(30)).await?;
        let calls: Vec<Vec<trace::Call>> = (0..sessions).map(trace::calls).collect();
        let scripts = calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let think = trace::think_ms(seed, k, c.len(), think_mean_ms);
                // The null worker's fixed text cannot hold the calls' markers.
                let checked = worker != Worker::Null;
                trace::script(&format!("trace-{k}"), c, &think, 600_000, checked)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sampler = Sampler::start(child.id(), Duration::from_millis(50), true);
        let started = Instant::now();
        let reports = play(&dp, scripts).await;
        let wall = started.elapsed();
        let (worker_peak_kib, shells_peak_kib) = sampler.finish();
        let reports = reports?;
        let mut run = TraceRun {
            wall,
            worker_peak_kib,
            shells_peak_kib,
            ..Default::default()
        };
        for (k, r) in reports.iter().enumerate() {
            // The n-th tool_use step is call n (wait steps sit between them when pacing).
            let steps: Vec<_> = r.steps.iter().filter(|s| s.step == "tool_use").collect();
            if steps.len() != calls[k].len() {
                bail!(
                    "{} reported {} calls of {}",
                    r.name,
                    steps.len(),
                    calls[k].len()
                );
            }
            for (n, step) in steps.into_iter().enumerate() {
                let (Some(call), Some(us)) = (calls[k].get(n), step.latency_us) else {
                    bail!("step {} of {} has no round trip", step.index, r.name);
                };
                run.per_tool
                    .entry(call.name.to_owned())
                    .or_default()
                    .push(us);
                run.all.push(us);
                run.calls
                    .push((k, n, call.name.to_owned(), step.at_us.unwrap_or(0), us));
            }
        }
        for v in run.per_tool.values_mut() {
            v.sort_unstable();
        }
        run.all.sort_unstable();
        Ok(run)
    }
    .await;
    procs::stop(&mut child, Duration::from_secs(10));
    result
}

/// The bare cost measured where the worker runs: this benchmark started again as a separate
/// process (`hands-e2e-bench bare REPO`) under the same `taskset` as the worker, with nothing
/// else on that CPU (no worker is running during it). Measuring in the benchmark's own process
/// would put the bare calls on the CPUs devplane uses while the worker has one to itself, and
/// make "hands − bare" meaningless.
pub async fn bare_pinned(
    launch: &Launch,
    repo: &Path,
) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let me = std::env::current_exe().context("finding the benchmark's own binary")?;
    let mut c = launch.command(&me);
    c.arg("bare").arg(repo).stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output())
        .await?
        .context("starting the bare pass")?;
    if !out.status.success() {
        bail!(
            "the bare pass failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the bare pass's figures")
}

/// The bare cost: the same 200 calls through `hands-tools` in this process, no control plane.
pub async fn bare_run(repo: &Path) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    clean_outputs(repo)?;
    let tools = hands_tools::Toolset::new(hands_tools::ToolsetConfig::new(repo))?;
    let cancel = CancellationToken::new();
    let mut per_tool: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in trace::calls(0) {
        let started = Instant::now();
        let out = tools.call(c.name, c.input.clone(), &cancel).await;
        let us = started.elapsed().as_micros() as u64;
        if out.is_error {
            bail!("bare {} failed: {out:?}", c.name);
        }
        per_tool.entry(c.name.to_owned()).or_default().push(us);
    }
    tools.shutdown().await;
    for v in per_tool.values_mut() {
        v.sort_unstable();
    }
    Ok(per_tool)
}

/// A fixed test secret (base64 of 32 ASCII bytes); only ever used on loopback.
const WEBHOOK_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// One GET /healthz; whether it answered 200.
fn healthz(port: u16) -> bool {
    answers_200(port, "/healthz")
}

/// One GET of `path`; whether it answered 200.
fn answers_200(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// The text of a stored result.
fn result_text(dp: &DevPlane, session: &str, call: &str) -> Option<String> {
    let store = dp.state().lock();
    let r = store
        .sessions
        .get(session)?
        .calls
        .get(call)?
        .result
        .clone()?;
    let blocks = r.get("content")?.as_array()?.clone();
    Some(
        blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Item 2: from devplane sending the signed `session.status_run_started` to the first tool's
/// process running (`date +%s%N`, wall clock on both sides), for `hands serve` or the SDK's
/// webhook path (`sdk_webhook.py`: verify, drain the queue, `EnvironmentWorker.handle_item`).
/// Returns the first session after start, then `reps` more.
pub async fn webhook_run(
    launch: &Launch,
    worker: Worker,
    workroot: &Path,
    reps: usize,
) -> anyhow::Result<(u64, Vec<u64>)> {
    let port = hands_test_support::child_port();
    let mut hook = WebhookConfig::new(format!("http://127.0.0.1:{port}/webhook"), WEBHOOK_SECRET);
    hook.base_delay = Duration::from_millis(50);
    let config = Config {
        webhook: Some(hook),
        ..Config::default()
    };
    let dp = devplane(config).await?;
    let (base_url, environment_id, environment_key, api_key) = target(&dp);
    let t = Target {
        base_url: &base_url,
        environment_id: &environment_id,
        environment_key: &environment_key,
        api_key: &api_key,
    };
    let listen = format!("127.0.0.1:{port}");
    let (mut child, ready_within) = match worker {
        Worker::Hands => {
            let workdir = format!("{}/{{session_id}}", workroot.display());
            let c = launch.hands_serve(&t, &listen, WEBHOOK_SECRET, &workdir)?;
            (c, Duration::from_secs(10))
        }
        // Python's imports take seconds on a loaded machine.
        Worker::Sdk => (
            launch.sdk_webhook(&t, &listen, WEBHOOK_SECRET, workroot)?,
            Duration::from_secs(60),
        ),
        Worker::Null => bail!("the null worker has no webhook path"),
    };
    let result = async {
        let deadline = Instant::now() + ready_within;
        while !healthz(port) {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{} exited ({status}); see its log", worker.webhook_name());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /healthz within {ready_within:?}",
                    worker.webhook_name()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut delays = Vec::new();
        for i in 0..=reps {
            let script: Script = serde_json::from_value(json!({
                "name": format!("webhook-{i}"),
                "start_timeout_ms": 30_000,
                "steps": [
                    {"step": "tool_use", "name": "bash", "input": {"command": "date +%s%N"},
                     "expect": {"is_error": false}},
                    {"step": "idle", "stop_reason": "end_turn", "event_ids": []}
                ]
            }))?;
            let r = play(&dp, vec![script]).await?.remove(0);
            let session = r.session_id.clone().context("no session id")?;
            let call = r
                .steps
                .get(1)
                .and_then(|s| s.event_id.clone())
                .context("no call id")?;
            let sent = dp
                .webhook_sent_at(&session)
                .context("devplane sent no webhook")?
                .duration_since(UNIX_EPOCH)?
                .as_nanos() as u64;
            let text = result_text(&dp, &session, &call).context("no result text")?;
            let ran: u64 = text
                .trim()
                .parse()
                .with_context(|| format!("`date +%s%N` printed {text:?}"))?;
            delays.push(ran.saturating_sub(sent) / 1000);
        }
        let first = delays.remove(0);
        Ok((first, delays))
    }
    .await;
    procs::stop(&mut child, Duration::from_secs(30));
    result
}

/// Item 3: exec to first poll (`hands poll`, the SDK worker), in µs.
pub async fn cold_poll(launch: &Launch, worker: Worker, workdir: &Path) -> anyhow::Result<u64> {
    let dp = devplane(Config::default()).await?;
    let launch = Launch {
        cpu: None,
        ..launch.clone()
    };
    let started = Instant::now();
    let mut child = spawn_worker(&launch, &dp, worker, workdir, 1)?;
    let polled = first_poll(&dp, &mut child, Duration::from_secs(60)).await;
    procs::stop(&mut child, Duration::from_secs(10));
    Ok(polled?.saturating_duration_since(started).as_micros() as u64)
}

/// Item 3: exec of `hands serve` to its first 200 on /healthz and then on /readyz (it answers
/// /healthz while the isolation probe still runs, /readyz only once it can take deliveries),
/// in µs.
pub async fn cold_serve(launch: &Launch, workroot: &Path) -> anyhow::Result<(u64, u64)> {
    let dp = devplane(Config::default()).await?;
    let launch = Launch {
        cpu: None,
        ..launch.clone()
    };
    let (base_url, environment_id, environment_key, api_key) = target(&dp);
    let t = Target {
        base_url: &base_url,
        environment_id: &environment_id,
        environment_key: &environment_key,
        api_key: &api_key,
    };
    let port = hands_test_support::child_port();
    let workdir = format!("{}/{{session_id}}", workroot.display());
    let started = Instant::now();
    let mut child =
        launch.hands_serve(&t, &format!("127.0.0.1:{port}"), WEBHOOK_SECRET, &workdir)?;
    let mut wait_for = |path: &str| loop {
        if answers_200(port, path) {
            break Ok(started.elapsed().as_micros() as u64);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "hands serve exited ({status}); see its log"
            ));
        }
        if started.elapsed() > Duration::from_secs(10) {
            break Err(anyhow::anyhow!("no 200 on {path} within 10 s"));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let up = wait_for("/healthz").and_then(|h| Ok((h, wait_for("/readyz")?)));
    procs::stop(&mut child, Duration::from_secs(30));
    up
}

/// Item 5: the worker's RSS after a warm-up session, and its peak while one command prints
/// 1 GiB; in KiB.
pub async fn abuse_run(
    launch: &Launch,
    worker: Worker,
    workdir: &Path,
) -> anyhow::Result<(u64, u64)> {
    let dp = devplane(Config::default()).await?;
    let mut child = spawn_worker(launch, &dp, worker, workdir, 1)?;
    let result = async {
        first_poll(&dp, &mut child, Duration::from_secs(30)).await?;
        let script = |name: &str, command: &str, expect: Value| -> anyhow::Result<Script> {
            Ok(serde_json::from_value(json!({
                "name": name,
                "result_timeout_ms": 600_000,
                "steps": [
                    {"step": "tool_use", "name": "bash", "input": {"command": command}, "expect": expect},
                    {"step": "idle", "stop_reason": "end_turn", "event_ids": []}
                ]
            }))?)
        };
        play(&dp, vec![script("warm", "echo warm", json!({"text_contains": ["warm"]}))?]).await?;
        // Let the warm-up session end so the flood runs in a fresh one, as a new call would.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let baseline = procs::rss_kib(child.id());
        let sampler = Sampler::start(child.id(), Duration::from_millis(5), false);
        // Whatever the worker answers (a tail, an error) is fine: only its memory is measured.
        let r = play(&dp, vec![script("flood", "yes | head -c 1073741824; echo flood-done", json!({}))?]).await;
        let (peak, _) = sampler.finish();
        r?;
        Ok((baseline, peak))
    }
    .await;
    procs::stop(&mut child, Duration::from_secs(10));
    result
}

/// A directory for one phase's workdirs, fresh.
pub fn scratch(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = root.join(name);
    if p.exists() {
        std::fs::remove_dir_all(&p)?;
    }
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
