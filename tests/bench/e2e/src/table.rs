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
    /// Keyed by worker, concurrent sessions, mean think time in ms (0: back to back).
    pub traces: BTreeMap<(Worker, usize, u64), Vec<TraceRun>>,
    pub webhook_first: BTreeMap<Worker, Vec<u64>>,
    pub webhook_warm: BTreeMap<Worker, Vec<Vec<u64>>>,
    /// Exec to first poll, the workers' default settings (hands: isolation `auto`).
    pub cold: BTreeMap<Worker, Vec<u64>>,
    /// `hands poll --isolation none`.
    pub cold_none: Vec<u64>,
    pub cold_serve: Vec<u64>,
    /// `hands serve --isolation none`.
    pub cold_serve_none: Vec<u64>,
    /// Exec of `hands serve` to its first 200 on /readyz (default isolation, and none).
    pub cold_serve_ready: Vec<u64>,
    pub cold_serve_ready_none: Vec<u64>,
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

/// The scale table's label for a mean think time.
fn pacing(think_ms: u64) -> String {
    if think_ms == 0 {
        "none (back to back)".into()
    } else {
        format!("paced, {} mean", fmt_us(think_ms as f64 * 1000.0))
    }
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

pub fn render(
    r: &Results,
    machine: &str,
    runs: usize,
    pinned: &Option<String>,
    seed: u64,
) -> String {
    let mut s = String::new();
    let us = |x: Option<Spread>| fmt_spread(x, fmt_us);
    let _ = writeln!(
        s,
        "Machine: {machine}. Median (min–max) over {runs} run(s){}.\n",
        match pinned {
            Some(c) => format!(
                "; workers (and the bare pass) pinned to CPU {c}, devplane and the benchmark to the rest"
            ),
            None => String::new(),
        }
    );

    // Item 1: the trace, one session.
    let hands1 = r.traces.get(&(Worker::Hands, 1, 0));
    let sdk1 = r.traces.get(&(Worker::Sdk, 1, 0));
    let floor1 = r.traces.get(&(Worker::Null, 1, 0));
    if hands1.is_some() || sdk1.is_some() {
        let _ = writeln!(
            s,
            "**1. 200-call trace, one session** (round trip = devplane emits the tool use -> devplane stores the result)\n"
        );
        let _ = writeln!(
            s,
            "| tool | calls | hands p50 | hands p90 | hands p99 | bare p50 | hands − bare (p50), target ≤ 1 ms | floor p50 | hands − floor − bare (p50) | SDK p50 | SDK p90 | SDK p99 | SDK ÷ hands (p50), target ≥ 10× |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
        );
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
                    // Signed: noise can still put the worker's median below the bare one.
                    let d = h.median - b.median;
                    let sign = if d < 0.0 { "−" } else { "" };
                    format!("{sign}{} {}", fmt_us(d.abs()), verdict(d <= 1000.0))
                }
                _ => "–".into(),
            };
            let floor = |p| floor1.and_then(|v| over_runs(v, |t| tool_pct(t, tool, p)));
            // What is left of hands' round trip once the floor every worker pays and the
            // operation itself are taken away: the worker's own handling.
            let own = match (h(50.0), floor(50.0), bare) {
                (Some(h), Some(f), Some(b)) => {
                    let d = h.median - f.median - b.median;
                    let sign = if d < 0.0 { "−" } else { "" };
                    format!("{sign}{}", fmt_us(d.abs()))
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
                "| {tool} | {calls} | {} | {} | {} | {} | {overhead} | {} | {own} | {} | {} | {} | {ratio} |",
                us(h(50.0)),
                us(h(90.0)),
                us(h(99.0)),
                us(bare),
                us(floor(50.0)),
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
            "\nTotal wall time of the trace: hands {}, SDK {}. \"bare\" is the same 200 calls through `hands-tools` in a separate process on the workers' CPU, with no worker running (no control plane, no worker). \"floor\" is the null worker (`null_worker.rs`): it claims the work and attaches to the stream as hands does but answers every call at once with a fixed text, so its round trip is what any worker pays here (devplane, the loopback exchanges, waking the CPUs); \"hands − floor − bare\" is what is left for hands' own handling.\n",
            wall(hands1),
            wall(sdk1)
        );
    }

    // Item 4: scale.
    if !r.traces.is_empty() {
        let _ = writeln!(s, "**4. Concurrent sessions, each playing the trace**\n");
        let _ = writeln!(
            s,
            "| worker | sessions | model think time | calls | calls/s | p50 round trip | p99 round trip (hands at 100: target < 10 ms) | worker peak RSS (target < 200 MB) | shells' peak RSS, total | wall |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---|---|---:|---:|");
        for ((w, n, think), v) in &r.traces {
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
                "| {} | {n} | {} | {calls} | {} | {} | {}{} | {}{} | {} | {} |",
                w.name(),
                pacing(*think),
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
            "\nBack to back: each session sends its next call as soon as the result is stored (a stress figure: the tools' own work queues on the worker's CPU). Paced: before each call, the first included (the model's first turn, while the worker claims the session), the session waits a model think time drawn uniformly from 0.5-1.5 × the mean (seed {seed}); the round trip never includes that wait. RSS is `VmRSS` sampled every 50 ms; the shells' figure sums the `VmRSS` of every process the worker started (shared pages counted in each).\n"
        );

        // What sets p99 at scale: the same figure per tool.
        let tools = ["read", "write", "edit", "glob", "grep", "bash"];
        let _ = writeln!(
            s,
            "p99 round trip per tool (and each tool's share of the calls; p99 over all calls is the 1 % slowest, so a tool with more than 1 % of the calls can set it alone):\n"
        );
        let _ = writeln!(
            s,
            "| worker | sessions | model think time | {} |",
            tools.join(" | ")
        );
        let _ = writeln!(s, "|---|---:|---|{}", "---:|".repeat(tools.len()));
        for ((w, n, think), v) in &r.traces {
            let cells: Vec<String> = tools
                .iter()
                .map(|tool| {
                    let share = v.first().map_or(0.0, |t| {
                        t.per_tool.get(*tool).map_or(0, Vec::len) as f64 / t.all.len().max(1) as f64
                            * 100.0
                    });
                    format!(
                        "{} ({share:.0} %)",
                        us(over_runs(v, |t| tool_pct(t, tool, 99.0)))
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {n} | {} | {} |",
                w.name(),
                pacing(*think),
                cells.join(" | ")
            );
        }
        let _ = writeln!(s);
    }

    // Item 2: webhook.
    if !r.webhook_warm.is_empty() {
        let workers: Vec<Worker> = r.webhook_warm.keys().copied().collect();
        let warm = |w: &Worker| {
            over_runs(r.webhook_warm.get(w).map_or(&[][..], Vec::as_slice), |v| {
                let mut v = v.clone();
                v.sort_unstable();
                pct(&v, 50.0)
            })
        };
        let first = |w: &Worker| {
            spread(
                &r.webhook_first
                    .get(w)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(|&x| x as f64)
                    .collect::<Vec<_>>(),
            )
        };
        let _ = writeln!(
            s,
            "**2. Webhook to first tool** (devplane sends the signed `session.status_run_started` -> the first call's `date +%s%N` runs; includes verifying, claim, ack, heartbeat, stream attach and the agent emitting the call. `hands serve`; the SDK as a receiver that verifies with `webhooks.unwrap`, drains with `work.poller(drain=True, auto_stop=False)` and runs `EnvironmentWorker.handle_item` per item, `sdk_webhook.py`)\n"
        );
        let names: Vec<&str> = workers.iter().map(|w| w.webhook_name()).collect();
        let _ = writeln!(s, "| | {} | target (hands) |", names.join(" | "));
        let _ = writeln!(s, "|---|{}---|", "---:|".repeat(workers.len()));
        let hands_warm = warm(&Worker::Hands);
        let _ = writeln!(
            s,
            "| warm (median of {} deliveries per run) | {} | {} |",
            r.webhook_warm
                .values()
                .next()
                .and_then(|v| v.first())
                .map_or(0, Vec::len),
            workers
                .iter()
                .map(|w| us(warm(w)))
                .collect::<Vec<_>>()
                .join(" | "),
            if workers.contains(&Worker::Hands) {
                format!(
                    "< 50 ms: {}",
                    verdict(hands_warm.is_some_and(|w| w.median < 50_000.0))
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "| first delivery after start | {} | |",
            workers
                .iter()
                .map(|w| us(first(w)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
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
                "| hands poll (its default isolation) | first poll | {} | < 20 ms: {} |",
                us(x),
                verdict(x.is_some_and(|x| x.median < 20_000.0))
            );
        }
        if !r.cold_none.is_empty() {
            let x = all(&r.cold_none);
            let _ = writeln!(
                s,
                "| hands poll --isolation none | first poll | {} | < 20 ms: {} |",
                us(x),
                verdict(x.is_some_and(|x| x.median < 20_000.0))
            );
        }
        for (name, what, v) in [
            (
                "hands serve (its default isolation)",
                "/healthz",
                &r.cold_serve,
            ),
            (
                "hands serve --isolation none",
                "/healthz",
                &r.cold_serve_none,
            ),
            (
                "hands serve (its default isolation)",
                "/readyz",
                &r.cold_serve_ready,
            ),
            (
                "hands serve --isolation none",
                "/readyz",
                &r.cold_serve_ready_none,
            ),
        ] {
            if v.is_empty() {
                continue;
            }
            let x = all(v);
            let _ = writeln!(
                s,
                "| {name} | first 200 on {what} | {} | < 20 ms: {} |",
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
            .map(|((w, n, think), runs)| {
                json!({"worker": w.name(), "sessions": n, "think_mean_ms": think, "runs": runs.iter().map(|t| json!({
                    "wall_us": t.wall.as_micros() as u64,
                    "worker_peak_kib": t.worker_peak_kib,
                    "shells_peak_kib": t.shells_peak_kib,
                    "round_trip_us": t.per_tool,
                    "calls": t.calls.iter().map(|(k, n, tool, at, us)| json!({"session": k, "call": n, "tool": tool, "at_us": at, "round_trip_us": us})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()})
            })
            .collect();
        json!({
            "machine": machine,
            "bare_us": self.bare,
            "traces": traces,
            "webhook_first_us": self.webhook_first.iter().map(|(w, v)| (w.webhook_name(), v)).collect::<BTreeMap<_, _>>(),
            "webhook_warm_us": self.webhook_warm.iter().map(|(w, v)| (w.webhook_name(), v)).collect::<BTreeMap<_, _>>(),
            "cold_us": self.cold.iter().map(|(w, v)| (w.name(), v)).collect::<BTreeMap<_, _>>(),
            "cold_isolation_none_us": self.cold_none,
            "cold_serve_us": self.cold_serve,
            "cold_serve_isolation_none_us": self.cold_serve_none,
            "cold_serve_readyz_us": self.cold_serve_ready,
            "cold_serve_readyz_isolation_none_us": self.cold_serve_ready_none,
            "abuse_kib": self.abuse.iter().map(|(w, v)| (w.name(), v)).collect::<BTreeMap<_, _>>(),
        })
    }
}
