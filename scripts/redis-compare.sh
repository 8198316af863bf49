#!/usr/bin/env bash
# The Redis front end against redis-server (issue 14): checks and benchmark.
#
# 1. Installs Debian's redis-server and redis-tools with apt-get when missing.
# 2. Builds mako (release) and starts a 1-shard 3-replica cluster with redis ports
#    (config/1c1s3r.yml: redis 7230+i), finds the leader's redis port (INFO replication).
# 3. Runs redis-cli for every supported command and checks each reply.
# 4. Runs `redis-benchmark -t set,get,incr,mset -n N` with -P 16 and without pipelining
#    against mako (once per durability mode) and against
#    `redis-server --appendonly yes --appendfsync everysec` on this machine, and prints ONE
#    table side by side with the ratio mako / redis; each row names mako's durability mode.
#
# Usage: scripts/redis-compare.sh [-n N] [-d "fsync buffered"] [-c CLIENTS] [-r KEYS] [--no-build]
#   -n N          requests per benchmark run [200000]
#   -r KEYS       redis-benchmark's -r (random keys among KEYS; default: one key per test, a
#                 hot spot that every transaction of mako's OCC contends on)
#   -d MODES      mako durability modes to benchmark, space separated [fsync]
#   -c CLIENTS    redis-benchmark connections [50]
#   --no-build    use the mako binary already built
# Not part of CI. Only the side-by-side ratio of one run means something: both sides share
# the machine, and the figures move with its load.
set -euo pipefail

N=200000
MODES="fsync"
CLIENTS=50
KEYSPACE=""
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -d) MODES=$2; shift 2 ;;
    -c) CLIENTS=$2; shift 2 ;;
    -r) KEYSPACE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MAKO=${MAKO:-$TARGET/release/mako}
REDIS_PORT=${REDIS_PORT:-7399}
WORK=$(mktemp -d /tmp/mako-redis-compare.XXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server and redis-tools (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -p mako)
fi
[ -x "$MAKO" ] || { echo "no mako binary at $MAKO" >&2; exit 1; }

# Waits until redis-cli -p PORT answers PING.
wait_ping() {
  for _ in $(seq 1 300); do
    if [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ]; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers PING on port $1" >&2
  return 1
}

# Starts a 1c1s3r mako cluster with durability $1; sets MAKO_PID and LEADER_PORT.
start_mako() {
  local dur=$1
  sed -e "s|^data_dir: .*|data_dir: $WORK/data-$dur|" "$ROOT/config/1c1s3r.yml" > "$WORK/1c1s3r-$dur.yml"
  echo "durability: $dur" >> "$WORK/1c1s3r-$dur.yml"
  "$MAKO" cluster -f "$ROOT/config/mako_raft.yml" -f "$WORK/1c1s3r-$dur.yml" > "$WORK/mako-$dur.log" 2>&1 &
  MAKO_PID=$!
  PIDS+=("$MAKO_PID")
  LEADER_PORT=""
  for _ in $(seq 1 300); do
    for p in 7230 7231 7232; do
      if redis-cli -p "$p" INFO replication 2>/dev/null | grep -q '^mako_serving:1'; then
        LEADER_PORT=$p
        break 2
      fi
    done
    sleep 0.1
  done
  [ -n "$LEADER_PORT" ] || { echo "no serving leader; log: $WORK/mako-$dur.log" >&2; exit 1; }
}

stop_mako() {
  kill "$MAKO_PID" 2>/dev/null || true
  wait "$MAKO_PID" 2>/dev/null || true
}

FAILED=0
# check EXPECTED ARGS...: redis-cli's output (errors included) must equal EXPECTED.
check() {
  local want=$1; shift
  local got
  got=$(redis-cli -p "$PORT" "$@" 2>&1 | tr -d '\r')
  if [ "$got" = "$want" ]; then
    printf '  ok    %-45s -> %s\n' "$*" "$(echo "$got" | head -1)"
  else
    printf '  FAIL  %-45s -> %q (expected %q)\n' "$*" "$got" "$want"
    FAILED=1
  fi
}
# check_has PATTERN ARGS...: redis-cli's output must contain PATTERN (grep -E).
check_has() {
  local want=$1; shift
  local got
  got=$(redis-cli -p "$PORT" "$@" 2>&1 | tr -d '\r')
  if echo "$got" | grep -qE "$want"; then
    printf '  ok    %-45s ~ %s\n' "$*" "$want"
  else
    printf '  FAIL  %-45s -> %q (expected to match %q)\n' "$*" "$got" "$want"
    FAILED=1
  fi
}

first_mode=${MODES%% *}
start_mako "$first_mode"
PORT=$LEADER_PORT
echo "== redis-cli checks against mako ($first_mode, leader's redis port $PORT)"
check PONG PING
check hello ECHO hello
check "" GET cmp:missing
check OK SET cmp:k v
check v GET cmp:k
check "" SET cmp:k w NX
check v SET cmp:k w XX GET
check_has "not supported" SET cmp:k v EX 10
check "ERR syntax error" SET cmp:k v NX XX
check OK MSET cmp:a 1 cmp:b 2
check "$(printf '1\n2\n')" MGET cmp:a cmp:b
check 2 EXISTS cmp:a cmp:b cmp:none
check 1 DEL cmp:a cmp:none
check 1 INCR cmp:n
check 11 INCRBY cmp:n 10
check 10 DECR cmp:n
check 5 DECRBY cmp:n 5
check "ERR value is not an integer or out of range" INCR cmp:k
check 4 APPEND cmp:k xyz
check 4 STRLEN cmp:k
check wxyz GETSET cmp:k new
check new GETDEL cmp:k
check "" GETDEL cmp:k
check_has "^cmp:b$" --scan --pattern 'cmp:*'
check_has "^0$" SCAN 0 MATCH 'cmp:*' COUNT 1000
check_has "^role:master" INFO replication
check_has "^mako_term:" INFO replication
check_has "^mako_released:" INFO stats
check "$(printf 'save\n')" CONFIG GET save
check "$(printf 'appendonly\nno')" CONFIG GET appendonly
check OK SELECT 0
check "ERR DB index is out of range" SELECT 1
check_has "^[0-9]+$" COMMAND COUNT
check OK CLIENT SETNAME cmp
check_has "proto" HELLO 3
check "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?" AUTH x
check "ERR unknown command 'NOSUCH', with args beginning with: 'x' " NOSUCH x
check "ERR wrong number of arguments for 'get' command" GET
check OK QUIT
printf 'MULTI\nSET cmp:m 1\nINCR cmp:m\nEXEC\n' | redis-cli -p "$PORT" > "$WORK/multi.out" 2>&1
if [ "$(tr -d '\r' < "$WORK/multi.out")" = "$(printf 'OK\nQUEUED\nQUEUED\nOK\n2')" ]; then
  echo "  ok    MULTI SET INCR EXEC"
else
  echo "  FAIL  MULTI SET INCR EXEC -> $(cat "$WORK/multi.out")"; FAILED=1
fi

# bench PORT NAME: "TEST RPS" lines for set,get,incr,mset, pipelined (P16) and not (P1).
# Each test runs on its own: redis-benchmark exits at the first error reply (its stderr is
# kept in $WORK/bench-NAME-TEST-P.err and its last line shown).
bench() {
  local port=$1 name=$2 p t err
  for p in 16 1; do
    for t in set get incr mset; do
      err="$WORK/bench-$name-$t-P$p.err"
      redis-benchmark -p "$port" -t "$t" -n "$N" -c "$CLIENTS" -P "$p" ${KEYSPACE:+-r "$KEYSPACE"} --csv 2>"$err" \
        | awk -F'","' -v p="$p" 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); split($1, t, " "); print t[1] "/P" p, $2 }' \
        || true
      if grep -qiE "error|exiting" "$err"; then
        echo "  ($name $t P$p: $(tr '\r' '\n' < "$err" | grep -iE 'error|exiting' | tail -1))" >&2
      fi
    done
  done
}

