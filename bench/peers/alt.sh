#!/usr/bin/env bash
# Alternates binaries under cmp_a.sh, ROUNDS times, and prints the medians (session 3).
# alt.sh ROUNDS C D BIN1 BIN2 ... : alternate, print all lines then medians of cpu_ms_per_1000 and rps
R=$1; C=$2; D=$3; shift 3
out=/tmp/alt-$$.txt; : > $out
for r in $(seq $R); do for b in "$@"; do $(dirname "$0")/cmp_a.sh $b $C $D ${CFG:-} | tee -a $out; done; done
python3 - $out <<'P'
import sys,re,statistics,collections
d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    b=l.split()[0]
    for k in ('rps','cpu_ms_per_1000','delivered','rss_kb'):
        m=re.search(k+r'=([\d.]+)',l)
        if m: d[b][k].append(float(m.group(1)))
for b,v in d.items():
    print(b, {k: statistics.median(x) for k,x in v.items()})
P
