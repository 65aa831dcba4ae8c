#!/usr/bin/env bash
# A private PostgreSQL 15 for the Kong specs and the demo (docs/design.md,
# "Test environment"):
# data under .tmp/pg, 127.0.0.1:55432 only, trust auth, run as `postgres`.
#
#   scripts/pg.sh start    initdb when needed, then start (no-op when running)
#   scripts/pg.sh stop     fast stop; works after a half-failed start too
#   scripts/pg.sh status   exit 0 when running, 3 when not
#   scripts/pg.sh psql ... psql -h 127.0.0.1 -p 55432 -U postgres [args]
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PGBIN=/usr/lib/postgresql/15/bin
PGD=${PGD:-$ROOT/.tmp/pg}
PGDATA=$PGD/data
PGPORT=${PGPORT:-55432}
PIDFILE=$PGDATA/postmaster.pid

as_pg() { runuser -u postgres -- "$@"; }

# pid written on the first line of a lock file, when that process is alive
# (not a zombie: PID 1 here does not reap)
lock_pid() {
  [ -f "$1" ] || return 1
  local pid stat
  pid=$(head -n1 "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ -n "$stat" ] && [[ "$stat" != Z* ]] && echo "$pid"
}

live_pid() { lock_pid "$PIDFILE"; }

SOCKLOCK=$PGD/.s.PGSQL.$PGPORT.lock

# lock files left by a killed server block the next start
remove_stale_locks() {
  if [ -f "$PIDFILE" ] && ! live_pid >/dev/null; then
    rm -f "$PIDFILE"
  fi
  if [ -f "$SOCKLOCK" ] && ! lock_pid "$SOCKLOCK" >/dev/null; then
    rm -f "$SOCKLOCK" "$PGD/.s.PGSQL.$PGPORT"
  fi
}

status() {
  [ -f "$PGDATA/PG_VERSION" ] && live_pid >/dev/null && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

start() {
  if status; then
    echo "postgres already running on 127.0.0.1:$PGPORT (pid $(live_pid))"
    return 0
  fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    rm -rf "$PGD"
    install -d -o postgres -g postgres "$PGD"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null || {
      echo "initdb failed" >&2; return 1; }
  fi
  remove_stale_locks
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGD/server.log" -w -t 30 \
    -o "-p $PGPORT -k $PGD -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null || {
    echo "postgres failed to start; $PGD/server.log:" >&2
    tail -n 20 "$PGD/server.log" >&2
    return 1
  }
  echo "postgres running on 127.0.0.1:$PGPORT (pid $(live_pid))"
}

stop() {
  if [ -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 20 stop >/dev/null 2>&1 || true
  fi
  local pid
  if pid=$(live_pid); then
    kill -9 "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  remove_stale_locks
  echo "postgres stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status && echo "running" || { echo "stopped"; exit 3; } ;;
  psql) shift; exec psql -h 127.0.0.1 -p "$PGPORT" -U postgres "$@" ;;
  *) echo "usage: $0 start|stop|status|psql [psql args]" >&2; exit 2 ;;
esac
