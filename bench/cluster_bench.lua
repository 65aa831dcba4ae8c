-- make bench, cluster part (run by bench/cluster.sh under Kong's `resty`):
-- two real Kong nodes with the keyring, one database, at each
-- db_update_frequency given. Measures
--   * activation: POST /keyring/activate on node A (the key already on B, as
--     staged activation makes sure) until node B's workers encrypt with it
--     (GET /keyring/active on B reads the shared region all its workers use);
--   * restart: `kong start` of node B returning until B holds the whole ring;
--   * push: POST /keyring/generate on A until B holds the new key.
-- Targets (docs/design.md, "Cluster strategy"): activation ≤ frequency +
-- 0.5 s, restart ≤ 2 × frequency + 0.5 s. In-node propagation between
-- workers is bench/propagation.lua's figure.
--
--   resty -I bench cluster_bench.lua prefix=DIR port=BASE pg_port=PORT frequencies=1,5 rounds=5

local bench_http = require "bench_http"
local clock = require "bench_clock"


local args = {}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  args[k] = v
end
local DIR = assert(args.prefix, "prefix=")
local BASE = tonumber(args.port or 18700)
local ROUNDS = tonumber(args.rounds or 5)


local now = clock.now


local function sh(cmd)
  local ok = os.execute(cmd .. " >>" .. DIR .. "/commands.log 2>&1")
  return ok == 0 or ok == true
end


local call = bench_http.call


local wait_for = clock.wait_for


local function node(name, i)
  local proxy = BASE + i * 10
  return { name = name, prefix = DIR .. "/" .. name, proxy = proxy, admin = proxy + 1 }
end
local A, B = node("a", 0), node("b", 1)


local function env(n, frequency)
  return table.concat({
    "KONG_PREFIX=" .. n.prefix,
    "KONG_DB_UPDATE_FREQUENCY=" .. frequency,
    "KONG_PROXY_LISTEN=127.0.0.1:" .. n.proxy,
    "KONG_ADMIN_LISTEN=127.0.0.1:" .. n.admin,
  }, " ")
end


local function start(n, frequency)
  assert(sh(env(n, frequency) .. " kong start"), "kong start of node " .. n.name .. " failed")
  assert(wait_for(20, function()
    return call(n.admin, "GET", "/status") == 200
  end), "node " .. n.name .. " Admin API not answering")
end


local function stop(n)
  sh("kong stop -p " .. n.prefix)
end


local function ring(n)
  local status, json = call(n.admin, "GET", "/keyring")
  return status == 200 and json or { ids = {} }
end


local function holds(n, id)
  for _, v in ipairs(ring(n).ids) do
    if v == id then
      return true
    end
  end
  return false
end


local function median(list)
  table.sort(list)
  return list[math.ceil(#list / 2)]
end


local function max(list)
  table.sort(list)
  return list[#list]
end


local failed = false
local rows = {}

local function row(measure, frequency, samples, target)
  local m, x = median(samples), max(samples)
  local verdict = x <= target and "PASS" or "FAIL"
  failed = failed or verdict == "FAIL"
  rows[#rows + 1] = string.format("%-44s %4d s %9.3f %9.3f %9.1f   %s", measure, frequency, m, x, target, verdict)
end


for f in (args.frequencies or "1"):gmatch("%d+") do
  local frequency = tonumber(f)
  assert(sh("PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -p " .. args.pg_port
            .. " -U postgres -d postgres -q -c 'DROP DATABASE IF EXISTS kk_bench_cluster WITH (FORCE)'"
            .. " -c 'CREATE DATABASE kk_bench_cluster'"))
  assert(sh("kong migrations bootstrap"), "kong migrations bootstrap failed")
  start(A, frequency)
  start(B, frequency)
  assert(wait_for(10 + 2 * frequency, function()
    local a = ring(A)
    return a.active and a.active == ring(B).active
  end), "no common first key")

  local push, activation, restart = {}, {}, {}
  for _ = 1, ROUNDS do
    local t0 = now()
    local status, key = call(A.admin, "POST", "/keyring/generate")
    assert(status == 201, "generate failed")
    assert(wait_for(3 * frequency + 5, function()
      return holds(B, key.id)
    end), "the new key never reached B")
    push[#push + 1] = now() - t0
    local t1 = now()
    status = call(A.admin, "POST", "/keyring/activate", { key = key.id })
    assert(status == 204, "activate answered " .. tostring(status))
    assert(wait_for(3 * frequency + 5, function()
      local s, json = call(B.admin, "GET", "/keyring/active")
      return s == 200 and json.id == key.id
    end), "B never activated the key")
    activation[#activation + 1] = now() - t1
  end
  for _ = 1, ROUNDS do
    local want = ring(A)
    stop(B)
    local t0 = now()
    start(B, frequency)
    local started = now() - t0
    assert(wait_for(4 * frequency + 5, function()
      local b = ring(B)
      return b.active == want.active and #b.ids == #want.ids
    end), "restarted B never had the ring")
    restart[#restart + 1] = now() - t0 - started
  end
  row("new key on B (POST /keyring/generate on A)", frequency, push, frequency + 0.5)
  row("activation on A until B encrypts with it", frequency, activation, frequency + 0.5)
  row("restarted B holds the ring (after start)", frequency, restart, 2 * frequency + 0.5)
  stop(B)
  stop(A)
end

print(string.format("%-44s %6s %9s %9s %9s   %s", "cluster key exchange (" .. ROUNDS .. " rounds)",
                    "freq", "median s", "max s", "target s", ""))
for _, r in ipairs(rows) do
  print(r)
end
if failed then
  os.exit(1)
end
