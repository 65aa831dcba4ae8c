#!/usr/bin/env bash
# The real Kong the plugin is tested and demonstrated in.
#
#   scripts/kong.sh home       print the Kong install directory (builds one when needed)
#   scripts/kong.sh install    `luarocks make` this repository's rockspec into that Kong
#   scripts/kong.sh env        print the shell exports for running Kong and its spec helpers
#   scripts/kong.sh busted F.. run spec files with Kong's bin/busted (one process per file)
#
# Which Kong:
#   KEYRING_TEST_KONG=DIR      an installed Kong: DIR holds its kong-env.sh (a
#                              ../shared/kong-oss/build.sh prefix) or its bin/kong
#   KEYRING_TEST_KONG_SPEC=DIR the Kong source tree of the same version holding
#                              spec/helpers.lua and bin/busted (default: DIR/kong-*)
#   otherwise Kong OSS 3.9 is built once from ../shared/kong-oss into .tmp/kong
#   (build.sh keeps a stamp: a second call with unchanged sources does nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TMP=$ROOT/.tmp
PG_PORT=${PGPORT:-55432}

die() { echo "scripts/kong.sh: $*" >&2; exit 1; }

kong_home() {
  if [ -n "${KEYRING_TEST_KONG:-}" ]; then
    local dir
    dir=$(cd "$KEYRING_TEST_KONG" 2>/dev/null && pwd) || die "KEYRING_TEST_KONG=$KEYRING_TEST_KONG is not a directory"
    [ -f "$dir/kong-env.sh" ] || [ -x "$dir/bin/kong" ] \
      || die "KEYRING_TEST_KONG=$dir holds neither kong-env.sh nor bin/kong"
    echo "$dir"
    return
  fi
  local src=$ROOT/../shared/kong-oss
  [ -x "$src/build.sh" ] || die "no KEYRING_TEST_KONG and no $src/build.sh to build Kong from"
  mkdir -p "$TMP"
  if ! "$src/build.sh" "$TMP/kong" >"$TMP/kong-build.log" 2>&1; then
    tail -n 30 "$TMP/kong-build.log" >&2
    die "building Kong failed (log: .tmp/kong-build.log)"
  fi
  echo "$TMP/kong"
}

# The Kong source tree whose spec/helpers.lua drives the specs.
spec_tree() {
  local home=$1 d
  if [ -n "${KEYRING_TEST_KONG_SPEC:-}" ]; then
    d=$KEYRING_TEST_KONG_SPEC
  else
    d=$(ls -d "$home"/kong-[0-9]* 2>/dev/null | head -n1 || true)
  fi
  [ -n "$d" ] && [ -f "$d/spec/helpers.lua" ] && [ -f "$d/bin/busted" ] \
    || die "no Kong source tree with spec/helpers.lua and bin/busted: set KEYRING_TEST_KONG_SPEC"
  (cd "$d" && pwd)
}

# Sets up the environment of Kong's CLI and of its spec helpers.
load_env() {
  KONG_HOME=$(kong_home)
  if [ -f "$KONG_HOME/kong-env.sh" ]; then
    # shellcheck disable=SC1091
    . "$KONG_HOME/kong-env.sh"
  else
    export PATH="$KONG_HOME/bin:$PATH"
  fi
  KONG_SPEC_TREE=$(spec_tree "$KONG_HOME")
  # busted and its modules come from Debian's lua-busted; Kong's own modules
  # stay first on the path. spec/ holds the project's test helpers.
  export LUA_PATH="$ROOT/spec/?.lua;${LUA_PATH:-;};/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;$ROOT/spec/kong-shims/?.lua"
  export LUA_CPATH="${LUA_CPATH:-;};/usr/lib/x86_64-linux-gnu/lua/5.1/?.so"
  export KEYRING_ROOT=$ROOT
  export KEYRING_KONG_SPEC_TREE=$KONG_SPEC_TREE
  export KONG_SPEC_TEST_CONF_PATH=$ROOT/spec/kong_tests.conf
  # Kong's bin/busted drops every KONG_* variable and turns KONG_TEST_* into KONG_*
  export KONG_TEST_PG_PORT=$PG_PORT
  export KONG_TEST_LUA_PACKAGE_PATH="$ROOT/spec/fixtures/?.lua;$ROOT/spec/fixtures/?/init.lua"
  export KONG_TEST_DNS_RESOLVER=127.0.0.1:53 KONG_TEST_RESOLVER_ADDRESS=127.0.0.1:53
}

