# A loopback server kept by pid file, for scripts/openbao.sh and
# scripts/moto.sh (sourced; they set PIDFILE and PORT and define die).
#
#   live_pid                         the pid in $PIDFILE when it is alive (not a zombie)
#   daemon_start NAME LOG URL TRIES CMD...
#                                    start CMD in the background (a shell function
#                                    should `exec` the server), unless one is alive;
#                                    wait up to TRIES x 0.1 s for URL to answer
#   daemon_stop                      TERM, up to 5 s, then KILL; removes $PIDFILE

live_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid stat
  pid=$(cat "$PIDFILE")
  stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ -n "$stat" ] && [[ "$stat" != Z* ]] && echo "$pid"
}

daemon_start() {
  local name=$1 log=$2 url=$3 tries=$4 i
  shift 4
  if live_pid >/dev/null; then
    echo "$name already running on 127.0.0.1:$PORT (pid $(live_pid))"
    return 0
  fi
  mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$log")"
  "$@" >"$log" 2>&1 &
  echo $! >"$PIDFILE"
  for i in $(seq 1 "$tries"); do
    if curl -sf "$url" >/dev/null 2>&1; then
      echo "$name running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    live_pid >/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  daemon_stop
  die "$name did not start (log: $log)"
}

daemon_stop() {
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
