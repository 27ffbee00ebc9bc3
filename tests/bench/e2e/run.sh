#!/usr/bin/env bash
# End-to-end benchmark (issue 8): hands and the official Python SDK worker (anthropic 2.14.0,
# EnvironmentWorker) in the same run, against the same in-process devplane, on the same
# machine: the 200-call trace per tool, webhook to first tool, cold start, 1/10/100 concurrent
# sessions, memory while a command prints 1 GiB. Prints one Markdown table; asserts nothing.
#
#   tests/bench/e2e/run.sh [--runs 3] [--scale 1,10,100] [--sdk-scale 1,10]
#                          [--only trace,webhook,cold,abuse] [--workers hands,sdk]
#
# Builds release `hands` and the benchmark into CARGO_TARGET_DIR (default /work/tgt/bench),
# (HANDS=path measures a given binary instead), makes a venv with the SDK under target/ (or uses BENCH_PYTHON), generates the 2,000-file
# repository under /tmp/hands-e2e (kept). With two or more CPUs the workers are pinned to CPU 0
# and the benchmark with devplane to the others (taskset), as tests/bench/webhook does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/tgt/bench}

# HANDS=/path/to/hands measures that binary instead of building one from this checkout.
hands=${HANDS:-}
if [ -z "$hands" ]; then
    (cd "$root" && cargo build --release -p hands)
    hands="$CARGO_TARGET_DIR/release/hands"
fi
(cd "$root" && cargo build --release -p hands-bench)

python=${BENCH_PYTHON:-}
if [ -z "$python" ]; then
    venv="$root/target/conformance-venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/conformance/requirements.txt"
    python="$venv/bin/python"
fi
echo "SDK: anthropic $("$python" -c 'import anthropic; print(anthropic.__version__)'), $("$python" --version 2>&1)"
echo "CPUs: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

pin=()
bench_cpus=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin=(--worker-cpu 0)
    bench_cpus=(taskset -c "1-$(($(nproc) - 1))")
fi
exec "${bench_cpus[@]}" "$CARGO_TARGET_DIR/release/hands-e2e-bench" \
    --hands "$hands" \
    --python "$python" \
    --sdk-worker "$here/sdk_worker.py" \
    "${pin[@]}" "$@"