cmd_install() {
  load_env
  command -v luarocks >/dev/null || die "luarocks not found"
  local rockspec
  rockspec=$(ls "$ROOT"/kong-keyring-*.rockspec | head -n1)
  # build first: luarocks make removes the installed rock before it builds,
  # so a compile error would leave Kong without the plugin
  (cd "$ROOT" && scripts/cargo-build.sh target/native.so >"$TMP/rock-install.log" 2>&1) || {
    tail -n 30 "$TMP/rock-install.log" >&2
    die "the native library does not build; the installed rock is unchanged (log: .tmp/rock-install.log)"
  }
  (cd "$ROOT" && luarocks make --deps-mode=none "$rockspec" >"$TMP/rock-install.log" 2>&1) || {
    tail -n 30 "$TMP/rock-install.log" >&2
    die "luarocks make failed (log: .tmp/rock-install.log)"
  }
  echo "kong-keyring installed into $(luarocks show --rock-dir kong-keyring 2>/dev/null || echo "$KONG_HOME")"
}

# Each file runs in its own process, with its own database, prefix and ports
# (Kong's helpers read their configuration once per process), so every file
# gets a fresh Kong and files can run side by side. Ports come from the
# numbers of the directory and file (spec/03-kong/02-api_spec.lua: proxy
# 19320, Admin API 19321; +2..+9 are the spec's for more nodes;
# KEYRING_SPEC_PORT_SHIFT moves them all, e.g. for a second checkout).
cmd_busted() {
  load_env
  local file name dnum fnum base rc=0
  for file in "$@"; do
    file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
    name=$(basename "$file" _spec.lua | tr -c 'a-zA-Z0-9\n' '_' | tr 'A-Z' 'a-z')
    dnum=$(basename "$(dirname "$file")" | grep -Eo '^[0-9]+' || echo 9)
    fnum=$(basename "$file" | grep -Eo '^[0-9]+' || echo 99)
    base=$((19000 + ${KEYRING_SPEC_PORT_SHIFT:-0} + 10#$dnum * 100 + 10#$fnum * 10))
    (
      export KONG_TEST_PG_DATABASE=kk_$name
      export KONG_TEST_PREFIX=$TMP/nginx-kong-$name
      export KONG_TEST_PROXY_LISTEN=127.0.0.1:$base
      export KONG_TEST_ADMIN_LISTEN=127.0.0.1:$((base + 1))
      export KEYRING_SPEC_PORT_BASE=$base
      PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -q \
        -c "DROP DATABASE IF EXISTS \"kk_$name\" WITH (FORCE)" -c "CREATE DATABASE \"kk_$name\"" >/dev/null
      cd "$KONG_SPEC_TREE"
      bin/busted ${KEYRING_BUSTED_OPTS:--o TAP} "$file"
    ) || rc=1
  done
  return $rc
}

case "${1:-}" in
  home) kong_home ;;
  install) cmd_install ;;
  env)
    load_env
    for v in $(compgen -e | grep -E '^(PATH|LUA_PATH|LUA_CPATH|LUAROCKS_CONFIG|KONG_[A-Z_]*|KEYRING_[A-Z_]*)$'); do
      printf 'export %s=%q\n' "$v" "${!v}"
    done ;;
  busted) shift; cmd_busted "$@" ;;
  *) echo "usage: $0 home|install|env|busted FILE..." >&2; exit 2 ;;
esac
