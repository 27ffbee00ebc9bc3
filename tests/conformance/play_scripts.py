"""Drive a worker against devplane, one session script at a time: the official Python SDK worker
(`--worker sdk`) or `hands poll` itself (`--worker hands`), so both serve the same scripts.

For each script: start `hands devplane --exit-when-done` on an ephemeral loopback port, read the
one JSON line it prints (base URL, environment id and key), run the worker against it in a fresh
working directory (`EnvironmentWorker.run()` from the `anthropic` package, or `hands poll` with
only the three `ANTHROPIC_*` variables set, as an operator would run it), and wait for devplane
to exit.
devplane exits 0 only if every step of the script passed (results, expectations of "no result",
the final force-stop), and writes a report that is printed here step by step.

This proves devplane speaks the protocol the way the real control plane does: the SDK is what the
real service is built against (PROTOCOL.md §15).

Scripts that attach memory stores run with memory enabled in both workers; with `--memory-state
DIR` the stores' final server state (from the report) is written to `DIR/<worker>-<script>.json`,
and `--compare-memory DIR` checks that the SDK's and hands' files are identical. Leftover mount
directories of an earlier run are removed first (both workers refuse an existing mount path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from anthropic import AsyncAnthropic
from anthropic.lib.environments import EnvironmentWorker

# devplane's own step timeouts bound a script; this only stops a wedged run from hanging CI.
SCRIPT_DEADLINE_S = 180.0


def memory_mounts(script: Path) -> list[str]:
    spec = json.loads(script.read_text())
    return [
        r["mount_path"]
        for r in spec.get("session", {}).get("resources", [])
        if r.get("type") == "memory_store"
    ]


async def run_script(
    hands: str, worker_kind: str, script: Path, workroot: Path, memory_state: Path | None
) -> bool:
    report_path = workroot / f"{script.stem}.report.json"
    mounts = memory_mounts(script)
    for mount in mounts:
        shutil.rmtree(mount, ignore_errors=True)
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

    workdir = workroot / f"{worker_kind}-{script.stem}"
    workdir.mkdir()
    if worker_kind == "hands":
        ok = await run_hands_poll(hands, info, workdir, proc)
        print_report(script, report_path)
        save_memory_state(report_path, memory_state, worker_kind, script)
        print(f"[{script.name}] {'PASS' if ok else 'FAIL'} with hands poll")
        return ok
    client = AsyncAnthropic(api_key=info["api_key"], base_url=info["base_url"])
    worker = EnvironmentWorker(
        client,
        environment_id=info["environment_id"],
        environment_key=info["environment_key"],
        workdir=str(workdir),
        # Scripts end their sessions with an idle turn; a short idle bound makes the worker
        # finish (and force-stop the item, which the scripts expect) without waiting 60 s.
        max_idle=1.0,
        # Memory only for scripts that attach stores, at the reference's default cadence.
        memory_sync_interval=15.0 if mounts else None,
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
    save_memory_state(report_path, memory_state, worker_kind, script)
    ok = rc == 0
    print(f"[{script.name}] {'PASS' if ok else 'FAIL'} (devplane exit {rc})")
    return ok


async def run_hands_poll(hands: str, info: dict, workdir: Path, devplane) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        ANTHROPIC_ENVIRONMENT_ID=info["environment_id"],
        ANTHROPIC_ENVIRONMENT_KEY=info["environment_key"],
        ANTHROPIC_BASE_URL=info["base_url"],
    )
    worker = await asyncio.create_subprocess_exec(
        hands, "poll", "--workdir", f"{workdir}/{{session_id}}", "--max-idle", "1s",
        env=env, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        rc = await asyncio.wait_for(devplane.wait(), timeout=SCRIPT_DEADLINE_S)
    except asyncio.TimeoutError:
        devplane.kill()
        rc = await devplane.wait()
    # A graceful stop, as an orchestrator would send; the worker must exit 0 on its own.
    worker.terminate()
    try:
        worker_rc = await asyncio.wait_for(worker.wait(), timeout=30)
    except asyncio.TimeoutError:
        worker.kill()
        worker_rc = await worker.wait()
        print("hands poll did not exit within 30 s of SIGTERM", file=sys.stderr)
    if worker_rc != 0:
        print(f"hands poll exited with {worker_rc}", file=sys.stderr)
    return rc == 0 and worker_rc == 0


def save_memory_state(report_path: Path, out: Path | None, worker_kind: str, script: Path) -> None:
    if out is None or not report_path.exists():
        return
    report = json.loads(report_path.read_text())
    stores = {}
    for script_report in report.get("scripts", []):
        stores.update(script_report.get("memory_stores", {}))
    if stores:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{worker_kind}-{script.stem}.json").write_text(json.dumps(stores, indent=1, sort_keys=True))


def compare_memory(state: Path) -> int:
    """The SDK's and hands' final store states must be identical, script by script."""
    sdk = sorted(state.glob("sdk-*.json"))
    if not sdk:
        print(f"no memory state in {state}")
        return 1
    failed = 0
    for s in sdk:
        h = state / s.name.replace("sdk-", "hands-", 1)
        if not h.exists():
            print(f"[{s.stem[4:]}] no hands memory state to compare")
            failed += 1
            continue
        a, b = json.loads(s.read_text()), json.loads(h.read_text())
        if a != b:
            print(f"[{s.stem[4:]}] memory state differs:\n  sdk:   {a}\n  hands: {b}")
            failed += 1
        else:
            n = sum(len(v) for v in a.values())
            print(f"[{s.stem[4:]}] memory state identical: {len(a)} stores, {n} memories")
    return 1 if failed else 0


def print_report(script: Path, report_path: Path) -> None:
    if not report_path.exists():
        print(f"[{script.name}] no report written", file=sys.stderr)
        return
    report = json.loads(report_path.read_text())
    # One line per step (format: events/sessions/README.md), so a failure shows which and why.
    for script_report in report.get("scripts", []):
        for step in script_report.get("steps", []):
            latency = step.get("latency_ms")
            print(
                f"  [{script.stem}] {'ok  ' if step['passed'] else 'FAIL'} "
                f"{step['index']:>2} {step['step']:<15} {step.get('label') or '':<20} "
                f"{'' if latency is None else str(latency) + ' ms':>8}  {step['detail'][:100]}"
            )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hands", required=True, help="path to the hands binary")
    parser.add_argument("--worker", choices=["sdk", "hands"], default="sdk")
    parser.add_argument("--memory-state", type=Path, help="write each script's final memory stores here")
    parser.add_argument("--compare-memory", type=Path, help="compare sdk-* and hands-* states in this directory and exit")
    parser.add_argument("scripts", nargs="*", type=Path)
    args = parser.parse_args()
    if args.compare_memory:
        return compare_memory(args.compare_memory)

    logging.basicConfig(
        level=os.environ.get("CONFORMANCE_LOG", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failures = []
    with tempfile.TemporaryDirectory(prefix="hands-conformance-") as tmp:
        for script in args.scripts:
            if not await run_script(args.hands, args.worker, script, Path(tmp), args.memory_state):
                failures.append(script.name)
    if failures:
        print(f"conformance FAILED ({args.worker} worker): {', '.join(failures)}")
        return 1
    print(f"conformance passed ({args.worker} worker): {len(args.scripts)} scripts")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
