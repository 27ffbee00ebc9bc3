#!/usr/bin/env bash
# System calls and context switches per delivery of one receiver, counted by the kernel's
# tracepoints through `perf stat`: like instructions.sh's count, and unlike CPU time, they do
# not move with what else the machine is running, and they stand for the kernel's share of a
# delivery, which instructions.sh does not see (this VM exposes no hardware counters, so kernel
# instructions cannot be counted). Prints figures; asserts nothing.
#
#   tests/bench/webhook/syscalls.sh hands|hello|hello-direct BINARY [SECONDS] [CONNS]
#
# BINARY is target/release/hands for `hands`, target/release/examples/hello_webhook otherwise.
# The receiver runs pinned to CPU 0 and wrk to CPU 1, as in run.sh; after 3 s of warm-up (which
# also fills most of hands' dedupe memory) perf counts, over SECONDS (default 5) of valid, unique
# deliveries on CONNS (default 16) connections, every system call the receiver's threads enter
# (by name), its context switches and its task-clock; each is printed divided by the
# deliveries wrk saw answered. task-clock is CPU time, so it does move with the machine's load.
# Needs perf (with tracepoints: run as root or with perf_event_paranoid <= 1) and wrk.
set -uo pipefail
kind=$1; bin=$2; secs=${3:-5}; conns=${4:-16}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=receiver.sh
. "$here/receiver.sh"
secret="whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
port=$((19600 + RANDOM % 300))
work=$(mktemp -d /tmp/webhook-syscalls-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
for tool in perf wrk taskset python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
run="c$RANDOM"
python3 "$here/gen_deliveries.py" --secret "$secret" --count 300000 --run "${run}v" > "$work/valid.tsv"
python3 "$here/gen_deliveries.py" --secret "$secret" --count 20000 --run "${run}w" > "$work/warm.tsv"
export ANTHROPIC_WEBHOOK_SIGNING_KEY=$secret
receiver_command "$kind" "$bin" "$port"
taskset -c 0 "${cmd[@]}" >/dev/null 2>"$work/receiver.log" &
pid=$!
wait_for_receiver "$port" 100 0.1 "$work/receiver.log"
load() {
    DELIVERIES=$1 taskset -c 1 wrk -t1 -c"$conns" -d"$2" -s "$here/deliveries.lua" \
        "http://127.0.0.1:$port/webhook"
}
load "$work/warm.tsv" 3s > "$work/warm.txt"
sleep 0.3
perf stat -x, -o "$work/perf.txt" -p "$pid" \
    -e 'raw_syscalls:sys_enter,context-switches,task-clock,syscalls:sys_enter_*' &
perf=$!
sleep 0.3
load "$work/valid.tsv" "${secs}s" > "$work/valid.txt"
sleep 0.3
kill -INT "$perf"; wait "$perf"
wrk_answered "$work/valid.txt"
if [ -z "$total" ] || [ "$total" -eq 0 ]; then
    echo "no deliveries; wrk said:" >&2; cat "$work/valid.txt" >&2; exit 1
fi
echo "$kind: $total deliveries answered (non-2xx: ${non2xx:-0}); per delivery:"
# perf's CSV: value,unit,event,...; only the events that happened, busiest first.
grep -v '^#' "$work/perf.txt" | awk -F, -v n="$total" '
    NF > 2 && $1 + 0 > 0 {
        name = $3; sub(/^syscalls:sys_enter_/, "", name); sub(/^raw_syscalls:sys_enter$/, "system calls, all", name)
        if ($2 == "msec") printf "  %-24s %9.2f us (CPU time: moves with load)\n", name, $1 * 1000 / n
        else printf "  %-24s %9.4f\n", name, $1 / n
    }' | sort -k2 -g -r
