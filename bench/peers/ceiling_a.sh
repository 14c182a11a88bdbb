#!/usr/bin/env bash
# Session 6: alternates, in one run, the shared receiver alone under wrk
# (recv_alone.sh), Node-RED (default mode) and Touchpilot (cmp_a.sh) on
# workload A, at c16 and c64, ROUNDS times.
#   bench/peers/ceiling_a.sh BIN [ROUNDS=3] [D=8]
REPO=$(cd "$(dirname "$0")/../.." && pwd)
set -u
BIN=$1; R=${2:-3}; D=${3:-8}
PY=/tmp/peers/venv/bin/python
cnt() { curl -s localhost:9100/count | $PY -c 'import json,sys;print(json.load(sys.stdin)["count"])'; }
for r in $(seq 1 $R); do
  for c in 16 64; do
    $REPO/bench/peers/recv_alone.sh $c $D
    cd /work/shared/bench/peers; $PY receiver.py 9100 > /dev/null 2>&1 & RP=$!; sleep 1
    nodered/start_nodered.sh default > /dev/null; NP=$(cat /tmp/peers/nodered/nr.pid)
    /usr/bin/wrk -t1 -c16 -d3s -s post.lua http://127.0.0.1:1880/event > /dev/null
    sleep 1; curl -s -XPOST localhost:9100/reset > /dev/null
    T0=$(date +%s.%N)
    rps=$(/usr/bin/wrk -t1 -c$c -d${D}s -s post.lua http://127.0.0.1:1880/event | awk '/Requests\/sec/{print $2}')
    prev=-1; cur=$(cnt); while [ "$cur" != "$prev" ]; do sleep 0.5; prev=$cur; cur=$(cnt); done
    T1=$(date +%s.%N)
    echo "nodered c=$c rps=$rps delivered=$cur per_s_incl_drain=$(python3 -c "print(round($cur/($T1-$T0)))")"
    kill $NP $RP; wait 2>/dev/null; sleep 1
    $REPO/bench/peers/cmp_a.sh $BIN $c $D 2>&1 | grep -v Termin
  done
done
