#!/usr/bin/env bash
# Raft versus Multi-Paxos on this machine, in one go (issue "Multi-Paxos behind the same
# replication API", section Benchmark). Both protocols run in the same invocation of each
# bench, one after the other, repeats interleaved; every figure line names its protocol and
# durability.
#
#   1. The raw group benchmark at 4 KiB entries, 1 group of 3 replicas: memory and fsync
#      durability, in-memory and TCP transport. Each configuration first measures the ceiling
#      (the bare log store and the bare transport with the same settings) and prints each
#      protocol's entries/s as a fraction of it, then the Raft/Paxos ratios, unthrottled
#      (median of REPEAT runs) and paced (both at half the lower unthrottled rate).
#   2. The in-process cluster bench, micro workload: 1 shard x 3 and 2 shards x 3 replicas,
#      1 and 2 worker threads per shard: speculative commits/s, released/s, release latency
#      p50/p99, aborts, unknown, side by side with Raft/Paxos ratios (median of REPEAT runs).
#
# Usage: scripts/raft-vs-paxos.sh [OUT_DIR]      (build first: cargo build --release -p mako)
# Environment: MAKO (binary), SECS (measured seconds per run, default 2), REPEAT (default 3),
#   DURABILITY (cluster runs, default "memory"; e.g. "memory fsync"), KEYS (default 100000),
#   PROTOCOLS (default "raft,paxos").
# Runs in OUT_DIR (the benches' logs go there, so fsync figures are for that file system).
# Exits non-zero if any run failed (a protocol not built in fails with a clear message).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/raft-vs-paxos.XXXX)}
MAKO=${MAKO:-$ROOT/target/release/mako}
SECS=${SECS:-2}
REPEAT=${REPEAT:-3}
DURABILITY=${DURABILITY:-memory}
KEYS=${KEYS:-100000}
PROTOCOLS=${PROTOCOLS:-raft,paxos}
[ -x "$MAKO" ] || { echo "build first: cargo build --release -p mako (looked for $MAKO)" >&2; exit 1; }
mkdir -p "$OUT"
cd "$OUT" || exit 1

summary="$OUT/summary.txt"
: > "$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }
run() { # NAME ARGS...: runs mako, output to NAME.txt and the summary; notes a failure
  local name=$1
  shift
  note "\$ mako $*"
  # The summary leaves out the once-a-second progress lines.
  "$MAKO" "$@" 2>"$OUT/$name.err" | tee "$OUT/$name.txt" \
    | grep --line-buffered -v -E '^\[ *[0-9.]+s/|^loading ' | tee -a "$summary"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    failed=1
    note "!! $name exited $rc: $(grep -m1 -E '^Error' "$OUT/$name.err" || tail -n1 "$OUT/$name.err")"
  fi
  note ""
}

started=$(date +%s)
note "# Raft vs Multi-Paxos, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $MAKO"
note "# protocols $PROTOCOLS; ${SECS}s measured per run; median of $REPEAT where repeated; out: $OUT"
note ""

note "## 1. Raw group bench, 4 KiB entries, 1 group x 3 replicas (vs the bare log store / transport ceiling)"
run group --log-level error bench group --replication "$PROTOCOLS" \
  --entry-size 4096 --groups 1 --net mem,tcp --durability memory,fsync \
  --duration "$SECS" --repeat "$REPEAT"

note "## 2. In-process cluster bench, micro workload (read-only 50%), $KEYS keys"
for d in $DURABILITY; do
  for shards in 1 2; do
    for threads in 1 2; do
      run "cluster-$d-${shards}x3-t$threads" --log-level error bench --replication "$PROTOCOLS" \
        --shards "$shards" --replicas 3 --threads "$threads" --keys "$KEYS" \
        --durability "$d" --duration "$SECS" --repeat "$REPEAT" --no-baseline
    done
  done
done

note "# done in $(( $(date +%s) - started )) s; summary: $summary"
exit $failed
