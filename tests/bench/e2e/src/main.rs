//! End-to-end benchmark of `hands` beside the official Python SDK worker (issue 8): the same
//! devplane, the same machine, the same run. Prints figures and one Markdown table; asserts
//! nothing about speed. Run it with `tests/bench/e2e/run.sh`.

mod null_worker;
mod phases;
mod procs;
mod repo;
mod stats;
mod table;
mod trace;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::phases::Worker;
use crate::procs::Launch;

#[derive(Debug, Parser)]
#[command(about = "hands vs the official SDK worker, end to end, against devplane")]
pub struct Args {
    /// The `hands` binary (a release build).
    #[arg(long)]
    hands: PathBuf,
    /// A Python with `anthropic` installed (the SDK worker).
    #[arg(long)]
    python: PathBuf,
    /// `sdk_worker.py`.
    #[arg(long)]
    sdk_worker: PathBuf,
    /// Where the 2,000-file repository is generated (kept between runs).
    #[arg(long, default_value = "/tmp/hands-e2e/repo")]
    repo: PathBuf,
    /// Scratch space: the workers' logs (of this invocation: an earlier one's are removed at
    /// the start), serve workdirs.
    #[arg(long, default_value = "/tmp/hands-e2e/work")]
    work: PathBuf,
    /// Repetitions of every measurement (medians are reported, with min–max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent sessions for hands.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    scale: Vec<usize>,
    /// Concurrent sessions for the SDK worker (it is slow at 100: add it explicitly).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    sdk_scale: Vec<usize>,
    /// Mean model think time before each call, in ms, for the paced scale runs: each pause is
    /// drawn uniformly from 0.5-1.5 × this, seeded (--seed), so reruns wait the same. 0: no
    /// paced runs. The back-to-back runs (--scale) are made either way.
    #[arg(long, default_value_t = 1000)]
    think: u64,
    /// Concurrent sessions for hands' paced runs (each lasts about 200 × --think).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    think_scale: Vec<usize>,
    /// Concurrent sessions for the SDK worker's paced runs (none unless asked, e.g. `10`).
    #[arg(long, value_delimiter = ',')]
    sdk_think_scale: Vec<usize>,
    /// Seed of the think-time pauses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Phases to run: trace (items 1 and 4, back to back), paced (item 4 with think time),
    /// webhook, cold, abuse.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "trace,paced,webhook,cold,abuse"
    )]
    only: Vec<String>,
    /// Workers to measure: hands, sdk, and null (the floor: a worker that answers every call
    /// at once without running it; one session, back to back, in the trace phase only).
    #[arg(long, value_delimiter = ',', default_value = "hands,sdk,null")]
    workers: Vec<String>,
    /// CPU list the workers (and their shells) are pinned to with taskset, e.g. `0`.
    #[arg(long)]
    worker_cpu: Option<String>,
    /// Webhook deliveries per run after the first (item 2).
    #[arg(long, default_value_t = 10)]
    webhook_reps: usize,
    /// Cold starts per run (item 3).
    #[arg(long, default_value_t = 5)]
    cold_reps: usize,
    /// Also write every raw figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // `hands-e2e-bench bare REPO`: the bare pass alone, started by the benchmark itself under
    // the workers' taskset (phases::bare_pinned); prints its figures as JSON.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "bare") {
        let repo = PathBuf::from(argv.get(2).context("usage: hands-e2e-bench bare REPO")?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let figures = rt.block_on(phases::bare_run(&repo))?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    // `hands-e2e-bench null-worker N`: the floor worker, started by the benchmark itself under
    // the workers' taskset (procs::Launch::null_worker), one thread like a pinned worker.
    if argv.get(1).is_some_and(|a| a == "null-worker") {
        let sessions = argv
            .get(2)
            .and_then(|n| n.to_str()?.parse().ok())
            .context("usage: hands-e2e-bench null-worker SESSIONS")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(null_worker::run(sessions));
    }
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.repo)?;
    std::fs::create_dir_all(&args.work)?;
    let repo = std::fs::canonicalize(&args.repo)?;
    let work = std::fs::canonicalize(&args.work)?;
    if repo::ensure(&repo).context("generating the repository")? {
        eprintln!("generated the 2,000-file repository in {}", repo.display());
    }
    let launch = Launch {
        hands: std::fs::canonicalize(&args.hands).context("--hands")?,
        python: args.python.clone(),
        sdk_worker: std::fs::canonicalize(&args.sdk_worker).context("--sdk-worker")?,
        // sdk_webhook.py sits next to sdk_worker.py.
        sdk_webhook: std::fs::canonicalize(args.sdk_worker.with_file_name("sdk_webhook.py"))
            .context("sdk_webhook.py next to --sdk-worker")?,
        isolation: None,
        cpu: args.worker_cpu.clone(),
        logs: work.clone(),
    };
    launch.clear_logs()?;
    let want = |p: &str| args.only.iter().any(|o| o == p);
    let workers: Vec<Worker> = args
        .workers
        .iter()
        .map(|w| match w.as_str() {
            "hands" => Ok(Worker::Hands),
            "sdk" => Ok(Worker::Sdk),
            "null" => Ok(Worker::Null),
            other => Err(anyhow::anyhow!(
                "unknown worker {other:?} (hands, sdk, null)"
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    // The floor plays the trace only; the other phases measure the real workers.
    let real: Vec<Worker> = workers
        .iter()
        .copied()
        .filter(|w| *w != Worker::Null)
        .collect();
    let (floor_scale, no_paced) = (vec![1usize], Vec::<usize>::new());
    let mut results = table::Results::default();

    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        if want("trace") {
            results
                .bare
                .push(phases::bare_pinned(&launch, &repo).await?);
        }
        let mut plans: Vec<(Worker, usize, u64)> = Vec::new();
        for &w in &workers {
            let (back_to_back, paced) = match w {
                Worker::Hands => (&args.scale, &args.think_scale),
                Worker::Sdk => (&args.sdk_scale, &args.sdk_think_scale),
                Worker::Null => (&floor_scale, &no_paced),
            };
            if want("trace") {
                plans.extend(back_to_back.iter().map(|&n| (w, n, 0)));
            }
            if want("paced") && args.think > 0 {
                plans.extend(paced.iter().map(|&n| (w, n, args.think)));
            }
        }
        for (w, n, think) in plans {
            eprintln!("  trace: {} x{n}, think {think} ms", w.name());
            let r = phases::trace_run(&launch, w, &repo, n, think, args.seed)
                .await
                .with_context(|| format!("{} with {n} sessions, think {think} ms", w.name()))?;
            eprintln!(
                "    {} calls in {:.2} s, p50 {} p99 {}",
                r.all.len(),
                r.wall.as_secs_f64(),
                stats::fmt_us(stats::percentile(&r.all, 50.0).unwrap_or(0) as f64),
                stats::fmt_us(stats::percentile(&r.all, 99.0).unwrap_or(0) as f64)
            );
            results.traces.entry((w, n, think)).or_default().push(r);
        }
        if want("webhook") {
            for &w in &real {
                eprintln!("  webhook: {}", w.webhook_name());
                let dir = phases::scratch(&work, "serve")?;
                let (first, warm) = phases::webhook_run(&launch, w, &dir, args.webhook_reps)
                    .await
                    .with_context(|| format!("webhook: {}", w.webhook_name()))?;
                results.webhook_first.entry(w).or_default().push(first);
                results.webhook_warm.entry(w).or_default().push(warm);
            }
        }
        if want("cold") {
            let dir = phases::scratch(&work, "cold")?;
            // hands with its default isolation (auto: the probe may be on the start path) and
            // with --isolation none.
            let none = Launch {
                isolation: Some("none".into()),
                ..launch.clone()
            };
            for _ in 0..args.cold_reps {
                for &w in &real {
                    let us = phases::cold_poll(&launch, w, &dir).await?;
                    results.cold.entry(w).or_default().push(us);
                }
                if real.contains(&Worker::Hands) {
                    results
                        .cold_none
                        .push(phases::cold_poll(&none, Worker::Hands, &dir).await?);
                    let (h, r) = phases::cold_serve(&launch, &dir).await?;
                    results.cold_serve.push(h);
                    results.cold_serve_ready.push(r);
                    let (h, r) = phases::cold_serve(&none, &dir).await?;
                    results.cold_serve_none.push(h);
                    results.cold_serve_ready_none.push(r);
                }
            }
        }
        if want("abuse") {
            for &w in &real {
                eprintln!("  abuse: {}", w.name());
                let dir = phases::scratch(&work, "abuse")?;
                let r = phases::abuse_run(&launch, w, &dir).await?;
                results.abuse.entry(w).or_default().push(r);
            }
        }
    }
    phases::clean_outputs(&repo)?;

    let machine = table::machine();
    println!(
        "{}",
        table::render(&results, &machine, args.runs, &args.worker_cpu, args.seed)
    );
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&results.to_json(&machine))?,
        )?;
    }
    Ok(())
}
