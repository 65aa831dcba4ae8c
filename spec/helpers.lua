-- Test support shared by the specs: paths, a real nginx (2 workers) with the
-- module loaded, HTTP through curl, and the record of every key a spec saw
-- (swept from every error.log by spec/99-leaks).

local cjson = require "cjson.safe"


local helpers = {}


local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shell_quote = shell_quote


-- LuaJIT's popen close() does not report the exit status (Lua 5.1), so the
-- shell prints it after the output.
local function run(cmd)
  local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"~rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc
  out = out:gsub("~rc=(%d+)\n$", function(n) rc = tonumber(n); return "" end)
  return rc == 0, out
end
helpers.run = run


-- KEYRING_ROOT when run from Kong's source tree (scripts/kong.sh), else the working directory
helpers.root = assert(os.getenv("KEYRING_ROOT") or os.getenv("PWD"))
helpers.tmp = helpers.root .. "/.tmp"
helpers.lua_path = helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;" .. helpers.root .. "/spec/?.lua"
helpers.lua_cpath = helpers.root .. "/lib/?.so"


function helpers.read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end


function helpers.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end


--- Remembers key material (base64) so the leak sweep can look for it.
function helpers.remember_key(key_b64)
  local f = assert(io.open(helpers.tmp .. "/keys-seen.txt", "ab"))
  f:write(key_b64, "\n")
  f:close()
end


--- Remembers a secret that is not a key (a vault secret, a token) so the
-- leak sweep looks for it as text and in hex (kept in base64, one per line).
function helpers.remember_secret(text)
  local f = assert(io.open(helpers.tmp .. "/secrets-seen.txt", "ab"))
  f:write(helpers.b64_encode(text), "\n")
  f:close()
end


--- A key generated on the ring of `kong.keyring` (not activated), recorded
-- for the leak sweep: returns its id and base64 bytes.
function helpers.generate_key()
  local id, key = assert(require("kong.keyring").generate())
  helpers.remember_key(key)
  return id, key
end


--- An RSA key pair made with the openssl CLI: returns private PEM, public PEM.
function helpers.rsa_pair(bits)
  bits = bits or 2048
  local dir = helpers.tmp .. "/rsa"
  os.execute("mkdir -p " .. dir)
  local name = dir .. "/k" .. bits .. "-" .. tostring(math.random(1e9))
  assert(run("openssl genrsa -out " .. name .. ".pem " .. bits))
  assert(run("openssl rsa -in " .. name .. ".pem -pubout -out " .. name .. ".pub"))
  return helpers.read_file(name .. ".pem"), helpers.read_file(name .. ".pub")
end


local NGINX_CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
error_log logs/error.log info;
pid logs/nginx.pid;
env KONG_KEYRING_TEST_HOOKS;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  client_max_body_size 16m;
  client_body_buffer_size 16m;
  lua_package_path "$LUA_PATH;;";
  lua_package_cpath "$LUA_CPATH;;";
  init_by_lua_block {
$INIT
  }
  init_worker_by_lua_block {
$INIT_WORKER
  }
  server {
    listen 127.0.0.1:$PORT reuseport;
    location = /__ping { return 200 "ok"; }
$LOCATIONS
  }
}
]]


local server_mt = {}
server_mt.__index = server_mt


