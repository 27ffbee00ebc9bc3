"""Writes N signed webhook deliveries for wrk (tests/bench/webhook/deliveries.lua), one a line:
`webhook-id <TAB> webhook-timestamp <TAB> webhook-signature <TAB> body`. Every id is unique;
every timestamp is now (so the file is valid for the 300 s window). With --forge, the last
character of each signature is changed, so every delivery must be answered 401.
Signed with the same HMAC-SHA256 construction as standardwebhooks' Webhook.sign.

    python gen_deliveries.py --secret whsec_... --count 200000 [--forge] > out.tsv
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--forge", action="store_true")
    ap.add_argument("--run", default="r", help="prefix making ids unique across runs")
    args = ap.parse_args()
    key = base64.b64decode(args.secret.removeprefix("whsec_"))
    ts = str(int(time.time()))
    out = sys.stdout
    for i in range(args.count):
        msg_id = f"whe_bench{args.run}{i:09d}"
        body = json.dumps(
            {
                "type": "event",
                "id": msg_id,
                "created_at": "2026-03-18T14:05:22Z",
                "data": {
                    "type": "session.status_idled",
                    "id": f"sesn_bench{i:012d}",
                    "organization_id": "org_01BENCH",
                    "workspace_id": "wrkspc_01BENCH",
                },
            },
            separators=(",", ":"),
        )
        tag = hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
        sig = base64.b64encode(tag).decode()
        if args.forge:
            # The first character: changing the last one may only touch the two unused
            # bits, which standardwebhooks' lenient base64 ignores.
            sig = ("B" if sig[0] == "A" else "A") + sig[1:]
        out.write(f"{msg_id}\t{ts}\tv1,{sig}\t{body}\n")


if __name__ == "__main__":
    main()
