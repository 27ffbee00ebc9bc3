"""The official SDK worker for the end-to-end benchmark: `concurrency` concurrent
`EnvironmentWorker.run()` loops in one process (one loop serves one work item at a time), with
the same three `ANTHROPIC_*` variables `hands poll` gets. Runs until SIGTERM.

Started by the benchmark (tests/bench/e2e/src/procs.rs); the time from exec to its first poll
is the SDK's import-and-start time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from anthropic import AsyncAnthropic
from anthropic.lib.environments import EnvironmentWorker


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()

    client = AsyncAnthropic(base_url=os.environ["ANTHROPIC_BASE_URL"])  # ANTHROPIC_API_KEY from the env
    workers = [
        EnvironmentWorker(
            client,
            environment_id=os.environ["ANTHROPIC_ENVIRONMENT_ID"],
            environment_key=os.environ["ANTHROPIC_ENVIRONMENT_KEY"],
            workdir=args.workdir,
            # As in tests/conformance: a finished session is let go after 1 s, like hands'
            # --max-idle 1s in the same benchmark.
            max_idle=1.0,
            memory_sync_interval=None,
            worker_id=f"sdk-bench-{i}",
        )
        for i in range(args.concurrency)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
