#!/usr/bin/env python3
"""Latency from acceptance to receipt at a fixed rate (open loop).

One process plays both ends, so send and receipt times come from one clock:
it POSTs the shared benchmark event at RATE events/s to URL (a new request
every 1/RATE s whatever the answers, so a slow system cannot slow the load
down), and serves the webhook receiver on 127.0.0.1:PORT/hook in place of
receiver.py. Each event's `name` is `L<seq>`; the template copies it into
`text` ("Hi L<seq>, ..."), which identifies the event at receipt.

To /v1/events (Touchpilot's own format) the same fields go as the event's
`data`; to any other URL (a mapped /v1/inbound/NAME, a peer) as they are.

Usage: latency.py URL [RATE=1000] [DURATION_S=30] [WARMUP_S=5] [PORT=9100] [CONC=64]
Prints one JSON line: events sent, accepted (2xx), delivered, and the
percentiles (ms) of
  accept_to_receipt  receipt - the 2xx answer (the event was durably stored)
  send_to_receipt    receipt - the instant the request was due to be sent
  request            the 2xx answer - the instant it was due (HTTP latency)
over the events sent after the warm-up. Only ever targets 127.0.0.1.
"""
import asyncio
import json
import re
import sys
import time

import aiohttp
from aiohttp import web

try:
    import uvloop

    uvloop.install()
except Exception:  # pragma: no cover
    pass

URL = sys.argv[1]
RATE = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
DUR = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
WARMUP = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
PORT = int(sys.argv[5]) if len(sys.argv) > 5 else 9100
CONC = int(sys.argv[6]) if len(sys.argv) > 6 else 64
if not (URL.startswith("http://127.0.0.1:") or URL.startswith("http://localhost:")):
    sys.exit(f"refusing non-local URL {URL}")

due = {}  # seq -> instant the request was due
acked = {}  # seq -> instant of the 2xx answer
received = {}  # seq -> instant the webhook arrived
stats = {"non2xx": 0, "errors": 0, "bad": 0, "late_sends": 0}
SEQ = re.compile(r"Hi L(\d+),")


async def hook(request: web.Request) -> web.Response:
    t = time.monotonic()
    body = await request.read()
    try:
        m = SEQ.search(json.loads(body)["text"])
        received.setdefault(int(m.group(1)), t)
    except Exception:
        stats["bad"] += 1
    return web.Response(text='{"ok":true}', content_type="application/json")


async def post(session: aiohttp.ClientSession, seq: int) -> None:
    body = (
        '{"account_id":"acc-123","type":"ticket.created","severity":"high",'
        f'"email":"a@example.com","name":"L{seq}"}}'
    )
    if URL.endswith("/v1/events"):  # Touchpilot's own event format
        body = f'{{"account":"acc-123","type":"ticket.created","data":{body}}}'
    try:
        async with session.post(
            URL, data=body, headers={"Content-Type": "application/json"}
        ) as r:
            await r.read()
            if 200 <= r.status < 300:
                acked[seq] = time.monotonic()
            else:
                stats["non2xx"] += 1
    except Exception:
        stats["errors"] += 1


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(1000 * v[min(len(v) - 1, int(p / 100 * len(v)))], 2)


def summary(deltas):
    return {f"p{p}": pct(deltas, p) for p in (50, 90, 99, 99.9)} | {
        "max": pct(deltas, 100)
    }


async def main() -> None:
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    conn = aiohttp.TCPConnector(limit=CONC)
    tasks = set()
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.monotonic()
        n = int(RATE * (WARMUP + DUR))
        for seq in range(n):
            at = t0 + seq / RATE
            now = time.monotonic()
            if at > now:
                await asyncio.sleep(at - now)
            elif now - at > 0.005:
                stats["late_sends"] += 1
            due[seq] = at
            t = asyncio.create_task(post(session, seq))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        # drain: wait until every accepted event arrived, at most 30 s
        end = time.monotonic() + 30
        while time.monotonic() < end and any(s not in received for s in acked):
            await asyncio.sleep(0.2)
    await runner.cleanup()
    first = int(RATE * WARMUP)
    measured = [s for s in range(first, n)]
    a2r = [received[s] - acked[s] for s in measured if s in acked and s in received]
    s2r = [received[s] - due[s] for s in measured if s in received]
    req = [acked[s] - due[s] for s in measured if s in acked]
    out = {
        "url": URL,
        "rate": RATE,
        "duration_s": DUR,
        "warmup_s": WARMUP,
        "sent": len(measured),
        "accepted": sum(1 for s in measured if s in acked),
        "delivered": sum(1 for s in measured if s in received),
        "delivered_all": len(received),
        **stats,
        "accept_to_receipt_ms": summary(a2r),
        "send_to_receipt_ms": summary(s2r),
        "request_ms": summary(req),
    }
    print(json.dumps(out))


asyncio.run(main())
