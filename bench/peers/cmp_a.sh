#!/usr/bin/env bash
# Quick comparisons for speed work (session 3); results in BENCHMARKS.md, "Session 3".
# usage: cmp_a.sh BIN C D [config-dir]  -> rps, delivered, daemon CPU ms per 1000 deliveries
REPO=$(cd "$(dirname "$0")/../.." && pwd)
set -u
BIN=$1; C=${2:-64}; D=${3:-10}; CFG=${4:-$REPO/bench/peers/webhook}
PY=/tmp/peers/venv/bin/python
export TP_BENCH_DIR=$(mktemp -d)
cd /work/shared/bench/peers
$PY receiver.py 9100 > /tmp/qb-recv.log 2>&1 & RP=$!
sleep 1
cd $CFG
$BIN run --config touchpilot.yaml > /tmp/qb-tp.log 2>&1 & TP=$!
sleep 2
curl -s -XPOST localhost:9100/reset >/dev/null
cpu0=$(awk '{print $14+$15}' /proc/$TP/stat)
T0=$(date +%s.%N)
/usr/bin/wrk -t1 -c$C -d${D}s --latency -s /work/shared/bench/peers/post.lua http://127.0.0.1:8088/v1/inbound/tickets > /tmp/qb-wrk.txt 2>&1
t0=$(date +%s.%N)
prev=-1; cur=$(curl -s localhost:9100/count | $PY -c 'import json,sys;print(json.load(sys.stdin)["count"])')
while [ "$cur" != "$prev" ]; do sleep 0.5; prev=$cur; cur=$(curl -s localhost:9100/count | $PY -c 'import json,sys;print(json.load(sys.stdin)["count"])'); done
T1=$(date +%s.%N)
cpu1=$(awk '{print $14+$15}' /proc/$TP/stat)
rps=$(awk '/Requests\/sec:/{print $2}' /tmp/qb-wrk.txt)
p99=$(awk '/^ +99%/{print $2}' /tmp/qb-wrk.txt)
tck=$(getconf CLK_TCK)
echo "$(basename $BIN) c=$C rps=$rps p99=$p99 delivered=$cur per_s_incl_drain=$(python3 -c "print(round($cur/($T1-$T0)))") cpu_ms_per_1000=$(python3 -c "print(round(($cpu1-$cpu0)*1000/$tck/max($cur,1)*1000,1))") rss_kb=$(awk '/VmHWM/{print $2}' /proc/$TP/status)"
kill $TP $RP; wait 2>/dev/null
rm -rf $TP_BENCH_DIR
