-- make bench (bench/kong.sh): times the plugins-iterator rebuild inside a
-- worker of a real Kong node. bench/kong.sh adds a loopback-only server block
-- to each node (nginx_http_include) whose `/rebuild` location calls `rebuild`.
--
-- Why this and not "time of the first proxied request after a change": a
-- change only invalidates `plugins_iterator:version` in the core cache; the
-- rebuild then runs either in the background timer (every
-- worker_state_update_frequency seconds, eventual consistency) or inside the
-- first request (strict), racing the timer of the same worker and the other
-- worker, so a request's latency holds anything between nothing and a whole
-- rebuild plus the wait for a lock. Here we call the function both paths end
-- in, kong.runloop.handler's `build_plugins_iterator(version)`
-- (PluginsIterator.new: kong.db.plugins:each over every row — SELECT, JSON
-- decode, the schema's transformations (the keyring's on_read decrypts the
-- `encrypted = true` fields), auto fields — then the per-workspace combos and
-- `configure`), with the current version, so what is built is what the
-- worker already has. Nothing else of the node changes.
--
-- The answer gives the rebuild's wall-clock time (rebuild_us) and the CPU time
-- the worker spent in it (rebuild_cpu_us: not counting the wait for
-- PostgreSQL, nor time other processes of the machine took the CPU from it),
-- and splits the time of reading the rows:
--   read_us       kong.db.plugins:each as the rebuild calls it (transformations on)
--   read_raw_us   the same with `transform = false` (SELECT, decode, auto fields)
--   on_read_us    the schema's transformations alone, run on those raw rows:
--                 the keyring's on_read and Kong's merge of its result into the
--                 row (Schema:transform; without the keyring there are none)
-- and `rows`, `session` (session rows), `encrypted` (session rows whose stored
-- secret is a `$ke$` value).

local ffi = require "ffi"
local cjson = require "cjson.safe"
local handler = require "kong.runloop.handler"
local uuid = require("kong.tools.uuid").uuid


local null = ngx.null


-- CLOCK_MONOTONIC in microseconds, with the declarations of Kong's
-- kong.tools.time (a second declaration of clock_gettime would clash)
require "kong.tools.time"
local CLOCK_MONOTONIC = 1
local CLOCK_PROCESS_CPUTIME_ID = 2 -- an nginx worker is one thread
local ts = ffi.new("nanotime[1]")
local function clock_us(id)
  ffi.C.clock_gettime(id, ts)
  return tonumber(ts[0].tv_sec) * 1e6 + tonumber(ts[0].tv_nsec) / 1e3
end
local function now_us()
  return clock_us(CLOCK_MONOTONIC)
end
local function cpu_us()
  return clock_us(CLOCK_PROCESS_CPUTIME_ID)
end


local _M = {}


local function read_rows(opts)
  local dao = kong.db.plugins
  local rows = {}
  for row, err in dao:each(dao.pagination.max_page_size, opts) do
    if err then
      return nil, err
    end
    rows[#rows + 1] = row
  end
  return rows
end


local function fail(status, msg)
  ngx.status = status
  ngx.say(cjson.encode({ message = tostring(msg) }))
  return ngx.exit(status)
end


function _M.rebuild()
  local version, err = kong.core_cache:get("plugins_iterator:version", { ttl = 0 }, uuid)
  if not version then
    return fail(500, err)
  end

  collectgarbage()
  local c0, t0 = cpu_us(), now_us()
  local ok
  ok, err = handler.build_plugins_iterator(version)
  local rebuild_us, rebuild_cpu_us = now_us() - t0, cpu_us() - c0
  if not ok then
    return fail(500, err or "plugins iterator changed while rebuilding")
  end

  collectgarbage()
  t0 = now_us()
  local rows
  rows, err = read_rows({ workspace = null, show_ws_id = true })
  local read_us = now_us() - t0
  if not rows then
    return fail(500, err)
  end

  collectgarbage()
  t0 = now_us()
  local raw
  raw, err = read_rows({ workspace = null, show_ws_id = true, transform = false })
  local read_raw_us = now_us() - t0
  if not raw then
    return fail(500, err)
  end

  local session, encrypted = 0, 0
  for _, row in ipairs(raw) do
    if row.name == "session" then
      session = session + 1
      local secret = type(row.config) == "table" and row.config.secret
      if type(secret) == "string" and secret:sub(1, 4) == "$ke$" then
        encrypted = encrypted + 1
      end
    end
  end

  local schema = kong.db.plugins.schema
  collectgarbage()
  t0 = now_us()
  for i = 1, #raw do
    local out
    out, err = schema:transform(raw[i], nil, "select")
    if not out then
      return fail(500, err)
    end
  end
  local on_read_us = now_us() - t0

  ngx.say(cjson.encode({
    pid = ngx.worker.pid(),
    rows = #rows,
    session = session,
    encrypted = encrypted,
    rebuild_us = rebuild_us,
    rebuild_cpu_us = rebuild_cpu_us,
    read_us = read_us,
    read_raw_us = read_raw_us,
    on_read_us = on_read_us,
  }))
end


return _M
