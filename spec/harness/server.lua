-- A harness node for specs: real nginx (2 workers) running the Kong-shaped
-- runtime of spec/harness against the private PostgreSQL (scripts/pg.sh).
--
--   local harness_server = require "harness.server"
--   harness_server.create_database("kong_spec_x")
--   local node = harness_server.new {
--     name = "kong-a", proxy_port = 18200, admin_port = 18201,
--     plugins = { "keyring" },                  -- load order; basic-auth is bundled
--     vaults = { "probe-vault" },               -- kong.vaults.<name> (default none)
--     env = { KONG_KEYRING_ENABLED = "on", KONG_DB_UPDATE_FREQUENCY = "1" },
--     db = { port = 55432, database = "kong_spec_x" },
--   }
--   node:start()
--   local status, body, json = node:admin("POST", "/consumers", { username = "bob" })
--   node:stop()
--   harness_server.drop_database("kong_spec_x")
--
-- Everything listens on 127.0.0.1; the prefix is .tmp/nginx-<name> (so the
-- project's leak sweep and test.sh clean-up see it). lua_package_path:
-- opts.lua_path, lua/, spec/harness/ (the kong.* stand-ins),
-- spec/harness/fixtures/, spec/fixtures/ (fixture plugins and vaults), spec/.

local helpers = require "helpers"
local json = require "harness.json"


local run = helpers.run
local shell_quote = helpers.shell_quote
local fmt = string.format
local concat = table.concat


local PG_PORT = 55432


local _M = {}
local node_mt = {}
node_mt.__index = node_mt


local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
error_log logs/error.log $LOG_LEVEL;
pid logs/nginx.pid;
$ENV
events { worker_connections 256; }
http {
  access_log logs/access.log;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  lua_package_path "$LUA_PATH;;";
  lua_package_cpath "$LUA_CPATH;;";
  lua_socket_log_errors off;
  lua_shared_dict kong 5m;
  lua_shared_dict kong_locks 8m;
  lua_shared_dict kong_cluster_events 5m;
  lua_shared_dict harness_worker_events 16m;
$SHARED_DICTS
  init_by_lua_block {
    ngx.IS_CLI = $CLI
    require("harness").init(require("cjson.safe").decode([==[$OPTS]==]))
  }
  init_worker_by_lua_block {
    require("harness").init_worker()
  }
  server {
    server_name kong;
    listen 127.0.0.1:$PROXY_PORT reuseport;
    location = /__ping { return 200 "ok"; }
    location / {
      default_type application/json;
      content_by_lua_block { require("harness").proxy() }
    }
  }
  server {
    server_name kong_admin;
    listen 127.0.0.1:$ADMIN_PORT reuseport;
    # Kong's Admin API server block sets these (kong/templates/nginx_kong.lua)
    client_max_body_size 10m;
    client_body_buffer_size 10m;
    location = /__ping { return 200 "ok"; }
    location / {
      default_type application/json;
      content_by_lua_block { require("harness").admin() }
    }
  }
}
]]


--- Creates a database on the private PostgreSQL (dropping any leftover).
function _M.create_database(name, port)
  _M.drop_database(name, port)
  local ok, out = run(fmt("psql -h 127.0.0.1 -p %d -U postgres -d postgres -v ON_ERROR_STOP=1 -At -c %s",
                          port or PG_PORT, shell_quote(fmt('CREATE DATABASE "%s"', name))))
  if not ok then
    error("could not create database " .. name .. " (is scripts/pg.sh start done?): " .. out)
  end
end


function _M.drop_database(name, port)
  return run(fmt("psql -h 127.0.0.1 -p %d -U postgres -d postgres -At -c %s",
                 port or PG_PORT, shell_quote(fmt('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', name))))
end


local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end


