#!/usr/bin/env bash
# Installs moto's server (the AWS fake the Secrets Manager / SSM tests run against) into a
# virtualenv and prints the path of `moto_server`, for HANDS_MOTO_SERVER.
#   tests/moto/install.sh [VENV_DIR]      (default: target/moto-venv in the workspace)
# The version is pinned so the fake's behaviour does not move under the tests.
set -euo pipefail
MOTO_VERSION=5.2.5
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$root/target/moto-venv}"
if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
test -x "$venv/bin/moto_server"
echo "$venv/bin/moto_server"
