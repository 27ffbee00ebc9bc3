#!/usr/bin/env bash
# Webhook path benchmark: verified deliveries per second, per receiver CPU-second, p50/p99 ack
# latency, forged deliveries rejected per second, idle RSS and RSS under load, for
#   hands   `hands serve` (release build) answering session.status_idled deliveries (204)
#   python  FastAPI + standardwebhooks 1.1.0 under uvicorn (uvloop, httptools), same check
#   hello   a no-verification hello-world on the same Rust stack (hands-ingress example)
#   hello-direct  the same answering POST /webhook without the Router, as hands serve does
# The receiver is pinned to CPU 0 and wrk to CPU 1. Prints figures; asserts nothing.
#
#   tests/bench/webhook/run.sh [--runs 3] [--duration 5s] [--conns 16] [--only hands,python,hello,hello-direct]
#
# Needs: wrk (apt-get install -y wrk), taskset, python3 (a venv with the Python receiver's
# packages is created under target/), two CPUs. Builds hands and the hello-world into
# CARGO_TARGET_DIR unless HANDS_BIN / HELLO_BIN name binaries to run as they are.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/tgt/bench}
venv=${BENCH_VENV:-"$root/target/bench-webhook-venv"}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
# HANDS_BIN and HELLO_BIN run binaries built earlier as they are, with no build here (on a
# shared checkout, others' edits would otherwise make cargo rebuild hands first).
hands_bin=${HANDS_BIN:-"$CARGO_TARGET_DIR/release/hands"}
hello_bin=${HELLO_BIN:-"$CARGO_TARGET_DIR/release/examples/hello_webhook"}
if [ -z "${HANDS_BIN:-}" ]; then (cd "$root" && cargo build --release -p hands); fi
if [ -z "${HELLO_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p hands-ingress --example hello_webhook)
fi

if [ ! -x "$venv/bin/uvicorn" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        fastapi uvicorn uvloop httptools standardwebhooks==1.1.0
fi
"$venv/bin/pip" list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(fastapi|starlette|uvicorn|uvloop|httptools|standardwebhooks) ' | tr -s ' ' | paste -sd, -
echo "wrk: $(wrk --version 2>&1 | head -1); CPUs: $(nproc); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

exec "$venv/bin/python" "$here/bench.py" \
    --hands "$hands_bin" \
    --hello "$hello_bin" \
    --venv "$venv" "$@"
