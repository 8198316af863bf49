#!/usr/bin/env bash
# Figures of mako-rs deployments on this machine (issue "Real deployment", section Numbers).
#
# For each topology (1c1s3r, 2c2s3r) and durability (memory, fsync):
#   - `mako bench -f ...` against `mako cluster` processes: micro workload and TPC-C (small
#     population), released txn/s and client-observed release latency;
#   - the same with every leader process pinned to CPU 0 and every follower to CPU 1
#     (`taskset`), to separate the leader's protocol cost from CPU sharing;
#   - the in-process figures of the same shape (`mako bench --shards S --replicas 3`).
# Usage: scripts/deploy-figures.sh [SECONDS] [OUT_DIR]   (release build: cargo build --release)
# Not part of CI. Every line of the summary names its durability, shape, clients and workload.
set -euo pipefail

SECS=${1:-10}
OUT=${2:-$(mktemp -d /tmp/mako-figures.XXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAKO=${MAKO:-$ROOT/target/release/mako}
CLIENTS=${CLIENTS:-8}
mkdir -p "$OUT"
[ -x "$MAKO" ] || { echo "build first: cargo build --release (looked for $MAKO)" >&2; exit 1; }

summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

json_field() { # FILE EXPR: a field of a JSON report (the first object of several; python3 needed)
  python3 -c "
import json,sys
t=open(sys.argv[1]).read()
try:
    d=json.loads(t)
except ValueError:
    d=json.loads(t.splitlines()[0])
print($2)" "$1" 2>/dev/null || echo "?"
}

# Starts every site of the config files in "$@"; with PIN=1 leaders (replica 0) on CPU 0
# and followers on CPU 1. Sets PIDS.
start_sites() {
  PIDS=()
  local sites
  # Site names from the topology file (TOPO_FILE).
  sites=$(grep -oE 'name: *s[0-9]+r[0-9]+' "$TOPO_FILE" | awk '{print $2}' | tr '\n' ' ')
  for s in $sites; do
    local cpu_prefix=()
    if [ "${PIN:-0}" = 1 ]; then
      if [[ $s == *r0 ]]; then cpu_prefix=(taskset -c 0); else cpu_prefix=(taskset -c 1); fi
    fi
    "${cpu_prefix[@]}" "$MAKO" server "$@" --site "$s" >"$OUT/$s.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 1 300); do
    if "$MAKO" status "$@" >/dev/null 2>&1; then
      # Every site answers; wait until each shard serves.
      if "$MAKO" status "$@" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sh={s["shard"] for s in d["sites"]}; ok={s["shard"] for s in d["sites"] if s.get("serving")}; sys.exit(0 if sh==ok else 1)'; then
        return 0
      fi
    fi
    sleep 0.1
  done
  echo "deployment did not become ready; logs in $OUT" >&2
  return 1
}

stop_sites() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

for topo in 1c1s3r 2c2s3r; do
  shards=${topo:2:1}
  for dur in memory fsync; do
    for pin in 0 1; do
      data=$(mktemp -d /tmp/mako-fig-data.XXXX)
      overlay="$OUT/overlay-$topo-$dur.yml"
      printf 'durability: %s\ndata_dir: %s\n' "$dur" "$data" > "$overlay"
      files=(-f "$ROOT/config/mako_raft.yml" -f "$ROOT/config/$topo.yml" -f "$ROOT/config/tpcc.yml" -f "$overlay")
      tag="$topo $dur $([ $pin = 1 ] && echo 'pinned(leaders cpu0, followers cpu1)' || echo unpinned)"
      TOPO_FILE="$ROOT/config/$topo.yml" PIN=$pin start_sites "${files[@]}"
      micro="$OUT/micro-$topo-$dur-$pin.json"
      "$MAKO" bench "${files[@]}" --workload micro --clients "$CLIENTS" --duration "$SECS" --json >"$micro" 2>/dev/null || true
      tpcc="$OUT/tpcc-$topo-$dur-$pin.json"
      "$MAKO" bench "${files[@]}" --workload tpcc --small --warehouses 4 --clients 4 --duration "$SECS" --json >"$tpcc" 2>/dev/null || true
      stop_sites
      rm -rf "$data"
      note "$tag | micro clients=$CLIENTS read=50%: released/s $(json_field "$micro" 'round(d["released_per_sec"])') cross-shard $(json_field "$micro" 'round(d["cross_shard_pct"],1)')% release p50 $(json_field "$micro" 'round(d["release_p50_us"]/1000,2)') ms p99 $(json_field "$micro" 'round(d["release_p99_us"]/1000,2)') ms"
      note "$tag | tpcc small W=4 clients=4: released/s $(json_field "$tpcc" 'round(d["released_per_sec"])') cross-shard $(json_field "$tpcc" 'round(d["distributed_pct"],1)')% release p50 $(json_field "$tpcc" 'round(d["release_p50_us"]/1000,2)') ms p99 $(json_field "$tpcc" 'round(d["release_p99_us"]/1000,2)') ms"
    done
    # In-process, same shape (one process, in-memory network).
    inproc="$OUT/inproc-$topo-$dur.json"
    "$MAKO" bench --shards "$shards" --replicas 3 --threads 2 --durability "$dur" --duration "$SECS" --json >"$inproc" 2>/dev/null || true
    inproc_tpcc="$OUT/inproc-tpcc-$topo-$dur.json"
    "$MAKO" bench --workload tpcc --shards "$shards" --replicas 3 --warehouses 4 --threads 4 --durability "$dur" --duration "$SECS" --json >"$inproc_tpcc" 2>/dev/null || true
    note "$topo $dur in-process | tpcc spec W=4 threads=4: committed/s $(json_field "$inproc_tpcc" 'round(d["tpcc"]["txn_per_sec"])') cross-shard $(json_field "$inproc_tpcc" 'round(d["distributed_pct"],1)')% release p50 $(json_field "$inproc_tpcc" 'round(d["release_p50_us"]/1000,2)') ms p99 $(json_field "$inproc_tpcc" 'round(d["release_p99_us"]/1000,2)') ms"
    note "$topo $dur in-process | micro threads=2/shard read=50%: released/s $(json_field "$inproc" 'round(d["released_per_sec"])') cross-shard $(json_field "$inproc" 'round(d["distributed_pct"],1)')% release p50 $(json_field "$inproc" 'round(d["release_p50_us"]/1000,2)') ms p99 $(json_field "$inproc" 'round(d["release_p99_us"]/1000,2)') ms"
  done
done
echo "figures and raw reports in $OUT"
