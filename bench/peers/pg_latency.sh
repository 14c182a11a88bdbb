#!/usr/bin/env bash
# Session 6: latency.py at RATE events/s against the webhook benchmark on a
# fresh PostgreSQL database (tp_lat).
#   bench/peers/pg_latency.sh BIN [RATE=1000] [DUR=15]
REPO=$(cd "$(dirname "$0")/../.." && pwd)
set -u
BIN=$1; RATE=${2:-1000}; DUR=${3:-15}
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS tp_lat" >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE tp_lat" >/dev/null
D=$(mktemp -d); cp -r $REPO/bench/peers/webhook/* $D/; cp $REPO/bench/peers/accounts.jsonl $(dirname $D)/accounts.jsonl 2>/dev/null
sed -i "s#^store:.*#store: \"postgres://postgres@127.0.0.1:5432/tp_lat\"#; s#\.\./accounts.jsonl#$REPO/bench/peers/accounts.jsonl#" $D/touchpilot.yaml
cd $D
$BIN run --config touchpilot.yaml > /tmp/pg_latency-tp.log 2>&1 & TP=$!
sleep 3
/tmp/peers/venv/bin/python $REPO/bench/peers/latency.py http://127.0.0.1:8088/v1/inbound/tickets $RATE $DUR 3 9100 64
kill $TP; wait $TP 2>/dev/null
