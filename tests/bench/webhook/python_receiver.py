"""The Python reference receiver for tests/bench/webhook/run.sh: FastAPI + the official
`standardwebhooks` library, doing what `hands serve` does for a delivery of an ignored event
type: verify the raw body against the signing secret (401 on failure), parse it, answer 204
(200 for session.status_run_started, which the benchmark never sends).

    ANTHROPIC_WEBHOOK_SIGNING_KEY=whsec_... uvicorn python_receiver:app --loop uvloop ...
"""

import os

from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook

webhook = Webhook(os.environ["ANTHROPIC_WEBHOOK_SIGNING_KEY"])
app = FastAPI()


@app.post("/webhook")
async def receive(request: Request) -> Response:
    body = await request.body()
    try:
        event = webhook.verify(body, dict(request.headers))
    except Exception:  # WebhookVerificationError, and what malformed headers raise
        return Response(status_code=401)
    if event.get("data", {}).get("type") == "session.status_run_started":
        return Response(status_code=200)
    return Response(status_code=204)
