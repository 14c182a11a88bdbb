#!/usr/bin/env bash
# Session 6: N sequential requests (one keep-alive connection, seqlat.py) to the
# webhook benchmark on a fresh PostgreSQL database; prints p50/p90 and the CPU
# per request of the PostgreSQL backends and of the daemon.
#   bench/peers/pg_seq.sh BIN [N=300]
REPO=$(cd "$(dirname "$0")/../.." && pwd)
set -u
BIN=$1; N=${2:-300}
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS tp_lat" >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE tp_lat" >/dev/null
D=$(mktemp -d); cp -r $REPO/bench/peers/webhook/* $D/
sed -i "s#^store:.*#store: \"postgres://postgres@127.0.0.1:5432/tp_lat\"#; s#\.\./accounts.jsonl#$REPO/bench/peers/accounts.jsonl#" $D/touchpilot.yaml
cd /work/shared/bench/peers; /tmp/peers/venv/bin/python receiver.py 9100 > /dev/null 2>&1 & RP=$!
cd $D; $BIN run --config touchpilot.yaml > /tmp/pg_seq-tp.log 2>&1 & TP=$!
sleep 3
pgcpu() { local s=0; for p in $(pgrep -u postgres postgres); do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $s; }
p0=$(pgcpu); t0=$(awk '{print $14+$15}' /proc/$TP/stat)
out=$(python3 $REPO/bench/peers/seqlat.py http://127.0.0.1:8088/v1/inbound/tickets $N)
sleep 1
p1=$(pgcpu); t1=$(awk '{print $14+$15}' /proc/$TP/stat)
echo "$(basename $BIN) $out pg_cpu_us_per_req=$(( (p1-p0)*10000/N )) tp_cpu_us_per_req=$(( (t1-t0)*10000/N ))"
kill $TP $RP; wait 2>/dev/null
