//! Per-call latency of each tool, in process, on a generated tree of 2,000 files (~20 MB),
//! side by side with the reference toolset (the Python SDK's `agent_toolset`) when a Python
//! with `anthropic` installed is given; plus the worker's memory growth while a command prints
//! 1 GiB. A program that prints figures, not a test.
//!
//! ```text
//! cargo run --release -p hands-tools --example toolbench -- [--ref-python /tmp/refvenv/bin/python] [--dir /dev/shm] [--only grep] [--label 'grep [a-z]+[0-9]+'] [--iterations N] [--cached-only]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hands_tools::{Toolset, ToolsetConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const FILES: usize = 2000;
const FILE_BYTES: usize = 10 * 1024;

/// A small deterministic generator, so every run searches the same tree.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn generate(root: &Path) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "fn", "let", "match", "struct", "impl", "return", "tokio", "async", "await", "self",
        "value", "error", "result", "option", "string", "buffer",
    ];
    let mut rng = Lcg(42);
    let mut rels = Vec::new();
    for i in 0..FILES {
        let ext = if i % 2 == 0 { "rs" } else { "txt" };
        let rel = format!("src/d{:02}/f{:04}.{ext}", i / 50, i);
        let mut content = String::with_capacity(FILE_BYTES + 64);
        while content.len() < FILE_BYTES {
            for _ in 0..8 {
                content.push_str(WORDS[(rng.next() % 16) as usize]);
                content.push(' ');
            }
            content.push('\n');
        }
        if i == 1234 {
            content.push_str("the NEEDLE_4242 is here\n");
        }
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        rels.push(rel);
    }
    std::fs::create_dir_all(root.join("bench")).unwrap();
    std::fs::write(root.join("bench/edit.txt"), "alpha\n".repeat(1700)).unwrap();
    std::fs::write(
        root.join("bench/edit1.txt"),
        format!("{}\nunique-alpha\n", "x".repeat(10_000)),
    )
    .unwrap();
    rels
}

struct Step {
    /// The tool called.
    name: &'static str,
    /// The row's name in the table (a tool can have more than one row).
    label: &'static str,
    inputs: Vec<Value>,
    iterations: usize,
}

fn plan(rels: &[String]) -> Vec<Step> {
    let content = "y".repeat(1024);
    vec![
        Step {
            name: "read",
            label: "read",
            inputs: rels
                .iter()
                .take(500)
                .map(|r| json!({"file_path": r}))
                .collect(),
            iterations: 2000,
        },
        Step {
            name: "write",
            label: "write",
            inputs: (0..100)
                .map(|i| json!({"file_path": format!("bench/out{i}.txt"), "content": content}))
                .collect(),
            iterations: 2000,
        },
        Step {
            name: "edit",
            label: "edit",
            inputs: vec![
                json!({"file_path": "bench/edit1.txt", "old_string": "unique-alpha", "new_string": "unique-beta"}),
                json!({"file_path": "bench/edit1.txt", "old_string": "unique-beta", "new_string": "unique-alpha"}),
            ],
            iterations: 2000,
        },
        Step {
            name: "glob",
            label: "glob",
            inputs: vec![json!({"pattern": "**/*.rs"})],
            iterations: 50,
        },
        // One directory's files: the walk enters only the directories that can hold a match.
        Step {
            name: "glob",
            label: "glob src/d05/*.rs",
            inputs: vec![json!({"pattern": "src/d05/*.rs"})],
            iterations: 500,
        },
        // A rare literal: the trigram filter of cached content rules out every file but one
        // (its best case).
        Step {
            name: "grep",
            label: "grep",
            inputs: vec![json!({"pattern": "NEEDLE_4242"})],
            iterations: 20,
        },
        // The same single match by a pattern with no literal of 3+ bytes: the filter asks for
        // the folded trigrams of an underscore followed by two digits (`_00`, or Unicode
        // digits), which rules out the files that lack them.
        Step {
            name: "grep",
            label: "grep \\w+_\\d{4}",
            inputs: vec![json!({"pattern": "\\w+_\\d{4}"})],
            iterations: 20,
        },
        // A pattern whose matches need no trigram at all (a letter then a digit is two bytes):
        // the filter cannot help, every cached file is searched (no match in this tree).
        Step {
            name: "grep",
            label: "grep [a-z]+[0-9]+",
            inputs: vec![json!({"pattern": "[a-z]+[0-9]+"})],
            iterations: 20,
        },
        Step {
            name: "bash",
            label: "bash",
            inputs: vec![json!({"command": "echo hi"})],
            iterations: 2000,
        },
    ]
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .flatten()
        .unwrap_or(0)
}

