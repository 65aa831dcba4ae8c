-- Test support shared by the specs: paths, a real nginx (2 workers) with the
-- module loaded, HTTP through curl, and the record of every key a spec saw
-- (swept from every error.log by spec/99-leaks).

local cjson = require "cjson.safe"


local helpers = {}


local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shell_quote = shell_quote


local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return ok == true or code == 0, out
end
helpers.run = run


helpers.root = assert(os.getenv("PWD"))
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
-- opts: name, port, init (Lua for init_by_lua), init_worker, locations (nginx text)
function helpers.nginx(opts)
  local prefix = helpers.tmp .. "/nginx-" .. assert(opts.name)
  local self = setmetatable({
    prefix = prefix,
    port = assert(opts.port),
    conf = NGINX_CONF
      :gsub("%$LUA_PATH", function() return helpers.lua_path end)
      :gsub("%$LUA_CPATH", function() return helpers.lua_cpath end)
      :gsub("%$PORT", tostring(opts.port))
      :gsub("%$INIT_WORKER", function() return opts.init_worker or "" end)
      :gsub("%$INIT", function() return opts.init or "" end)
      :gsub("%$LOCATIONS", function() return opts.locations or "" end),
    env = opts.env or "",
  }, server_mt)
  return self
end


function server_mt:nginx_cmd(extra)
  return self.env .. " /usr/sbin/nginx -p " .. self.prefix .. " -c conf/nginx.conf " .. (extra or "")
end


function server_mt:start()
  os.execute("rm -rf " .. self.prefix .. " && mkdir -p " .. self.prefix .. "/conf "
             .. self.prefix .. "/logs " .. self.prefix .. "/tmp")
  helpers.write_file(self.prefix .. "/conf/nginx.conf", self.conf)
  local ok, out = run(self:nginx_cmd() .. " 2>" .. self.prefix .. "/logs/startup.stderr")
  if not ok then
    error("nginx failed to start: " .. out .. (helpers.read_file(self.prefix .. "/logs/startup.stderr") or ""))
  end
  for _ = 1, 100 do
    if #self:worker_pids() == 2 and self:request("GET", "/__ping") then
      return self
    end
    os.execute("sleep 0.05")
  end
  error("nginx did not come up; error.log:\n" .. (self:error_log() or ""))
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
  -- wait until two workers that did not exist before are serving
  for _ = 1, 200 do
    local fresh = 0
    for _, pid in ipairs(self:worker_pids()) do
      if not before[pid] then
        fresh = fresh + 1
      end
    end
    if fresh == 2 then
      return
    end
    os.execute("sleep 0.05")
  end
  error("reload did not bring up 2 new workers")
end


function server_mt:stop()
  local master = self:master_pid()
  if master then
    run(self:nginx_cmd("-s quit"))
    for _ = 1, 100 do
      local _, stat = run("ps -o stat= -p " .. master)
      if stat == "" or stat:find("Z", 1, true) then
        break
      end
      os.execute("sleep 0.05")
    end
  end
end


function server_mt:error_log()
  return helpers.read_file(self.prefix .. "/logs/error.log")
end


--- HTTP through curl; returns status, body, decoded JSON (if any).
-- A fresh connection per call, so `reuseport` spreads calls over both workers.
function server_mt:request(method, path, body, headers)
  local cmd = "curl -s -m 10 -o " .. self.prefix .. "/resp.body -w '%{http_code}' -X " .. method
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


return helpers
