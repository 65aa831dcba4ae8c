-- make bench, rewrap part (run by bench/rewrap.sh under Kong's `resty`, with
-- spec/ on the module path): against one Kong node with the keyring,
--   * 100,000 rows (basic-auth credentials, certificates, session plugins)
--     written under key A with SQL by spec/rewrap_data.lua (a share of them
--     plaintext and v1), key B activated, then POST /keyring/rewrap without
--     `rate`: rows/s from the request to the finish time the job records
--     (target >= 50,000), and every stored value checked afterwards;
--   * Admin API p99 latency (GET of rows with encrypted fields, a new
--     connection each) while the node is idle, and during a rewrap limited
--     to `rate` rows/s to key C (target: within 2x of idle).
--
--   resty -I spec -I bench rewrap_bench.lua admin=PORT dir=DIR psql="psql ... -d DB" rows=N rate=R requests=N

local bench_http = require "bench_http"
local cjson = require "cjson.safe"
local keyring = require "kong.keyring"
local rd = require "rewrap_data"
local clock = require "bench_clock"


local args = {}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  args[k] = v
end
local ADMIN = tonumber(args.admin)
local DIR = assert(args.dir, "dir=")
local ROWS = tonumber(args.rows or 100000)
local RATE = tonumber(args.rate or 5000)
local REQUESTS = tonumber(args.requests or 2000)
local TARGET_RATE = 50000
local TARGET_RATIO = 2
local fmt = string.format


local function now()
  return clock.now_us() / 1e6
end


local function call(method, path, body)
  return bench_http.call(ADMIN, method, path, body, 60000)
end


local function ok_call(want, method, path, body)
  local status, json = call(method, path, body)
  assert(status == want, fmt("%s %s: %s, want %d: %s", method, path, tostring(status), want,
                             type(json) == "table" and cjson.encode(json) or tostring(json)))
  return json
end


local wait_for = clock.wait_for


local function sh(cmd)
  local ok, out = rd.run(cmd)
  assert(ok, out)
  return out
end


-- a key generated on the node, activated there and added to this process's ring
local function new_key()
  local json = ok_call(201, "POST", "/keyring/generate")
  assert(keyring.add(json.id, json.key))
  ok_call(204, "POST", "/keyring/activate", { key = json.id })
  return json.id, json.key
end


assert(wait_for(20, function()
  local status, json = call("GET", "/keyring")
  return status == 200 and json.active
end), "the node has no active key")
assert(keyring.init())

