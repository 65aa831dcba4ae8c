#!/usr/bin/env bash
# make demo: Kong's "Keyring and Data Encryption" walkthrough, end to end, in
# real Kong OSS (scripts/kong.sh home: KEYRING_TEST_KONG, or Kong 3.9 built
# once from ../shared/kong-oss) with the keyring plugin installed as a rock
# (scripts/kong.sh install; `make demo` runs it first), on the private
# PostgreSQL (scripts/pg.sh, started when needed and then stopped again).
#
# Every step is a real kong, curl or psql command, printed as typed and
# followed by its answer; the curl calls also get `-m 30 -o <file> -w
# '%{http_code} %{time_total}'` (not printed) so the status and curl's own time
# can be checked and shown. Any unexpected answer stops the demo with a
# non-zero exit, so it doubles as a smoke test. Key material is never printed:
# generate's `key` is redacted and export blobs are shortened.
#
# Kong: proxy 127.0.0.1:18400, Admin API 127.0.0.1:18401 (Kong's 8000/8001),
# 2 workers, prefix .tmp/nginx-demo-kong, database kong_demo. Files: .tmp/demo
# (management key pair, exports). `kong stop` runs at the end and on any
# failure; then whatever our pid files name and still runs is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DIR_REL=.tmp/demo
DIR=$ROOT/$DIR_REL
DB=kong_demo
PG_PORT=${PGPORT:-55432}   # scripts/pg.sh honours PGPORT and PGD too
export PGPORT=$PG_PORT
PREFIX=$ROOT/.tmp/nginx-demo-kong
PROXY_PORT=18400
ADMIN_PORT=18401
ADMIN=http://127.0.0.1:$ADMIN_PORT
PIDS=$ROOT/.tmp/demo-kong.pids   # every nginx pid of our node seen, for the clean-up
PG_STARTED=0
START=$(date +%s%N)
declare -A STATE=()         # ids and paths found along the way


# Output --------------------------------------------------------------------

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { echo; bold "== $1. $2"; }
say() { printf '   %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }   # a command as it is typed
die() { echo "DEMO FAILED: $*" >&2; exit 1; }
elapsed() { local ns=$(( $(date +%s%N) - START )); printf '%d.%01d s' $((ns / 1000000000)) $((ns / 100000000 % 10)); }

# A command line as one would type it (quoted only where the shell needs it).
display() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9@%+=:,./_-]+$ ]]; then out+=("$a")
    elif [[ "$a" != *"'"* ]]; then out+=("'$a'")
    else out+=("$(printf '%q' "$a")"); fi
  done
  echo "${out[*]}"
}

# json EXPR: prints the Lua expression EXPR over the JSON document on stdin
# (`j`), e.g. `json 'j.active'`, `json '#j.ids'`; nothing for nil. Kong's
# LuaJIT and cjson: no jq needed.
json() {
  luajit -e 'local cjson = require "cjson.safe"
             local j = cjson.decode(io.read("*a")) or {}
             local v = '"$1"'
             if v ~= nil and v ~= cjson.null then io.write(tostring(v)) end'
}


# Kong and its processes ----------------------------------------------------