--- A real nginx under .tmp/nginx-<name> on 127.0.0.1:<port>.
-- opts: name, port, init (Lua for init_by_lua), init_worker, locations (nginx text),
-- env (shell assignments for the nginx command, e.g. "KONG_KEYRING_TEST_HOOKS=1"),
-- lua_path (extra entries put before helpers.lua_path, e.g. a spec's app directory)
function helpers.nginx(opts)
  local prefix = helpers.tmp .. "/nginx-" .. assert(opts.name)
  local lua_path = opts.lua_path and (opts.lua_path .. ";" .. helpers.lua_path) or helpers.lua_path
  local self = setmetatable({
    prefix = prefix,
    port = assert(opts.port),
    conf = NGINX_CONF
      :gsub("%$LUA_PATH", function() return lua_path end)
      :gsub("%$LUA_CPATH", function() return helpers.lua_cpath end)
      :gsub("%$PORT", tostring(opts.port))
      :gsub("%$INIT_WORKER", function() return opts.init_worker or "" end)
      :gsub("%$INIT", function() return opts.init or "" end)
      :gsub("%$LOCATIONS", function() return opts.locations or "" end),
    env = opts.env or "",
  }, server_mt)
  return self
end


--- Whether something already listens on `host` (127.0.0.1 by default):`port`.
-- Our servers listen with `reuseport`, so a leftover nginx would silently
-- share the port.
function helpers.port_in_use(port, host)
  return (run("bash -c 'exec 3<>/dev/tcp/" .. (host or "127.0.0.1") .. "/" .. tonumber(port) .. "' 2>/dev/null"))
end


function server_mt:nginx_cmd(extra)
  return self.env .. " /usr/sbin/nginx -p " .. self.prefix .. " -c conf/nginx.conf " .. (extra or "")
end


function server_mt:start()
  if helpers.port_in_use(self.port) then
    error("port " .. self.port .. " is already in use (a leftover nginx?)")
  end
  os.execute("rm -rf " .. self.prefix .. " && mkdir -p " .. self.prefix .. "/conf "
             .. self.prefix .. "/logs " .. self.prefix .. "/tmp")
  helpers.write_file(self.prefix .. "/conf/nginx.conf", self.conf)
  local ok, out = run(self:nginx_cmd() .. " 2>" .. self.prefix .. "/logs/startup.stderr")
  if not ok then
    self:stop()
    error("nginx failed to start: " .. out .. (helpers.read_file(self.prefix .. "/logs/startup.stderr") or ""))
  end
  if self:wait_workers(2) and self:request("GET", "/__ping") then
    return self
  end
  self:stop()
  error("nginx did not come up; error.log:\n" .. (self:error_log() or ""))
end


--- Waits (up to 5 s) until `n` live workers answer to the master; returns them or nil.
function server_mt:wait_workers(n)
  for _ = 1, 100 do
    local pids = self:worker_pids()
    if #pids == n then
      return pids
    end
    os.execute("sleep 0.05")
  end
  return nil
end


function server_mt:master_pid()
  local s = helpers.read_file(self.prefix .. "/logs/nginx.pid")
  return s and tonumber(s:match("%d+"))
end


--- Live worker pids (zombies excluded: PID 1 here does not reap them).
function server_mt:worker_pids()
  local master = self:master_pid()
  if not master then
    return {}
  end
  local _, out = run("ps -o pid=,stat= --ppid " .. master)
  local pids = {}
  for pid, stat in out:gmatch("(%d+)%s+(%S+)") do
    if not stat:find("Z", 1, true) then
      pids[#pids + 1] = tonumber(pid)
    end
  end
  return pids
end


function server_mt:reload()
  local before = {}
  for _, pid in ipairs(self:worker_pids()) do
    before[pid] = true
  end
  assert(run(self:nginx_cmd("-s reload")))
  -- wait until the two workers are new ones (the old ones have drained)
  for _ = 1, 200 do
    local pids, fresh = self:worker_pids(), 0
    for _, pid in ipairs(pids) do
      if not before[pid] then
        fresh = fresh + 1
      end
    end
    if fresh == 2 and #pids == 2 then
      return
    end
    os.execute("sleep 0.05")
  end
  error("reload did not replace the 2 workers")
end


local function alive(pid)
  local _, stat = run("ps -o stat= -p " .. pid)
  return stat ~= "" and not stat:find("Z", 1, true)
end
helpers.alive = alive


--- Graceful quit; after 5 s a fast stop, then SIGKILL for what is left, so a
-- request stuck in a worker (e.g. a held lock) never outlives the spec.
function server_mt:stop()
  local master = self:master_pid()
  if not master or not alive(master) then
    return
  end
  local workers = self:worker_pids()
  local function wait_gone()
    for _ = 1, 100 do
      if not alive(master) then
        return true
      end
      os.execute("sleep 0.05")
    end
    return false
  end
  run(self:nginx_cmd("-s quit"))
  if wait_gone() then
    return
  end
  run(self:nginx_cmd("-s stop"))
  if wait_gone() then
    return
  end
  for _, pid in ipairs(workers) do
    run("kill -9 " .. pid)
  end
  run("kill -9 " .. master)
end


function server_mt:error_log()
  return helpers.read_file(self.prefix .. "/logs/error.log")
end


--- HTTP through curl; returns status, body, decoded JSON (if any), or nil
-- when no answer came within `timeout` seconds (default 10).
-- A fresh connection per call, so `reuseport` spreads calls over both workers.
function server_mt:request(method, path, body, headers, timeout)
  local cmd = "curl -s -m " .. (timeout or 10) .. " -o " .. self.prefix .. "/resp.body -w '%{http_code}' -X " .. method
  for _, h in ipairs(headers or {}) do
    cmd = cmd .. " -H " .. shell_quote(h)
  end
  if body then
    local bf = self.prefix .. "/req.body"
    helpers.write_file(bf, body)
    cmd = cmd .. " --data-binary @" .. bf
  end
  cmd = cmd .. " " .. shell_quote("http://127.0.0.1:" .. self.port .. path)
  local _, out = run(cmd)
  local status = tonumber(out)
  if not status or status == 0 then
    return nil
  end
  local resp = helpers.read_file(self.prefix .. "/resp.body") or ""
  return status, resp, cjson.decode(resp)
end


--- Starts curl in the background (fresh connection); the answer body goes to
-- `out` and, once curl is done, `out .. ".done"` holds the HTTP status
-- (000 when the connection broke).
function server_mt:request_async(method, path, out)
  os.execute("rm -f " .. out .. " " .. out .. ".done")
  local cmd = "curl -s -m 60 -o " .. out .. " -w '%{http_code}' -X " .. method .. " "
              .. shell_quote("http://127.0.0.1:" .. self.port .. path)
  os.execute("(" .. cmd .. " >" .. out .. ".part; mv " .. out .. ".part " .. out .. ".done) >/dev/null 2>&1 &")
end


--- The status of a `request_async` call once it has finished, else nil.
function helpers.async_status(out)
  local s = helpers.read_file(out .. ".done")
  return s and tonumber(s)
end


--- Runs the requests at the same time (one curl each, fresh connections) and
-- returns { { status = n, body = s }, ... } in the same order.
function server_mt:concurrent(method, paths)
  local jobs, outs = {}, {}
  for i, path in ipairs(paths) do
    local out = self.prefix .. "/concurrent-" .. i
    outs[i] = out
    jobs[i] = "curl -s -m 120 -o " .. out .. " -w '%{http_code}' -X " .. method .. " "
              .. shell_quote("http://127.0.0.1:" .. self.port .. path) .. " >" .. out .. ".status"
  end
  os.execute("{ " .. table.concat(jobs, " & ") .. " & wait; }")
  local results = {}
  for i, out in ipairs(outs) do
    results[i] = { status = tonumber(helpers.read_file(out .. ".status")), body = helpers.read_file(out) or "" }
  end
  return results
end


--- The lines of `text` that contain `needle` (plain text).
function helpers.lines_with(text, needle)
  local lines = {}
  for line in (text or ""):gmatch("[^\n]+") do
    if line:find(needle, 1, true) then
      lines[#lines + 1] = line
    end
  end
  return lines
end


--- Lines of the error log that contain `needle` (plain text).
function server_mt:log_lines(needle)
  return helpers.lines_with(self:error_log(), needle)
end


do
  local ffi = require "ffi"
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } spec_helpers_timespec;
    int clock_gettime(int clk_id, spec_helpers_timespec *tp);
  ]]
  local ts = ffi.new("spec_helpers_timespec")

  --- CLOCK_MONOTONIC in seconds (fractional).
  function helpers.now()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
  end
