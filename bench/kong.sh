#!/usr/bin/env bash
# make bench, real Kong part (called by scripts/bench.sh): starts two Kong OSS
# nodes, keyring ON and keyring OFF, the same settings otherwise (2 workers,
# plugins bundled,keyring, loopback listeners only), each on its own fresh
# database, runs bench/kong_bench.lua against both under Kong's `resty`, and stops
# them again, also when anything fails (trap).
#
#   node      database      proxy  admin  probe   prefix
#   on        kk_bench_on   18500  18501  18503   .tmp/bench-kong/on
#   off       kk_bench_off  18510  18511  18513   .tmp/bench-kong/off
#   upstream  -             18502  -      -       .tmp/bench-kong/upstream
#
# The upstream of the proxied requests is an nginx of its own (one worker,
# `return 200`), so the reloads of the Kong nodes in the proxy part do not
# close Kong's kept-alive upstream connections. The probe is a server block
# added to each node's own nginx (nginx_http_include) for
# bench/kong_probe.lua's plugins-iterator rebuild timing. The rock is
# installed into Kong first (scripts/kong.sh install), as `make test` does.
# PostgreSQL (scripts/pg.sh) is started when it is not running, and then
# stopped at the end. Knobs (BENCH_KONG_*): ADMIN_N, PROXY_ROUNDS,
# PROXY_SECONDS, PLUGINS, REBUILD_ROUNDS, and PARTS (admin,proxy,rebuild).
# Exits non-zero when a request gets an unexpected answer (any proxied one
# not a 200), when a stored value is not as the node's setting says, or when
# a node logs an error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.tmp/bench-kong   # not .tmp/nginx-*: scripts/test.sh removes and stops those
PG_PORT=${PGPORT:-55432}
PG_STARTED=0
RESTY_PID=
START=$(date +%s)

declare -A BASE=([on]=18500 [off]=18510)
UPSTREAM_PORT=18502
declare -A ENABLED=([on]=on [off]=off)

die() { echo "bench/kong.sh: $*" >&2; exit 1; }
log() { echo "  [kong bench] $*" >&2; }

prefix() { echo "$DIR/$1"; }

# The live master pid of a server of ours (on, off, upstream): the pid in its
# pid file, when that process is an nginx started with our prefix (never
# another process). Kong keeps its pid file under pids/, and starts nginx
# with `-p PREFIX -c nginx.conf`.
node_master() {
  local p pid file pattern
  p=$(prefix "$1")
  if [ "$1" = upstream ]; then
    file=$p/logs/nginx.pid pattern="-p $p/ -c "
  else
    file=$p/pids/nginx.pid pattern="-p $p -c "
  fi
  pid=$(cat "$file" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]] || return 1
  echo "$pid"
}

# QUIT (graceful), then TERM, then KILL of the master and its workers
stop_node() {
  local pid sig
  pid=$(node_master "$1") || return 0
  for sig in QUIT TERM; do
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      node_master "$1" >/dev/null || return 0
      sleep 0.1
    done
  done
  kill -9 $(ps -o pid= --ppid "$pid") "$pid" 2>/dev/null || true
}

# pids of the processes below $1 (ours: resty's nginx, wrk), deepest last
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

