#!/usr/bin/env bash
# moto_server (AWS Secrets Manager, STS, IAM) on loopback for the aws vault
# specs.
#
#   scripts/moto.sh start    start one (no-op when its pid file names a live server)
#   scripts/moto.sh stop     stop it (by pid file)
#   scripts/moto.sh status   exit 0 when running, 3 when not
#   scripts/moto.sh python   print the venv's python (boto3 is in it)
#   scripts/moto.sh venv     create the venv only (scripts/deps.sh)
#
# Settings (environment):
#   MOTO_PORT   listen port on 127.0.0.1 (default 18250)
#   MOTO_DIR    pid file and log directory (default .tmp/moto-$MOTO_PORT)
# The venv .tmp/venv-moto holds PyPI's moto[server]==5.2.5.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.tmp/venv-moto
PORT=${MOTO_PORT:-18250}
DIR=${MOTO_DIR:-$ROOT/.tmp/moto-$PORT}
PIDFILE=$DIR/moto.pid

die() { echo "scripts/moto.sh: $*" >&2; exit 1; }

venv() {
  if [ ! -x "$VENV/bin/moto_server" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5' >&2
  fi
}

live_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid stat
  pid=$(cat "$PIDFILE")
  stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ -n "$stat" ] && [[ "$stat" != Z* ]] && echo "$pid"
}

start() {
  if live_pid >/dev/null; then
    echo "moto already running on 127.0.0.1:$PORT (pid $(live_pid))"
    return 0
  fi
  venv
  mkdir -p "$DIR"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$DIR/moto.log" 2>&1 &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 150); do
    if curl -sf "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; then
      echo "moto running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    live_pid >/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$DIR/moto.log" >&2
  stop
  die "moto did not start (log: $DIR/moto.log)"
}

stop() {
  local pid i
  if pid=$(live_pid); then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      live_pid >/dev/null || break
      sleep 0.1
    done
    live_pid >/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$PIDFILE"
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) live_pid >/dev/null || exit 3 ;;
  python) venv; echo "$VENV/bin/python" ;;
  venv) venv ;;
  *) echo "usage: $0 start|stop|status|python|venv" >&2; exit 2 ;;
esac
