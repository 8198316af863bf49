#!/usr/bin/env bash
# Issue 13's four targets, before/after: runs two mako binaries alternately, 3 times each,
# and prints the median of each figure. Usage: scripts/perf-targets.sh OLD_MAKO NEW_MAKO [SECS]
# Figures: released txn/s and release p99 (demo shape, memory and fsync), TPC-C 1x3 txn/s and
# release p99 (memory and fsync), TPC-C and micro single node txn/s (no replication).
set -euo pipefail
old=${1:?old mako binary}; new=${2:?new mako binary}; secs=${3:-5}
out=$(mktemp -d)
run() { # name bin args...
  local name=$1 bin=$2; shift 2
  "$bin" "$@" > "$out/$name.$(basename "$bin").$RANDOM.txt" 2>/dev/null || echo "run failed: $name $bin" >&2
}
for i in 1 2 3; do
  for b in "$old" "$new"; do
    run demo-memory "$b" demo --duration "$secs"
    run demo-fsync "$b" bench --shards 2 --replicas 3 --durability fsync --no-baseline --duration "$secs" --keys 100000
    run tpcc13-memory "$b" bench --workload tpcc --threads 1 --shards 1 --replicas 3 --no-baseline --duration "$secs"
    run tpcc13-fsync "$b" bench --workload tpcc --threads 1 --shards 1 --replicas 3 --no-baseline --durability fsync --duration "$secs"
    run tpcc1 "$b" bench --workload tpcc --threads 1 --duration "$secs"
    run micro1 "$b" bench --workload micro --threads 1 --duration "$secs"
  done
done
set +e +o pipefail # a figure a run did not print shows as "-", it does not stop the report
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
fig() { # file-glob extractor
  for f in $1; do "$2" "$f"; done | median
}
released() { # the demo's "released: N txn/s" or a cluster run's summary "released N/s"
  { grep -hoE '^released: +[0-9,]+' "$1"; grep -hoE '^\[.*\] .*released +[0-9,]+/s' "$1" | grep -oE 'released +[0-9,]+'; } | head -1 | grep -oE '[0-9,]+$' | tr -d ,; }
rel_p99() { # the demo's "p50 A us  p99 B us" or a cluster run's "release p50/p99/p99.9 A/B/C us"
  { grep -hoE '^release latency: +p50 [0-9]+ us  p99 [0-9]+' "$1" | grep -oE '[0-9]+$';
    grep -hoE 'release p50/p99/p99.9 [0-9]+/[0-9]+' "$1" | grep -oE '[0-9]+$'; } | head -1; }
committed() { grep -hoE '= [0-9,]+ txn/s' "$1" | head -1 | grep -oE '[0-9,]+' | tr -d ,; }
tpcc_p99() { grep -hoE 'release latency p50 [0-9]+ us, p99 [0-9]+' "$1" | head -1 | grep -oE '[0-9]+$'; }
printf '%-44s %12s %12s %7s\n' figure old new new/old
row() { # label glob extractor
  local o n; o=$(fig "$out/$2.$(basename "$old").*" "$3"); n=$(fig "$out/$2.$(basename "$new").*" "$3")
  printf '%-44s %12s %12s %7s\n' "$1" "$o" "$n" "$(awk -v a="$o" -v b="$n" 'BEGIN{if (a>0) printf "%.2f", b/a; else print "-"}')"
}
row "demo 2x3 memory: released txn/s" demo-memory released
row "demo 2x3 memory: release p99 us" demo-memory rel_p99
row "2x3 micro fsync: released txn/s" demo-fsync released
row "2x3 micro fsync: release p99 us" demo-fsync rel_p99
row "tpcc 1x3 memory: txn/s" tpcc13-memory committed
row "tpcc 1x3 memory: release p99 us" tpcc13-memory tpcc_p99
row "tpcc 1x3 fsync: txn/s" tpcc13-fsync committed
row "tpcc 1x3 fsync: release p99 us" tpcc13-fsync tpcc_p99
row "tpcc single node (no log): txn/s" tpcc1 committed
row "micro single node (no log): txn/s" micro1 committed
echo "raw outputs: $out"