# The driver: resty-cli passes TERM on to its nginx, but the Lua code runs on
# (blocked in a wrk run, or in a loop that never yields) until it ends, so
# whatever still runs after 2 s is killed: resty, its nginx, wrk.
stop_driver() {
  [ -n "$RESTY_PID" ] && kill -0 "$RESTY_PID" 2>/dev/null || return 0
  local pids
  pids="$RESTY_PID $(descendants "$RESTY_PID" | xargs)"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$RESTY_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
  wait "$RESTY_PID" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_driver
  local n
  for n in on off upstream; do
    stop_node "$n"
  done
  for n in on off upstream; do
    if node_master "$n" >/dev/null; then
      echo "bench/kong.sh: node $n (pid $(node_master "$n")) did not stop" >&2
      rc=1
    fi
  done
  if [ "$rc" -eq 0 ]; then
    for n in on off; do
      pg -q -c "DROP DATABASE IF EXISTS kk_bench_$n WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
  if [ "$PG_STARTED" = 1 ]; then
    scripts/pg.sh stop >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "real Kong bench FAILED (exit $rc) after $(( $(date +%s) - START )) s; logs: $DIR/{on,off,upstream}/logs, $DIR/*.log" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Environment of node $1: the settings of both nodes but KONG_KEYRING_ENABLED.
node_env() {
  local n=$1 b=${BASE[$1]}
  export KONG_DATABASE=postgres KONG_PG_HOST=127.0.0.1 KONG_PG_PORT=$PG_PORT KONG_PG_USER=postgres
  export KONG_PG_DATABASE=kk_bench_$n KONG_PREFIX=$(prefix "$n")
  export KONG_PLUGINS=bundled,keyring KONG_KEYRING_ENABLED=${ENABLED[$n]}
  export KONG_NGINX_WORKER_PROCESSES=2 KONG_ANONYMOUS_REPORTS=off
  export KONG_DNS_RESOLVER=127.0.0.1:53 KONG_RESOLVER_ADDRESS=127.0.0.1:53
  # reuseport: the kernel spreads wrk's connections over both workers; without
  # it one worker may take most of them in one run and not in the next, and
  # requests/s jumps between two levels ~30% apart (both nodes alike)
  export KONG_PROXY_LISTEN="127.0.0.1:$b reuseport" KONG_ADMIN_LISTEN=127.0.0.1:$((b + 1))
  export KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_STREAM_LISTEN=off KONG_CLUSTER_LISTEN=off
  # no access log: ~10^5 lines per wrk round would be disk noise (both nodes alike)
  export KONG_PROXY_ACCESS_LOG=off KONG_ADMIN_ACCESS_LOG=off
  # bench/kong_probe.lua, bench/bench_clock.lua (so no file in bench/ may be named like a
  # module Kong requires: the driver is kong_bench.lua, not kong.lua)
  export KONG_LUA_PACKAGE_PATH="$ROOT/bench/?.lua"
  export KONG_NGINX_HTTP_INCLUDE=$DIR/$n-servers.conf
  cat >"$DIR/$n-servers.conf" <<EOF
# bench/kong.sh: the rebuild probe (loopback only)
server {
    listen 127.0.0.1:$((b + 3));
    access_log off;
    location = /rebuild { content_by_lua_block { require("kong_probe").rebuild() } }
}
EOF
}

# the proxied requests' upstream, with Kong's nginx
start_upstream() {
  local p
  p=$(prefix upstream)
  mkdir -p "$p/conf" "$p/logs"
  cat >"$p/conf/nginx.conf" <<EOF
# bench/kong.sh: upstream of the proxied requests (loopback only)
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
  "$KONG_OPENRESTY_PATH/nginx/sbin/nginx" -p "$p/" -c conf/nginx.conf >"$DIR/upstream-start.log" 2>&1 || {
    cat "$DIR/upstream-start.log" >&2; die "the upstream nginx did not start"; }
  local _
  for _ in $(seq 1 50); do
    node_master upstream >/dev/null && curl -fsS -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/" 2>/dev/null && return 0
    sleep 0.1
  done
  die "the upstream nginx is not answering"
}

start_node() {
  local n=$1
  (
    node_env "$n"
    pg -q -c "DROP DATABASE IF EXISTS kk_bench_$n WITH (FORCE)" -c "CREATE DATABASE kk_bench_$n" >/dev/null
    kong migrations bootstrap >"$DIR/$n-migrations.log" 2>&1 || {
      tail -n 20 "$DIR/$n-migrations.log" >&2; die "node $n: kong migrations bootstrap failed"; }
    kong start >"$DIR/$n-start.log" 2>&1 || {
      tail -n 20 "$DIR/$n-start.log" >&2; die "node $n: kong start failed"; }
  )
  node_master "$n" >/dev/null || die "node $n: no nginx master after kong start"
  local _
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$((BASE[$n] + 1))/status" 2>/dev/null && return 0
    sleep 0.1
  done
  die "node $n: Admin API not answering"
}

# stored values: encrypted on the ON node only (counts, never values)
check_storage() {
  local n on_cred off_cred on_plug off_plug
  q() { pg -d "kk_bench_$1" -At -c "$2" | sed -n 1p; }
  on_cred=$(q on "SELECT count(*) FILTER (WHERE password LIKE '\$ke\$%') || '/' || count(*) FROM basicauth_credentials")
  off_cred=$(q off "SELECT count(*) FILTER (WHERE password LIKE '\$ke\$%') || '/' || count(*) FROM basicauth_credentials")
  on_plug=$(q on "SELECT count(*) FILTER (WHERE config->>'secret' LIKE '\$ke\$%') || '/' || count(*) FROM plugins WHERE name = 'session'")
  off_plug=$(q off "SELECT count(*) FILTER (WHERE config->>'secret' LIKE '\$ke\$%') || '/' || count(*) FROM plugins WHERE name = 'session'")
  echo "stored encrypted: basic-auth passwords on ${on_cred}, off ${off_cred}; session secrets on ${on_plug}, off ${off_plug}"
  [ "${on_cred%/*}" = "${on_cred#*/}" ] && [ "${on_plug%/*}" = "${on_plug#*/}" ] \
    && [ "${off_cred%/*}" = 0 ] && [ "${off_plug%/*}" = 0 ] || die "stored values are not as expected"
}

# errors in the nodes' logs fail the bench (lines counted, not printed), but
# for two that Kong itself logs around the reloads of the proxy part, on
# both nodes alike: an old worker losing the events broker (lua-resty-events)
# as its generation exits, and a new worker finding no cluster-events
# timestamp in shm yet
check_logs() {
  local n count
  for n in on off upstream; do
    count=$(grep -E '\[(error|crit|alert|emerg)\]' "$(prefix "$n")/logs/error.log" \
            | grep -vF -e 'communicate(): event worker failed to communicate with broker' \
                       -e "[cluster_events] no 'at' in shm, polling events from" | grep -c . || true)
    [ "$count" = 0 ] || die "node $n: $count error lines in $(prefix "$n")/logs/error.log"
  done
}

main() {
  command -v wrk >/dev/null || die "wrk is missing: run 'make deps'"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  local n p
  for p in "${BASE[on]}" $((BASE[on] + 1)) $((BASE[on] + 3)) "${BASE[off]}" $((BASE[off] + 1)) \
           $((BASE[off] + 3)) "$UPSTREAM_PORT"; do
    if port_busy "$p"; then die "127.0.0.1:$p is in use"; fi
  done

  log "Kong: $(scripts/kong.sh home | tail -n 1)"
  scripts/kong.sh install >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; die "installing the rock failed"; }
  # shellcheck disable=SC1090
  . <(scripts/kong.sh env)
  unset KONG_PREFIX KONG_PROXY_LISTEN KONG_ADMIN_LISTEN   # set per node

  if ! scripts/pg.sh status >/dev/null 2>&1; then
    scripts/pg.sh start >/dev/null
    PG_STARTED=1
  fi

  start_upstream
  local version
  version=$(kong version 2>/dev/null | tail -n 1)
  for n in on off; do
    log "starting node $n (keyring ${ENABLED[$n]})"
    start_node "$n"
  done

  local args=(kong_version="Kong OSS $version" root="$ROOT")
  for n in on off; do
    args+=("${n}_proxy=${BASE[$n]}" "${n}_admin=$((BASE[$n] + 1))" "${n}_upstream=$UPSTREAM_PORT"
           "${n}_probe=$((BASE[$n] + 3))" "${n}_master=$(node_master "$n")")
  done
  [ -n "${BENCH_KONG_ADMIN_N:-}" ] && args+=("admin_n=$BENCH_KONG_ADMIN_N")
  [ -n "${BENCH_KONG_PROXY_ROUNDS:-}" ] && args+=("proxy_rounds=$BENCH_KONG_PROXY_ROUNDS")
  [ -n "${BENCH_KONG_PROXY_SECONDS:-}" ] && args+=("proxy_seconds=$BENCH_KONG_PROXY_SECONDS")
  [ -n "${BENCH_KONG_PLUGINS:-}" ] && args+=("plugins=$BENCH_KONG_PLUGINS")
  [ -n "${BENCH_KONG_REBUILD_ROUNDS:-}" ] && args+=("rebuild_rounds=$BENCH_KONG_REBUILD_ROUNDS")
  [ -n "${BENCH_KONG_PARTS:-}" ] && args+=("parts=$BENCH_KONG_PARTS")

  resty -I "$ROOT/bench" "$ROOT/bench/kong_bench.lua" "${args[@]}" &
  RESTY_PID=$!
  wait "$RESTY_PID" || die "bench/kong_bench.lua failed"
  RESTY_PID=

  check_storage
  check_logs
  for n in on off upstream; do
    stop_node "$n"
  done
  echo "(Kong part: $(( $(date +%s) - START )) s)"
}

main
