#!/usr/bin/env bash
# Touchpilot side by side with Node-RED and n8n, in one run, with the shared
# peer scripts (same event, same receiver, same sink, same load generator).
#
#   bash /work/shared/bench/peers/setup.sh     # once: wrk, Node 24, n8n, Node-RED, smtp-sink in /tmp/peers
#   bench/peers/run.sh [all|nodered|touchpilot] # all (default): with Node-RED and n8n (default modes);
#                                               # nodered: with Node-RED only (~12 min instead of ~25)
#
# Env: SHARED (the shared scripts, default /work/shared/bench/peers),
#      RESULTS (default /tmp/peers/results/run-TIMESTAMP), DUR (s per point, 25),
#      QUIET_MAX (s to wait for a quiet machine before each point, 60),
#      RATE (events/s of the latency point, 1000),
#      TP_API (inbound: the shared body to POST /v1/inbound/tickets, default;
#              events: for a daemon without the mapped endpoint, the same fields
#              as the `data` of a Touchpilot event to POST /v1/events, with a
#              copy of the shared scripts whose post.lua sends that body).
#
# What it runs, in this order (each Touchpilot point on a fresh store):
#   1. ingest alone: NDJSON batches of 1,000 events to /v1/events (ingest.sh);
#   2. latency at a fixed RATE events/s: latency.py sends the shared event and
#      receives the webhooks itself on 127.0.0.1:9100 (receiver.py is not
#      running yet), p99 from the 202 to the receipt;
#   3. receiver.py and smtp-sink started as run_all.sh does; the smtp-source
#      ceiling with 16 sessions and with as many as Touchpilot opened;
#   4. A (webhook) and B (email) with run_pair.sh against Touchpilot, Node-RED
#      and n8n, with deliveries.py counting deliveries per second drain included;
#   5. summarize.py's table, then the deliveries and ingest/latency lines.
# Starts every process itself and stops exactly those PIDs at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
HERE=$REPO/bench/peers
WHAT=${1:-all}
SHARED=${SHARED:-/work/shared/bench/peers}
PY=/tmp/peers/venv/bin/python
export RESULTS=${RESULTS:-/tmp/peers/results/run-$(date -u +%Y%m%dT%H%M%S)}
export QUIET_MAX=${QUIET_MAX:-60}
DUR=${DUR:-25}
RATE=${RATE:-1000}
TP=$REPO/target/release/touchpilot
export TP_BENCH_DIR=${TP_BENCH_DIR:-/tmp/tp-bench}
TP_API=${TP_API:-inbound}
mkdir -p "$RESULTS" "$TP_BENCH_DIR"
[ -x /tmp/peers/venv/bin/python ] || { echo "run $SHARED/setup.sh first" >&2; exit 2; }

