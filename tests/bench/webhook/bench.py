"""Drives the webhook benchmark (see run.sh): for each receiver, RUNS times, start it pinned to
CPU 0, load it with wrk pinned to CPU 1, and print the figures. Prints, never asserts.

Receivers:
  hands   `hands serve` (release), deliveries of session.status_idled: verified, parsed,
          deduped, answered 204 without any control-plane call
  python  FastAPI + standardwebhooks under uvicorn (uvloop, httptools), same verification
  hello   shared/ingress/examples/hello_webhook.rs: same Rust HTTP stack, no verification
  hello-direct  the same with `--direct`: POST /webhook answered without the Router, the
          dispatch hands serve uses

Per run: idle RSS after start-up, a 1 s warm-up, then DURATION of valid deliveries (unique
ids, timestamps of the run's start) and DURATION of forged ones (bad signature, must be 401).
Receiver CPU time comes from /proc/<pid>/stat (utime + stime) before and after each phase.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of `pid` so far."""
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def gen(path: Path, count: int, run: str, forge: bool) -> None:
    args = [sys.executable, str(HERE / "gen_deliveries.py"), "--secret", SECRET,
            "--count", str(count), "--run", run]
    if forge:
        args.append("--forge")
    with path.open("w") as out:
        subprocess.run(args, stdout=out, check=True)


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return float(m.group(1)) * scale


def wrk(port: int, deliveries: Path, duration: str, conns: int, pid: int) -> dict:
    """Runs wrk on CPU 1; samples the receiver's RSS meanwhile."""
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    user0, sys0 = cpu_times(pid)
    t.start()
    p = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency",
         "-s", str(HERE / "deliveries.lua"), f"http://127.0.0.1:{port}/webhook"],
        env={**os.environ, "DELIVERIES": str(deliveries)}, capture_output=True, text=True,
        check=True)
    done.set()
    t.join()
    user1, sys1 = cpu_times(pid)
    user, cpu = user1 - user0, (user1 - user0) + (sys1 - sys0)
    out = p.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "rps": rps,
        "total": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "p50": to_ms(lat.get("50", "")),
        "p99": to_ms(lat.get("99", "")),
        "cpu": cpu,
        "per_cpu_s": total / cpu if cpu > 0 else float("nan"),
        # User space's part of the receiver's CPU; the rest is the kernel's (sockets, epoll).
        "user_share": user / cpu if cpu > 0 else float("nan"),
        # Over the load phase only (wall also holds wrk's start-up: loading the file).
        "cpu_share": cpu / (total / rps) if rps > 0 else float("nan"),
        "rss_load": peak[0],
    }


