#!/usr/bin/env bash
# The dry run at scale: 100,000 accounts, 1,000,000 events, 365 days, with
# the shipped example playbooks. Targets: under 60 s, peak RSS under 1 GB.
# Prints the median wall time and peak RSS of RUNS runs for each --jobs
# value, measured side by side in one invocation.
#
#   bench/simulate.sh [ACCOUNTS] [EVENTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
accounts=${1:-100000}
events=${2:-1000000}
runs=${3:-3}
data=${BENCH_DATA:-bench/data}

cargo build --release -q -p touchpilot -p touchpilot-datagen
mkdir -p "$data"
if [ ! -s "$data/accounts-$accounts.jsonl" ] || [ ! -s "$data/events-$events.jsonl" ]; then
  ./target/release/touchpilot-datagen --accounts "$accounts" --events "$events" --seed 1 \
    --from 2026-01-01T00:00:00Z --days 365 --out "$data/tmp" >/dev/null
  mv "$data/tmp/accounts.jsonl" "$data/accounts-$accounts.jsonl"
  mv "$data/tmp/events.jsonl" "$data/events-$events.jsonl"
fi

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "simulate: $accounts accounts, $events events, 365 days, $runs runs each, $(nproc) cores"
for jobs in 1 "$(nproc)"; do
  times=(); rss=(); lines=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -o "$data/time.txt" -f "%e %M" ./target/release/touchpilot simulate --config touchpilot.yaml --jobs "$jobs" \
        --accounts "$data/accounts-$accounts.jsonl" --events "$data/events-$events.jsonl" \
        --from 2026-01-01T00:00:00Z --to 2027-01-01T00:00:00Z > "$data/out.jsonl"
    lines=$(wc -l < "$data/out.jsonl")
    times+=("$(cut -d' ' -f1 "$data/time.txt")")
    rss+=("$(cut -d' ' -f2 "$data/time.txt")")
  done
  t=$(printf '%s\n' "${times[@]}" | median)
  m=$(printf '%s\n' "${rss[@]}" | median)
  echo "  --jobs $jobs: median $t s, median peak RSS $((m / 1024)) MiB, $lines actions (runs: ${times[*]})"
done
