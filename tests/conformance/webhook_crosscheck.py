#!/usr/bin/env python3
"""Cross-checks our webhook verifier against the official `standardwebhooks` Python library
(1.1.0), which the Anthropic Python SDK uses (PROTOCOL.md §10.5, CATALOGUE "Webhook layer":
differential testing against a reference, deliberate differences listed).

Three groups of cases, each run through both verifiers:

  (a) deliveries signed by the Python library (`Webhook.sign`), verified by `hands verify`:
      every one must be accepted by both; tampered copies must be rejected by both;
  (b) deliveries signed by us (the accepted fixtures of events/webhooks/, produced by our
      signer), verified by the Python library, plus the reject fixtures;
  (c) the deliberate differences: inputs where the two disagree on purpose (non-canonical
      timestamps Python normalises and we refuse; signature lists Python raises on; ids with
      a `.`; caps on the signature header; raw non-UTF-8 bodies). Each is asserted to give
      exactly the listed pair of outcomes, so a change on either side shows up.

Outcomes: `accept`, `reject` (ours: `invalid:`; Python: WebhookVerificationError) and, for
Python only, `raise:<Exception>` (any other exception escaping `verify`). Our side runs the
real binary: `hands verify --now N` with the delivery on stdin (the JSON fixture format, or a
raw HTTP request for byte bodies); exit 0 = valid, 1 = invalid.

    python webhook_crosscheck.py --hands path/to/hands

Prints one summary line; exits non-zero on any unexpected outcome.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import standardwebhooks.webhooks as sw

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "events" / "webhooks"
UTC = dt.timezone.utc


@dataclasses.dataclass
class Case:
    name: str
    secret: str  # whsec_... (several separated by spaces for ours; Python gets the first)
    headers: dict[str, str | list[str]]
    body: str | bytes
    now: int
    ours: str  # expected outcome of `hands verify`
    python: str  # expected outcome of standardwebhooks
    why: str = ""  # for a deliberate difference: why we differ
    allow_short: bool = False
    python_secret: str | None = None  # when Python must be given another secret than ours


# --- the two verifiers ------------------------------------------------------------------------


def python_verdict(case: Case) -> str:
    """Runs `Webhook.verify` with its clock frozen at `case.now`."""
    frozen = dt.datetime.fromtimestamp(case.now, tz=UTC)

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ARG003 - the library always asks for UTC
            return frozen

    # A header sent on several lines reaches Python code as one value: frameworks' mappings
    # (Starlette's `request.headers.get`, Flask's `request.headers.get`) return the first.
    headers = {k: (v[0] if isinstance(v, list) else v) for k, v in case.headers.items()}
    saved = sw.datetime
    sw.datetime = FrozenDatetime
    try:
        sw.Webhook(case.python_secret or case.secret.split()[0]).verify(
            case.body, headers, json_parse=False
        )
        return "accept"
    except sw.WebhookVerificationError:
        return "reject"
    except Exception as e:  # noqa: BLE001 - which exception escapes is the finding
        return f"raise:{type(e).__name__}"
    finally:
        sw.datetime = saved


def ours_verdict(hands: str, case: Case) -> str:
    if isinstance(case.body, bytes):
        # Byte bodies go as a raw HTTP request: the JSON format carries text only. Header
        # values there are trimmed like an HTTP parser would, so text cases use JSON.
        head = "POST /webhook HTTP/1.1\r\nHost: localhost\r\n"
        for name, value in case.headers.items():
            for v in value if isinstance(value, list) else [value]:
                head += f"{name}: {v}\r\n"
        stdin = head.encode() + b"\r\n" + case.body
    else:
        stdin = json.dumps({"headers": case.headers, "body": case.body}).encode()
    args = [hands, "verify", "--now", str(case.now)]
    if case.allow_short:
        args.append("--allow-short")
    env = {**os.environ, "ANTHROPIC_WEBHOOK_SIGNING_KEY": case.secret}
    env.pop("ANTHROPIC_WEBHOOK_SIGNING_KEY_FILE", None)
    p = subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=30)
    out = p.stdout.decode(errors="replace")
    if p.returncode == 0 and out.startswith("valid:"):
        return "accept"
    if p.returncode == 1 and out.startswith("invalid:"):
        return "reject"
    said = (out + p.stderr.decode(errors="replace")).strip().splitlines()
    return f"error:rc={p.returncode}:{said[0][:160] if said else ''}"


# --- (a) signed by the Python library ---------------------------------------------------------


def new_secret(rng: random.Random, n: int = 32) -> str:
    return "whsec_" + base64.b64encode(rng.randbytes(n)).decode()


def py_sign(secret: str, msg_id: str, ts: int, body: str) -> str:
    return sw.Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(ts, tz=UTC), body)


def event_body(rng: random.Random, msg_id: str, kind: str) -> str:
    return json.dumps(
        {
            "type": "event",
            "id": msg_id,
            "created_at": "2026-03-18T14:05:22Z",
            "data": {
                "type": kind,
                "id": f"sesn_{rng.randbytes(12).hex()}",
                "organization_id": "org_01TESTORG",
                "workspace_id": "wrkspc_01TESTWS",
            },
        },
        separators=(",", ":"),
    )


def python_signed_cases(rng: random.Random, count: int) -> list[Case]:
    cases: list[Case] = []
    odd_bodies = [
        "",
        "{}",
        "{\"test\": 2432232314}\n",
        "  {\r\n  \"a\": 1\r\n}\r\n",
        "{\"text\":\"héllo – ✓ 🚀\"}",
        "\ufeff{\"bom\":true}",
        "not json at all",
        "x" * 20_000,
    ]
    kinds = ["session.status_run_started", "session.status_idled", "session.future_thing"]
    for i in range(count):
        secret = new_secret(rng, rng.choice([24, 32, 32, 64]))
        msg_id = rng.choice(["whe_", "msg_"]) + base64.b32encode(rng.randbytes(15)).decode().lower()
        now = 1_773_842_722 + rng.randrange(0, 10**6)
        skew = rng.choice([0, 0, 1, -1, 299, -299, 300, -300, rng.randrange(-300, 301)])
        ts = now - skew
        body = odd_bodies[i] if i < len(odd_bodies) else event_body(rng, msg_id, rng.choice(kinds))
        sig = py_sign(secret, msg_id, ts, body)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
        base = f"a{i:03d}"
        cases.append(Case(f"{base} python-signed", secret, headers, body, now, "accept", "accept"))
        if i % 4 == 0:
            # Key rotation (W7): the sender signs with an old key and this one; we hold both.
            old = new_secret(rng)
            both = f"{py_sign(old, msg_id, ts, body)} {sig}"
            # Python takes one key: give it the old one, whose entry comes first.
            cases.append(Case(f"{base} rotation, we hold old+new", f"{old} {secret}",
                              {**headers, "webhook-signature": both}, body, now,
                              "accept", "accept", python_secret=old))
        # Tampered copies (W2, W4, W5, W8): both must refuse.
        tampered = [
            ("body+newline", headers, body + "\n", now),
            ("other id", {**headers, "webhook-id": msg_id + "x"}, body, now),
            ("other timestamp", {**headers, "webhook-timestamp": str(ts + 1)}, body,
             now + (1 if skew == -300 else 0)),
            ("stale 301 s", headers, body, ts + 301),
            ("future 301 s", headers, body, ts - 301),
        ]
        for label, h, b, n in tampered:
            cases.append(Case(f"{base} {label}", secret, h, b, n, "reject", "reject"))
        cases.append(Case(f"{base} wrong secret", new_secret(rng), headers, body, now,
                          "reject", "reject"))
    return cases


# --- (b) signed by us: the fixtures -----------------------------------------------------------


def fixture_cases() -> list[Case]:
    # The fixtures our verifier rejects on purpose while the Python library accepts.
    deliberate = {
        "reject_w1_duplicate_signature.json": (
            "accept",
            "W1: a header sent twice is refused; Python code only ever sees the first line",
        ),
        "reject_w9_plus_timestamp.json": (
            "accept",
            "W9: '+1614265330' is not canonical; Python's float() parses it and signs the "
            "canonical digits",
        ),
    }
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        f = json.loads(path.read_text())
        ours = "accept" if f["expect"] == "accept" else "reject"
        python, why = deliberate.get(path.name, (ours, ""))
        cases.append(Case(f"fixture {path.name}", f["secret"], f["headers"], f["body"],
                          f["now"], ours, python, why,
                          allow_short=f.get("allow_short_secret", False)))
    return cases


# --- (c) the deliberate differences -----------------------------------------------------------


def difference_cases() -> list[Case]:
    # Example A of §10.5: a published vector both sides accept as is.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    ts = 1614265330
    body = '{"test": 2432232314}'
    sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    h = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    junk = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    cases = [Case("c baseline example A", secret, h, body, ts, "accept", "accept")]

    def differ(name, headers, python, why, ours="reject", *, body_=body, now=ts, secret_=secret,
               python_secret=None):
        cases.append(Case(f"c {name}", secret_, {**h, **headers}, body_, now, ours, python, why,
                          python_secret=python_secret))

    def agree(name, headers, verdict, *, body_=body, now=ts):
        cases.append(Case(f"c {name}", secret, {**h, **headers}, body_, now, verdict, verdict))

    # Timestamps (W9, pitfall 2). Python runs float() on the header, then signs
    # str(floor(t)): every spelling of the same second verifies against the canonical digits.
    # We refuse anything but ^(0|[1-9][0-9]{0,9})$, so one delivery has one spelling (dedupe
    # keys and logs never disagree, no float rounding, no overflow).
    why_ts = "W9: non-canonical timestamp; Python float()s it and re-signs the canonical digits"
    for spelled in [f"+{ts}", f"0{ts}", f"00{ts}", f" {ts}", f"{ts} ", f"{ts}.0", f"{ts}.9",
                    f"{ts}e0", "1.61426533e9", f"{ts:_}", "\u0661\u0666\u0661\u0664\u0662"
                    "\u0666\u0665\u0663\u0663\u0660", f"\t{ts}\n"]:
        differ(f"timestamp {spelled!r}", {"webhook-timestamp": spelled}, "accept", why_ts)
    # Non-canonical spellings that fail in both, and canonical edge values.
    for spelled in ["-1", "0", "", "nan", "inf", "1e400", "9" * 30, str(-(2**63)),
                    str(2**64 - 1), f"{ts}x", "0x6037A5F2"]:
        agree(f"timestamp {spelled!r}", {"webhook-timestamp": spelled}, "reject")
    # The window (W8) is the same: ±300 s accepted, ±301 s refused, on both sides.
    for skew, verdict in [(300, "accept"), (-300, "accept"), (301, "reject"), (-301, "reject")]:
        agree(f"window {skew:+d} s", {}, verdict, now=ts + skew)

    # Signature lists (W3, W6). We split on runs of spaces/tabs and skip entries that are not
    # a well-formed v1 tag; Python splits on single spaces and unpacks `version, sig` from
    # each entry, so an entry without exactly one comma, or bad base64 before the matching
    # entry, escapes as ValueError / binascii.Error instead of a verification error.
    why_list = ("W6: we skip malformed entries and accept the valid one; Python raises "
                "on the malformed entry before reaching it")
    differ("junk entry first", {"webhook-signature": f"garbage {sig}"}, "raise:ValueError",
           why_list, "accept")
    differ("three-part entry first", {"webhook-signature": f"v1,a,b {sig}"}, "raise:ValueError",
           why_list, "accept")
    differ("double space", {"webhook-signature": f"{junk}  {sig}"}, "raise:ValueError",
           why_list, "accept")
    differ("leading space", {"webhook-signature": f" {sig}"}, "raise:ValueError", why_list,
           "accept")
    differ("tab separator", {"webhook-signature": f"{junk}\t{sig}"}, "raise:ValueError",
           why_list, "accept")
    differ("bad padding first", {"webhook-signature": f"v1,AAA {sig}"}, "raise:Error",
           why_list, "accept")
    why_raise = "W3: both refuse; Python raises instead of a verification error"
    differ("no comma", {"webhook-signature": "v1"}, "raise:ValueError", why_raise)
    differ("unpadded tag", {"webhook-signature": sig.rstrip("=")}, "raise:Error", why_raise)
    differ("tag of 8 chars, bad padding", {"webhook-signature": "v1,g0hM9Ss"}, "raise:Error",
           why_raise)
    differ("comma-joined duplicate lines", {"webhook-signature": f"{sig}, {junk}"},
           "raise:ValueError", why_raise)
    # Python's b64decode(validate=False) drops characters outside the alphabet, so a tag with
    # junk inside still matches there; we decode strictly (one spelling per tag).
    differ("tag with a stray '!'", {"webhook-signature": sig[:10] + "!" + sig[10:]}, "accept",
           "W3: strict base64; Python silently discards non-alphabet characters")
    differ("tag with '**' inside",
           {"webhook-signature": sig[:20] + "**" + sig[20:]}, "accept",
           "W3: strict base64; Python silently discards non-alphabet characters")
    # The last character of a 32-byte tag carries 4 bits of it and 2 unused ones; Python
    # ignores the unused bits, so 4 spellings of one tag match there; we require them zero.
    last = sig[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) ^ 0b0001]
    differ("tag with non-zero unused bits", {"webhook-signature": sig[:-2] + sibling + "="},
           "accept", "W3: strict base64 (canonical trailing bits); Python ignores them")
    # Caps (W6): at most 16 entries and 4 KiB; Python has neither.
    differ("17 entries, valid last", {"webhook-signature": " ".join([junk] * 16 + [sig])},
           "accept", "W6: over 16 entries is refused (bounded work per forged request)")
    differ("5 KiB header, valid last",
           {"webhook-signature": " ".join(["v2," + "x" * 1000] * 5 + [sig])}, "accept",
           "W6: a header over 4 KiB is refused")
    # Same as ours: trailing space after the match, unknown versions, v1 tags of wrong length.
    agree("trailing space", {"webhook-signature": f"{sig} "}, "accept")
    agree("unknown version first", {"webhook-signature": f"v2,whatever {sig}"}, "accept")
    agree("v1a entry first", {"webhook-signature": f"v1a,{junk[3:]} {sig}"}, "accept")
    agree("short tag", {"webhook-signature": "v1," + base64.b64encode(b"x" * 16).decode()},
          "reject")
    agree("empty signature", {"webhook-signature": ""}, "reject")
    agree("only v2", {"webhook-signature": "v2," + sig[3:]}, "reject")
    cases.append(Case("c header names in mixed case", secret,
                      {"Webhook-Id": msg_id, "WEBHOOK-TIMESTAMP": str(ts),
                       "Webhook-Signature": sig}, body, ts, "accept", "accept"))

    # Ids (W13): `.` is the separator of the signed content, and the id is a dedupe key that
    # lands in logs; we refuse these, Python signs them as given.
    why_id = "W13: malformed webhook-id refused; Python accepts any non-empty id"
    for label, bad_id in [("with '.'", "msg_a.b"), ("with a space", "msg a"),
                          ("non-ASCII", "msg_é"), ("257 bytes", "m" * 257)]:
        good = py_sign(secret, bad_id, ts, body)
        differ(f"id {label}", {"webhook-id": bad_id, "webhook-signature": good}, "accept",
               why_id)
    agree("missing id", {"webhook-id": ""}, "reject")

    # Raw bytes (W5): we verify the body bytes as received; Python's verify decodes them as
    # UTF-8 first, so a validly signed non-UTF-8 body escapes as UnicodeDecodeError.
    raw = b'{"a":"\xff\xfe"}'
    key = base64.b64decode(secret.removeprefix("whsec_"))
    raw_sig = "v1," + base64.b64encode(sw.hmac_data(key, f"{msg_id}.{ts}.".encode() + raw)).decode()
    differ("non-UTF-8 body, validly signed", {"webhook-signature": raw_sig},
           "raise:UnicodeDecodeError", "W5: we verify raw bytes; Python decodes to str first",
           "accept", body_=raw)

    # Secrets (W7): we refuse secrets under 24 bytes at startup (hands verify needs
    # --allow-short, see fixture B); Python takes any non-empty key.
    short = "whsec_" + base64.b64encode(b"secret\n").decode()
    short_sig = py_sign(short, msg_id, ts, body)
    differ("7-byte secret without --allow-short", {"webhook-signature": short_sig}, "accept",
           "W7: secrets under 24 bytes are a configuration error", "error", secret_=short)
    return cases


# --- driver -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hands", required=True, help="path to the hands binary")
    ap.add_argument("--generated", type=int, default=40,
                    help="how many Python-signed deliveries to generate (default 40)")
    ap.add_argument("--seed", type=int, default=20260318)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    probe = subprocess.run([args.hands, "verify", "--help"], capture_output=True)
    if probe.returncode != 0:
        print(f"webhook cross-check: {args.hands} has no working `verify` subcommand "
              "(rebuild it)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    groups = {
        "python-signed": python_signed_cases(rng, args.generated),
        "fixtures": fixture_cases(),
        "differences": difference_cases(),
    }
    total = agreed = deliberate = 0
    unexpected = []
    for group, cases in groups.items():
        for case in cases:
            total += 1
            ours = ours_verdict(args.hands, case)
            py = python_verdict(case)
            if ours.startswith("error") and case.ours == "error":
                ours = "error"
            ok = ours == case.ours and py == case.python
            if args.verbose or not ok:
                mark = "ok " if ok else "BAD"
                print(f"{mark} [{group}] {case.name}: ours={ours} python={py}"
                      + ("" if ok else f" (expected ours={case.ours} python={case.python})"))
            if not ok:
                unexpected.append(case.name)
            elif ours == py:
                agreed += 1
            else:
                deliberate += 1
                if args.verbose:
                    print(f"      deliberate: {case.why}")
    print(f"webhook cross-check vs standardwebhooks {sw_version()}: {total} cases, "
          f"{agreed} agree, {deliberate} deliberate differences, {len(unexpected)} unexpected")
    return 1 if unexpected else 0


def sw_version() -> str:
    try:
        from importlib.metadata import version

        return version("standardwebhooks")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