-- key A; one row of each kind through the Admin API (the generator's templates)
local key_a, a_b64 = new_key()
assert(keyring.activate(key_a))
sh(fmt("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out ec.key && "
       .. "openssl req -x509 -new -key ec.key -subj /CN=bench -days 3 -out ec.crt && "
       .. "openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -subj /CN=bench -days 3 -out rsa.crt", DIR))
local function file(name)
  local f = assert(io.open(DIR .. "/" .. name))
  local s = f:read("*a")
  f:close()
  return s
end
ok_call(201, "POST", "/consumers", { username = "tpl" })
ok_call(201, "POST", "/consumers/tpl/basic-auth", { username = "tpl-user", password = "tpl-pw" })
ok_call(201, "POST", "/certificates", { cert = file("ec.crt"), key = file("ec.key"), cert_alt = file("rsa.crt"),
                                        key_alt = file("rsa.key") })
ok_call(201, "POST", "/services", { name = "tpl-svc", url = "http://127.0.0.1:1" })
ok_call(201, "POST", "/services/tpl-svc/plugins", { name = "session" })

local gen = rd.new { psql = args.psql, dir = DIR .. "/gen", keyring = keyring, key_id = key_a, key_b64 = a_b64 }
gen:load_templates()
gen:expect_stored()
local counts = { basicauth = math.floor(ROWS / 2), certificates = math.floor(ROWS / 5) }
counts.session = ROWS - counts.basicauth - counts.certificates
local made, loaded = gen:generate(counts)
io.stderr:write(fmt("  [rewrap bench] %d rows generated in %.1f s, loaded in %.1f s\n", ROWS, made, loaded))

-- throughput: key B, then the rewrap without rate, from the request to the
-- job's finished_at (both the machine's wall clock). Polled every 100 ms:
-- each poll costs the node and PostgreSQL CPU the job would use.
local key_b = new_key()
local t0 = clock.now()
local job = ok_call(202, "POST", "/keyring/rewrap")
assert(wait_for(600, function()
  job = ok_call(200, "GET", "/keyring/rewrap")
  assert(job.state == "running" or job.state == "done", "job " .. job.state)
  return job.state == "done"
end, 0.1), "the rewrap never finished")
local rows_per_s = job.rows_done / (job.finished_at - t0)
local job_rows_per_s = job.rows_done / (job.finished_at - job.started_at)
assert(#job.errors == 0, "the job reported errors: " .. cjson.encode(job.errors))
assert(job.rows_done >= ROWS, "rows_done " .. job.rows_done)
local report = gen:check(gen:scan(), { want_key = key_b })
assert(rd.clean(report), rd.describe(report))
local usage = ok_call(200, "GET", "/keyring/usage")
assert(usage.keys[key_a] == nil or usage.keys[key_a].v1 + usage.keys[key_a].v2 == 0, "values left under A")
assert(usage.plaintext == 0, "plaintext left")

-- latency: GETs of generated rows (each decrypts an encrypted field), a new connection each
local paths = {}
for _, p in ipairs({ { "basicauth_credentials", "/basic-auths/" }, { "certificates", "/certificates/" },
                     { "plugins:session", "/plugins/" } }) do
  local ids = gen.ids[p[1]]
  for i = 1, 200 do
    paths[#paths + 1] = p[2] .. ids[(i * 7919) % #ids + 1]
  end
end

local function sample(n)
  local times = {}
  for i = 1, n do
    local path = paths[(i - 1) % #paths + 1]
    local s = now()
    local status = call("GET", path)
    times[i] = (now() - s) * 1000
    assert(status == 200, "GET " .. path .. " answered " .. tostring(status))
  end
  table.sort(times)
  return times[math.ceil(#times * 0.99)], times[math.ceil(#times * 0.5)]
end

sample(200)  -- warm-up
local idle_p99, idle_p50 = sample(REQUESTS)

local key_c = new_key()
job = ok_call(202, "POST", "/keyring/rewrap", { rate = tostring(RATE) })
assert(job.target == key_c)
assert(wait_for(10, function()
  return ok_call(200, "GET", "/keyring/rewrap").rows_done > 0
end), "the limited rewrap never started")
local busy_p99, busy_p50 = sample(REQUESTS)
job = ok_call(200, "GET", "/keyring/rewrap")
local still_running = job.state == "running"
local limited_rate = job.rate_measured or 0
if still_running then
  ok_call(200, "DELETE", "/keyring/rewrap")
end

local ratio = busy_p99 / idle_p99
local results = {
  { "rewrap throughput, no rate limit (rows/s)", fmt("%.0f", rows_per_s), ">= " .. TARGET_RATE,
    rows_per_s >= TARGET_RATE },
  { "  (the job's own figure, rows/s)", fmt("%.0f", job_rows_per_s), "", nil },
  { "Admin API p50 / p99 idle (ms)", fmt("%.2f / %.2f", idle_p50, idle_p99), "", nil },
  { fmt("Admin API p50 / p99 during rate=%d rewrap (ms)", RATE), fmt("%.2f / %.2f", busy_p50, busy_p99), "", nil },
  { "  (rate the limited job measured, rows/s)", tostring(limited_rate), "", nil },
  { "Admin API p99 during / idle", fmt("%.2f", ratio), "<= " .. TARGET_RATIO,
    ratio <= TARGET_RATIO and still_running },
}
print(fmt("%-50s %15s %10s", fmt("rewrap (%d rows: %d values checked)", job.rows_total, report.compared),
          "measured", "target"))
local failed = false
for _, r in ipairs(results) do
  local verdict = r[4] == nil and "" or (r[4] and "PASS" or "FAIL")
  failed = failed or r[4] == false
  print(fmt("%-50s %15s %10s   %s", r[1], r[2], r[3], verdict))
end
if not still_running then
  print("the limited rewrap ended before the latency sample did: raise BENCH_REWRAP_ROWS or lower BENCH_REWRAP_RATE")
end
if failed then
  os.exit(1)
end