--- A node (not started). opts: name, proxy_port, admin_port, plugins, vaults, env,
-- db = { host, port, database, user }, log_level, lua_path (extra entries),
-- shared_dicts ({ name = "1m" }), cli (true: `ngx.IS_CLI` set before init,
-- as Kong's CLI does, so the plugin takes its `kong config` path).
function _M.new(opts)
  assert(opts.name and opts.admin_port and opts.proxy_port, "name, proxy_port and admin_port are required")
  local db = opts.db or {}
  local self = setmetatable({
    name = opts.name,
    prefix = helpers.tmp .. "/nginx-" .. opts.name,
    proxy_port = opts.proxy_port,
    admin_port = opts.admin_port,
    env = opts.env or {},
    db = {
      host = db.host or "127.0.0.1",
      port = db.port or PG_PORT,
      database = assert(db.database, "db.database is required"),
      user = db.user or "postgres",
    },
    plugins = opts.plugins or {},
    vaults = opts.vaults or {},
    log_level = opts.log_level or "info",
    lua_path = opts.lua_path,
    shared_dicts = opts.shared_dicts or {},
    cli = opts.cli == true,
  }, node_mt)
  -- reuse helpers.nginx for process handling (pid file, workers, stop)
  self.nginx = helpers.nginx({ name = opts.name, port = opts.admin_port, env = self:env_prefix() })
  return self
end


function node_mt:env_prefix()
  local parts = {}
  for _, k in ipairs(sorted_keys(self.env)) do
    parts[#parts + 1] = k .. "=" .. shell_quote(self.env[k])
  end
  return concat(parts, " ")
end


function node_mt:conf()
  local root = helpers.root
  local lua_path = concat({
    self.lua_path or (root .. "/lua/?.lua"),
    root .. "/lua/?.lua", root .. "/lua/?/init.lua",
    root .. "/spec/harness/?.lua", root .. "/spec/harness/?/init.lua",
    root .. "/spec/harness/fixtures/?.lua", root .. "/spec/harness/fixtures/?/init.lua",
    root .. "/spec/fixtures/?.lua", root .. "/spec/fixtures/?/init.lua",
    root .. "/spec/?.lua", root .. "/spec/?/init.lua",
  }, ";")
  local env_lines = {}
  for _, k in ipairs(sorted_keys(self.env)) do
    env_lines[#env_lines + 1] = "env " .. k .. ";"
  end
  local dicts = {}
  for _, k in ipairs(sorted_keys(self.shared_dicts)) do
    dicts[#dicts + 1] = fmt("  lua_shared_dict %s %s;", k, self.shared_dicts[k])
  end
  local opts = assert(json.encode({
    plugins = json.as_array(self.plugins),
    vaults = json.as_array(self.vaults),
    pg_host = self.db.host,
    pg_port = self.db.port,
    pg_database = self.db.database,
    pg_user = self.db.user,
  }))
  local subs = {
    LOG_LEVEL = self.log_level,
    ENV = concat(env_lines, "\n"),
    LUA_PATH = lua_path,
    LUA_CPATH = helpers.lua_cpath,
    SHARED_DICTS = concat(dicts, "\n"),
    OPTS = opts,
    PROXY_PORT = tostring(self.proxy_port),
    ADMIN_PORT = tostring(self.admin_port),
    CLI = tostring(self.cli),
  }
  return (CONF:gsub("%$([%u_]+)", function(k) return subs[k] end))
end


local function curl_status(url)
  local _, out = run("curl -s -m 2 -o /dev/null -w '%{http_code}' " .. shell_quote(url))
  return tonumber(out)
end


--- Starts nginx and waits for both workers and the Admin API. A first start
-- wipes the prefix; a start after stop() keeps it (kong.id, logs).
function node_mt:start()
  for _, port in ipairs { self.proxy_port, self.admin_port } do
    if helpers.port_in_use(port) then
      error("port " .. port .. " is already in use (a leftover nginx?)")
    end
  end
  if not self.started_once then
    os.execute("rm -rf " .. shell_quote(self.prefix))
  end
  os.execute("mkdir -p " .. shell_quote(self.prefix .. "/conf") .. " " .. shell_quote(self.prefix .. "/logs")
             .. " " .. shell_quote(self.prefix .. "/tmp"))
  self.started_once = true
  helpers.write_file(self.prefix .. "/conf/nginx.conf", self:conf())
  local stderr = self.prefix .. "/logs/startup.stderr"
  local ok, out = run(self.nginx:nginx_cmd() .. " 2>>" .. shell_quote(stderr))
  if not ok then
    self:stop()
    error("nginx (" .. self.name .. ") failed to start: " .. out .. "\n" .. (helpers.read_file(stderr) or ""))
  end
  for _ = 1, 200 do
    if #self.nginx:worker_pids() == 2
       and curl_status(fmt("http://127.0.0.1:%d/__ping", self.admin_port)) == 200 then
      return self
    end
    os.execute("sleep 0.05")
  end
  local log = self:error_log() or ""
  self:stop()
  error("nginx (" .. self.name .. ") did not come up; error.log:\n" .. log)
end


--- Graceful quit, then fast stop, then SIGKILL (helpers.nginx's stop).
function node_mt:stop()
  self.nginx:stop()
end


function node_mt:restart()
  self:stop()
  return self:start()
end


function node_mt:reload()
  return self.nginx:reload()
end


function node_mt:worker_pids()
  return self.nginx:worker_pids()
end


function node_mt:error_log()
  return helpers.read_file(self.prefix .. "/logs/error.log")
end


--- Lines of error.log (and startup.stderr) containing `needle` (plain text).
function node_mt:log_lines(needle)
  local lines = {}
  local text = (helpers.read_file(self.prefix .. "/logs/startup.stderr") or "") .. "\n" .. (self:error_log() or "")
  for line in text:gmatch("[^\n]+") do
    if line:find(needle, 1, true) then
      lines[#lines + 1] = line
    end
  end
  return lines
end


local function request(self, port, method, path, body, headers, timeout)
  local out = self.prefix .. "/resp.body"
  local hdr = self.prefix .. "/resp.headers"
  local cmd = { "curl -s -m", tostring(timeout or 20), "-o", shell_quote(out), "-D", shell_quote(hdr),
                "-w '%{http_code}' -X", method }
  local has_ct = false
  for k, v in pairs(headers or {}) do
    local line = type(k) == "number" and v or (k .. ": " .. v)
    if line:lower():find("^content%-type:") then
      has_ct = true
    end
    cmd[#cmd + 1] = "-H " .. shell_quote(line)
  end
  if body ~= nil then
    if type(body) == "table" then
      body = assert(json.encode(body))
      if not has_ct then
        cmd[#cmd + 1] = "-H 'Content-Type: application/json'"
      end
    end
    local bf = self.prefix .. "/req.body"
    helpers.write_file(bf, body)
    cmd[#cmd + 1] = "--data-binary @" .. shell_quote(bf)
  end
  cmd[#cmd + 1] = shell_quote(fmt("http://127.0.0.1:%d%s", port, path))
  os.remove(out)
  local _, res = run(concat(cmd, " "))
  local status = tonumber(res)
  if not status or status == 0 then
    return nil, "no answer: " .. tostring(res)
  end
  local text = helpers.read_file(out) or ""
  self.last_headers = helpers.read_file(hdr) or ""
  return status, text, json.decode(text)
end


--- Admin API call: body a table (sent as JSON) or a string (sent as is,
-- with the given headers; curl's default is form-urlencoded). Returns
-- status, body, decoded JSON (or nil).
function node_mt:admin(method, path, body, headers, timeout)
  return request(self, self.admin_port, method, path, body, headers, timeout)
end


function node_mt:proxy(method, path, body, headers, timeout)
  return request(self, self.proxy_port, method, path, body, headers, timeout)
end


--- Response header of the last admin/proxy call.
function node_mt:last_header(name)
  for line in (self.last_headers or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k and k:lower() == name:lower() then
      return v
    end
  end
end


--- psql -At -c: returns the output lines (columns separated by "|") and
-- the raw output; errors raise.
function node_mt:psql(sql)
  local ok, out = run(fmt("psql -h %s -p %d -U %s -d %s -v ON_ERROR_STOP=1 -At -c %s",
                          self.db.host, self.db.port, self.db.user, shell_quote(self.db.database),
                          shell_quote(sql)))
  if not ok then
    error("psql failed: " .. out, 2)
  end
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    rows[#rows + 1] = line
  end
  return rows, out
end


--- The whole output of `psql(sql)` without its final newline (one value, or
-- a multi-line text value).
function node_mt:psql_text(sql)
  local _, out = self:psql(sql)
  return (out:gsub("\n$", ""))
end


--- Waits (up to 5 s) until GET /keyring names an active key; returns its id.
function node_mt:wait_active_key()
  for _ = 1, 100 do
    local _, _, json = self:admin("GET", "/keyring")
    if json and json.active then
      return json.active
    end
    os.execute("sleep 0.05")
  end
  error("no active key on " .. self.name .. " after 5 s", 2)
end


return _M
