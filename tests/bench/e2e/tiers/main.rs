//! `hands-tier-bench`: what each isolation tier costs, printed side by side (issue 7's
//! benchmark; targets: tier 1 adds < 1 ms to a bash call, tier 2 < 10 ms).
//!
//! For every tier this host can run (0 always, 1 and 2 when the probe allows them), through the
//! real toolset:
//! - bash call: `echo hi` in the session's long-lived shell (the shell, and hence its sandbox,
//!   starts once per session, so this is the per-call cost);
//! - shell start: `bash restart` followed by the first `echo`, i.e. what the first call of a
//!   session (or the first after a timeout) pays to start the sandboxed shell;
//! - one-shot process: `/bin/true` started the way custom tools are (a new sandbox per call);
//! - file-tool call: `read` of a small file (the file tools run in the worker in every tier).
//!
//! `cargo run --release -p hands-bench --bin hands-tier-bench -- [--calls N] [--starts N]`

// Benchmark program: a failed setup step should stop it with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/stats.rs"]
#[allow(dead_code)]
mod stats;

use std::time::Instant;

use hands_sandbox::{
    HostProbe, Isolation, IsolationMode, OneShotSpec, Tier, Tier1Options, Tier2Options,
};
use hands_tools::{Toolset, ToolsetConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use stats::{fmt_us, percentile};

struct Figures {
    p50: u64,
    p99: u64,
}

fn figures(mut samples: Vec<u64>) -> Figures {
    samples.sort_unstable();
    Figures {
        p50: percentile(&samples, 50.0).unwrap_or(0),
        p99: percentile(&samples, 99.0).unwrap_or(0),
    }
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

struct Row {
    tier: Tier,
    bash: Figures,
    start: Figures,
    oneshot: Figures,
    read: Figures,
}

async fn measure(tier: Tier, isolation: Isolation, calls: usize, starts: usize) -> Row {
    let dir = tempfile::Builder::new()
        .prefix("hands-tierbench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let ws = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(ws.join("note.txt"), "a small file\n".repeat(20)).unwrap();
    let mut config = ToolsetConfig::new(&ws);
    config.isolation = isolation.clone();
    let tools = Toolset::new(config).unwrap();
    let cancel = CancellationToken::new();
    let call = |name: &'static str, input: serde_json::Value| {
        let tools = &tools;
        let cancel = &cancel;
        async move {
            let out = tools.call(name, input, cancel).await;
            assert!(!out.is_error, "{tier}: {name} failed: {out:?}");
        }
    };
    // Warm up: the first shell start, page cache.
    call("bash", json!({"command": "echo hi"})).await;
    call("read", json!({"file_path": "note.txt"})).await;

    let mut bash = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        call("bash", json!({"command": "echo hi"})).await;
        bash.push(micros(t));
    }
    let mut read = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        call("read", json!({"file_path": "note.txt"})).await;
        read.push(micros(t));
    }
    let mut start = Vec::with_capacity(starts);
    for _ in 0..starts {
        let t = Instant::now();
        call("bash", json!({"restart": true})).await;
        call("bash", json!({"command": "echo hi"})).await;
        start.push(micros(t));
    }
    tools.shutdown().await;

    let mut oneshot = Vec::with_capacity(starts);
    for _ in 0..starts {
        let spec = OneShotSpec {
            program: "/bin/true".into(),
            args: Vec::new(),
            cwd: ws.clone(),
            env: hands_sandbox::EnvPolicy::default().build(std::env::vars_os()),
            rlimits: hands_sandbox::Rlimits::default(),
            isolation: isolation.clone(),
            binds: hands_sandbox::Binds::default(),
        };
        let t = Instant::now();
        let mut p = hands_sandbox::spawn_oneshot(&spec).await.unwrap();
        drop(p.stdin);
        let status = p.child.wait().await.unwrap();
        oneshot.push(micros(t));
        assert!(status.success(), "{tier}: /bin/true failed: {status}");
    }
    Row {
        tier,
        bash: figures(bash),
        start: figures(start),
        oneshot: figures(oneshot),
        read: figures(read),
    }
}

fn cell(f: &Figures, base: Option<&Figures>) -> String {
    let main = format!("{} / {}", fmt_us(f.p50 as f64), fmt_us(f.p99 as f64));
    match base {
        Some(b) => {
            let d = f.p50 as f64 - b.p50 as f64;
            format!(
                "{main} ({}{})",
                if d < 0.0 { "-" } else { "+" },
                fmt_us(d.abs())
            )
        }
        None => main,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a whole number"))
        .unwrap_or(default)
}

fn main() {
    // This binary is also the tier-1 helper of the processes it starts.
    hands_sandbox::helper::run_if_requested();
    let calls = arg("--calls", 500);
    let starts = arg("--starts", 50);
    let probe = HostProbe::run();
    println!("host: {probe}");
    let mut tiers = vec![(Tier::None, Isolation::Tier0)];
    match probe.select(IsolationMode::Tier(Tier::Landlock), true) {
        Ok(_) => tiers.push((
            Tier::Landlock,
            Isolation::Landlock(probe.tier1_sandbox(Tier1Options::default()).unwrap()),
        )),
        Err(e) => println!("tier 1 skipped: {e}"),
    }
    match probe.select(IsolationMode::Tier(Tier::Bwrap), true) {
        Ok(_) => tiers.push((
            Tier::Bwrap,
            Isolation::Bwrap(probe.bwrap_sandbox(Tier2Options::default()).unwrap()),
        )),
        Err(e) => println!("tier 2 skipped: {e}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = tiers
        .into_iter()
        .map(|(tier, iso)| rt.block_on(measure(tier, iso, calls, starts)))
        .collect();
    println!(
        "\n{calls} bash and read calls, {starts} shell starts and one-shot processes per tier; \
         p50 / p99 (p50 difference to tier 0)\n"
    );
    println!("| tier | bash call | shell start + first call | one-shot process | read call |");
    println!("|---|---:|---:|---:|---:|");
    let base = rows
        .first()
        .map(|r| (&r.bash, &r.start, &r.oneshot, &r.read));
    for r in &rows {
        let b = base.filter(|_| r.tier != Tier::None);
        println!(
            "| {} | {} | {} | {} | {} |",
            r.tier,
            cell(&r.bash, b.map(|b| b.0)),
            cell(&r.start, b.map(|b| b.1)),
            cell(&r.oneshot, b.map(|b| b.2)),
            cell(&r.read, b.map(|b| b.3)),
        );
    }
}
