#!/usr/bin/env bash
# Quick comparisons for speed work (session 3); results in BENCHMARKS.md, "Session 3".
# usage: drain.sh BIN [N=40000]: N events queued while the receiver is stopped, then the delivery rate and CPU per 1,000 once it runs
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$1; N=${2:-40000}
PY=/tmp/peers/venv/bin/python
export TP_BENCH_DIR=$(mktemp -d)
cd /work/shared/bench/peers; $PY receiver.py 9100 > /tmp/qb-recv.log 2>&1 & RP=$!
sleep 1; cd ${CFGA:-$REPO/bench/peers/webhook}
$BIN run --config touchpilot.yaml > /tmp/qb-tp.log 2>&1 & TP=$!
sleep 2; curl -s -XPOST localhost:9100/reset >/dev/null
python3 - > /tmp/batch.ndjson <<'P'
import json
for i in range(1000):
    print(json.dumps({"account":"acc-123","type":"ticket.created","data":{"account_id":"acc-123","type":"ticket.created","severity":"high","email":"a@example.com","name":"Ann"}}))
P
kill -STOP $RP   # hold deliveries until everything is in
for i in $(seq $((N/1000))); do curl -s -XPOST -H 'Content-Type: application/x-ndjson' --data-binary @/tmp/batch.ndjson localhost:8088/v1/events > /dev/null; done
sleep 1
cpu0=$(awk '{print $14+$15}' /proc/$TP/stat); rcpu0=$(awk '{print $14+$15}' /proc/$RP/stat); kill -CONT $RP; t0=$(date +%s.%N)
count() { curl -s localhost:9100/count | $PY -c 'import json,sys;print(json.load(sys.stdin)["count"])'; }
sleep 3; ps -o pid,pcpu,comm -p $RP,$TP; while [ "$(count)" -lt $N ]; do sleep 0.2; done
t1=$(date +%s.%N); cpu1=$(awk '{print $14+$15}' /proc/$TP/stat); rcpu1=$(awk '{print $14+$15}' /proc/$RP/stat)
echo "$(basename $BIN) drain: $N in $(python3 -c "print(round($t1-$t0,2))") s = $(python3 -c "print(round($N/($t1-$t0)))")/s, cpu_ms_per_1000=$(python3 -c "print(round(($cpu1-$cpu0)*10/$N*1000,1))") receiver_us_per_req=$(python3 -c "print(round(($rcpu1-$rcpu0)*10000/$N,1))")"
kill $TP $RP; wait 2>/dev/null; rm -rf $TP_BENCH_DIR
