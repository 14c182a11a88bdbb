#!/usr/bin/env bash
# Session 6: the shared receiver.py alone under wrk, POSTed the body our
# webhook template renders (hookpost.lua): the most it accepts on this machine.
#   bench/peers/recv_alone.sh C D
REPO=$(cd "$(dirname "$0")/../.." && pwd)
/tmp/peers/venv/bin/python /work/shared/bench/peers/receiver.py 9100 >/dev/null 2>&1 & RP=$!; sleep 1
r=$(/usr/bin/wrk -t1 -c$1 -d${2}s -s $REPO/bench/peers/hookpost.lua http://127.0.0.1:9100/hook | awk '/Requests\/sec/{print $2}')
echo "receiver alone c=$1 rps=$r"
kill $RP; wait $RP 2>/dev/null
