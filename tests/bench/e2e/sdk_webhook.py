"""The official SDK's webhook path for the end-to-end benchmark, used the way the SDK documents
it: a small HTTP receiver that verifies each delivery with `client.beta.webhooks.unwrap`
(Standard Webhooks, the `standardwebhooks` package), answers 200, and on
`session.status_run_started` drains the queue with
`client.beta.environments.work.poller(drain=True, auto_stop=False, block_ms=None)` (the
"webhook-dispatch shape" of its docstring), handing every claimed item to
`EnvironmentWorker.handle_item` (the per-item flow for an already-claimed item), each on its own
task. The SDK ships no HTTP server, so this one is the smallest that works: asyncio streams,
HTTP/1.1, one request per connection.

Environment: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_ENVIRONMENT_ID,
ANTHROPIC_ENVIRONMENT_KEY, ANTHROPIC_WEBHOOK_SIGNING_KEY (the same variables `hands serve`
gets). Started by the benchmark (tests/bench/e2e/src/procs.rs); runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from anthropic import AsyncAnthropic
from anthropic.lib.environments import EnvironmentWorker

log = logging.getLogger("sdk_webhook")


class Receiver:
    def __init__(self, client: AsyncAnthropic, worker: EnvironmentWorker, secret: str) -> None:
        self.client = client
        self.worker = worker
        self.secret = secret
        self.environment_id = os.environ["ANTHROPIC_ENVIRONMENT_ID"]
        self.environment_key = os.environ["ANTHROPIC_ENVIRONMENT_KEY"]
        self.tasks: set[asyncio.Task[None]] = set()
        # One drain at a time; a delivery during a drain asks for one more pass, so an item
        # queued after the running pass's last poll is not left waiting for the next webhook.
        self.draining = False
        self.again = False

    def spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        if self.draining:
            self.again = True
            return
        self.draining = True
        try:
            while True:
                self.again = False
                async for item in self.client.beta.environments.work.poller(
                    environment_id=self.environment_id,
                    environment_key=self.environment_key,
                    drain=True,
                    auto_stop=False,
                    block_ms=None,
                ):
                    self.spawn(self.serve(item))
                if not self.again:
                    return
        finally:
            self.draining = False

    async def serve(self, item) -> None:  # type: ignore[no-untyped-def]
        try:
            await self.worker.handle_item(
                work_id=item.id,
                environment_id=item.environment_id,
                session_id=item.data.id,
                environment_key=self.environment_key,
                work_secret=getattr(item, "secret", None),
            )
        except Exception:
            log.exception("work item %s failed", item.id)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = b"400 Bad Request"
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET" and path == "/healthz":
                status = b"200 OK"
            elif method == "POST" and path == "/webhook":
                try:
                    event = self.client.beta.webhooks.unwrap(body.decode(), headers=headers, key=self.secret)
                except Exception as e:  # a bad signature or body: refuse it
                    log.warning("rejected delivery: %s", e)
                    status = b"401 Unauthorized"
                else:
                    status = b"200 OK"
                    if event.data.type == "session.status_run_started":
                        self.spawn(self.drain())
            else:
                status = b"404 Not Found"
        except (asyncio.IncompleteReadError, ValueError) as e:
            log.warning("bad request: %s", e)
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        try:
            await writer.drain()
        finally:
            writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    client = AsyncAnthropic(base_url=os.environ["ANTHROPIC_BASE_URL"])  # ANTHROPIC_API_KEY from the env
    worker = EnvironmentWorker(
        client,
        environment_key=os.environ["ANTHROPIC_ENVIRONMENT_KEY"],
        workdir=args.workdir,
        # As sdk_worker.py and hands serve in the same benchmark: let a finished session go after 1 s.
        max_idle=1.0,
        memory_sync_interval=None,
    )
    receiver = Receiver(client, worker, os.environ["ANTHROPIC_WEBHOOK_SIGNING_KEY"])
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(receiver.handle, host, int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    for t in list(receiver.tasks):
        t.cancel()
    await asyncio.gather(*receiver.tasks, return_exceptions=True)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
