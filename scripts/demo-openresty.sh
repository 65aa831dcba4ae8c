#!/usr/bin/env bash
# make demo-openresty: nginx with 2 workers and kong.keyring (no Kong, no
# database), driven by real HTTP calls.
# Shows a key generated in one worker being used by the other, round trips,
# authenticated contexts and rotation. Stops nginx on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=$ROOT/.tmp/demo-openresty
PORT=${DEMO_PORT:-18409}
URL=http://127.0.0.1:$PORT

rm -rf "$P" && mkdir -p "$P/conf" "$P/logs" "$P/tmp"
cat >"$P/conf/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  lua_package_path "$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/demo/?.lua;;";
  lua_package_cpath "$ROOT/lib/?.so;;";
  init_by_lua_block { assert(require("kong.keyring").init()) }
  init_worker_by_lua_block { assert(require("kong.keyring").init_worker()) }
  server {
    listen 127.0.0.1:$PORT reuseport;
    location / { content_by_lua_block { require("keyring_demo").handle() } }
  }
}
CONF

stop() { [ -f "$P/logs/nginx.pid" ] && /usr/sbin/nginx -p "$P" -c conf/nginx.conf -s quit 2>/dev/null || true; }
trap stop EXIT
/usr/sbin/nginx -p "$P" -c conf/nginx.conf 2>"$P/logs/startup.stderr"
until curl -sf "$URL/keys" >/dev/null; do sleep 0.1; done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
call() { # method path [body]; prints the request and the JSON answer
  local m=$1 path=$2 data=${3-}
  printf '$ curl -X %s %s%s\n' "$m" "$path" "${data:+ --data '$data'}"
  if [ -n "$data" ]; then curl -s -X "$m" "$URL$path" --data-binary "$data"; else curl -s -X "$m" "$URL$path"; fi
}
json() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
worker() { sed -n 's/.*"worker":\([0-9]*\).*/\1/p'; }
# repeat a call until another worker than $1 answers (fresh connections spread over both)
on_other_worker() {
  local not=$1; shift
  for _ in $(seq 1 50); do
    out=$(call "$@")
    [ "$(worker <<<"$out")" != "$not" ] && { echo "$out"; return; }
  done
  echo "$out"
}

echo "nginx master $(cat "$P/logs/nginx.pid"), 2 workers: $(ps -o pid= --ppid "$(cat "$P/logs/nginx.pid")" | xargs)"

step "1. the ring is empty at start"
call GET /keys

step "2. generate a key in one worker (not active yet)"
out=$(call POST /generate); echo "$out"
K1=$(json id <<<"$out"); W1=$(worker <<<"$out")

step "3. activate it from the OTHER worker: the shared region already has it"
on_other_worker "$W1" POST "/activate?id=$K1"

step "4. encrypt in one worker, decrypt in the other (context binds the value to a row)"
out=$(call POST "/encrypt?ctx=basicauth_credentials:fc46ce48" "s3cr3t-password"); echo "$out"
V1=$(json value <<<"$out"); W=$(worker <<<"$out")
on_other_worker "$W" POST "/decrypt?ctx=basicauth_credentials:fc46ce48" "$V1"

step "5. the same value under another row's context is refused (authenticated)"
call POST "/decrypt?ctx=basicauth_credentials:another-row" "$V1"

step "6. rotation: generate and activate a new key; new writes carry its id"
out=$(call POST /generate); echo "$out"; K2=$(json id <<<"$out")
call POST "/activate?id=$K2"
call POST "/encrypt?ctx=basicauth_credentials:fc46ce48" "s3cr3t-password"

step "7. values written under the old key stay readable"
call POST "/decrypt?ctx=basicauth_credentials:fc46ce48" "$V1"

step "8. the active key cannot be removed; the old one can, and its values then fail fast"
call POST "/remove?id=$K2"
call POST "/remove?id=$K1"
call POST "/decrypt?ctx=basicauth_credentials:fc46ce48" "$V1"

step "9. ring after rotation"
call GET /keys
echo
echo "demo done; nginx stopped."
