#!/usr/bin/env bash
# make test: cargo tests, busted unit specs under LuaJIT, nginx (2 workers)
# specs, the plugin's specs in real Kong (scripts/kong.sh: an installed Kong
# named by KEYRING_TEST_KONG, else Kong OSS 3.9 built once into .tmp/kong) on
# a private PostgreSQL, then the key-leak sweep over every error.log. Ends
# with one line "N passed, N failed" and exits non-zero on any failure.
# Servers are stopped on exit, even when a spec fails.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TMP=$ROOT/.tmp
mkdir -p "$TMP"
rm -rf "$TMP"/nginx-* "$TMP/keys-seen.txt" "$TMP/secrets-seen.txt"

passed=0
failed=0
pending=0

# Kong prefixes keep their pid file under pids/, nginx ones under logs/
stop_servers() {
  local pidfile
  for pidfile in "$TMP"/nginx-*/logs/nginx.pid "$TMP"/nginx-*/pids/nginx.pid; do
    [ -f "$pidfile" ] && kill -QUIT "$(cat "$pidfile")" 2>/dev/null
  done
  # the vault specs' OpenBao, moto and stand-ins (spec/fixtures/standins/helpers.lua)
  for pidfile in "$TMP"/vault-servers/*/bao.pid "$TMP"/vault-servers/*/moto.pid "$TMP"/vault-servers/standin-*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null && rm -f "$pidfile"
  done
  # the cloud metadata address the aws, azure and gcp specs put on lo
  ip addr del 169.254.169.254/32 dev lo 2>/dev/null
  scripts/pg.sh stop >/dev/null 2>&1
  return 0
}
trap stop_servers EXIT

count_cargo() {
  local log=$1 p f
  p=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  f=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
}

# busted's TAP: "ok N - name", "not ok N - name", pending as "ok N - # SKIP name"
count_tap() {
  local log=$1 p f s
  s=$(grep -Ec '^ok [0-9]+ - # SKIP' "$log")
  p=$(( $(grep -Ec '^ok [0-9]+' "$log") - s ))
  f=$(grep -Ec '^not ok [0-9]+' "$log")
  passed=$((passed + p)); failed=$((failed + f)); pending=$((pending + s))
}

run_cargo() {
  echo "== cargo test"
  cargo test --no-default-features --no-fail-fast 2>&1 | tee "$TMP/cargo.log" | grep -E '^(test |test result|failures|---- )' || true
  local rc=${PIPESTATUS[0]}
  count_cargo "$TMP/cargo.log"
  if [ "$rc" -ne 0 ] && ! grep -q '^test result' "$TMP/cargo.log"; then
    echo "cargo test did not run (build failure)"; failed=$((failed + 1))
  fi
}

# run_busted NAME COMMAND...: a busted run with TAP output, counted
run_busted() {
  local name=$1; shift
  echo "== busted $name"
  "$@" 2>&1 | tee "$TMP/busted-$name.log"
  local rc=${PIPESTATUS[0]}
  count_tap "$TMP/busted-$name.log"
  # A spec file that fails to load is reported by busted as an error, not a test.
  if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$TMP/busted-$name.log"; then
    failed=$((failed + 1))
  fi
}

# Kong specs: Kong found or built, then the rock installed into it
run_kong_specs() {
  echo "== Kong: $(scripts/kong.sh home 2>&1 | tail -n 1)"
  if ! scripts/kong.sh install; then
    echo "could not install the rock into Kong"; failed=$((failed + 1)); return
  fi
  local file
  for file in spec/03-kong/*_spec.lua; do
    run_busted "kong-$(basename "$file" _spec.lua)" scripts/kong.sh busted "$file"
  done
}

BUSTED=(luajit /usr/bin/busted -o TAP)
run_cargo
run_busted package "${BUSTED[@]}" spec/00-package
run_busted unit "${BUSTED[@]}" spec/01-unit
run_busted nginx "${BUSTED[@]}" spec/02-nginx
if scripts/pg.sh start; then
  run_kong_specs
else
  echo "PostgreSQL did not start"; failed=$((failed + 1))
fi
run_busted leaks "${BUSTED[@]}" spec/99-leaks
stop_servers

[ "$pending" -eq 0 ] || echo "$pending pending (plugin bugs real Kong found; see the specs' pending notes)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
