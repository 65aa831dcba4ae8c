# Shared by the real-Kong bench parts (bench/cluster.sh, vaults.sh,
# rewrap.sh): sourced, with PG_PORT and PG_STARTED set by the caller.

pg() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# bench_prepare DIR PORT...: the ports free, DIR fresh, the rock installed
# into Kong, Kong's environment loaded, PostgreSQL running (PG_STARTED=1
# when this started it, so the caller's clean-up stops it again)
bench_prepare() {
  local dir=$1 p
  shift
  for p in "$@"; do
    if port_busy "$p"; then echo "127.0.0.1:$p is in use" >&2; return 1; fi
  done
  rm -rf "$dir"
  mkdir -p "$dir"
  scripts/kong.sh install >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; return 1; }
  # shellcheck disable=SC1090
  . <(scripts/kong.sh env)
  if ! scripts/pg.sh status >/dev/null 2>&1; then
    scripts/pg.sh start >/dev/null
    PG_STARTED=1
  fi
}

# bench_kong_env DATABASE: the settings every bench node shares (loopback,
# 2 workers, no access logs, no listeners the bench does not use)
bench_kong_env() {
  export KONG_DATABASE=postgres KONG_PG_HOST=127.0.0.1 KONG_PG_PORT=$PG_PORT KONG_PG_USER=postgres
  export KONG_PG_DATABASE=$1 KONG_NGINX_WORKER_PROCESSES=2
  export KONG_DNS_RESOLVER=127.0.0.1:53 KONG_RESOLVER_ADDRESS=127.0.0.1:53
  export KONG_ANONYMOUS_REPORTS=off KONG_ADMIN_GUI_LISTEN=off KONG_STATUS_LISTEN=off KONG_STREAM_LISTEN=off
  export KONG_CLUSTER_LISTEN=off KONG_PROXY_ACCESS_LOG=off KONG_ADMIN_ACCESS_LOG=off
}
