#!/usr/bin/env bash
# make test: cargo tests, busted unit specs under LuaJIT, nginx (2 workers)
# specs, Kong-harness specs on PostgreSQL, then the key-leak sweep over every
# error.log. Ends with one line "N passed, N failed" and exits non-zero on any
# failure. Servers are stopped on exit, even when a spec fails.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TMP=$ROOT/.tmp
mkdir -p "$TMP"
rm -rf "$TMP"/nginx-* "$TMP/keys-seen.txt"

passed=0
failed=0

stop_servers() {
  for pidfile in "$TMP"/nginx-*/logs/nginx.pid; do
    [ -f "$pidfile" ] && kill -QUIT "$(cat "$pidfile")" 2>/dev/null
  done
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

count_tap() {
  local log=$1 p f
  p=$(grep -Ec '^ok [0-9]+' "$log")
  f=$(grep -Ec '^not ok [0-9]+' "$log")
  passed=$((passed + p)); failed=$((failed + f))
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

run_busted() {
  local name=$1; shift
  echo "== busted $name"
  luajit /usr/bin/busted -o TAP "$@" 2>&1 | tee "$TMP/busted-$name.log"
  local rc=${PIPESTATUS[0]}
  count_tap "$TMP/busted-$name.log"
  # A spec file that fails to load is reported by busted as an error, not a test.
  if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$TMP/busted-$name.log"; then
    failed=$((failed + 1))
  fi
}

run_cargo
run_busted package spec/00-package
run_busted unit spec/01-unit
run_busted nginx spec/02-nginx
if scripts/pg.sh start; then
  run_busted kong spec/03-kong
else
  echo "PostgreSQL did not start"; failed=$((failed + 1))
fi
run_busted leaks spec/99-leaks
stop_servers

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
