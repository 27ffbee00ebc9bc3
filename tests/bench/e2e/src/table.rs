//! Collects the figures of every run and renders the one table that goes into the README:
//! medians over runs with their min–max, every target marked met or missed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::phases::{TraceRun, Worker};
use crate::stats::{Spread, fmt_spread, fmt_us, percentile, spread};

#[derive(Debug, Default)]
pub struct Results {
    pub bare: Vec<BTreeMap<String, Vec<u64>>>,
    pub traces: BTreeMap<(Worker, usize), Vec<TraceRun>>,
    pub webhook_first: Vec<u64>,
    pub webhook_warm: Vec<Vec<u64>>,
    pub cold: BTreeMap<Worker, Vec<u64>>,
    pub cold_serve: Vec<u64>,
    /// (RSS before, peak during) in KiB, per run.
    pub abuse: BTreeMap<Worker, Vec<(u64, u64)>>,
}

/// `nproc`, the CPU model and the load average, read now.
pub fn machine() -> String {
    // Online CPUs of the machine, not of this process (which may be pinned to one).
    // SAFETY: sysconf reads a system constant.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB RAM, load average at the end {load}")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// The spread over runs of one per-run figure.
fn over_runs<T>(runs: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Spread> {
    spread(&runs.iter().filter_map(f).collect::<Vec<_>>())
}

fn pct(v: &[u64], p: f64) -> Option<f64> {
    percentile(v, p).map(|x| x as f64)
}

fn tool_pct(r: &TraceRun, tool: &str, p: f64) -> Option<f64> {
    if tool == "all" {
        pct(&r.all, p)
    } else {
        pct(r.per_tool.get(tool)?, p)
    }
}

pub fn render(r: &Results, machine: &str, runs: usize, pinned: &Option<String>) -> String {
    let mut s = String::new();
    let us = |x: Option<Spread>| fmt_spread(x, fmt_us);
    let _ = writeln!(
        s,
        "Machine: {machine}. Median (min–max) over {runs} run(s){}.\n",
        match pinned {
            Some(c) =>
                format!("; workers pinned to CPU {c}, devplane and the benchmark to the rest"),
            None => String::new(),
        }
    );

    // Item 1: the trace, one session.
    let hands1 = r.traces.get(&(Worker::Hands, 1));
    let sdk1 = r.traces.get(&(Worker::Sdk, 1));
    if hands1.is_some() || sdk1.is_some() {
        let _ = writeln!(
            s,
            "**1. 200-call trace, one session** (round trip = devplane emits the tool use -> devplane stores the result)\n"
        );
        let _ = writeln!(
            s,
            "| tool | calls | hands p50 | hands p90 | hands p99 | bare p50 | hands − bare (p50), target ≤ 1 ms | SDK p50 | SDK p90 | SDK p99 | SDK ÷ hands (p50), target ≥ 10× |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
        let tools = ["read", "write", "edit", "glob", "grep", "bash", "all"];
        for tool in tools {
            let calls = hands1
                .or(sdk1)
                .and_then(|v| v.first())
                .map(|t| {
                    if tool == "all" {
                        t.all.len()
                    } else {
                        t.per_tool.get(tool).map_or(0, Vec::len)
                    }
                })
                .unwrap_or(0);
            let h = |p| hands1.and_then(|v| over_runs(v, |t| tool_pct(t, tool, p)));
            let sd = |p| sdk1.and_then(|v| over_runs(v, |t| tool_pct(t, tool, p)));
            let bare = over_runs(&r.bare, |b| {
                if tool == "all" {
                    let mut all: Vec<u64> = b.values().flatten().copied().collect();
                    all.sort_unstable();
                    pct(&all, 50.0)
                } else {
                    pct(b.get(tool)?, 50.0)
                }
            });
            let overhead = match (h(50.0), bare) {
                (Some(h), Some(b)) => {
                    // Signed: the bare run shares its CPU with devplane, the worker has its
                    // own, so the difference can come out negative.
                    let d = h.median - b.median;
                    let sign = if d < 0.0 { "−" } else { "" };
                    format!("{sign}{} {}", fmt_us(d.abs()), verdict(d <= 1000.0))
                }
                _ => "–".into(),
            };
            let ratio = match (h(50.0), sd(50.0)) {
                (Some(h), Some(x)) if h.median > 0.0 => {
                    let q = x.median / h.median;
                    format!("{q:.1}× {}", verdict(q >= 10.0))
                }
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {tool} | {calls} | {} | {} | {} | {} | {overhead} | {} | {} | {} | {ratio} |",
                us(h(50.0)),
                us(h(90.0)),
                us(h(99.0)),
                us(bare),
                us(sd(50.0)),
                us(sd(90.0)),
                us(sd(99.0)),
            );
        }
        let wall = |v: Option<&Vec<TraceRun>>| {
            fmt_spread(
                v.and_then(|v| over_runs(v, |t| Some(t.wall.as_secs_f64() * 1e6))),
                fmt_us,
            )
        };
        let _ = writeln!(
            s,
            "\nTotal wall time of the trace: hands {}, SDK {}. \"bare\" is the same 200 calls through `hands-tools` in the benchmark's own process (no control plane, no worker).\n",
            wall(hands1),
            wall(sdk1)
        );
    }

    // Item 4: scale.
    if !r.traces.is_empty() {
        let _ = writeln!(s, "**4. Concurrent sessions, each playing the trace**\n");
        let _ = writeln!(
            s,
            "| worker | sessions | calls | calls/s | p50 round trip | p99 round trip (hands at 100: target < 10 ms) | worker peak RSS (target < 200 MB) | shells' peak RSS, total | wall |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---|---|---:|---:|");
        for ((w, n), v) in &r.traces {
            let calls = v.first().map_or(0, |t| t.all.len());
            let tput = over_runs(v, |t| Some(t.all.len() as f64 / t.wall.as_secs_f64()));
            let p99 = over_runs(v, |t| pct(&t.all, 99.0));
            let rss = over_runs(v, |t| Some(t.worker_peak_kib as f64));
            let target = *w == Worker::Hands && *n == 100;
            let mark = |ok: bool| {
                if target {
                    format!(" {}", verdict(ok))
                } else {
                    String::new()
                }
            };
            let _ = writeln!(
                s,
                "| {} | {n} | {calls} | {} | {} | {}{} | {}{} | {} | {} |",
                w.name(),
                fmt_spread(tput, |x| format!("{x:.0}")),
                us(over_runs(v, |t| pct(&t.all, 50.0))),
                us(p99),
                mark(p99.is_some_and(|p| p.median < 10_000.0)),
                fmt_spread(rss, mib),
                mark(rss.is_some_and(|m| m.median * 1024.0 < 200e6)),
                fmt_spread(over_runs(v, |t| Some(t.shells_peak_kib as f64)), mib),
                us(over_runs(v, |t| Some(t.wall.as_secs_f64() * 1e6))),
            );
        }
        let _ = writeln!(
            s,
            "\nRSS is `VmRSS` sampled every 50 ms; the shells' figure sums the `VmRSS` of every process the worker started (shared pages counted in each).\n"
        );
    }

    // Item 2: webhook.
    if !r.webhook_warm.is_empty() {
        let warm = over_runs(&r.webhook_warm, |v| {
            let mut v = v.clone();
            v.sort_unstable();
            pct(&v, 50.0)
        });
        let first = spread(
            &r.webhook_first
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            s,
            "**2. Webhook to first tool** (`hands serve`; devplane sends the signed `session.status_run_started` -> the first call's `date +%s%N` runs; includes claim, ack, heartbeat, stream attach and the agent emitting the call)\n"
        );
        let _ = writeln!(s, "| | hands serve | target |");
        let _ = writeln!(s, "|---|---:|---|");
        let _ = writeln!(
            s,
            "| warm (median of {} deliveries per run) | {} | < 50 ms: {} |",
            r.webhook_warm.first().map_or(0, Vec::len),
            us(warm),
            verdict(warm.is_some_and(|w| w.median < 50_000.0))
        );
        let _ = writeln!(s, "| first delivery after start | {} | |", us(first));
        let _ = writeln!(s);
    }

    // Item 3: cold start.
    if !r.cold.is_empty() || !r.cold_serve.is_empty() {
        let all = |v: &[u64]| spread(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        let _ = writeln!(
            s,
            "**3. Cold start** (every start of every run pooled; workers not pinned)\n"
        );
        let _ = writeln!(s, "| | exec to | median (min–max) | target |");
        let _ = writeln!(s, "|---|---|---:|---|");
        if let Some(v) = r.cold.get(&Worker::Hands) {
            let x = all(v);
            let _ = writeln!(
                s,
                "| hands poll | first poll | {} | < 20 ms: {} |",
                us(x),
                verdict(x.is_some_and(|x| x.median < 20_000.0))
            );
        }
        if !r.cold_serve.is_empty() {
            let x = all(&r.cold_serve);
            let _ = writeln!(
                s,
                "| hands serve | first 200 on /healthz | {} | < 20 ms: {} |",
                us(x),
                verdict(x.is_some_and(|x| x.median < 20_000.0))
            );
        }
        if let Some(v) = r.cold.get(&Worker::Sdk) {
            let _ = writeln!(
                s,
                "| SDK EnvironmentWorker | first poll (Python import and start) | {} | |",
                us(all(v))
            );
        }
        let _ = writeln!(s);
    }

    // Item 5: abuse.
    if !r.abuse.is_empty() {
        let _ = writeln!(
            s,
            "**5. Memory while one command prints 1 GiB** (`yes | head -c 1073741824`)\n"
        );
        let _ = writeln!(
            s,
            "| worker | RSS before | peak RSS during | growth | target < 64 MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|");
        for (w, v) in &r.abuse {
            let growth = over_runs(v, |(b, p)| Some(p.saturating_sub(*b) as f64));
            let target = if *w == Worker::Hands {
                verdict(growth.is_some_and(|g| g.median < 64.0 * 1024.0)).to_owned()
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {target} |",
                w.name(),
                fmt_spread(over_runs(v, |(b, _)| Some(*b as f64)), mib),
                fmt_spread(over_runs(v, |(_, p)| Some(*p as f64)), mib),
                fmt_spread(growth, mib),
            );
        }
    }
    s
}

impl Results {
    /// Every raw figure, for whoever wants to re-analyse a run.
    pub fn to_json(&self, machine: &str) -> Value {
        let traces: Vec<Value> = self
            .traces
            .iter()
            .map(|((w, n), runs)| {
                json!({"worker": w.name(), "sessions": n, "runs": runs.iter().map(|t| json!({
                    "wall_us": t.wall.as_micros() as u64,
                    "worker_peak_kib": t.worker_peak_kib,
                    "shells_peak_kib": t.shells_peak_kib,
                    "round_trip_us": t.per_tool,
                })).collect::<Vec<_>>()})
            })
            .collect();
        json!({
            "machine": machine,
            "bare_us": self.bare,
            "traces": traces,
            "webhook_first_us": self.webhook_first,
            "webhook_warm_us": self.webhook_warm,
            "cold_us": self.cold.iter().map(|(w, v)| (w.name(), v)).collect::<BTreeMap<_, _>>(),
            "cold_serve_us": self.cold_serve,
            "abuse_kib": self.abuse.iter().map(|(w, v)| (w.name(), v)).collect::<BTreeMap<_, _>>(),
        })
    }
}
