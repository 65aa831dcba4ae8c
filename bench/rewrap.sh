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
pg() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

for p in $PROXY $ADMIN; do
  if port_busy "$p"; then die "127.0.0.1:$p is in use"; fi
done
rm -rf "$DIR"
mkdir -p "$DIR"
scripts/kong.sh install >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; die "installing the rock failed"; }
# shellcheck disable=SC1090
. <(scripts/kong.sh env)
if ! scripts/pg.sh status >/dev/null 2>&1; then
  scripts/pg.sh start >/dev/null
  PG_STARTED=1
fi

export KONG_DATABASE=postgres KONG_PG_HOST=127.0.0.1 KONG_PG_PORT=$PG_PORT KONG_PG_USER=postgres
export KONG_PG_DATABASE=kk_bench_rewrap KONG_PLUGINS=bundled,keyring KONG_KEYRING_ENABLED=on
export KONG_NGINX_WORKER_PROCESSES=2 KONG_DNS_RESOLVER=127.0.0.1:53 KONG_ANONYMOUS_REPORTS=off
export KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_STREAM_LISTEN=off KONG_CLUSTER_LISTEN=off
export KONG_PROXY_ACCESS_LOG=off KONG_ADMIN_ACCESS_LOG=off KONG_DB_UPDATE_FREQUENCY=1
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
