-- What the plugin's Kong specs share, on top of Kong's own spec helpers
-- (`require "spec.helpers"` of the Kong source tree; scripts/kong.sh runs the
-- specs there with Kong's bin/busted): the Kong settings every node of ours
-- gets, Admin API and proxy calls that return status, body and JSON, psql and
-- pg_dump of the spec's database, and the node's error.log.
--
--   local helpers = require "spec.helpers"          -- Kong's
--   local kr = require "keyring_helpers"            -- ours
--   lazy_setup(function()
--     helpers.get_db_utils("postgres", nil, kr.PLUGINS, kr.VAULTS)
--     assert(helpers.start_kong(kr.kong_env { keyring_public_key = pem }))
--     key_id = kr.wait_active_key()
--   end)
--   lazy_teardown(function() kr.stop_kong() end)
--   local status, body, json = kr.admin("POST", "/consumers", { username = "bob" })

local helpers = require "spec.helpers"
local project = require "helpers"
local cjson = require "cjson.safe"


local fmt = string.format
local shell_quote = project.shell_quote


local _M = {
  -- every plugin and vault strategy of ours the specs load
  PLUGINS = { "keyring", "secret-probe", "ref-probe" },
  VAULTS = { "probe-vault" },
  -- a v2 value as the plugin stores it
  MARKED = "^%$ke%$2%$%-[%w]+%-",
}

_M.project = project
_M.conf = helpers.test_conf
_M.prefix = helpers.test_conf.prefix
_M.database = helpers.test_conf.pg_database
-- ports of this spec file (scripts/kong.sh): base = proxy, base + 1 = Admin
-- API, base + 2 .. base + 9 for the spec's other nodes
_M.port_base = tonumber(os.getenv("KEYRING_SPEC_PORT_BASE")) or 19000


--- Settings for `helpers.start_kong`: our plugins and vaults next to the
-- bundled ones, the keyring on, plus `extra` (false drops a setting).
-- Each key becomes KONG_<KEY> in the environment of `kong start`, so
-- `keyring_public_key` is the plugin's KONG_KEYRING_PUBLIC_KEY.
function _M.kong_env(extra)
  local env = {
    plugins = "bundled," .. table.concat(_M.PLUGINS, ","),
    vaults = "bundled," .. table.concat(_M.VAULTS, ","),
    keyring_enabled = "on",
  }
  for k, v in pairs(extra or {}) do
    env[k] = v or nil
  end
  return env
end


--- Stops the node, keeping its prefix (logs are swept for key bytes later).
function _M.stop_kong(prefix)
  return helpers.stop_kong(prefix, true)
end


--- Starts a node in the background (`kong start` through Kong's kong_exec,
-- in a fresh prefix as helpers.start_kong makes it) and returns at once, so
-- that several nodes can start at the same moment. `kong start`'s output
-- goes to <prefix>/start.log. Wait for the node with `wait_admin`.
function _M.start_kong_nowait(env)
  local prefix = env.prefix or _M.prefix
  assert(project.run("rm -rf " .. shell_quote(prefix)))
  assert(helpers.prepare_prefix(prefix))
  return helpers.kong_exec(fmt("start --conf %s --nginx-conf-flags test > %s 2>&1 &",
                               helpers.test_conf_path, shell_quote(prefix .. "/start.log")), env)
end


--- Waits until the Admin API on `port` answers GET /status.
function _M.wait_admin(port, timeout)
  helpers.wait_until(function()
    local ok, status = pcall(_M.admin, "GET", "/status", nil, nil, port)
    return ok and status == 200
  end, timeout or 20)
end


--- The nodes of a spec with several: `node(0)` is the spec's default
-- prefix and ports, `node(1)` the next prefix ("-b") and ports (+2, +3)...
-- `{ name, prefix, proxy, admin }`.
function _M.node(i)
  local name = string.char(65 + i)
  return {
    name = name,
    prefix = i == 0 and _M.prefix or (_M.prefix .. "-" .. name:lower()),
    proxy = _M.port_base + 2 * i,
    admin = _M.port_base + 2 * i + 1,
  }
end


--- Settings for `node` (see `node`): its prefix and listeners (the proxy
-- with reuseport, so connections spread over both workers), plus `extra`
-- (false drops a setting).
function _M.node_env(node, extra)
  local env = _M.kong_env {
    prefix = node.prefix,
    proxy_listen = "127.0.0.1:" .. node.proxy .. " reuseport",
    admin_listen = "127.0.0.1:" .. node.admin,
  }
  for k, v in pairs(extra or {}) do
    env[k] = v or nil
  end
  return env
end


--- GET /keyring of `node`, which must answer 200: its JSON.
function _M.ring(node)
  local status, body, json = _M.admin("GET", "/keyring", nil, nil, node.admin)
  assert(status == 200, "GET /keyring answered " .. tostring(status) .. ": " .. tostring(body))
  return json
end


--- Kong's node id of `node` (GET /).
function _M.node_id(node)
  local status, body, json = _M.admin("GET", "/", nil, nil, node.admin)
  assert(status == 200, "GET / answered " .. tostring(status) .. ": " .. tostring(body))
  return json.node_id
end


function _M.set_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do
    set[v] = true
  end
  return set
end


function _M.now()
  ngx.update_time()
  return ngx.now()
end


--- Waits until `check()` is true, polling every 50 ms; returns the seconds
-- it took, and fails after `limit` seconds naming `what` (a string, or a
-- function that returns one, called on failure to tell what was seen last).
function _M.within(limit, check, what)
  local start = _M.now()
  local ok, err = pcall(helpers.wait_until, check, limit, 0.05)
  local took = _M.now() - start
  if not ok or took > limit then
    error(fmt("%s: not within %s s (%.2f s)%s", type(what) == "function" and what() or what, limit, took,
              ok and "" or "\n" .. tostring(err)), 2)
  end
  return took
end


--- The pids of the node in `prefix`: its master, then its workers.
function _M.node_pids(prefix)
  local master = assert(project.read_file(prefix .. "/pids/nginx.pid")):match("%d+")
  local _, children = project.run("pgrep -P " .. master)
  local pids = { master }
  for pid in (children or ""):gmatch("%d+") do
    pids[#pids + 1] = pid
  end
  return pids
end


local function encode_body(body, headers)
  if type(body) == "table" then
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
    return cjson.encode(body)
  end
  if body ~= nil then
    headers["Content-Type"] = headers["Content-Type"] or "application/x-www-form-urlencoded"
  end
  return body
end


-- One request on a fresh connection (so calls spread over both workers);
-- returns status, body, decoded JSON (or nil), response headers.
local function request(client, method, path, body, headers)
  headers = headers or {}
  local res, err = client:send {
    method = method,
    path = path,
    body = encode_body(body, headers),
    headers = headers,
  }
  if not res then
    client:close()
    return nil, err
  end
  local raw = res:read_body()
  client:close()
  return res.status, raw, cjson.decode(raw or ""), res.headers
end


--- Admin API call. `body`: a table is sent as JSON, a string as a form body
-- (unless `headers` names another Content-Type). `port` defaults to this
-- file's node.
function _M.admin(method, path, body, headers, port)
  local client = port and helpers.http_client("127.0.0.1", port, 60000) or helpers.admin_client(60000)
  return request(client, method, path, body, headers)
end


--- Proxy call (same returns as `admin`).
function _M.proxy(method, path, headers, body, port)
  local client = port and helpers.http_client("127.0.0.1", port, 60000) or helpers.proxy_client(60000)
  return request(client, method, path, body, headers)
end


--- psql -At on the spec's database: the output, last newline cut.
function _M.psql(sql, database)
  local c = _M.conf
  local ok, out = project.run(fmt("psql -h %s -p %d -U %s -d %s -v ON_ERROR_STOP=1 -At -c %s",
                                  c.pg_host, c.pg_port, c.pg_user, database or _M.database, shell_quote(sql)))
  assert(ok, out)
  return (out:gsub("\n$", ""))
end


--- pg_dump of the spec's database (data only by default).
function _M.pg_dump(schema_too)
  local c = _M.conf
  local ok, out = project.run(fmt("pg_dump -h %s -p %d -U %s %s %s", c.pg_host, c.pg_port, c.pg_user,
                                  schema_too and "" or "--data-only", _M.database))
  assert(ok, out)
  return out
end


--- GET /keyring until it names an active key (the first node of a cluster
-- generates one at start); returns its id.
function _M.wait_active_key(port, timeout)
  local id
  helpers.wait_until(function()
    local status, _, json = _M.admin("GET", "/keyring", nil, nil, port)
    id = status == 200 and json and json.active
    return id ~= nil
  end, timeout or 10)
  return id
end


function _M.error_log(prefix)
  return project.read_file((prefix or _M.prefix) .. "/logs/error.log") or ""
end


--- Lines of the node's error.log that contain `needle` (plain text).
function _M.log_lines(needle, prefix)
  return project.lines_with(_M.error_log(prefix), needle)
end


--- The item of `list` (rows of an export, a page...) whose `id` is `id`.
function _M.find_by_id(list, id)
  for _, item in ipairs(list or {}) do
    if item.id == id then
      return item
    end
  end
end


--- The headers of an HTTP basic-auth login.
function _M.basic_auth(username, password)
  return { Authorization = "Basic " .. ngx.encode_base64(username .. ":" .. password) }
end


--- Repeats a proxy request until `n` answers in a row are not 404 (a new
-- route reaches each worker's router on its own), then returns the last.
function _M.proxy_until_routed(method, path, headers, n)
  local status, body, json
  local in_a_row = 0
  helpers.wait_until(function()
    status, body, json = _M.proxy(method, path, headers)
    in_a_row = (status and status ~= 404) and in_a_row + 1 or 0
    return in_a_row >= (n or 4)
  end, 15)
  return status, body, json
end


--- Sends `request()` (returning status, body, json, headers, as `proxy`
-- does; each call on a fresh connection) until answers came from both
-- workers of the node, i.e. JSON with `worker` = 0 and 1 (secret-probe
-- answers with it), checking every answer with `check(status, json, body,
-- headers)`. Fails when `max` (default 80) answers came from one worker.
function _M.on_both_workers(request, check, max)
  local seen = {}
  for _ = 1, max or 80 do
    local status, body, json, headers = request()
    assert(status, body)
    check(status, json, body, headers)
    assert(type(json) == "table" and type(json.worker) == "number",
           "answer without a worker id: " .. tostring(body))
    seen[json.worker] = true
    if seen[0] and seen[1] then
      return
    end
  end
  error("all " .. (max or 80) .. " answers came from one worker", 2)
end


--- Opens an export blob (`POST /keyring/export`, docs/formats.md, "Export blob
-- v2") with the management private key (PEM) in the test process and records
-- every key in it for the leak sweep (spec/99-leaks). Returns the blob's key
-- ids, sorted, and its active id; never the key bytes.
function _M.remember_blob_keys(blob, private_pem)
  local pkey = require "resty.openssl.pkey"
  local cipher = require "resty.openssl.cipher"
  local json = assert(ngx.decode_base64(blob), "blob is not base64")
  local envelope = assert(cjson.decode(json))
  assert(envelope.v == 2, "not a v2 export blob")
  local private = assert(pkey.new(private_pem))
  local one_time = assert(private:decrypt(ngx.decode_base64(envelope.k), pkey.PADDINGS.RSA_PKCS1_OAEP_PADDING,
                                          { oaep_md = "sha256", mgf1_md = "sha256" }))
  local sealed = ngx.decode_base64(envelope.d)
  local inner = assert(cipher.new("aes-256-gcm"):decrypt(one_time, ngx.decode_base64(envelope.n),
                                                         sealed:sub(1, -17), false, "kong-keyring-export-v2",
                                                         sealed:sub(-16)))
  local ring = assert(cjson.decode(inner))
  local ids = {}
  for id, key in pairs(ring.keys) do
    project.remember_key(key)
    ids[#ids + 1] = id
  end
  table.sort(ids)
  return ids, ring.active
end


return _M
