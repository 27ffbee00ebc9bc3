"""Drive the official Python SDK worker against devplane, one session script at a time.

For each script: start `hands devplane --exit-when-done` on an ephemeral loopback port, read the
one JSON line it prints (base URL, environment id and key), run `EnvironmentWorker.run()` from
the `anthropic` package against it in a fresh working directory, and wait for devplane to exit.
devplane exits 0 only if every step of the script passed (results, expectations of "no result",
the final force-stop), and writes a report that is printed here step by step.

This proves devplane speaks the protocol the way the real control plane does: the SDK is what the
real service is built against (PROTOCOL.md §15).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from anthropic import AsyncAnthropic
from anthropic.lib.environments import EnvironmentWorker

# devplane's own step timeouts bound a script; this only stops a wedged run from hanging CI.
SCRIPT_DEADLINE_S = 180.0


async def run_script(hands: str, script: Path, workroot: Path) -> bool:
    report_path = workroot / f"{script.stem}.report.json"
    proc = await asyncio.create_subprocess_exec(
        hands,
        "devplane",
        "--listen",
        "127.0.0.1:0",
        "--script",
        str(script),
        "--report",
        str(report_path),
        "--exit-when-done",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    if not line:
        print(f"[{script.name}] devplane exited before announcing itself", file=sys.stderr)
        return False
    info = json.loads(line)

    workdir = workroot / script.stem
    workdir.mkdir()
    client = AsyncAnthropic(api_key=info["api_key"], base_url=info["base_url"])
    worker = EnvironmentWorker(
        client,
        environment_id=info["environment_id"],
        environment_key=info["environment_key"],
        workdir=str(workdir),
        # Scripts end their sessions with an idle turn; a short idle bound makes the worker
        # finish (and force-stop the item, which the scripts expect) without waiting 60 s.
        max_idle=1.0,
        memory_sync_interval=None,
        worker_id="sdk-conformance",
    )
    worker_task = asyncio.create_task(worker.run())
    try:
        rc = await asyncio.wait_for(proc.wait(), timeout=SCRIPT_DEADLINE_S)
    except asyncio.TimeoutError:
        proc.kill()
        rc = await proc.wait()
        print(f"[{script.name}] devplane did not finish within {SCRIPT_DEADLINE_S}s", file=sys.stderr)
    finally:
        worker_task.cancel()
        try:
            await worker_task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the worker is being torn down
            pass
        await client.close()

    print_report(script, report_path)
    ok = rc == 0
    print(f"[{script.name}] {'PASS' if ok else 'FAIL'} (devplane exit {rc})")
    return ok


def print_report(script: Path, report_path: Path) -> None:
    if not report_path.exists():
        print(f"[{script.name}] no report written", file=sys.stderr)
        return
    report = json.loads(report_path.read_text())
    # The report format belongs to devplane (events/sessions/README.md); print it as it is so
    # a failure shows which step and why.
    print(json.dumps(report, indent=2))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hands", required=True, help="path to the hands binary")
    parser.add_argument("scripts", nargs="+", type=Path)
    args = parser.parse_args()

    logging.basicConfig(
        level=os.environ.get("CONFORMANCE_LOG", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failures = []
    with tempfile.TemporaryDirectory(prefix="hands-conformance-") as tmp:
        for script in args.scripts:
            if not await run_script(args.hands, script, Path(tmp)):
                failures.append(script.name)
    if failures:
        print(f"SDK conformance FAILED: {', '.join(failures)}")
        return 1
    print(f"SDK conformance passed: {len(args.scripts)} scripts")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
