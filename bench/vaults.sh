#!/usr/bin/env bash
# make bench, vault part (called by scripts/bench.sh): one Kong OSS node (2
# workers, vaults = bundled,hcv, KONG_VAULT_ROTATION_INTERVAL=1, the fixture
# plugin ref-probe) and an OpenBao dev server, then bench/vaults_bench.lua
# under Kong's `resty`; both stopped again, also when anything fails.
#
#   what     port         database        prefix
#   Kong     18600 proxy  kk_bench_vault  .tmp/bench-vault/kong
#            18601 admin
#   OpenBao  18602 (+18603 cluster)       .tmp/bench-vault/openbao
#
# Knobs (BENCH_VAULT_*): REFS (1000), ROUNDS (5), SECONDS (2),
# LATENCY_SECONDS (4 per window), LATENCY_WINDOWS (3 per state). Exits
# non-zero when an answer is not as expected or
# the node logs an error; prints PASS/FAIL against the p99 target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.tmp/bench-vault
PREFIX=$DIR/kong
PG_PORT=${PGPORT:-55432}
PROXY=18600 ADMIN=18601 BAO=18602
PG_STARTED=0
START=$(date +%s)

die() { echo "bench/vaults.sh: $*" >&2; exit 1; }
log() { echo "  [vault bench] $*" >&2; }
# shellcheck source=bench/lib.sh
. bench/lib.sh
bao() { BAO_PORT=$BAO BAO_DIR=$DIR/openbao scripts/openbao.sh "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -f "$PREFIX/pids/nginx.pid" ] && { kong stop -p "$PREFIX" >/dev/null 2>&1 || rc=1; }
  bao stop >/dev/null 2>&1 || true
  [ "$rc" -eq 0 ] && { pg -q -c "DROP DATABASE IF EXISTS kk_bench_vault WITH (FORCE)" >/dev/null 2>&1 || true; }
  [ "$PG_STARTED" = 1 ] && { scripts/pg.sh stop >/dev/null 2>&1 || true; }
  [ "$rc" -ne 0 ] && echo "vault bench FAILED (exit $rc) after $(( $(date +%s) - START )) s; logs: $DIR" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v wrk >/dev/null || die "wrk is missing: run 'make deps'"
bench_prepare "$DIR" $PROXY $ADMIN $BAO $((BAO + 1)) || die "cannot prepare the bench"
bao start >/dev/null

bench_kong_env kk_bench_vault
export KONG_PREFIX=$PREFIX
export KONG_PLUGINS=bundled,ref-probe KONG_VAULTS=bundled,hcv KONG_VAULT_ROTATION_INTERVAL=1
export KONG_VAULT_HCV_PROTOCOL=http KONG_VAULT_HCV_HOST=127.0.0.1 KONG_VAULT_HCV_PORT=$BAO
export KONG_VAULT_HCV_KV=v2 KONG_VAULT_HCV_TOKEN=root
export KONG_LUA_PACKAGE_PATH="$ROOT/spec/fixtures/?.lua;$ROOT/spec/fixtures/?/init.lua"
export KONG_PROXY_LISTEN="127.0.0.1:$PROXY reuseport" KONG_ADMIN_LISTEN=127.0.0.1:$ADMIN
pg -q -c "DROP DATABASE IF EXISTS kk_bench_vault WITH (FORCE)" -c "CREATE DATABASE kk_bench_vault" >/dev/null
kong migrations bootstrap >"$DIR/migrations.log" 2>&1 || { tail -n 20 "$DIR/migrations.log" >&2; die "migrations failed"; }
kong start >"$DIR/start.log" 2>&1 || { tail -n 20 "$DIR/start.log" >&2; die "kong start failed"; }
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/status" 2>/dev/null && break
  sleep 0.1
done

args=(proxy=$PROXY admin=$ADMIN bao=$BAO root="$ROOT" master="$(cat "$PREFIX/pids/nginx.pid")"
      kong_version="Kong OSS $(kong version 2>/dev/null | tail -n 1)"
      bao_version="$("$(bao bin)" version 2>/dev/null | awk '{print $2; exit}')")
[ -n "${BENCH_VAULT_REFS:-}" ] && args+=("refs=$BENCH_VAULT_REFS")
[ -n "${BENCH_VAULT_ROUNDS:-}" ] && args+=("rounds=$BENCH_VAULT_ROUNDS")
[ -n "${BENCH_VAULT_SECONDS:-}" ] && args+=("seconds=$BENCH_VAULT_SECONDS")
[ -n "${BENCH_VAULT_LATENCY_SECONDS:-}" ] && args+=("latency_seconds=$BENCH_VAULT_LATENCY_SECONDS")
[ -n "${BENCH_VAULT_LATENCY_WINDOWS:-}" ] && args+=("latency_windows=$BENCH_VAULT_LATENCY_WINDOWS")
resty -I "$ROOT/bench" "$ROOT/bench/vaults_bench.lua" "${args[@]}" || die "bench/vaults_bench.lua failed"

count=$(grep -E '\[(error|crit|alert|emerg)\]' "$PREFIX/logs/error.log" | grep -c . || true)
[ "$count" = 0 ] || die "$count error lines in $PREFIX/logs/error.log"
echo "(vault part: $(( $(date +%s) - START )) s)"
