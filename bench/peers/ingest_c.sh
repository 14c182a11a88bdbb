#!/usr/bin/env bash
# Session 4: wrk's answer latency on the webhook workload, or with `nomatch`
# on the same playbook matching nothing (so that only ingest writes).
# usage: ingest_c.sh BIN [C=16] [nomatch]   -> p50, p99, req/s
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$1; C=${2:-16}; PY=/tmp/peers/venv/bin/python
export TP_BENCH_DIR=$(mktemp -d)
CFG=$REPO/bench/peers/webhook
if [ "${3:-}" = nomatch ]; then
  cp -r "$CFG" "$TP_BENCH_DIR/cfg"; CFG=$TP_BENCH_DIR/cfg
  sed -i "s#../accounts.jsonl#$REPO/bench/peers/accounts.jsonl#" "$CFG/touchpilot.yaml"
  sed -i 's/event: ticket.created/event: ticket.never/' "$CFG/playbooks/bench.yaml"
fi
cd /work/shared/bench/peers; $PY receiver.py 9100 > /tmp/qb-recv.log 2>&1 & RP=$!
sleep 1; cd "$CFG"; $BIN run --config touchpilot.yaml > /tmp/qb-tp.log 2>&1 & TP=$!
sleep 2
echo "$(basename $BIN) c=$C ${3:-} $(/usr/bin/wrk -t1 -c$C -d8s --latency -s /work/shared/bench/peers/post.lua http://127.0.0.1:8088/v1/inbound/tickets | awk '/^ +50%/{a=$2} /^ +99%/{b=$2} /Requests\/sec/{c=$2} END{print "p50="a" p99="b" rps="c}')"
kill $TP $RP; wait 2>/dev/null; rm -rf $TP_BENCH_DIR
