#!/usr/bin/env bash
# Runs the official Python SDK worker (anthropic 2.14.0, EnvironmentWorker) against devplane for
# every conformance session script. Creates its own virtualenv; needs a built `hands` binary.
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

exec "$venv/bin/python" "$here/sdk_worker.py" --hands "$hands" \
    "$root/events/sessions/demo.json" \
    "$root/events/sessions/tools.json" \
    "$root/events/sessions/faults.json"
