#!/usr/bin/env bash
# make bench, rewrap part (called by scripts/bench.sh): one Kong OSS node (2
# workers, keyring on, plugins bundled,keyring) on a fresh database, 100,000
# rows with encrypted fields written with SQL by spec/rewrap_data.lua (the
# rewrap spec's generator), then bench/rewrap_bench.lua under Kong's `resty`:
# rewrap throughput without `rate` (target >= 50,000 rows/s) and the Admin
# API's p99 latency during a rate-limited rewrap against idle (target <= 2x).
# The node is stopped on exit, also when anything fails (trap).
#
#   node   database         proxy  admin  prefix
#   a      kk_bench_rewrap  18800  18801  .tmp/bench-rewrap/a
#
# Knobs (BENCH_REWRAP_*): ROWS (100000), RATE (rows/s of the limited run,
# 5000), REQUESTS (Admin API requests per latency sample, 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.tmp/bench-rewrap
PREFIX=$DIR/a
PG_PORT=${PGPORT:-55432}
PROXY=18800 ADMIN=18801
PG_STARTED=0
START=$(date +%s)

die() { echo "bench/rewrap.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -f "$PREFIX/pids/nginx.pid" ] && { kong stop -p "$PREFIX" >/dev/null 2>&1 || rc=1; }
  [ "$rc" -eq 0 ] && { pg -q -c "DROP DATABASE IF EXISTS kk_bench_rewrap WITH (FORCE)" >/dev/null 2>&1 || true; }
  [ "$PG_STARTED" = 1 ] && { scripts/pg.sh stop >/dev/null 2>&1 || true; }
  [ "$rc" -ne 0 ] && echo "rewrap bench FAILED (exit $rc) after $(( $(date +%s) - START )) s; logs: $DIR" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_prepare "$DIR" $PROXY $ADMIN || die "cannot prepare the bench"
bench_kong_env kk_bench_rewrap
export KONG_PLUGINS=bundled,keyring KONG_KEYRING_ENABLED=on KONG_DB_UPDATE_FREQUENCY=1
export KONG_PREFIX=$PREFIX KONG_PROXY_LISTEN=127.0.0.1:$PROXY KONG_ADMIN_LISTEN=127.0.0.1:$ADMIN
pg -q -c "DROP DATABASE IF EXISTS kk_bench_rewrap WITH (FORCE)" -c "CREATE DATABASE kk_bench_rewrap" >/dev/null
kong migrations bootstrap >"$DIR/migrations.log" 2>&1 || { tail -n 20 "$DIR/migrations.log" >&2; die "kong migrations bootstrap failed"; }
kong start >"$DIR/start.log" 2>&1 || { tail -n 20 "$DIR/start.log" >&2; die "kong start failed"; }

resty -I "$ROOT/spec" -I "$ROOT/bench" "$ROOT/bench/rewrap_bench.lua" admin=$ADMIN dir="$DIR" \
  psql="psql -h 127.0.0.1 -p $PG_PORT -U postgres -d kk_bench_rewrap" rows="${BENCH_REWRAP_ROWS:-100000}" \
  rate="${BENCH_REWRAP_RATE:-5000}" requests="${BENCH_REWRAP_REQUESTS:-2000}"

# errors in the node's log fail the bench (counted, not printed)
count=$(grep -E '\[(error|crit|alert|emerg)\]' "$PREFIX/logs/error.log" | grep -c . || true)
[ "$count" = 0 ] || die "$count error lines in $PREFIX/logs/error.log"