def start(kind: str, args, port: int) -> subprocess.Popen:
    env = {**os.environ, "ANTHROPIC_WEBHOOK_SIGNING_KEY": SECRET}
    if kind == "hands":
        env.update({
            "ANTHROPIC_ENVIRONMENT_ID": "env_bench",
            "ANTHROPIC_ENVIRONMENT_KEY": "sk-bench-never-used",
            # A closed loopback port: an ignored event never calls the control plane.
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        })
        cmd = [args.hands, "serve", "--listen", f"127.0.0.1:{port}", "--drain-interval", "0"]
    elif kind == "python":
        cmd = [f"{args.venv}/bin/uvicorn", "--app-dir", str(HERE), "python_receiver:app",
               "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
               "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    elif kind == "hello-direct":
        cmd = [args.hello, f"127.0.0.1:{port}", "--direct"]
    else:
        cmd = [args.hello, f"127.0.0.1:{port}"]
    p = subprocess.Popen(["taskset", "-c", "0", *cmd], env=env, stdout=subprocess.DEVNULL,
                         stderr=open(args.logdir / f"{kind}.log", "a"))
    wait_port(port)
    time.sleep(0.5)
    return p


def hands_outcomes(port: int) -> str:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    got = re.findall(r'^hands_webhook_deliveries_total\{outcome="(\w+)"\} (\d+)', text, re.M)
    return " ".join(f"{k}={v}" for k, v in got if v != "0")


def one_run(kind: str, args, run: int, tmp: Path) -> dict:
    port = 18080 + run
    valid, forged, warm = tmp / "valid.tsv", tmp / "forged.tsv", tmp / "warm.tsv"
    gen(valid, args.count, f"{kind[0]}{run}v", forge=False)
    gen(forged, 20_000, f"{kind[0]}{run}f", forge=True)
    gen(warm, 20_000, f"{kind[0]}{run}w", forge=False)
    p = start(kind, args, port)
    try:
        idle = rss_mib(p.pid)
        wrk(port, warm, "1s", args.conns, p.pid)
        res = {"idle_rss": idle, "valid": wrk(port, valid, args.duration, args.conns, p.pid)}
        if not kind.startswith("hello"):
            res["forged"] = wrk(port, forged, args.duration, args.conns, p.pid)
        if kind == "hands":
            res["outcomes"] = hands_outcomes(port)
        return res
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def med(values: list[float], fmt: str) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    m = statistics.median(values)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def round_ratios(results: dict[str, list[dict]], run: int) -> None:
    """Prints hands' verified deliveries per CPU-second over each hello-world's in this round:
    the receivers ran one after the other, so load from elsewhere disturbs them alike."""
    if "hands" not in results or len(results["hands"]) <= run:
        return
    hands = results["hands"][run]["valid"]
    for base in ("hello", "hello-direct"):
        rs = results.get(base, [])
        if len(rs) > run and rs[run]["valid"]["per_cpu_s"] > 0:
            ratio = hands["per_cpu_s"] / rs[run]["valid"]["per_cpu_s"]
            hands["ratio_" + base] = ratio
            print(f"run {run + 1} hands ÷ {base}: {ratio:.0%} (load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hands", required=True)
    ap.add_argument("--hello", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--count", type=int, default=300_000,
                    help="unique valid deliveries per run (wrk cycles past the end)")
    ap.add_argument("--only", default="hands,python,hello")
    args = ap.parse_args()
    args.logdir = Path(tempfile.mkdtemp(prefix="bench-webhook-logs-"))

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        kinds = args.only.split(",")
        for run in range(args.runs):
            # The order flips every round: on this project's VM the receiver measured first in
            # a round was steadily faster (hello 75k/s first against 65k/s after hands), which
            # a fixed order turns into a bias of the ratio.
            for kind in (kinds if run % 2 == 0 else kinds[::-1]):
                r = one_run(kind, args, run, Path(tmp))
                results.setdefault(kind, []).append(r)
                v = r["valid"]
                line = (f"run {run + 1} {kind:6s}: valid {v['rps']:9.0f}/s, "
                        f"{v['per_cpu_s']:8.0f}/CPU-s (receiver CPU {v['cpu_share']:.0%}, "
                        f"{v['user_share']:.0%} of it user space), "
                        f"p50 {v['p50']:.3f} ms, p99 {v['p99']:.3f} ms, non-2xx {v['non2xx']}"
                        f"/{v['total']}, RSS idle {r['idle_rss']:.1f} MiB load "
                        f"{v['rss_load']:.1f} MiB")
                if "forged" in r:
                    f = r["forged"]
                    line += (f"; forged {f['rps']:.0f}/s, {f['per_cpu_s']:.0f}/CPU-s, "
                             f"p99 {f['p99']:.3f} ms, rejected {f['non2xx']}/{f['total']}")
                if v["socket_errors"]:
                    line += f"; socket errors: {v['socket_errors']}"
                if "outcomes" in r:
                    line += f"; hands outcomes: {r['outcomes']}"
                print(line, flush=True)
            round_ratios(results, run)

    print(f"\nmedian (min–max) of {args.runs} runs, {args.conns} connections, "
          f"{args.duration} per phase, receiver on CPU 0, wrk on CPU 1")
    print("| receiver | verified/s | per receiver CPU-s | p50 ms | p99 ms | forged 401/s "
          "| forged per CPU-s | idle RSS MiB | RSS under load MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, rs in results.items():
        v = [r["valid"] for r in rs]
        f = [r["forged"] for r in rs if "forged" in r]
        print(f"| {kind} | {med([x['rps'] for x in v], '{:.0f}')} "
              f"| {med([x['per_cpu_s'] for x in v], '{:.0f}')} "
              f"| {med([x['p50'] for x in v], '{:.2f}')} | {med([x['p99'] for x in v], '{:.2f}')} "
              f"| {med([x['rps'] for x in f], '{:.0f}')} "
              f"| {med([x['per_cpu_s'] for x in f], '{:.0f}')} "
              f"| {med([r['idle_rss'] for r in rs], '{:.1f}')} "
              f"| {med([x['rss_load'] for x in v], '{:.1f}')} |")
    if "hands" in results:
        for base in ("hello", "hello-direct"):
            ratios = [r["valid"]["ratio_" + base] for r in results["hands"]
                      if "ratio_" + base in r["valid"]]
            if ratios:
                print(f"hands ÷ {base} per CPU-s, same rounds: {med(ratios, '{:.0%}')}")
    print(f"\nreceiver logs: {args.logdir}")


if __name__ == "__main__":
    main()