end


local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


--- Standard base64 with padding.
function helpers.b64_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chunk = {}
    for j = 3, 0, -1 do
      local k = math.floor(n / 64 ^ j) % 64
      chunk[#chunk + 1] = B64:sub(k + 1, k + 1)
    end
    if not b then
      chunk[3], chunk[4] = "=", "="
    elseif not c then
      chunk[4] = "="
    end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end


--- Decodes standard or url-safe base64 (padding optional); nil on bad input.
function helpers.b64_decode(s)
  s = s:gsub("%-", "+"):gsub("_", "/"):gsub("=+$", "")
  if s:find("[^%w%+/]") or #s % 4 == 1 then
    return nil
  end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    bits = bits * 64 + (B64:find(s:sub(i, i), 1, true) - 1)
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      local byte = math.floor(bits / 2 ^ nbits)
      out[#out + 1] = string.char(byte)
      bits = bits - byte * 2 ^ nbits
    end
  end
  return table.concat(out)
end


function helpers.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end


--- 32 random bytes from /dev/urandom, as base64 (recorded for the leak sweep).
function helpers.random_key_b64()
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(32)
  f:close()
  local b64 = helpers.b64_encode(raw)
  helpers.remember_key(b64)
  return b64
end


--- Repeats a request (a fresh connection each time, so `reuseport` spreads
-- them) until the worker that answers is one `want(pid)` accepts. The app's
-- JSON answers carry `pid`. Returns status, body, json of that answer.
function server_mt:request_on(want, method, path, body)
  for _ = 1, 60 do
    local status, res, json = self:request(method, path, body)
    if json and json.pid and want(json.pid) then
      return status, res, json
    end
  end
  error("60 requests to " .. path .. " never reached the wanted worker")
end


--- The spec/02-nginx test app (spec/02-nginx/app.lua) with kong.keyring set
-- up in init_by_lua / init_worker_by_lua. opts: name, port, env,
-- transport_key (also make the transport key in the master, as the Kong
-- plugin's cluster strategy does).
function helpers.keyring_app(opts)
  local init = [[    assert(require("kong.keyring").init())]]
  if opts.transport_key then
    init = init .. "\n" .. [[    assert(require("kong.keyring").transport_key())]]
  end
  return helpers.nginx {
    name = opts.name,
    port = opts.port,
    env = opts.env,
    lua_path = helpers.root .. "/spec/02-nginx/?.lua",
    init = init,
    init_worker = [[    assert(require("kong.keyring").init_worker())]],
    locations = [[    location / { content_by_lua_block { require("app").handle() } }]],
  }
end


return helpers
