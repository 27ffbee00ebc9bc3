#!/usr/bin/env bash
# End-to-end benchmark (issue 8): hands and the official Python SDK worker (anthropic 2.14.0,
# EnvironmentWorker) in the same run, against the same in-process devplane, on the same
# machine: the 200-call trace per tool, 1/10/100 concurrent sessions back to back and paced with
# model think time, webhook to first tool (hands serve; the SDK's verify + drain + handle_item
# receiver, sdk_webhook.py), cold start (hands with its default isolation and with
# --isolation none), memory while a command prints 1 GiB. Prints one Markdown table; asserts
# nothing.
#
# The complete table (what the README shows), on a quiet machine (about 30 minutes):
#
#   tests/bench/e2e/run.sh
#
# which is --runs 3 --scale 1,10,100 --sdk-scale 1,10 --think 1000 --think-scale 100
# --only trace,paced,webhook,cold,abuse --workers hands,sdk,null (null: the floor, a worker that
# answers every call at once without running it). Add --sdk-think-scale 10 for the
# SDK worker's paced row (about 4 more minutes per run) and --json FILE for every raw figure.
# A quick check that everything works: --runs 1 --scale 1,10 --think 200 --think-scale 10
# --sdk-scale 1 --cold-reps 1 --webhook-reps 2.
#
# Builds release `hands` and the benchmark into CARGO_TARGET_DIR (default /work/tgt/bench),
# (HANDS=path measures a given binary instead), makes a venv with the SDK under target/ (or
# uses BENCH_PYTHON), generates the 2,000-file repository under /tmp/hands-e2e (kept). With two
# or more CPUs the workers and the bare pass are pinned to CPU 0 and the benchmark with
# devplane to the others (taskset), as tests/bench/webhook does.
#
#   tests/bench/e2e/run.sh --help     this text and every option of the benchmark
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/tgt/bench}

for arg in "$@"; do
    if [ "$arg" = --help ] || [ "$arg" = -h ]; then
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        (cd "$root" && cargo build --quiet --release -p hands-bench)
        "$CARGO_TARGET_DIR/release/hands-e2e-bench" --help
        exit 0
    fi
done

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