declare -A MAKO_RPS
for mode in $MODES; do
  if [ "$mode" != "$first_mode" ]; then
    stop_mako
    start_mako "$mode"
  fi
  echo "== redis-benchmark against mako ($mode, port $LEADER_PORT), n=$N, $CLIENTS clients; load:$(uptime | sed 's/.*load average//')"
  while read -r t r; do MAKO_RPS["$mode $t"]=$r; echo "  $t $r"; done < <(bench "$LEADER_PORT" "mako-$mode")
done
stop_mako

mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
  --save "" --dir "$WORK/redis" --daemonize no > "$WORK/redis-server.log" 2>&1 &
PIDS+=($!)
wait_ping "$REDIS_PORT"
echo "== redis-benchmark against redis-server (AOF everysec), n=$N, $CLIENTS clients; load:$(uptime | sed 's/.*load average//')"
declare -A REDIS_RPS
while read -r t r; do REDIS_RPS["$t"]=$r; echo "  $t $r"; done < <(bench "$REDIS_PORT" redis)

echo
echo "== side by side: requests/s (redis-benchmark -n $N -c $CLIENTS${KEYSPACE:+ -r $KEYSPACE}; mako 1 shard x 3 replicas, Raft)"
printf '%-12s %-9s %-28s %14s %14s %7s\n' test pipeline "mako durability" mako redis-aof ratio
for t in SET/P16 GET/P16 INCR/P16 MSET/P16 SET/P1 GET/P1 INCR/P1 MSET/P1; do
  for mode in $MODES; do
    m=${MAKO_RPS["$mode $t"]:-}
    r=${REDIS_RPS["$t"]:-}
    ratio=$(awk -v m="${m:-0}" -v r="${r:-0}" 'BEGIN { if (r > 0) printf "%.2f", m / r; else print "?" }')
    case $mode in
      fsync) what="fsync (majority of 3)" ;;
      buffered) what="buffered (majority of 3)" ;;
      memory) what="memory (majority of 3)" ;;
      *) what=$mode ;;
    esac
    printf '%-12s %-9s %-28s %14s %14s %7s\n' "${t%/*}" "${t#*/}" "$what" "${m:-?}" "${r:-?}" "$ratio"
  done
done
echo "(logs and data in $WORK)"
[ "$FAILED" = 0 ] || { echo "some redis-cli checks FAILED" >&2; exit 1; }
