#!/usr/bin/env python3
"""Deliveries per second counted at the receiver or the sink, drain included.

The peers answer each request after delivering; Touchpilot answers once the
event is stored and delivers asynchronously. wrk's req/s is therefore not
comparable: this watches the counter bench_http.sh reads and measures each
burst of deliveries from its first to its last delivery.

  deliveries.py watch receiver|sink LOG      # polls every 0.2 s until killed, appends "t count"
  deliveries.py bursts LOG                   # one JSON line per burst

A burst ends when the counter stands still for 3.5 s or is reset (receiver
/reset between points); run_pair.sh's warm-up, c16 and c64 points are then
the last three bursts.
"""
import json
import sys
import time
import urllib.request

GAP = 3.5  # s without a delivery that end a burst


def read(counter: str) -> int:
    if counter == "receiver":
        with urllib.request.urlopen("http://127.0.0.1:9100/count", timeout=2) as r:
            return int(json.load(r)["count"])
    with open("/tmp/peers/sink12525.log", "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 400))
        tail = f.read().decode(errors="replace").replace("\r", "\n")
    last = [line for line in tail.split("\n") if "mesg=" in line]
    return int(last[-1].rsplit("mesg=", 1)[1].split()[0]) if last else 0


def watch(counter: str, log: str) -> None:
    with open(log, "a") as out:
        while True:
            try:
                out.write(f"{time.time():.3f} {read(counter)}\n")
                out.flush()
            except Exception:
                pass
            time.sleep(0.2)


def bursts(log: str) -> None:
    points = [tuple(map(float, line.split())) for line in open(log) if line.strip()]
    runs, cur, base = [], None, None
    for (t, c), prev in zip(points[1:], points):
        if c < prev[1]:  # reset
            base, cur = c, None
            if c > 0:
                cur = {"t0": t, "t1": t, "c0": 0, "c1": c}
                runs.append(cur)
            continue
        if c > prev[1]:
            if cur is None or t - cur["t1"] > GAP:
                cur = {"t0": prev[0], "t1": t, "c0": prev[1], "c1": c}
                runs.append(cur)
            else:
                cur["t1"], cur["c1"] = t, c
    del base
    for r in runs:
        n, span = r["c1"] - r["c0"], r["t1"] - r["t0"]
        print(json.dumps({"start": r["t0"], "span_s": round(span, 2), "delivered": int(n),
                          "per_s": round(n / span, 1) if span > 0 else None}))


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3])
    else:
        bursts(sys.argv[2])
