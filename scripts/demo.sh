#!/usr/bin/env bash
# make demo: the Kong "Keyring and Data Encryption" walkthrough, end to end,
# with the keyring plugin in a Kong-shaped node (spec/harness: real nginx with
# 2 workers, plugins keyring + basic-auth) on the private PostgreSQL.
#
# This script does the set-up (PostgreSQL, database kong_demo, an RSA-2048
# management key pair) and the clean-up; demo/kong_walkthrough.lua runs the
# steps with curl and psql. Exits non-zero when any step gives an unexpected
# answer, so it doubles as a smoke test. PostgreSQL is stopped at the end only
# when this script started it.
#
# Ports: 127.0.0.1:18400 (proxy) and 18401 (Admin API). Files: .tmp/demo
# (keys, exports), .tmp/nginx-demo-kong (nginx prefix and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PWD   # spec/helpers.lua takes the repository root from $PWD

DIR_REL=.tmp/demo
DIR=$ROOT/$DIR_REL
DB=kong_demo
PG_PORT=${PGPORT:-55432}   # scripts/pg.sh honours PGPORT and PGD too
export PGPORT=$PG_PORT
NODE=demo-kong
PREFIX=$ROOT/.tmp/nginx-$NODE
PROXY_PORT=18400
ADMIN_PORT=18401
PG_STARTED=0
START=$(date +%s%N)

export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;$ROOT/spec/?/init.lua;;"
export LUA_CPATH="$ROOT/lib/?.so;;"

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
show() { printf '$ %s\n' "$*"; }   # a command as it is run
die() { echo "DEMO FAILED: $*" >&2; exit 1; }
elapsed() { local ns=$(( $(date +%s%N) - START )); printf '%d.%01d s' $((ns / 1000000000)) $((ns / 100000000 % 10)); }

# The live master pid of our node, when its pid file names an nginx run
# with our prefix (never another process).
node_master() {
  local pid
  pid=$(cat "$PREFIX/logs/nginx.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-p $PREFIX " || return 1
  [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]] || return 1
  echo "$pid"
}

# quit, then stop, then SIGKILL (master and its workers) — our node only
stop_node() {
  local pid sig
  pid=$(node_master) || return 0
  for sig in quit stop; do
    /usr/sbin/nginx -p "$PREFIX" -c conf/nginx.conf -s "$sig" 2>/dev/null || true
    for _ in $(seq 1 50); do
      node_master >/dev/null || return 0
      sleep 0.1
    done
  done
  kill -9 $(ps -o pid= --ppid "$pid") "$pid" 2>/dev/null || true
}

# Stops our node, also one still starting when the driver died (its nginx
# runs on and daemonizes: wait until no process runs with our prefix).
stop_node_for_good() {
  local _
  for _ in $(seq 1 50); do
    stop_node
    pgrep -f -- "/usr/sbin/nginx -p $PREFIX -c" >/dev/null || return 0
    sleep 0.1
  done
}

cleanup() {
  local rc=$?
  trap - EXIT
  stop_node_for_good
  if [ "$PG_STARTED" = 1 ]; then
    show scripts/pg.sh stop
    scripts/pg.sh stop
  fi
  if [ "$rc" -eq 0 ]; then
    bold "demo done in $(elapsed)"
  else
    echo "demo FAILED (exit $rc) after $(elapsed); logs: $PREFIX/logs" >&2
  fi
  exit "$rc"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

preflight() {
  [ -f lib/kong/keyring/native.so ] || die "lib/kong/keyring/native.so is missing: run 'make demo' (or 'make build')"
  local tool
  for tool in luajit curl psql openssl /usr/sbin/nginx; do
    command -v "$tool" >/dev/null || die "$tool is missing: run 'make demo' (it installs what is missing)"
  done
  command -v ps >/dev/null || die "ps is missing (the harness counts nginx workers with it): apt-get install procps"
  stop_node   # a node left by an interrupted demo
  local port
  for port in "$PROXY_PORT" "$ADMIN_PORT"; do
    if port_busy "$port"; then die "127.0.0.1:$port is in use"; fi
  done
}

start_postgres() {
  bold "== 0. Set-up: PostgreSQL, database $DB, management RSA key pair"
  if scripts/pg.sh status >/dev/null 2>&1; then
    echo "   private PostgreSQL already running on 127.0.0.1:$PG_PORT: it stays running after the demo"
  else
    show scripts/pg.sh start
    PG_STARTED=1
    scripts/pg.sh start
  fi
}

create_database() {
  local psql=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres
              -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB")
  show "psql -h 127.0.0.1 -p $PG_PORT -U postgres -c '${psql[8]}' -c '${psql[10]}'"
  PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -v ON_ERROR_STOP=1 -q
}

# The walkthrough's "Generate a Management RSA Key Pair" (nginx reads both
# files in its master, as root; the private key is never printed).
make_key_pair() {
  rm -rf "$DIR" && mkdir -p "$DIR" && chmod 700 "$DIR"
  show "openssl genrsa -out $DIR_REL/key.pem 2048"
  openssl genrsa -out "$DIR/key.pem" 2048 2>/dev/null
  show "openssl rsa -in $DIR_REL/key.pem -pubout -out $DIR_REL/cert.pem"
  openssl rsa -in "$DIR/key.pem" -pubout -out "$DIR/cert.pem" 2>/dev/null
  show "chmod 400 $DIR_REL/cert.pem $DIR_REL/key.pem"
  chmod 400 "$DIR/cert.pem" "$DIR/key.pem"
}

run_walkthrough() {
  DEMO_DIR=$DIR_REL DEMO_DB=$DB DEMO_PG_PORT=$PG_PORT DEMO_NODE=$NODE \
  DEMO_PROXY_PORT=$PROXY_PORT DEMO_ADMIN_PORT=$ADMIN_PORT \
  DEMO_COLOR=$([ -t 1 ] && echo 1 || echo 0) \
    luajit demo/kong_walkthrough.lua
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

preflight
start_postgres
create_database
make_key_pair
run_walkthrough
