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

# shellcheck source=lib/daemon.sh
. "$ROOT/scripts/lib/daemon.sh"

die() { echo "scripts/moto.sh: $*" >&2; exit 1; }

venv() {
  if [ ! -x "$VENV/bin/moto_server" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5' >&2
  fi
}

run_moto() {
  exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT"
}

start() {
  live_pid >/dev/null || venv
  daemon_start moto "$DIR/moto.log" "http://127.0.0.1:$PORT/moto-api/" 150 run_moto
}

case "${1:-}" in
  start) start ;;
  stop) daemon_stop ;;
  status) live_pid >/dev/null || exit 3 ;;
  python) venv; echo "$VENV/bin/python" ;;
  venv) venv ;;
  *) echo "usage: $0 start|stop|status|python|venv" >&2; exit 2 ;;
esac
