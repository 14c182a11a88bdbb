#!/usr/bin/env bash
# Quick A point: one Touchpilot binary under wrk (shared post.lua, C connections,
# D seconds) with the shared receiver.py, printing deliveries and the outbox
# every 2 s, so a change can be compared with the one before it, alternated:
#   bench/peers/quick_a.sh OLD_BINARY 64 10; bench/peers/quick_a.sh NEW_BINARY 64 10; ...
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$1; C=${2:-64}; D=${3:-10}
PY=/tmp/peers/venv/bin/python
export TP_BENCH_DIR=$(mktemp -d)
cd /work/shared/bench/peers
$PY receiver.py 9100 > /tmp/qb-recv.log 2>&1 & RP=$!
sleep 1
cd $REPO/bench/peers/webhook
$BIN run --config touchpilot.yaml > /tmp/qb-tp.log 2>&1 & TP=$!
sleep 2
curl -s -XPOST localhost:9100/reset >/dev/null
/usr/bin/wrk -t1 -c$C -d${D}s --latency -s /work/shared/bench/peers/post.lua http://127.0.0.1:8088/v1/inbound/tickets > /tmp/qb-wrk.txt 2>&1 &
for i in 1 2 3 4 5 6; do sleep 2; echo "t=$((i*2)) recv=$(curl -s localhost:9100/count | cut -c1-20)"; $BIN status --config touchpilot.yaml 2>/dev/null | grep -E "events|outbox"; done
wait %3 2>/dev/null
grep -E "Requests/sec" /tmp/qb-wrk.txt
kill $TP $RP; wait 2>/dev/null
