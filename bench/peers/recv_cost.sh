#!/usr/bin/env bash
# receiver.py's CPU per request under wrk with a webhook body like ours (the ceiling of workload A)
# usage: recv_cost.sh [C=16] [D=5]
HOOK=$(cd "$(dirname "$0")" && pwd)/hook.lua; C=${1:-16}; D=${2:-5}; PY=/tmp/peers/venv/bin/python
cd /work/shared/bench/peers; $PY receiver.py 9100 > /tmp/qb-recv.log 2>&1 & RP=$!
sleep 1; r0=$(awk '{print $14+$15}' /proc/$RP/stat)
/usr/bin/wrk -t1 -c$C -d${D}s -s $HOOK http://127.0.0.1:9100/hook > /tmp/qb-rwrk.txt
r1=$(awk '{print $14+$15}' /proc/$RP/stat); n=$(curl -s localhost:9100/count | $PY -c 'import json,sys;print(json.load(sys.stdin)["count"])')
echo "receiver alone c=$C: $(awk '/Requests\/sec:/{print $2}' /tmp/qb-rwrk.txt) req/s, receiver_us_per_req=$(python3 -c "print(round(($r1-$r0)*10000/$n,1))")"
kill $RP; wait 2>/dev/null
