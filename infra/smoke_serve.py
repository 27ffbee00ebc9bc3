#!/usr/bin/env python3
"""Starts `hands serve` exactly as infra/k8s/deployment.yaml configures it (its args, the config
map, its env, the secret files) against devplane on loopback, and checks what the manifests rely
on: /healthz and /readyz answer 200, /metrics exports every metric the KEDA ScaledObject queries
and the --max-sessions the threshold assumes, and SIGTERM ends the process with status 0 within
the pod's grace period.

Usage: smoke_serve.py HANDS_BINARY. Paths under the secret mount and /tmp are mapped into a
scratch directory, and the listen address to a free loopback port; nothing else is changed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "infra/k8s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main() -> int:
    hands = os.path.abspath(sys.argv[1])
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    configmap = yaml.safe_load((K8S / "configmap.yaml").read_text())
    scaled = yaml.safe_load((K8S / "autoscaling/keda-scaledobject.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = pod["terminationGracePeriodSeconds"]
    secret_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")

    with tempfile.TemporaryDirectory(prefix="hands-smoke-") as scratch_dir:
        scratch = Path(scratch_dir)
        devplane = subprocess.Popen(
            [hands, "devplane", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        serve = None
        try:
            assert devplane.stdout is not None
            plane = json.loads(devplane.stdout.readline())
            secret_dir = scratch / "secrets"
            secret_dir.mkdir()
            (secret_dir / "environment-key").write_text(plane["environment_key"])
            signing = "whsec_" + b64encode(secrets.token_bytes(24)).decode()
            (secret_dir / "webhook-signing-key").write_text(signing)

            def remap(value: str) -> str:
                if value.startswith(secret_mount + "/"):
                    return str(secret_dir) + value[len(secret_mount):]
                if value.startswith("/tmp/"):
                    return str(scratch / "tmp") + value[len("/tmp"):]
                return value

            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch / "tmp/home")}
            env.update(configmap["data"])
            for item in container["env"]:
                if "value" in item:
                    env[item["name"]] = remap(item["value"])
                elif "fieldRef" in item.get("valueFrom", {}):
                    env[item["name"]] = "smoke-pod-0"
            env["ANTHROPIC_ENVIRONMENT_ID"] = plane["environment_id"]
            env["ANTHROPIC_BASE_URL"] = plane["base_url"]
            port = free_port()
            args = [re.sub(r"^--listen=.*", f"--listen=127.0.0.1:{port}", a) for a in container["args"]]
            base = f"http://127.0.0.1:{port}"
            serve = subprocess.Popen([hands, *args], env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(scratch / "serve.log", "w"))

            # Wait for the listener (start-up, not a performance bound: the startup probe allows 30 s).
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline and serve.poll() is None:
                try:
                    status, _ = get(base + "/healthz")
                    break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.2)
            assert status == 200, f"/healthz never answered 200 (exit {serve.poll()}): {(scratch / 'serve.log').read_text()[-2000:]}"
            ready, _ = get(base + "/readyz")
            assert ready == 200, f"/readyz answered {ready}"
            _, metrics = get(base + "/metrics")
            present = {line.split()[0].split("{")[0] for line in metrics.splitlines() if line and not line.startswith("#")}
            wanted = set()
            for trigger in scaled["spec"]["triggers"]:
                wanted |= set(re.findall(r"\b(hands_[a-z0-9_]+)\b", trigger["metadata"].get("query", "")))
            missing = wanted - present
            assert not missing, f"/metrics lacks {sorted(missing)}"
            max_sessions = next(a.split("=", 1)[1] for a in args if a.startswith("--max-sessions="))
            assert f"hands_sessions_max {max_sessions}" in metrics.splitlines(), "hands_sessions_max != --max-sessions"

            serve.send_signal(signal.SIGTERM)
            try:
                code = serve.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running {grace} s (the pod's grace period) after SIGTERM")
            assert code == 0, f"exit status {code} after SIGTERM"
            print(f"smoke: hands serve with the Deployment's args {args[1:]} and env: /healthz 200, "
                  f"/readyz 200, /metrics has {sorted(wanted)} and hands_sessions_max {max_sessions}, "
                  f"SIGTERM -> exit 0")
            return 0
        except AssertionError as e:
            print(f"smoke: FAIL: {e}")
            return 1
        finally:
            for p in (serve, devplane):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    sys.exit(main())
