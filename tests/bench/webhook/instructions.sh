#!/usr/bin/env bash
# User-space instructions per delivery of one receiver, counted by valgrind's callgrind: unlike
# CPU time, the count does not move with what else the machine is running, so it compares two
# builds (or hands and the hello-world) on a busy machine. Kernel work (the socket reads and
# writes) is not counted. Prints figures; asserts nothing.
#
#   tests/bench/webhook/instructions.sh hands|hello|hello-direct BINARY [SECONDS] [CONNS]
#
# BINARY is target/release/hands for `hands`, target/release/examples/hello_webhook otherwise.
# The receiver answers 20 s of warm-up under callgrind, then its counters are zeroed, wrk sends
# SECONDS of valid, unique deliveries (session.status_idled, answered 204 by hands), and the
# counters are dumped: instructions / deliveries answered, also without sha2's software SHA-256
# (valgrind hides the CPU's SHA extensions; see the end of this script). Needs valgrind and wrk.
# With KEEP_PROFILE=FILE the measured dump is copied to FILE, for
# `callgrind_annotate --inclusive=yes FILE` (where the instructions go).
set -uo pipefail
kind=$1; bin=$2; secs=${3:-10}; conns=${4:-4}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=receiver.sh
. "$here/receiver.sh"
secret="whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
port=$((19100 + RANDOM % 500))
work=$(mktemp -d /tmp/webhook-instructions-XXXXXX)
trap 'rm -rf "$work"' EXIT
for tool in valgrind callgrind_control wrk python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
run="i$RANDOM"
# Under callgrind a receiver answers a few thousand deliveries per second: 60,000 unique ones
# last well beyond SECONDS.
python3 "$here/gen_deliveries.py" --secret "$secret" --count 60000 --run "${run}v" > "$work/valid.tsv"
python3 "$here/gen_deliveries.py" --secret "$secret" --count 20000 --run "${run}w" > "$work/warm.tsv"
export ANTHROPIC_WEBHOOK_SIGNING_KEY=$secret
receiver_command "$kind" "$bin" "$port"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "${cmd[@]}" \
    2>"$work/receiver.log" &
pid=$!
wait_for_receiver "$port" 300 0.2 "$work/receiver.log"
load() {
    DELIVERIES=$1 wrk -t1 -c"$conns" -d"$2" -s "$here/deliveries.lua" \
        "http://127.0.0.1:$port/webhook"
}
# Warm-up long enough to fill hands' dedupe memory (10,000 ids), so the measured deliveries
# pay for evictions as they do in a long run.
load "$work/warm.tsv" 20s > "$work/warm.txt"
sleep 0.5
callgrind_control -z "$pid" >/dev/null 2>&1
load "$work/valid.tsv" "${secs}s" > "$work/valid.txt"
# Deliveries still in flight when wrk stops are answered but not counted by wrk: at most
# CONNS of them, noise against thousands.
sleep 1
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 0.5
kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
wrk_answered "$work/valid.txt"
dump=$(ls "$work"/callgrind.out.* 2>/dev/null | sort | head -1)
instructions=$(grep -E '^summary:' "$dump" 2>/dev/null | awk '{print $2}')
if [ -z "$total" ] || [ -z "$instructions" ]; then
    echo "no figures; wrk said:" >&2; cat "$work/valid.txt" >&2; exit 1
fi
if [ -n "${KEEP_PROFILE:-}" ]; then cp "$dump" "$KEEP_PROFILE"; fi
# valgrind's CPU has no SHA extensions, so sha2 runs its software SHA-256 here (about 3.4k
# instructions per 64-byte block) where the real CPU uses SHA-NI (a small fraction of that):
# the count is also given without it.
sha=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null \
    | grep -E 'sha2::sha256::soft::[a-z_:]*compress' | head -1 | awk '{gsub(",", "", $1); print $1}')
sha=${sha:-0}
echo "$kind: $total deliveries answered (non-2xx: ${non2xx:-0}), $instructions instructions," \
    "$((instructions / total)) per delivery, $(((instructions - sha) / total)) without the" \
    "software SHA-256 ($((sha / total)))"
