"""The reference side of the memory benchmark: the official SDK's `SessionMemoryStores`
(anthropic 2.14.0, `anthropic/lib/tools/_memories.py`) downloads one store from devplane, the
benchmark's edit is applied, and one sync runs. Prints one JSON line of timings.

Started by `cargo run --release -p hands-memory --example memorybench`, which owns devplane and
the seeding; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from anthropic import AsyncAnthropic
from anthropic.lib.tools._memories import SessionMemoryStores


def apply_edit(root: Path, scenario: str) -> None:
    # Must match `apply_edit` in shared/memory/examples/memorybench.rs.
    if scenario == "small":
        for i in range(0, 1000, 10):
            (root / f"notes/n{i:04}.md").write_text(f"note {i} edited\n" + "x" * 180)
        for i in range(100):
            (root / f"new/m{i:03}.md").parent.mkdir(parents=True, exist_ok=True)
            (root / f"new/m{i:03}.md").write_text(f"new {i}\n" + "y" * 180)
    else:
        block = ("z" * 1023 + "\n") * 1024
        for i in range(50):
            (root / f"big/b{i:02}.md").write_text(block)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--mount", required=True)
    p.add_argument("--scenario", choices=["small", "big"], required=True)
    a = p.parse_args()
    client = AsyncAnthropic(
        api_key=None,
        auth_token=a.token,
        base_url=a.base_url,
        default_headers={"anthropic-beta": "managed-agents-2026-04-01"},
        max_retries=0,
    )
    stores = SessionMemoryStores(client, workdir="/tmp", sync_interval=5.0)
    session = SimpleNamespace(
        resources=[
            SimpleNamespace(
                type="memory_store",
                memory_store_id=a.store,
                access="read_write",
                mount_path=a.mount,
                name=a.store,
            )
        ]
    )
    t0 = time.perf_counter()
    await stores.download(session)
    download_s = time.perf_counter() - t0
    apply_edit(Path(a.mount), a.scenario)
    # Peak RSS before the sync, so the growth during it compares with hands' figure.
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t1 = time.perf_counter()
    await stores._sync_all(final=False)  # what sync_if_due runs once the interval has passed
    sync_s = time.perf_counter() - t1
    await stores.dispose()
    await client.close()
    print(
        json.dumps(
            {
                "download_s": download_s,
                "sync_s": sync_s,
                "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "sync_rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
