#!/usr/bin/env bash
# Ingest alone: NDJSON batches POSTed to /v1/events by wrk (fixed body,
# BATCH events per request, none with an id so every one is stored) for
# DUR seconds at CONC connections. Reports the events acknowledged per
# second (2xx answers x BATCH, checked against the daemon's own
# touchpilot_events_accepted_total) and the daemon's CPU and RSS.
#
# Usage: ingest.sh BASE_URL TP_PID [BATCH=1000] [CONC=4] [DUR=20] [LABEL=touchpilot-ingest]
# The events are of a type no moment listens to: the engine applies them
# (its steps run concurrently, as in production) but plans nothing.
set -euo pipefail
BASE=$1; PID=$2; BATCH=${3:-1000}; CONC=${4:-4}; DUR=${5:-20}; LABEL=${6:-touchpilot-ingest}
case "$BASE" in http://127.0.0.1:*) ;; *) echo "refusing non-local URL $BASE" >&2; exit 2;; esac
SHARED=${SHARED:-/work/shared/bench/peers}
PY=${PY:-/tmp/peers/venv/bin/python}
RESULTS=${RESULTS:-/tmp/peers/results}
mkdir -p "$RESULTS"
LUA=$(mktemp /tmp/tp-ingest-XXXX.lua)
trap 'rm -f "$LUA"' EXIT
{
  echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/x-ndjson"'
  echo -n 'wrk.body = [['
  for i in $(seq "$BATCH"); do
    echo '{"account":"acc-123","type":"bench.ingest","data":{"severity":"high","email":"a@example.com","name":"Ann"}}'
  done
  echo ']]'
} > "$LUA"
accepted() { curl -s "$BASE/metrics" | awk '/^touchpilot_events_accepted_total/{print $2}'; }
A0=$(accepted)
OUT="$RESULTS/$LABEL.b$BATCH.c$CONC.txt"
$PY "$SHARED/sample.py" "$PID" "$DUR" 0.5 > "$OUT.cpu" &
SPID=$!
wrk -t1 -c"$CONC" -d"${DUR}s" --timeout 30s --latency -s "$LUA" "$BASE/v1/events" > "$OUT" 2>&1 || true
wait $SPID || true
A1=$(accepted)
RPS=$(awk '/Requests\/sec:/{print $2}' "$OUT")
P99=$(awk '/^ +99%/{print $2}' "$OUT")
NON2XX=$(awk -F: '/Non-2xx/{gsub(/ /,"",$2);print $2}' "$OUT"); NON2XX=${NON2XX:-0}
python3 - "$LABEL" "$BATCH" "$CONC" "$DUR" "$RPS" "$P99" "$NON2XX" "$A0" "$A1" "$(cat "$OUT.cpu")" <<'EOF' | tee "$OUT.result"
import json, sys
label, batch, conc, dur, rps, p99, non2xx, a0, a1, cpu = sys.argv[1:]
cpu = json.loads(cpu)
print(f"label={label} batch={batch} conc={conc} dur={dur}s requests_per_s={rps} p99={p99} non2xx={non2xx} "
      f"events_acked_per_s={float(rps) * int(batch):.0f} events_stored={int(float(a1) - float(a0))} "
      f"stored_per_s={(float(a1) - float(a0)) / float(dur):.0f} cpu_avg={cpu['cpu_avg']} rss_max_mib={cpu['rss_max_mib']} "
      f"foreign_cpu={cpu['foreign_cpu_avg']}")
EOF