# The live master pid of our node: the pid file names an nginx master run with
# our prefix (never another process; a zombie is not running).
node_master() {
  local pid
  pid=$(cat "$PREFIX/pids/nginx.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-p $PREFIX -c "
}

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$s" ] && [[ "$s" != Z* ]]; }

master_pid() { cat "$PREFIX/pids/nginx.pid"; }

worker_pids() { ps -o pid= --ppid "$(master_pid)" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//'; }

# Records the master and worker pids of the node (kept for the clean-up).
remember_pids() {
  { master_pid; echo; worker_pids | tr ' ' '\n'; } | grep -E '^[0-9]+$' >>"$PIDS" || true
}

# GET /keyring answers: the Admin API is up.
wait_admin() {
  local _
  for _ in $(seq 1 200); do
    [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$ADMIN/keyring")" = 200 ] && return 0
    sleep 0.05
  done
  die "the Admin API did not answer on $ADMIN within 10 s"
}

# `kong stop`, then, for any pid of ours still running (a master that did not
# stop, workers orphaned by a killed master): TERM, then KILL. Processes are
# matched by the pids recorded from our pid file and their nginx command line.
stop_node() {
  local pid _
  if node_master; then
    show kong stop
    kong stop 2>&1 | sed 's/^/   /' || true
    for _ in $(seq 1 100); do
      node_master || break
      sleep 0.1
    done
  fi
  [ -f "$PIDS" ] || return 0
  for sig in TERM KILL; do
    for pid in $(sort -u "$PIDS"); do
      if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^nginx: '; then
        echo "   left running: $(tr -s '\0 ' ' ' <"/proc/$pid/cmdline" | sed 's/ $//') (pid $pid): kill -$sig" >&2
        kill -s "$sig" "$pid" 2>/dev/null || true
      fi
    done
    for _ in $(seq 1 50); do
      local left=0
      for pid in $(sort -u "$PIDS"); do alive "$pid" && left=1; done
      [ "$left" = 0 ] && break
      sleep 0.1
    done
  done
  rm -f "$PIDS"
}


# HTTP and SQL --------------------------------------------------------------

# admin METHOD PATH WANT [curl args...]: runs curl against the Admin API,
# prints the command, the status and time, and the body (through $FILTER when
# set, e.g. to redact a key). Fails unless the status is WANT. The body is
# left in $BODY, its time in $SECONDS_TAKEN; the response file is removed at
# once (generate's answer holds key bytes).
admin() {
  local method=$1 path=$2 want=$3; shift 3
  local argv=(curl -s)
  [ "$method" = GET ] || argv+=(-X "$method")
  argv+=("$ADMIN$path" "$@")
  show "$(display "${argv[@]}")"
  local file=$DIR/response.body res status
  rm -f "$file"
  res=$("${argv[@]}" -m 30 -o "$file" -w '%{http_code} %{time_total}') || true
  BODY=$(cat "$file" 2>/dev/null || true)
  rm -f "$file"
  status=${res%% *}
  SECONDS_TAKEN=${res#* }
  [ -n "$status" ] && [ "$status" != 000 ] || die "$method $path: no answer"
  echo "HTTP $status ($SECONDS_TAKEN s)"
  local shown=$BODY
  [ -n "${FILTER:-}" ] && shown=$($FILTER <<<"$BODY")
  [ -n "$shown" ] && echo "$shown"
  [ "$status" = "$want" ] || die "$method $path answered $status, expected $want"
}

shorten() {   # an export blob's first 48 characters
  local data
  data=$(json 'j.data')
  printf '{"data":"%s... (%d characters)"}\n' "${data:0:48}" "${#data}"
}

redact_key() { printf '{"id":"%s","key":"<redacted by the demo>"}\n' "$(json 'j.id')"; }

# psql SQL: prints the command and its table; leaves the rows, unaligned and
# tab-separated, in $ROWS.
psql_show() {
  local argv=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -c "$1")
  show "$(display "${argv[@]}")"
  "${argv[@]}" -v ON_ERROR_STOP=1 || die "psql failed"
  ROWS=$("${argv[@]}" -v ON_ERROR_STOP=1 -At -F $'\t')
}

# The key id of the stored password of consumer $1 in $ROWS (username, id, password).
stored_key_of() {
  awk -F '\t' -v u="$1" '$1 == u { if (match($3, /^\$ke\$[0-9]\$-[^-]+-/)) print substr($3, 8, RLENGTH - 8) }' <<<"$ROWS"
}

credentials_rows() {
  psql_show "SELECT c.username, b.id, b.password FROM basicauth_credentials b JOIN consumers c ON c.id = b.consumer_id ORDER BY c.username"
}

not_available() { printf '{"message":"keyring key '"'"'%s'"'"' is not available on this node"}' "$1"; }

# POST /keyring/export, the blob saved without a newline so that
# `curl --data-urlencode data@<file>` sends it back as it came.
export_to() {
  FILTER=shorten admin POST /keyring/export 200
  local data
  data=$(json 'j.data' <<<"$BODY")
  [ -n "$data" ] || die "export gave no data"
  (umask 077 && printf '%s' "$data" >"$1")
  say "saved to ${1#"$ROOT"/} (${#data} bytes); the demo shows only its start"
}

create_user() {   # create_user NAME PASSWORD: consumer + basic-auth credential
  admin POST /consumers 201 -d "username=$1"
  STATE[$1_consumer]=$(json 'j.id' <<<"$BODY")
  admin POST "/consumers/$1/basic-auth" 201 -d "username=$1" -d "password=$2"
  STATE[$1_cred]=$(json 'j.id' <<<"$BODY")
  STATE[$1_hash]=$(json 'j.password' <<<"$BODY")
  [ -n "${STATE[$1_consumer]}" ] && [ -n "${STATE[$1_cred]}" ] || die "no id in the answers"
}

cred_path() { echo "/consumers/$1/basic-auth/${STATE[$1_cred]}"; }

read_cred() {   # read_cred NAME EXPECTED_PASSWORD
  admin GET "$(cred_path "$1")" 200
  local got
  got=$(json 'j.password' <<<"$BODY")
  [ "$got" = "$2" ] || die "$1's password read back as '$got', expected '$2'"
}

read_cred_unavailable() {   # read_cred_unavailable NAME KEY_ID
  admin GET "$(cred_path "$1")" 503
  [ "$BODY" = "$(not_available "$2")" ] || die "the 503 does not name key $2"
}


# The walkthrough ------------------------------------------------------------

set_up() {
  step 0 "Set-up: Kong, PostgreSQL, database $DB, management RSA key pair, migrations"
  local tool
  for tool in curl psql openssl ps awk; do
    command -v "$tool" >/dev/null || die "$tool is missing: run 'make demo' (it installs what is missing)"
  done
  show scripts/kong.sh home
  KONG_HOME=$(scripts/kong.sh home)
  echo "$KONG_HOME"
  # Kong's CLI environment: PATH (kong, resty, nginx, luajit), Kong's LUA_PATH/LUA_CPATH
  if [ -f "$KONG_HOME/kong-env.sh" ]; then
    show ". ${KONG_HOME#"$ROOT"/}/kong-env.sh"
    # shellcheck disable=SC1091
    . "$KONG_HOME/kong-env.sh"
  else
    export PATH=$KONG_HOME/bin:$PATH
    unset LUA_PATH LUA_CPATH   # Kong's own defaults (make exports the repository's)
  fi
  local rock
  rock=$(luarocks show --rock-dir kong-keyring 2>/dev/null) \
    || die "the kong-keyring rock is not installed in $KONG_HOME: run 'make demo' (or scripts/kong.sh install)"
  say "kong $(kong version 2>/dev/null | awk '{print $NF}'); plugin rock: ${rock#"$ROOT"/}"

  say "Kong's settings, as environment variables (Kong OSS ignores keyring_* lines in kong.conf):"
  local settings=(
    KONG_DATABASE=postgres KONG_PG_HOST=127.0.0.1 "KONG_PG_PORT=$PG_PORT" KONG_PG_USER=postgres
    "KONG_PG_DATABASE=$DB" "KONG_PREFIX=$PREFIX" KONG_PLUGINS=bundled,keyring
    KONG_NGINX_WORKER_PROCESSES=2 KONG_ANONYMOUS_REPORTS=off
    KONG_DNS_RESOLVER=127.0.0.1:53 KONG_RESOLVER_ADDRESS=127.0.0.1:53
    "KONG_PROXY_LISTEN=127.0.0.1:$PROXY_PORT" "KONG_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT"
    KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_STREAM_LISTEN=off
    KONG_KEYRING_ENABLED=on KONG_KEYRING_STRATEGY=cluster
    "KONG_KEYRING_PUBLIC_KEY=$DIR/cert.pem" "KONG_KEYRING_PRIVATE_KEY=$DIR/key.pem"
  )
  local s
  for s in "${settings[@]}"; do
    show "export $s"
    export "${s?}"
  done

  stop_node   # a node left by an interrupted demo
  local port
  for port in "$PROXY_PORT" "$ADMIN_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "127.0.0.1:$port is in use"; fi
  done

  if scripts/pg.sh status >/dev/null 2>&1; then
    say "private PostgreSQL already running on 127.0.0.1:$PG_PORT: it stays running after the demo"
  else
    show scripts/pg.sh start
    PG_STARTED=1
    scripts/pg.sh start
  fi
  local drop="DROP DATABASE IF EXISTS $DB WITH (FORCE)" create="CREATE DATABASE $DB"
  show "psql -h 127.0.0.1 -p $PG_PORT -U postgres -c '$drop' -c '$create'"
  PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -p "$PG_PORT" -U postgres \
    -v ON_ERROR_STOP=1 -q -c "$drop" -c "$create"

  # the walkthrough's "Generate a Management RSA Key Pair" (the private key is never printed)
  rm -rf "$DIR" && mkdir -p "$DIR" && chmod 700 "$DIR"
  show "openssl genrsa -out $DIR_REL/key.pem 2048"
  openssl genrsa -out "$DIR/key.pem" 2048 2>/dev/null
  show "openssl rsa -in $DIR_REL/key.pem -pubout -out $DIR_REL/cert.pem"
  openssl rsa -in "$DIR/key.pem" -pubout -out "$DIR/cert.pem" 2>/dev/null
  show "chmod 400 $DIR_REL/cert.pem $DIR_REL/key.pem"
  chmod 400 "$DIR/cert.pem" "$DIR/key.pem"

  show kong migrations bootstrap
  kong migrations bootstrap >"$DIR/migrations.log" 2>&1 || { cat "$DIR/migrations.log" >&2; die "migrations failed"; }
  grep -E '^keyring migrated up to|^[0-9]+ migrations processed|^[0-9]+ executed|^Database is up-to-date' \
    "$DIR/migrations.log" | sed 's/^/   /'
  grep -q '^keyring migrated up to: 000_base_keyring' "$DIR/migrations.log" || die "no keyring migration ran"
}

start_kong() {
  step 1 "Start Kong: one node, plugins bundled + keyring, keyring in cluster mode"
  show kong start
  kong start 2>&1 | sed 's/^/   /' || die "kong start failed"
  node_master || die "kong start left no running node"
  remember_pids
  wait_admin
  say "master $(master_pid), workers $(worker_pids); Admin API $ADMIN (Kong's 8001), database $DB"
}

verify_keyring() {
  step 2 "Verify the cluster keyring"
  say "No key in the database yet, so the node generated one at start-up. Only its id is shown."
  local _ active=""
  for _ in $(seq 1 100); do
    active=$(curl -s -m 2 "$ADMIN/keyring" | json 'j.active')
    [ -n "$active" ] && break
    sleep 0.05
  done
  [ -n "$active" ] || die "no key was bootstrapped within 5 s"
  admin GET /keyring 200
  [ "$(json '#j.ids .. " " .. tostring(j.ids[1] == j.active)' <<<"$BODY")" = "1 true" ] \
    || die "expected one active key"
  STATE[k1]=$(json 'j.active' <<<"$BODY")
  say "key id ${STATE[k1]} is the id, not the key material"
}

export_first() {
  step 3 "Export the keyring (encrypted to KONG_KEYRING_PUBLIC_KEY)"
  STATE[blob1]=$DIR/keyring-export-1.txt
  export_to "${STATE[blob1]}"
}

exercise_encryption() {
  step 4 "Exercise the encryption routines: consumer bob with a basic-auth credential"
  create_user bob hunter2
  say "A second consumer, alice, whose row will stay on the first key (it is never rewritten):"
  create_user alice opensesame
}

show_at_rest() {
  step 5 "What is stored: ciphertext in PostgreSQL, plaintext in the Admin API"
  credentials_rows
  local name
  for name in alice bob; do
    [ "$(stored_key_of "$name")" = "${STATE[k1]}" ] \
      || die "$name's stored password is not a \$ke\$2\$ value of key ${STATE[k1]}"
  done
  say "Each password is \$ke\$2\$-<key id>-<nonce, ciphertext, tag>, written with key ${STATE[k1]}."
  read_cred bob "${STATE[bob_hash]}"
  say "The Admin API shows the plaintext of the column. basic-auth hashes before the keyring"
  say "encrypts, so that plaintext is sha1(password .. consumer id), not 'hunter2':"
  show "printf %s%s hunter2 ${STATE[bob_consumer]} | openssl sha1"
  local sha
  sha=$(printf %s%s hunter2 "${STATE[bob_consumer]}" | openssl sha1)
  echo "$sha"
  [ "${sha##* }" = "${STATE[bob_hash]}" ] || die "sha1 differs from the Admin API's password"
}

rotate_key() {
  step 6 "Rotate key material: generate a key, activate it, export again"
  FILTER=redact_key admin POST /keyring/generate 201
  STATE[k2]=$(json 'j.id' <<<"$BODY")
  BODY=""   # generate's answer holds the key: keep it nowhere
  [ -n "${STATE[k2]}" ] && [ "${STATE[k2]}" != "${STATE[k1]}" ] || die "generate gave no new id"
  say "The API returns the raw key as a convenience; this demo does not print it."
  admin POST /keyring/activate 204 -d "key=${STATE[k2]}"
  admin GET /keyring 200
  [ "$(json 'j.active .. " " .. #j.ids' <<<"$BODY")" = "${STATE[k2]} 2" ] \
    || die "expected two keys, ${STATE[k2]} active"
  say "As the walkthrough advises, take another backup now: it holds both keys."
  STATE[blob2]=$DIR/keyring-export-2.txt
  export_to "${STATE[blob2]}"
}

rotate_field() {
  step 7 "Rotate an encrypted field: PATCH bob's password"
  admin PATCH "$(cred_path bob)" 200 -d password=correct-horse
  STATE[bob_hash2]=$(json 'j.password' <<<"$BODY")
  [ "${STATE[bob_hash2]}" != "${STATE[bob_hash]}" ] || die "PATCH did not change the password"
  credentials_rows
  [ "$(stored_key_of bob)" = "${STATE[k2]}" ] || die "bob's row is not under the new key ${STATE[k2]}"
  [ "$(stored_key_of alice)" = "${STATE[k1]}" ] || die "alice's row left the old key ${STATE[k1]}"
  say "bob's row now carries key id ${STATE[k2]}; alice's, untouched, still ${STATE[k1]} and still reads back:"
  read_cred alice "${STATE[alice_hash]}"
}

missing_keys() {
  step 8 "Missing keyring material: kong restart, without importing"
  say "Keys live only in memory (the nginx master's region; kong reload would keep them)."
  show kong restart
  kong restart 2>&1 | sed 's/^/   /' || die "kong restart failed"
  node_master || die "kong restart left no running node"
  remember_pids
  wait_admin
  say "master $(master_pid), workers $(worker_pids)"
  admin GET /keyring 200
  [ "$(json '#(j.ids or {})' <<<"$BODY")" = 0 ] || die "keys survived the restart"
  say "Reading bob's credential now fails fast, with a 503 naming the missing key"
  say "(the walkthrough's Kong EE waited 24.8 s and answered 500):"
  read_cred_unavailable bob "${STATE[k2]}"
  say "curl measured %{time_total} = $SECONDS_TAKEN s"
}

import_back() {
  step 9 "Import the keyring back"
  say "The walkthrough's \`curl .../keyring/import -d data=<exported data>\`; --data-urlencode reads"
  say "the saved blob from its file and escapes its '+', '/' and '='."
  say "First the export of step 3, made before the rotation: it holds only ${STATE[k1]}."
  admin POST /keyring/import 200 --data-urlencode "data@${STATE[blob1]#"$ROOT"/}"
  [ "$(json 'table.concat(j.ids, " ")' <<<"$BODY")" = "${STATE[k1]}" ] \
    || die "the first export should hold ${STATE[k1]} only"
  read_cred alice "${STATE[alice_hash]}"
  say "alice's row (key ${STATE[k1]}) is readable again; bob's was rewritten with ${STATE[k2]},"
  say "which that export lacks:"
  read_cred_unavailable bob "${STATE[k2]}"
  say "Then the export of step 6, made after the rotation: it holds both keys."
  admin POST /keyring/import 200 --data-urlencode "data@${STATE[blob2]#"$ROOT"/}"
  local want
  want=$(printf '%s\n' "${STATE[k1]}" "${STATE[k2]}" | sort | tr '\n' ' ')
  [ "$(json 'table.concat(j.ids, "\n")' <<<"$BODY" | sort | tr '\n' ' ')" = "$want" ] \
    && [ "$(json 'j.active' <<<"$BODY")" = "${STATE[k2]}" ] \
    || die "the second export should hold ${STATE[k1]} and ${STATE[k2]}, ${STATE[k2]} active"
  read_cred bob "${STATE[bob_hash2]}"
  say "bob's credential reads back with the password set in step 7."
}

# GET /keyring/usage: how many stored values key $1 encrypts
usage_of() {
  admin GET /keyring/usage 200 >/dev/null
  json '(j.keys["'"$1"'"] or {}).v2 or 0' <<<"$BODY"
}

rewrap_all() {
  step 10 "Rotate stored data: rewrap every value to the active key, then remove the old key"
  say "alice's row is still under ${STATE[k1]}. What uses each key (SQL counts, nothing decrypted):"
  admin GET /keyring/usage 200 >/dev/null
  json '(function() local o = {} for id, c in pairs(j.keys) do o[#o + 1] = id .. ": " .. c.v2 .. " v2, " .. c.v1 .. " v1" end table.sort(o) return table.concat(o, "; ") end)()' <<<"$BODY"
  echo
  say "Removing ${STATE[k1]} now would make those values unreadable, so it is refused:"
  admin POST /keyring/remove 409 -d "key=${STATE[k1]}"
  say "The rewrap job re-encrypts them in the background, in SQL batches (no PATCH per row):"
  admin POST /keyring/rewrap 202 >/dev/null
  local state line _
  for _ in $(seq 1 300); do
    line=$(curl -s -m 5 "$ADMIN/keyring/rewrap" | json 'j.state .. " " .. j.rows_done .. "/" .. j.rows_total .. " rows, " .. j.rewritten .. " rewritten" .. (j.rate_measured and (", " .. j.rate_measured .. " rows/s") or "") .. (j.eta_seconds and (", eta " .. j.eta_seconds .. " s") or "")')
    say "rewrap: $line"
    state=${line%% *}
    [ "$state" = done ] && break
    [ "$state" = running ] || die "rewrap job $state"
    sleep 0.2
  done
  [ "$state" = done ] || die "the rewrap job did not finish"
  [ "$(usage_of "${STATE[k1]}")" = 0 ] || die "values still under ${STATE[k1]} after the rewrap"
  credentials_rows
  [ "$(stored_key_of alice)" = "${STATE[k2]}" ] || die "alice's row is not under ${STATE[k2]}"
  admin POST /keyring/remove 204 -d "key=${STATE[k1]}"
  read_cred alice "${STATE[alice_hash]}"
  say "alice's credential reads back under ${STATE[k2]}; ${STATE[k1]} is gone from the cluster."
}

stop_kong() {
  step 11 "Stop"
  local seen pid
  seen=$(sort -u "$PIDS")
  stop_node
  node_master && die "kong stop left the node running"
  for pid in $seen; do
    alive "$pid" && die "process $pid of the node is still running"
  done
  say "none of the node's processes is left: $(echo $seen)"
}


cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ] && [ -f "$PREFIX/logs/error.log" ]; then
    echo "last lines of ${PREFIX#"$ROOT"/}/logs/error.log (info and debug lines left out):" >&2
    grep -v -e ' \[info\] ' -e ' \[debug\] ' "$PREFIX/logs/error.log" | tail -n 20 >&2 || true
  fi
  stop_node
  if [ "$PG_STARTED" = 1 ]; then
    show scripts/pg.sh stop
    scripts/pg.sh stop
  fi
  if [ "$rc" -eq 0 ]; then
    bold "demo done in $(elapsed)"
  else
    echo "demo FAILED (exit $rc) after $(elapsed); logs: ${PREFIX#"$ROOT"/}/logs" >&2
  fi
  exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "Every curl below also runs with -m 30 -o <file> -w '%{http_code} %{time_total}':"
echo "its 'HTTP' line is the status and time curl measured."
set_up
start_kong
verify_keyring
export_first
exercise_encryption
show_at_rest
rotate_key
rotate_field
missing_keys
import_back
rewrap_all
stop_kong
