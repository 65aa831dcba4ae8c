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

rm -rf "$DIR"
mkdir -p "$DIR"
scripts/kong.sh install >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; exit 1; }
# shellcheck disable=SC1090
. <(scripts/kong.sh env)
if ! scripts/pg.sh status >/dev/null 2>&1; then
  scripts/pg.sh start >/dev/null
  PG_STARTED=1
fi

export KONG_DATABASE=postgres KONG_PG_HOST=127.0.0.1 KONG_PG_PORT=$PG_PORT KONG_PG_USER=postgres
export KONG_PG_DATABASE=kk_bench_cluster KONG_PLUGINS=bundled,keyring KONG_KEYRING_ENABLED=on
export KONG_NGINX_WORKER_PROCESSES=2 KONG_DNS_RESOLVER=127.0.0.1:53 KONG_ANONYMOUS_REPORTS=off
export KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_STREAM_LISTEN=off KONG_CLUSTER_LISTEN=off
export KONG_PROXY_ACCESS_LOG=off KONG_ADMIN_ACCESS_LOG=off
unset KONG_PREFIX KONG_PROXY_LISTEN KONG_ADMIN_LISTEN   # per node

resty -I "$ROOT/bench" "$ROOT/bench/cluster_bench.lua" prefix="$DIR" port=18700 pg_port="$PG_PORT" \
  frequencies="${BENCH_CLUSTER_FREQUENCIES:-1,5}" rounds="${BENCH_CLUSTER_ROUNDS:-5}"
