#!/usr/bin/env bash
# Quick comparisons for speed work (session 3); results in BENCHMARKS.md, "Session 3".
# cmp_b.sh BIN C D : email workload against smtp-sink on 12525 (started if needed)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
set -u
BIN=$1; C=${2:-64}; D=${3:-8}
PF=/tmp/peers/postfix/root
export LD_LIBRARY_PATH=$PF/usr/lib/postfix
pgrep -f "smtp-sink.*12525" >/dev/null || { setsid nohup $PF/usr/sbin/smtp-sink -c -u nobody -m 1024 127.0.0.1:12525 1024 > /tmp/peers/sink12525.log 2>&1 < /dev/null & disown; sleep 1; }
count() { tail -c 400 /tmp/peers/sink12525.log | tr '\r' '\n' | grep 'mesg=' | tail -n 1 | sed 's/.*mesg=//' ; }
export TP_BENCH_DIR=$(mktemp -d)
cd ${CFGB:-$REPO/bench/peers/email}
$BIN run --config touchpilot.yaml > /tmp/qb-tpb.log 2>&1 & TP=$!
sleep 2
c0=$(count); c0=${c0:-0}
cpu0=$(awk '{print $14+$15}' /proc/$TP/stat)
T0=$(date +%s.%N)
/usr/bin/wrk -t1 -c$C -d${D}s --latency -s /work/shared/bench/peers/post.lua http://127.0.0.1:8088/v1/inbound/tickets > /tmp/qb-wrkb.txt 2>&1
prev=-1; cur=$(count); while [ "$cur" != "$prev" ]; do sleep 1; prev=$cur; cur=$(count); done
T1=$(date +%s.%N)
cpu1=$(awk '{print $14+$15}' /proc/$TP/stat)
n=$((cur-c0)); tck=$(getconf CLK_TCK)
echo "$(basename $BIN) B c=$C rps=$(awk '/Requests\/sec:/{print $2}' /tmp/qb-wrkb.txt) delivered=$n per_s_incl_drain=$(python3 -c "print(round($n/($T1-$T0)))") cpu_ms_per_1000=$(python3 -c "print(round(($cpu1-$cpu0)*1000/$tck/max($n,1)*1000,1))")"
kill $TP; wait $TP 2>/dev/null; rm -rf $TP_BENCH_DIR
