#!/usr/bin/env bash
# make bench, cluster part (called by scripts/bench.sh): two real Kong nodes
# with the keyring on one fresh database (kk_bench_cluster), ports 18700-18719,
# prefixes under .tmp/bench-cluster; bench/cluster_bench.lua measures how fast
# keys and activations reach the other node and how fast a restarted node
# has the ring, at db_update_frequency 1 and 5 (BENCH_CLUSTER_FREQUENCIES,
# BENCH_CLUSTER_ROUNDS). Nodes are stopped on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.tmp/bench-cluster
PG_PORT=${PGPORT:-55432}
PG_STARTED=0
# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  local rc=$?
  local n
  for n in a b; do
    [ -f "$DIR/$n/pids/nginx.pid" ] && kong stop -p "$DIR/$n" >/dev/null 2>&1 || true
  done
  [ "$PG_STARTED" = 1 ] && scripts/pg.sh stop >/dev/null 2>&1 || true
  [ "$rc" -eq 0 ] || echo "cluster bench FAILED (exit $rc); logs: $DIR" >&2
  exit "$rc"
}
trap cleanup EXIT

bench_prepare "$DIR" 18700 18701 18710 18711
bench_kong_env kk_bench_cluster
export KONG_PLUGINS=bundled,keyring KONG_KEYRING_ENABLED=on
unset KONG_PREFIX KONG_PROXY_LISTEN KONG_ADMIN_LISTEN   # per node

resty -I "$ROOT/bench" "$ROOT/bench/cluster_bench.lua" prefix="$DIR" port=18700 pg_port="$PG_PORT" \
  frequencies="${BENCH_CLUSTER_FREQUENCIES:-1,5}" rounds="${BENCH_CLUSTER_ROUNDS:-5}"
