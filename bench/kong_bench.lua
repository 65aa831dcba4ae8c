-- make bench, real Kong part: keyring ON node vs keyring OFF node, measured
-- side by side in this run. bench/kong.sh starts both nodes (Kong OSS, 2
-- workers each, each on its own fresh database, the same settings but
-- KONG_KEYRING_ENABLED) and runs this file under Kong's `resty`:
--
--   resty -I bench bench/kong_bench.lua key=value ...
--
-- 1. Admin API: p50 / p99 latency of creating a basic-auth credential
--    (POST /consumers/{c}/basic-auth) and of reading it back
--    (GET /consumers/{c}/basic-auth/{id}), one request at a time on a
--    keep-alive connection, requests alternating between the two nodes so
--    both see the same noise. Every answer is checked (201 / 200, and the
--    read password equals the created one).
-- 2. Proxy: requests/s through a route with basic-auth (credential cached
--    after a warm-up) to a loopback upstream (an nginx answering 200,
--    bench/kong.sh), with wrk; bench/kong_wrk.lua counts every answer
--    that is not a 200 and the bench fails on any, or on any socket error.
--    Rounds: reload both nodes (new worker processes: one generation of
--    workers differs from the next by up to ±10%), warm up, then wrk on each,
--    ON first in odd rounds, OFF first in even ones; median requests/s per
--    node and median of the per-round ratios. Also
--    the CPU time of the node's workers (/proc/<pid>/stat) per request over
--    all rounds: the same target, far less disturbed by the machine's other
--    processes than requests/s.
-- 3. Plugins iterator rebuild with `plugins` session plugins (one per
--    service; session's `secret` is `encrypted = true`), timed inside a
--    worker by bench/kong_probe.lua (see there why and what), wall clock and
--    the worker's CPU time. Alternating rounds, medians.
--
-- No key, stored value or credential is printed (only ids, counts, timings).

local http = require "resty.http"
local cjson = require "cjson.safe"
local clock = require "bench_clock"


local fmt = string.format
local now_us = clock.now_us


local opts = {
  admin_n = 2000, admin_warmup = 200,
  proxy_rounds = 6, proxy_seconds = 2, proxy_warmup_seconds = 1, proxy_connections = 32,
  plugins = 1000, rebuild_rounds = 7, create_concurrency = 4,
  parts = "admin,proxy,rebuild",
}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  assert(k, "bad argument: " .. a)
  opts[k] = tonumber(v) or v
end


-- the two nodes; ports come from bench/kong.sh
local NODES = {}
for _, name in ipairs({ "on", "off" }) do
  NODES[name] = {
    name = name,
    admin = assert(opts[name .. "_admin"], "missing " .. name .. "_admin"),
    proxy = assert(opts[name .. "_proxy"], "missing " .. name .. "_proxy"),
    probe = assert(opts[name .. "_probe"], "missing " .. name .. "_probe"),
    upstream = assert(opts[name .. "_upstream"], "missing " .. name .. "_upstream"),
    master = assert(opts[name .. "_master"], "missing " .. name .. "_master"),
  }
end
local ON, OFF = NODES.on, NODES.off


local function die(...)
  io.stderr:write("bench/kong_bench.lua: ", fmt(...), "\n")
  os.exit(1)
end


-- one request; the connection goes back to the pool (keep-alive)
local function request(port, method, path, body, headers)
  headers = headers or {}
  if type(body) == "table" then
    body = cjson.encode(body)
    headers["Content-Type"] = "application/json"
  end
  local res, err = http.new():request_uri(fmt("http://127.0.0.1:%d%s", port, path), {
    method = method, body = body, headers = headers, keepalive_timeout = 60000,
  })
  if not res then
    return nil, err
  end
  return res.status, res.body, cjson.decode(res.body or "")
end


local function admin(node, method, path, body, want)
  local status, raw, json = request(node.admin, method, path, body)
  if status ~= want then
    -- the answer of a failed call is the Admin API's error message
    die("%s node: %s %s -> %s (want %d): %s", node.name, method, path, tostring(status), want,
        tostring(raw):sub(1, 300))
  end
  return json
end


local function sorted(t)
  local c = {}
  for i, v in ipairs(t) do
    c[i] = v
  end
  table.sort(c)
  return c
end


local function pct(t, q)
  local s = sorted(t)
  return s[math.max(1, math.ceil(q * #s))]
end


local function median(t)
  local s = sorted(t)
  local n = #s
  if n % 2 == 1 then
    return s[(n + 1) / 2]
  end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end


local function wait_until(what, timeout, f)
  local deadline = ngx.now() + timeout
  while true do
    if f() then
      return
    end
    if ngx.now() > deadline then
      die("timed out waiting for %s", what)
    end
    ngx.sleep(0.2)
    ngx.update_time()
  end
end


local function progress(...)
  io.stderr:write("  [kong bench] ", fmt(...), "\n")
end


---------------------------------------------------------------------------
-- 0. the ON node has an active key (the first node bootstraps one)

wait_until("the ON node's first key", 30, function()
  local status, _, json = request(ON.admin, "GET", "/keyring")
  return status == 200 and json and json.active ~= nil and json.active ~= cjson.null
end)


---------------------------------------------------------------------------
-- 1. Admin API latency

local function admin_latency()
  for _, node in pairs(NODES) do
    admin(node, "POST", "/consumers", { username = "admin-bench" }, 201)
    node.create_ms, node.read_ms, node.creds = {}, {}, {}
  end

  local function create(node, i, record)
    local body = { username = fmt("cred-%d", i), password = fmt("pass-%d", i) }
    local t0 = now_us()
    local status, raw, json = request(node.admin, "POST", "/consumers/admin-bench/basic-auth", body)
    local ms = (now_us() - t0) / 1000
    if status ~= 201 or not json or type(json.password) ~= "string" then
      die("%s node: create basic-auth -> %s: %s", node.name, tostring(status), tostring(raw):sub(1, 300))
    end
    node.creds[i] = { id = json.id, password = json.password }
    if record then
      node.create_ms[#node.create_ms + 1] = ms
    end
  end

  local function read(node, i, record)
    local cred = node.creds[i]
    local t0 = now_us()
    local status, raw, json = request(node.admin, "GET", "/consumers/admin-bench/basic-auth/" .. cred.id)
    local ms = (now_us() - t0) / 1000
    if status ~= 200 or not json then
      die("%s node: read basic-auth -> %s: %s", node.name, tostring(status), tostring(raw):sub(1, 300))
    end
    if json.password ~= cred.password then
      die("%s node: read basic-auth %s: the password differs from the one created", node.name, cred.id)
    end
    if record then
      node.read_ms[#node.read_ms + 1] = ms
    end
  end

  local W, N = opts.admin_warmup, opts.admin_n
  progress("admin API: %d + %d creates and reads per node (warm-up + measured)", W, N)
  -- ON and OFF alternate request by request, the first of each pair swapping
  local function each(lo, hi, f, record)
    for i = lo, hi do
      local a, b = ON, OFF
      if i % 2 == 0 then
        a, b = OFF, ON
      end
      f(a, i, record)
      f(b, i, record)
    end
  end
  each(1, W, create, false)
  each(1, W, read, false)
  each(W + 1, W + N, create, true)
  each(W + 1, W + N, read, true)
end


---------------------------------------------------------------------------
-- 2. proxy requests/s with wrk

local AUTH = "Basic " .. ngx.encode_base64("wrk-bench:wrk-bench-pass")

local function proxy_setup(node)
  admin(node, "POST", "/services", { name = "bench", url = fmt("http://127.0.0.1:%d/", node.upstream) }, 201)
  admin(node, "POST", "/services/bench/routes", { name = "bench", paths = { "/bench" } }, 201)
  admin(node, "POST", "/routes/bench/plugins", { name = "basic-auth" }, 201)
  admin(node, "POST", "/consumers", { username = "wrk-bench" }, 201)
  admin(node, "POST", "/consumers/wrk-bench/basic-auth", { username = "wrk-bench", password = "wrk-bench-pass" }, 201)
end


local function proxy_routed(node)
  -- each worker builds its router on its own: several 200 in a row
  local in_a_row = 0
  wait_until(node.name .. " node's route", 30, function()
    local status = request(node.proxy, "GET", "/bench", nil, { Authorization = AUTH })
    in_a_row = status == 200 and in_a_row + 1 or 0
    return in_a_row >= 8
  end)
  -- and the wrong password is refused (basic-auth does run)
  local status = request(node.proxy, "GET", "/bench", nil,
                         { Authorization = "Basic " .. ngx.encode_base64("wrk-bench:wrong") })
  if status ~= 401 then
    die("%s node: wrong password -> %s, want 401", node.name, tostring(status))
  end
end


local WRK_SCRIPT = (opts.root or ".") .. "/bench/kong_wrk.lua"

-- CPU time (user + system, seconds) of the node's nginx workers so far,
-- from /proc/<pid>/stat: the node's own work per request, which other
-- processes of the machine disturb far less than they disturb requests/s
local CLK_TCK = 100 -- getconf CLK_TCK on Linux

local function workers_cpu(node)
  local ticks, n = 0, 0
  for _, pid in ipairs(node.workers) do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local stat = f:read("*a")
      f:close()
      -- fields after "(comm)": state ppid ... utime (14th field) stime (15th)
      local rest = stat:match("%) (.*)$")
      local fields = {}
      for v in rest:gmatch("%S+") do
        fields[#fields + 1] = v
      end
      ticks = ticks + tonumber(fields[12]) + tonumber(fields[13])
      n = n + 1
    end
  end
  if n ~= #node.workers then
    die("%s node: %d of its %d workers are gone", node.name, #node.workers - n, #node.workers)
  end
  return ticks / CLK_TCK
end


local function wrk(node, seconds)
  local cmd = fmt("wrk -t1 -c%d -d%ds -s %s -H 'Authorization: %s' http://127.0.0.1:%d/bench 2>&1",
                  opts.proxy_connections, seconds, WRK_SCRIPT, AUTH, node.proxy)
  local cpu0 = workers_cpu(node)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local cpu = workers_cpu(node) - cpu0
  local line = out:match("WRK ([^\n]+)")
  if not line then
    die("%s node: wrk gave no result:\n%s", node.name, out)
  end
  local r = {}
  for k, v in line:gmatch("([%w_]+)=(%d+)") do
    r[k] = tonumber(v)
  end
  local errors = r.connect + r.read + r.write + r.timeout
  if r.requests == 0 or r.bad > 0 or r.status > 0 or errors > 0 or r.good ~= r.requests then
    die("%s node: wrk: %d requests, %d answers 200, %d not 200, %d socket errors (connect %d, read %d, "
        .. "write %d, timeout %d)", node.name, r.requests, r.good, r.bad, errors, r.connect, r.read,
        r.write, r.timeout)
  end
  return r.requests / (r.duration_us / 1e6), r.requests, cpu
end


local function worker_pids(node)
  local p = assert(io.popen("ps -o pid= --ppid " .. node.master))
  local out = p:read("*a")
  p:close()
  local pids = {}
  for pid in out:gmatch("%d+") do
    pids[#pids + 1] = pid
  end
  return pids
end


-- A new generation of workers (SIGHUP: the nginx reload `kong reload` ends in) of both
-- nodes at once: the same nodes, databases, caches in shared memory and
-- keyring region, but fresh worker processes. Requests/s of one generation
-- of workers differs from the next by up to ±10% (LuaJIT traces, memory
-- layout) though the code is the same, far more than the 2% target, so each
-- round measures a new generation of both nodes. Old workers finish their
-- graceful exit during the warm-up; node.workers names the new ones, whose
-- CPU time is counted.
local function reload_both()
  local old = {}
  for _, node in pairs(NODES) do
    for _, pid in ipairs(worker_pids(node)) do
      old[pid] = true
    end
    local rc = os.execute("kill -HUP " .. node.master)
    if rc ~= 0 and rc ~= true then -- Lua 5.1 / 5.2 conventions (LuaJIT has either)
      die("%s node: kill -HUP %s failed", node.name, node.master)
    end
  end
  for _, node in pairs(NODES) do
    wait_until(node.name .. " node's reload", 30, function()
      local new = {}
      for _, pid in ipairs(worker_pids(node)) do
        if not old[pid] then
          new[#new + 1] = pid
        end
      end
      node.workers = new
      return #new == 2
    end)
  end
end


local function proxy_rps()
  for _, node in pairs(NODES) do
    proxy_setup(node)
  end
  for _, node in pairs(NODES) do
    proxy_routed(node)
  end
  progress("proxy: %d rounds: reload both nodes, wrk warm-up %d s each, then %d s on each, order alternating",
           opts.proxy_rounds, opts.proxy_warmup_seconds, opts.proxy_seconds)
  ON.rps, OFF.rps = {}, {}
  local ratios, total = {}, 0
  for _, node in pairs(NODES) do
    node.cpu_s, node.requests = 0, 0
  end
  for r = 1, opts.proxy_rounds do
    reload_both()
    for _, node in pairs(NODES) do
      proxy_routed(node)
      wrk(node, opts.proxy_warmup_seconds)
    end
    local first, second = ON, OFF
    if r % 2 == 0 then
      first, second = OFF, ON
    end
    for _, node in ipairs({ first, second }) do
      local rps, n, cpu = wrk(node, opts.proxy_seconds)
      node.rps[r] = rps
      node.cpu_s = node.cpu_s + cpu
      node.requests = node.requests + n
      total = total + n
    end
    ratios[r] = ON.rps[r] / OFF.rps[r]
  end
  return ratios, total
end


---------------------------------------------------------------------------
-- 3. plugins iterator rebuild

local function create_plugins(node, n)
  -- a few concurrent clients per node, both nodes at once
  local next_i = 0
  local function worker()
    while true do
      next_i = next_i + 1
      local i = next_i
      if i > n then
        return
      end
      local name = fmt("rebuild-%d", i)
      admin(node, "POST", "/services", { name = name, url = fmt("http://127.0.0.1:%d/", node.upstream) }, 201)
      admin(node, "POST", "/services/" .. name .. "/plugins", { name = "session" }, 201)
    end
  end
  local threads = {}
  for _ = 1, opts.create_concurrency do
    threads[#threads + 1] = ngx.thread.spawn(worker)
  end
  return threads
end


local function probe(node)
  local status, raw, json = request(node.probe, "GET", "/rebuild")
  if status ~= 200 or not json then
    die("%s node: rebuild probe -> %s: %s", node.name, tostring(status), tostring(raw):sub(1, 300))
  end
  return json
end


local function rebuild()
  progress("rebuild: creating %d services with a session plugin per node", opts.plugins)
  local threads = {}
  for _, node in pairs(NODES) do
    for _, t in ipairs(create_plugins(node, opts.plugins)) do
      threads[#threads + 1] = t
    end
  end
  for _, t in ipairs(threads) do
    local ok, err = ngx.thread.wait(t)
    if not ok then
      die("creating plugins: %s", tostring(err))
    end
  end
  -- let each worker's background rebuild (worker_state_update_frequency,
  -- 5 s by default) of the last change end before timing
  ngx.sleep(6)

  local ratios = {}
  for _, node in pairs(NODES) do
    node.rebuild_ms, node.rebuild_cpu_ms, node.read_ms_r, node.read_raw_ms, node.on_read_ms = {}, {}, {}, {}, {}
  end
  progress("rebuild: %d alternating rounds", opts.rebuild_rounds)
  probe(ON); probe(OFF) -- warm-up
  for r = 1, opts.rebuild_rounds do
    local first, second = ON, OFF
    if r % 2 == 0 then
      first, second = OFF, ON
    end
    for _, node in ipairs({ first, second }) do
      local p = probe(node)
      local want_encrypted = node == ON and opts.plugins or 0
      if p.session ~= opts.plugins or p.encrypted ~= want_encrypted then
        die("%s node: the rebuild read %d session plugin rows, %d with an encrypted secret (want %d, %d)",
            node.name, p.session, p.encrypted, opts.plugins, want_encrypted)
      end
      node.rebuild_ms[r] = p.rebuild_us / 1000
      node.rebuild_cpu_ms[r] = p.rebuild_cpu_us / 1000
      node.read_ms_r[r] = p.read_us / 1000
      node.read_raw_ms[r] = p.read_raw_us / 1000
      node.on_read_ms[r] = p.on_read_us / 1000
    end
    ratios[r] = ON.rebuild_ms[r] / OFF.rebuild_ms[r]
  end
  return ratios
end


---------------------------------------------------------------------------

local PARTS = {}
for part in tostring(opts.parts):gmatch("[%w_]+") do
  PARTS[part] = true
end

local t_start = now_us()
local rps_ratios, proxied, rebuild_ratios
if PARTS.admin then
  admin_latency()
end
if PARTS.proxy then
  rps_ratios, proxied = proxy_rps()
end
if PARTS.rebuild then
  rebuild_ratios = rebuild()
end
local elapsed = (now_us() - t_start) / 1e6


local function verdict(ratio, max, min)
  if max then
    return fmt("<= %.2fx %s", max, ratio <= max and "MET" or "NOT MET")
  end
  return fmt(">= %.2fx %s", min, ratio >= min and "MET" or "NOT MET")
end

local rows = {}
local function row(case, on, off, unit, ratio, target)
  rows[#rows + 1] = fmt("| %-40s | %11.2f %-5s | %11.2f %-5s | %s | %-16s |", case, on, unit, off, unit,
                        ratio and fmt("%5.2fx", ratio) or "     -", target or "-")
end

local function list(t, f)
  local out = {}
  for i, v in ipairs(t) do
    out[i] = fmt(f, v)
  end
  return table.concat(out, " ")
end

print(fmt("real Kong (%s, 2 workers per node): keyring ON node vs OFF node, each on its own fresh database",
          opts.kong_version or "Kong OSS"))
local notes = {}
if PARTS.admin then
  print(fmt("admin:   %d creates, then %d reads per node after %d + %d warm-up, one at a time, nodes alternating",
            opts.admin_n, opts.admin_n, opts.admin_warmup, opts.admin_warmup))
  for _, op in ipairs({ { "create", "create_ms" }, { "read", "read_ms" } }) do
    local on50, off50 = pct(ON[op[2]], 0.5), pct(OFF[op[2]], 0.5)
    local on99, off99 = pct(ON[op[2]], 0.99), pct(OFF[op[2]], 0.99)
    row(fmt("admin %s basic-auth credential p50", op[1]), on50, off50, "ms", on50 / off50,
        verdict(on50 / off50, 1.10))
    row(fmt("admin %s basic-auth credential p99", op[1]), on99, off99, "ms", on99 / off99)
  end
end
if PARTS.proxy then
  print(fmt("proxy:   wrk -t1 -c%d, %d rounds of %d s per node, new workers each round (median req/s, median of "
            .. "round ratios); all %d answers 200", opts.proxy_connections, opts.proxy_rounds, opts.proxy_seconds,
            proxied))
  local rps_ratio = median(rps_ratios)
  row("proxy basic-auth, cached credential", median(ON.rps), median(OFF.rps), "req/s", rps_ratio,
      verdict(rps_ratio, nil, 0.98))
  -- the same target read as worker CPU per request: 2% fewer requests/s
  -- is 1/0.98 = 1.02x the CPU time per request
  local on_cpu, off_cpu = ON.cpu_s / ON.requests * 1e6, OFF.cpu_s / OFF.requests * 1e6
  row("  worker CPU per proxied request", on_cpu, off_cpu, "us", on_cpu / off_cpu,
      verdict(on_cpu / off_cpu, 1.02))
  notes[#notes + 1] = "proxy rounds   on: " .. list(ON.rps, "%.0f") .. "  off: " .. list(OFF.rps, "%.0f")
                      .. "  ratio: " .. list(rps_ratios, "%.3f")
end
if PARTS.rebuild then
  print(fmt("rebuild: build_plugins_iterator in a worker with %d session plugins (one per service), "
            .. "%d alternating rounds (median ms, median of round ratios)", opts.plugins, opts.rebuild_rounds))
  local rb_ratio = median(rebuild_ratios)
  row(fmt("plugins iterator rebuild, %d plugins", opts.plugins), median(ON.rebuild_ms), median(OFF.rebuild_ms),
      "ms", rb_ratio, verdict(rb_ratio, 1.20))
  local on_cpu, off_cpu = median(ON.rebuild_cpu_ms), median(OFF.rebuild_cpu_ms)
  row("  worker CPU of the rebuild", on_cpu, off_cpu, "ms", on_cpu / off_cpu, verdict(on_cpu / off_cpu, 1.20))
  row("  in it: reading the plugin rows", median(ON.read_ms_r), median(OFF.read_ms_r), "ms",
      median(ON.read_ms_r) / median(OFF.read_ms_r))
  row("  in that: schema transformations", median(ON.on_read_ms), median(OFF.on_read_ms), "ms")
  local rows_n = opts.plugins
  notes[#notes + 1] = fmt("rebuild: the keyring adds %.1f us per session row; its schema transformations "
                          .. "(on_read + Kong's merge of the result) take %.1f us per row",
                          (median(ON.rebuild_ms) - median(OFF.rebuild_ms)) * 1000 / rows_n,
                          (median(ON.on_read_ms) - median(OFF.on_read_ms)) * 1000 / rows_n)
  notes[#notes + 1] = "rebuild rounds on: " .. list(ON.rebuild_ms, "%.1f") .. "  off: " .. list(OFF.rebuild_ms, "%.1f")
                      .. "  ratio: " .. list(rebuild_ratios, "%.3f")
end
print("| case                                     |          on       |         off       |  ratio | target           |")
print("|------------------------------------------|-------------------|-------------------|--------|------------------|")
for _, r in ipairs(rows) do
  print(r)
end
for _, n in ipairs(notes) do
  print(n)
end
progress("measured in %.0f s", elapsed)
