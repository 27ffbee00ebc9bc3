#!/usr/bin/env bash
# Runs the official Python SDK worker (anthropic 2.14.0, EnvironmentWorker), then `hands poll`,
# against devplane for every conformance session script: both must pass the same scripts.
# Creates its own virtualenv; needs a built `hands` binary.
#
#   tests/conformance/run.sh [path/to/hands]      (default: target/debug/hands)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hands=${1:-"$root/target/debug/hands"}
venv=${CONFORMANCE_VENV:-"$root/target/conformance-venv"}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

scripts=("$root/events/sessions/demo.json" "$root/events/sessions/tools.json" "$root/events/sessions/faults.json" "$root/events/sessions/memory.json")
# The same scripts, served first by the reference worker, then by ours; memory stores must end in
# the same server state.
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
"$venv/bin/python" "$here/play_scripts.py" --worker sdk --hands "$hands" --memory-state "$state" "${scripts[@]}"
"$venv/bin/python" "$here/play_scripts.py" --worker hands --hands "$hands" --memory-state "$state" "${scripts[@]}"
"$venv/bin/python" "$here/play_scripts.py" --hands "$hands" --compare-memory "$state"
# Webhook signatures: ours against the official standardwebhooks library, both directions, with
# the deliberate differences asserted (README "Webhook signatures").
"$venv/bin/python" "$here/webhook_crosscheck.py" --hands "$hands"