STARTED=()
cleanup() { for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

nice -n 10 cargo build --release -q -p touchpilot
echo "touchpilot $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), events by $TP_API, $(nproc) cores, results in $RESULTS"

CONFIGS=$HERE TP_URL=http://127.0.0.1:8088/v1/inbound/tickets TP_SHARED=$SHARED
if [ "$TP_API" = events ]; then
  CONFIGS=$TP_BENCH_DIR/configs TP_URL=http://127.0.0.1:8088/v1/events TP_SHARED=$TP_BENCH_DIR/shared
  rm -rf "$CONFIGS" "$TP_SHARED"; mkdir -p "$CONFIGS"
  cp -r "$HERE/webhook" "$HERE/email" "$HERE/accounts.jsonl" "$CONFIGS/"
  sed -i '/^inbound:/,+1d' "$CONFIGS"/*/touchpilot.yaml
  cp -r "$SHARED" "$TP_SHARED"
  cat > "$TP_SHARED/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body   = '{"account":"acc-123","type":"ticket.created","data":{"account_id":"acc-123","type":"ticket.created","severity":"high","email":"a@example.com","name":"Ann"}}'
wrk.headers["Content-Type"] = "application/json"
EOF
fi

TP_PID=
start_tp() { # CONFIG_DIR LABEL
  rm -f "$TP_BENCH_DIR"/*.db "$TP_BENCH_DIR"/*.db-wal "$TP_BENCH_DIR"/*.db-shm
  nohup "$TP" run --config "$CONFIGS/$1/touchpilot.yaml" > "$RESULTS/$2.log" 2>&1 &
  TP_PID=$!; STARTED+=("$TP_PID")
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:8088/ready >/dev/null && return 0
    sleep 0.2
  done
  echo "touchpilot did not become ready; see $RESULTS/$2.log" >&2; exit 1
}
stop_tp() { kill "$TP_PID"; wait "$TP_PID" 2>/dev/null || true; sleep 2; }

WATCH_PID=
watch_start() { # receiver|sink LABEL
  $PY "$HERE/deliveries.py" watch "$1" "$RESULTS/$2.deliveries.log" & WATCH_PID=$!; STARTED+=("$WATCH_PID")
}
watch_stop() { # LABEL
  kill "$WATCH_PID"; wait "$WATCH_PID" 2>/dev/null || true
  $PY "$HERE/deliveries.py" bursts "$RESULTS/$1.deliveries.log" | tail -n 2 | sed "s/^/$1 /" | tee -a "$RESULTS/deliveries.txt"
}
smtp_conns() { # samples how many SMTP connections are open to the sink, until killed
  while true; do ss -Htn state established '( dport = :12525 )' | wc -l; sleep 1; done
}

# 1. ingest alone
start_tp webhook touchpilot-ingest
SHARED=$SHARED "$HERE/ingest.sh" http://127.0.0.1:8088 "$TP_PID" 1000 4 20 touchpilot-ingest | tee -a "$RESULTS/ingest.txt"
stop_tp

# 2. latency at a fixed rate (latency.py is the receiver on :9100)
start_tp webhook touchpilot-latency
$PY "$SHARED/sample.py" "$TP_PID" 35 0.5 > "$RESULTS/touchpilot-latency.cpu" &
SPID=$!
$PY "$HERE/latency.py" "$TP_URL" "$RATE" 30 5 9100 64 | tee "$RESULTS/latency.json"
wait "$SPID" || true
echo "touchpilot-latency peer_tree=$(cat "$RESULTS/touchpilot-latency.cpu")" | tee -a "$RESULTS/latency.txt"
stop_tp

# 3. receiver and sink as run_all.sh starts them. A sink or receiver left
#    over from another run would take the port and share the counter file.
for port in 9100 12525; do
  if ss -Hltn "( sport = :$port )" | grep -q .; then
    echo "port $port is taken (a receiver or smtp-sink from another run?): stop it first" >&2; exit 2
  fi
done
cd "$SHARED"
nohup $PY receiver.py 9100 > /tmp/peers/receiver.log 2>&1 & echo $! > /tmp/peers/receiver.pid; STARTED+=($!)
STARTED+=($(./start_sink.sh 12525))
sleep 2

# 4. Touchpilot: A then B, each on a fresh store
start_tp webhook touchpilot-webhook
watch_start receiver touchpilot-webhook
"$TP_SHARED/run_pair.sh" touchpilot-webhook "$TP_URL" "$TP_PID" "$DUR"
watch_stop touchpilot-webhook
stop_tp

start_tp email touchpilot-email
watch_start sink touchpilot-email
smtp_conns > "$RESULTS/touchpilot-email.smtp-conns" & CPID=$!; STARTED+=("$CPID")
COUNTER=sink "$TP_SHARED/run_pair.sh" touchpilot-email "$TP_URL" "$TP_PID" "$DUR"
kill "$CPID"
watch_stop touchpilot-email
stop_tp
CONNS=$(sort -n "$RESULTS/touchpilot-email.smtp-conns" | tail -n 1); CONNS=${CONNS:-1}; [ "$CONNS" -ge 1 ] || CONNS=1
echo "touchpilot-email: at most $CONNS SMTP connections open to the sink" | tee -a "$RESULTS/deliveries.txt"

# the SMTP ceiling: smtp-source with as many sessions as Touchpilot opened, and with 16
$PY wait_quiet.py 25 "$QUIET_MAX" || true
./smtp_limit.sh "$CONNS" 20000 | tee "$RESULTS/smtp_limit_s$CONNS.txt"
[ "$CONNS" = 16 ] || ./smtp_limit.sh 16 60000 | tee "$RESULTS/smtp_limit_s16.txt"

if [ "$WHAT" = all ] || [ "$WHAT" = nodered ]; then
  # Node-RED (and, for `all`, n8n), default modes (run_all.sh's pieces)
  nodered/start_nodered.sh default; P=$(cat /tmp/peers/nodered/nr.pid); STARTED+=("$P")
  watch_start receiver nodered-webhook-default
  ./run_pair.sh nodered-webhook-default http://127.0.0.1:1880/event "$P" "$DUR"
  watch_stop nodered-webhook-default
  watch_start sink nodered-email-default
  COUNTER=sink ./run_pair.sh nodered-email-default http://127.0.0.1:1880/event-mail "$P" "$DUR"
  watch_stop nodered-email-default
  kill "$P"; sleep 3
fi
if [ "$WHAT" = all ]; then
  n8n/start_n8n.sh default; P=$(cat /tmp/peers/n8n/n8n.pid); STARTED+=("$P")
  watch_start receiver n8n-webhook-default
  ./run_pair.sh n8n-webhook-default http://127.0.0.1:5678/webhook/event "$P" "$DUR"
  watch_stop n8n-webhook-default
  watch_start sink n8n-email-default
  COUNTER=sink ./run_pair.sh n8n-email-default http://127.0.0.1:5678/webhook/event-mail "$P" "$DUR"
  watch_stop n8n-email-default
  kill "$P"; sleep 8
fi

echo
$PY summarize.py "$RESULTS"
echo
echo "deliveries counted at the receiver/sink, first to last delivery (the c16 and c64 points):"
cat "$RESULTS/deliveries.txt"
echo "ingest:"; cat "$RESULTS/ingest.txt"
echo "latency:"; cat "$RESULTS/latency.json" "$RESULTS/latency.txt"
echo "smtp-source ceiling:"; cat "$RESULTS"/smtp_limit_s*.txt