fn reference(
    python: &Path,
    workdir: &Path,
    steps: &[Step],
) -> Option<serde_json::Map<String, Value>> {
    let plan = json!({
        "workdir": workdir,
        "tools": steps.iter().map(|s| json!({"name": s.name, "label": s.label, "inputs": s.inputs, "iterations": s.iterations})).collect::<Vec<_>>(),
    });
    let plan_path = workdir.parent().unwrap().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bench/ref_toolset.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&plan_path)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "reference run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .as_object()
        .cloned()
}

/// CPU time of the whole process so far (user and system, every thread).
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The step's timed calls: wall-clock and CPU latency samples, each sorted.
async fn measure(tools: &Toolset, step: &Step, cancel: &CancellationToken) -> (Vec<u64>, Vec<u64>) {
    let mut wall = Vec::with_capacity(step.iterations);
    let mut cpu = Vec::with_capacity(step.iterations);
    for i in 1..=step.iterations {
        let input = step.inputs[i % step.inputs.len()].clone();
        let (started, cpu_started) = (Instant::now(), cpu_ns());
        let out = tools.call(step.name, input, cancel).await;
        wall.push(started.elapsed().as_nanos() as u64);
        cpu.push(cpu_ns() - cpu_started);
        assert!(!out.is_error, "{} failed: {out:?}", step.name);
    }
    wall.sort_unstable();
    cpu.sort_unstable();
    (wall, cpu)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ref_python = args
        .iter()
        .position(|a| a == "--ref-python")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);

    let parent = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let dir = match &parent {
        Some(p) => tempfile::tempdir_in(p).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let ws = std::fs::canonicalize(dir.path()).unwrap().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let rels = generate(&ws);
    // `--only grep`: just that tool (for profiling); no memory run, no reference.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut steps = plan(&rels);
    if let Some(only) = &only {
        steps.retain(|s| s.name == only);
    }
    // `--label L`: just the row labelled L (one grep pattern, for profiling it alone).
    if let Some(label) = args
        .iter()
        .position(|a| a == "--label")
        .and_then(|i| args.get(i + 1))
    {
        steps.retain(|s| s.label == label);
    }
    // `--iterations N`: that many timed calls of every tool instead of the defaults.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
    {
        steps.iter_mut().for_each(|s| s.iterations = n);
    }
    let tools = Toolset::new(ToolsetConfig::new(&ws)).unwrap();
    let cancel = CancellationToken::new();

    // Per tool: wall-clock and CPU (all threads of the process) latency samples, sorted.
    let mut ours: Vec<(&str, Vec<u64>, Vec<u64>)> = Vec::new();
    // The first grep row measures the uncached search and the cache's first fill; its second
    // call builds the trigram filters of the content the first one cached.
    let mut grep_first = Duration::ZERO;
    let mut grep_second = Duration::ZERO;
    let mut settled = false;
    for step in &steps {
        if step.label == "grep" && !args.iter().any(|a| a == "--cached-only") {
            // Without the content cache first (it keeps nothing younger than the settle time,
            // so a settle time of a century reads every file at every call), while the cache
            // is still empty.
            let mut config = ToolsetConfig::new(&ws);
            config.limits.grep_cache_settle = Duration::from_secs(100 * 365 * 24 * 3600);
            let uncached = Toolset::new(config).unwrap();
            let (wall, cpu) = measure(&uncached, step, &cancel).await;
            ours.push(("grep, no cache", wall, cpu));
        }
        if step.name == "grep" && !settled {
            settled = true;
            // The cache keeps a file's content only once it is older than the settle time
            // (2 s): let the tree (and the files the write and edit steps just wrote) get that
            // old, as a repository does between an agent's searches.
            tokio::time::sleep(Duration::from_millis(2100)).await;
        }
        // One untimed call first: the shell starts on first use, the page cache warms, grep's
        // content cache fills (that call's latency is printed on its own).
        let started = Instant::now();
        let first = tools.call(step.name, step.inputs[0].clone(), &cancel).await;
        assert!(!first.is_error, "{} failed: {first:?}", step.name);
        if step.name == "grep" && grep_first == Duration::ZERO {
            grep_first = started.elapsed();
            let started = Instant::now();
            let second = tools.call(step.name, step.inputs[0].clone(), &cancel).await;
            grep_second = started.elapsed();
            assert!(!second.is_error, "{} failed: {second:?}", step.name);
        }
        let (wall, cpu) = measure(&tools, step, &cancel).await;
        ours.push((step.label, wall, cpu));
    }

    if only.is_some() {
        for (name, wall, cpu) in &ours {
            println!(
                "{name}: {} calls, p50 {}, p99 {}; CPU p50 {}",
                wall.len(),
                fmt_ns(percentile(wall, 0.5)),
                fmt_ns(percentile(wall, 0.99)),
                fmt_ns(percentile(cpu, 0.5)),
            );
        }
        if grep_first > Duration::ZERO {
            println!(
                "grep's first call (content cache empty): {}; its second (builds the filters): {}",
                fmt_ns(grep_first.as_nanos() as u64),
                fmt_ns(grep_second.as_nanos() as u64)
            );
        }
        return;
    }

    // Memory while a command prints 1 GiB: sample RSS from another thread.
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = Instant::now();
    let out = tools
        .call(
            "bash",
            json!({"command": "yes | head -c 1073741824; echo"}),
            &cancel,
        )
        .await;
    let flood_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth_mib = (peak.load(Ordering::Relaxed).saturating_sub(before)) as f64 / 1024.0;
    assert!(!out.is_error);
    tools.shutdown().await;

    // Same starting state for the reference.
    std::fs::write(
        ws.join("bench/edit1.txt"),
        format!("{}\nunique-alpha\n", "x".repeat(10_000)),
    )
    .unwrap();
    let theirs = ref_python
        .as_deref()
        .and_then(|py| reference(py, &ws, &steps));

    println!(
        "tree: {FILES} files, {} MB; hands in process (release build), reference = anthropic 2.14.0 agent_toolset",
        FILES * FILE_BYTES / 1_000_000
    );
    println!();
    println!(
        "| tool | calls | hands p50 | hands p99 | hands CPU p50 | reference p50 | reference p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, wall, cpu) in &ours {
        let (rp50, rp99) = match theirs
            .as_ref()
            .and_then(|t| t.get(*name))
            .and_then(Value::as_array)
        {
            Some(arr) => {
                let mut v: Vec<u64> = arr.iter().filter_map(Value::as_u64).collect();
                v.sort_unstable();
                (fmt_ns(percentile(&v, 0.5)), fmt_ns(percentile(&v, 0.99)))
            }
            None if theirs.is_some() => ("-".into(), "-".into()),
            None => ("not run".into(), "not run".into()),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {rp50} | {rp99} |",
            wall.len(),
            fmt_ns(percentile(wall, 0.5)),
            fmt_ns(percentile(wall, 0.99)),
            fmt_ns(percentile(cpu, 0.5)),
        );
    }
    println!();
    println!(
        "grep's first call (content cache empty: every file read from disk): {}; its second \
         (builds the trigram filters of what the first cached): {}",
        fmt_ns(grep_first.as_nanos() as u64),
        fmt_ns(grep_second.as_nanos() as u64)
    );
    println!(
        "bash printing 1 GiB: {:.2} s, worker RSS growth {growth_mib:.1} MiB (peak sampled every 2 ms)",
        flood_time.as_secs_f64()
    );
}
