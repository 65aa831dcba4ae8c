-- The /keyring Admin API (docs/admin-api.md) in real Kong: every route, its
-- success and error answers, its side effects in the database, bad input of
-- every kind (with both workers still up afterwards), the three body
-- encodings, what Kong's Admin API itself answers before the plugin runs,
-- recovery after a restart, and no key byte or secret body in the node's logs.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"


local project = kr.project
local admin = kr.admin

local MAX_BODY = 10 * 1024 * 1024 -- Kong's nginx_admin_client_max_body_size = 10m
local JSON_CT = { ["Content-Type"] = "application/json" }
-- a database error is answered 500 with this text in the plugin's error
local REFUSED = "keyring_meta is read-only (api spec)"
-- Kong's answer when its Admin API fails before or around a handler
local KONG_500 = { message = "An unexpected error occurred" }
-- what Kong logs when lapis fails on a JSON body that is no object
local LAPIS_PAIRS = "/lapis/request%.lua:%d+: bad argument #1 to 'pairs'"

local fmt = string.format
local concat = table.concat
local sort = table.sort
local b64 = project.b64_encode
local unb64 = project.b64_decode
local hex = project.hex
local shell_quote = project.shell_quote


-- every route of docs/admin-api.md with the parameters it takes and the error for a
-- request without them
local ROUTES = {
  { method = "GET",  path = "/keyring",            params = {} },
  { method = "GET",  path = "/keyring/active",     params = {} },
  { method = "POST", path = "/keyring/generate",   params = {} },
  { method = "POST", path = "/keyring/activate",   params = { "key" },  missing = "missing 'key' param" },
  { method = "POST", path = "/keyring/remove",     params = { "key" },  missing = "missing 'key' param" },
  { method = "POST", path = "/keyring/export",     params = {} },
  { method = "POST", path = "/keyring/import",     params = { "data" }, missing = "missing 'data' param" },
  { method = "POST", path = "/keyring/import/raw", params = { "id", "data" },
    missing = "missing 'id' or 'data' params" },
  { method = "POST", path = "/keyring/recover",    params = { "recovery_private_key" },
    missing = "missing 'recovery_private_key' param" },
}


-- small helpers ------------------------------------------------------------

local function random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n)
  f:close()
  return s
end


local function url_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return fmt("%%%02X", c:byte())
  end))
end


--- application/x-www-form-urlencoded from { { name, value }, ... }
local function form(fields)
  local parts = {}
  for i, f in ipairs(fields) do
    parts[i] = url_escape(f[1]) .. "=" .. url_escape(f[2])
  end
  return concat(parts, "&")
end


--- multipart/form-data from { { name, value }, ... }: body, headers
local function multipart(fields, boundary)
  boundary = boundary or ("kong-api-spec-" .. hex(random_bytes(8)))
  local parts = {}
  for _, f in ipairs(fields) do
    parts[#parts + 1] = "--" .. boundary .. "\r\n"
                        .. 'Content-Disposition: form-data; name="' .. f[1] .. '"\r\n\r\n'
                        .. f[2] .. "\r\n"
  end
  parts[#parts + 1] = "--" .. boundary .. "--\r\n"
  return concat(parts), { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
end


local function contains(list, v)
  for _, x in ipairs(list or {}) do
    if x == v then
      return true
    end
  end
  return false
end


local function sorted(list)
  local copy = {}
  for i, v in ipairs(list or {}) do
    copy[i] = v
  end
  sort(copy)
  return copy
end


local function keys_of(t)
  local out = {}
  for k in pairs(t or {}) do
    out[#out + 1] = k
  end
  sort(out)
  return out
end


--- psql -At of the spec's database as a list of lines
local function rows(query)
  local out = kr.psql(query)
  local list = {}
  for line in out:gmatch("[^\n]+") do
    list[#list + 1] = line
  end
  return list
end


local function row1(query)
  return rows(query)[1]
end


-- openssl on files under `dir`: the bytes written to `-out` by
-- `openssl <args> -in <input>` (`positional`: the input file as last argument)
local dir

local function openssl(args, input, positional)
  local inf, outf = dir .. "/ossl.in", dir .. "/ossl.out"
  project.write_file(inf, input or "")
  os.remove(outf)
  local cmd = "openssl " .. args .. " -out " .. shell_quote(outf)
              .. (positional and " " or " -in ") .. shell_quote(inf)
  local ok, out = project.run(cmd)
  assert(ok, "openssl " .. args:match("^%S+") .. " failed: " .. out)
  return project.read_file(outf)
end


--- hex SHA-256 (or HMAC-SHA256 under `hmac_key`) of `data`
local function sha256_hex(data, hmac_key)
  local mac = hmac_key and (" -mac HMAC -macopt hexkey:" .. hex(hmac_key)) or ""
  return hex(openssl("dgst -sha256 -binary" .. mac, data, true))
end


--- the key check value keyring_meta.kcv holds for a base64 key
local function kcv_of(key_b64)
  return sha256_hex("kong-keyring-kcv", unb64(key_b64)):sub(1, 32)
end


--- A Kong Enterprise v1 export blob (docs/formats.md, "Export blob v1") for
-- `public_path`: RSA PKCS#1 v1.5 wrapped one-time key, AES-256-GCM keystream
-- without a tag.
local function ee_blob(public_path, keys, active)
  local one_time, nonce = random_bytes(32), random_bytes(12)
  local inner = assert(cjson.encode({ keys = keys, active = active }))
  local d = openssl("enc -aes-256-ctr -K " .. hex(one_time) .. " -iv " .. hex(nonce) .. "00000002", inner)
  local k = openssl("pkeyutl -encrypt -pubin -inkey " .. shell_quote(public_path)
                    .. " -pkeyopt rsa_padding_mode:pkcs1", one_time)
  return b64(assert(cjson.encode({ k = b64(k), n = b64(nonce), d = b64(d) })))
end


--- Opens a v2 export blob with openssl (RSA-OAEP-SHA256, then the GCM
-- keystream; the tag is left to the import specs): envelope, inner JSON.
local function open_export(blob, private_path)
  local envelope = cjson.decode(unb64(blob) or "")
  assert(type(envelope) == "table", "export blob is not base64 of JSON")
  local one_time = openssl("pkeyutl -decrypt -inkey " .. shell_quote(private_path)
                           .. " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256"
                           .. " -pkeyopt rsa_mgf1_md:sha256", unb64(envelope.k))
  local data = unb64(envelope.d)
  local inner = openssl("enc -d -aes-256-ctr -K " .. hex(one_time) .. " -iv " .. hex(unb64(envelope.n)) .. "00000002",
                        data:sub(1, -17))
  return envelope, cjson.decode(inner)
end


--- Makes every write to keyring_meta fail in PostgreSQL (a statement
-- trigger raising REFUSED) until the returned function is called.
local function refuse_keyring_meta_writes()
  kr.psql([[
    CREATE OR REPLACE FUNCTION api_spec_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION ']] .. REFUSED .. [[';
    END
    $$;
    CREATE TRIGGER api_spec_refuse BEFORE INSERT OR UPDATE OR DELETE ON keyring_meta
      FOR EACH STATEMENT EXECUTE FUNCTION api_spec_refuse();
  ]])
  local on = true
  return function()
    if on then
      on = false
      kr.psql("DROP TRIGGER api_spec_refuse ON keyring_meta; DROP FUNCTION api_spec_refuse();")
    end
  end
end


--- Kong settings of a node of this spec listening on port base + n (proxy)
-- and + n + 1 (Admin API), with `reuseport` so that the kernel spreads fresh
-- connections over both workers (without it one worker may take them all),
-- and debug logs, so that a body logged at any level would show.
local function node_env(n, extra)
  local env = kr.kong_env(extra)
  env.log_level = "debug"
  env.proxy_listen = "127.0.0.1:" .. (kr.port_base + n) .. " reuseport"
  env.admin_listen = "127.0.0.1:" .. (kr.port_base + n + 1) .. " reuseport"
  return env
end


--- Settings and Admin port of another node of this spec: its own prefix and
-- ports (port base + n, + n + 1), the same database.
local function other_node_env(name, n, extra)
  local env = node_env(n, extra)
  env.prefix = kr.prefix .. "-" .. name
  return env, kr.port_base + n + 1
end


--- GET /timers (Kong's own route) answers with the id of the worker that
-- serves the connection.
local function worker_id(client)
  local res = assert(client:send { method = "GET", path = "/timers" })
  local body = res:read_body()
  assert.equals(200, res.status)
  local json = assert(cjson.decode(body))
  return json.worker.id
end


--- `method path` on one keep-alive connection between two GET /timers, so
-- the worker that answers is known (a connection never changes workers):
-- worker id, status, body, json.
local function pinned(method, path, body)
  local client = helpers.admin_client(60000)
  local before = worker_id(client)
  local headers = {}
  if type(body) == "table" then
    body = assert(cjson.encode(body))
    headers["Content-Type"] = "application/json"
  end
  local res = assert(client:send { method = method, path = path, body = body, headers = headers })
  local text = res:read_body()
  local after = worker_id(client)
  client:close()
  assert.equals(before, after, "the keep-alive connection moved to another worker")
  return before, res.status, text, cjson.decode(text or "")
end


--- Repeats an idempotent request until a worker `want(id)` answers it.
local function pinned_until(want, method, path)
  for _ = 1, 40 do
    local id, status, body, json = pinned(method, path)
    if want(id) then
      return id, status, body, json
    end
  end
  error("40 requests to " .. path .. " never reached the wanted worker")
end


--- The node's worker pids, sorted (Kong's GET /, both workers up).
local function worker_pids()
  local pids = helpers.get_kong_workers(2)
  sort(pids)
  return pids
end


--- How many [error] lines of the node's error.log match `pattern`.
local function error_lines(pattern)
  local n = 0
  for _, line in ipairs(kr.log_lines("[error]")) do
    if line:find(pattern) then
      n = n + 1
    end
  end
  return n
end


-- spec ---------------------------------------------------------------------

for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring Admin API [#" .. strategy .. "]", function()
  local k1                  -- the bootstrapped key id
  local gen                 -- a key made by POST /keyring/generate: { id, key }
  local seen_keys = {}      -- base64 of every key this spec saw
  local secrets = {}        -- other text that must never reach a log
  local paths = {}          -- key files
  local started = {}        -- what `kong start` printed

  --- Records a key this spec saw (here and for the later leak sweep).
  local function saw_key(key_b64)
    seen_keys[#seen_keys + 1] = key_b64
    project.remember_key(key_b64)
    return key_b64
  end

  -- a random 32-byte key as base64; with `want_specials`, one whose base64
  -- has '+' and '/' (form encoding traps)
  local function new_key(want_specials)
    while true do
      local key = b64(random_bytes(32))
      if not want_specials or (key:find("+", 1, true) and key:find("/", 1, true)) then
        return saw_key(key)
      end
    end
  end

  local function main_env()
    return node_env(0, {
      keyring_public_key = paths.backup_pub,
      keyring_private_key = paths.backup,
      keyring_recovery_public_key = paths.recovery_pub,
    })
  end

  local function start(env)
    -- with reuseport a leftover node on these ports would answer half the calls
    for _, listen in ipairs({ env.proxy_listen, env.admin_listen }) do
      local port = tonumber(listen:match(":(%d+)"))
      assert.is_false(project.port_in_use(port), "port " .. port .. " is in use (a leftover node?)")
    end
    local ok, err, out = helpers.start_kong(env)
    started[#started + 1] = (err or "") .. (out or "")
    return ok, err
  end

  local function ring()
    local status, _, json = admin("GET", "/keyring")
    assert.equals(200, status)
    return json
  end

  local function active_id()
    local _, _, json = admin("GET", "/keyring/active")
    return json and json.id
  end

  local function db_active()
    return rows("SELECT id FROM keyring_meta WHERE state = 'active'")
  end

  local function activate(id)
    assert.equals(204, (admin("POST", "/keyring/activate", { key = id })))
  end

  --- status, body, json must be `status` with exactly { error = message }
  local function assert_error(status, message, s, body, json)
    assert.equals(status, s, body)
    assert.same({ error = message }, json)
  end

  --- No [alert], [crit] or [emerg] line and no worker death in error.log.
  local function assert_no_alert()
    local log = kr.error_log()
    for _, level in ipairs({ "[alert]", "[crit]", "[emerg]" }) do
      assert.is_nil(log:find(level, 1, true), "an " .. level .. " line in error.log")
    end
    assert.is_nil(log:find("exited on signal", 1, true), "a worker exited on a signal")
  end

  --- The same two workers as `before` run, both answer, and no worker died.
  local function assert_workers_up(before)
    assert.equals(2, #before)
    assert.same(before, worker_pids())
    local answered = {}
    helpers.wait_until(function()
      local client = helpers.admin_client(10000)
      answered[worker_id(client)] = true
      client:close()
      return answered[0] and answered[1]
    end, 10)
    assert_no_alert()
  end

  --- No key this spec saw (base64, base64url, hex, HEX) and no secret text
  -- in the node's error.log, its access logs or what `kong start` printed.
  local function assert_nothing_leaked()
    local text = kr.error_log()
                 .. (project.read_file(kr.prefix .. "/logs/admin_access.log") or "")
                 .. (project.read_file(kr.prefix .. "/logs/access.log") or "")
                 .. concat(started)
    assert.is_true(#text > 0)
    for i, key in ipairs(seen_keys) do
      local raw = unb64(key)
      assert.equals(32, raw and #raw, "key #" .. i .. " is not 32 bytes")
      local forms = {
        base64 = key,
        base64url = (key:gsub("=+$", ""):gsub("%+", "-"):gsub("/", "_")),
        hex = hex(raw),
        HEX = hex(raw):upper(),
      }
      for form_name, s in pairs(forms) do
        assert.is_nil(text:find(s, 1, true), "key #" .. i .. " in the logs as " .. form_name)
      end
    end
    for name, s in pairs(secrets) do
      assert.is_nil(text:find(s, 1, true), name .. " in the logs")
    end
  end

  lazy_setup(function()
    dir = project.tmp .. "/02_api-spec"
    os.execute("rm -rf " .. shell_quote(dir) .. " && mkdir -p " .. shell_quote(dir))
    for _, name in ipairs({ "backup", "recovery", "other" }) do
      local priv, pub = project.rsa_pair(2048)
      paths[name] = dir .. "/" .. name .. ".pem"
      paths[name .. "_pub"] = dir .. "/" .. name .. ".pub"
      project.write_file(paths[name], priv)
      project.write_file(paths[name .. "_pub"], pub)
      -- a line from the middle of each private key: never logged
      local lines = {}
      for line in priv:gmatch("[^\n]+") do
        lines[#lines + 1] = line
      end
      secrets[name .. " private key"] = lines[math.floor(#lines / 2)]
    end

    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    assert(start(main_env()))
    -- the first node of a cluster generates and activates the first key
    k1 = kr.wait_active_key()
    assert.equals(201, (admin("POST", "/consumers", { username = "api" })))
  end)

  lazy_teardown(function()
    kr.stop_kong()
    if dir then
      os.execute("rm -rf " .. shell_quote(dir))
    end
  end)


  describe("GET /keyring", function()
    it("answers 200 with the ids as an array and the active id, as the database has them", function()
      local status, body, json, headers = admin("GET", "/keyring")
      assert.equals(200, status)
      assert.matches("application/json", headers["Content-Type"], 1, true)
      assert.matches('^{"ids":%[', body)
      assert.same({ "active", "encryptions", "ids" }, keys_of(json))
      assert.same({ k1 }, json.ids)
      assert.equals(k1, json.active)
      assert.same({ k1 }, rows("SELECT id FROM keyring_meta"))
      assert.same({ k1 }, db_active())
    end)
  end)


  describe("GET /keyring/active", function()
    it("answers 200 with exactly { id }", function()
      local status, _, json = admin("GET", "/keyring/active")
      assert.equals(200, status)
      assert.same({ id = k1 }, json)
    end)
  end)


  describe("POST /keyring/generate", function()
    it("answers 201 with the id and 32 key bytes, adds the key without activating it", function()
      local status, _, json = admin("POST", "/keyring/generate")
      assert.equals(201, status)
      assert.same({ "id", "key" }, keys_of(json))
      saw_key(json.key)
      gen = json
      assert.matches("^[A-Za-z0-9]+$", gen.id)
      assert.equals(8, #gen.id)
      local raw = unb64(gen.key)
      assert.equals(32, raw and #raw)
      local now = ring()
      assert.is_true(contains(now.ids, gen.id))
      assert.equals(k1, now.active)
      assert.equals(k1, active_id())
    end)

    it("records the key in keyring_meta (alive, its check value) and a recovery row", function()
      assert.same({ "alive" }, rows("SELECT state FROM keyring_meta WHERE id = '" .. gen.id .. "'"))
      local kcv = row1("SELECT kcv FROM keyring_meta WHERE id = '" .. gen.id .. "'")
      assert.is_true(kcv == kcv_of(gen.key), "keyring_meta.kcv is not the key's check value")
      local row = rows("SELECT key_encrypted, recovery_key_id FROM keyring_keys WHERE id = '" .. gen.id .. "'")
      assert.equals(1, #row)
      local encrypted, recovery_key_id = row[1]:match("^([^|]+)|(%x+)$")
      assert.matches("^%$ker%$2%$", encrypted)
      local der = openssl("pkey -pubin -outform DER", project.read_file(paths.recovery_pub))
      assert.equals(sha256_hex(der), recovery_key_id)
    end)

    it("adds a key that every worker holds: generated on one, used to encrypt on the other", function()
      local gen_worker, status, _, made = pinned("POST", "/keyring/generate")
      assert.equals(201, status)
      saw_key(made.key)
      local _, list_status, _, listed = pinned_until(function(id) return id ~= gen_worker end, "GET", "/keyring")
      assert.equals(200, list_status)
      assert.is_true(contains(listed.ids, made.id), "the other worker does not list the new key")

      activate(made.id)
      local write_worker, cred
      for i = 1, 40 do
        local s
        write_worker, s, _, cred = pinned("POST", "/consumers/api/basic-auth",
                                          { username = "api-" .. i, password = "pw-" .. i })
        assert.equals(201, s)
        if write_worker ~= gen_worker then
          break
        end
      end
      assert.not_equals(gen_worker, write_worker)
      local stored = row1("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'")
      assert.equals("$ke$2$-" .. made.id .. "-", stored:sub(1, 8 + #made.id))
      local _, read_status, _, read = pinned_until(function(id) return id == gen_worker end,
                                                   "GET", "/consumers/api/basic-auth/" .. cred.id)
      assert.equals(200, read_status)
      assert.equals(cred.password, read.password)
      activate(k1)
    end)

    it("answers 500 { error } and keeps no key when the database refuses it", function()
      local before = sorted(ring().ids)
      finally(refuse_keyring_meta_writes())
      local status, _, json = admin("POST", "/keyring/generate")
      assert.equals(500, status)
      assert.same({ "error" }, keys_of(json))
      assert.matches(REFUSED, json.error, 1, true)
      assert.same(before, sorted(ring().ids))
    end)
  end)


  describe("POST /keyring/activate", function()
    local function check_active(id)
      assert.equals(id, active_id())
      assert.same({ id }, db_active())
      assert.equals(id, ring().active)
    end

    it("answers 204 for a JSON body and activates on the node and in the database", function()
      local status, body = admin("POST", "/keyring/activate", { key = gen.id })
      assert.equals(204, status)
      assert.equals("", body)
      check_active(gen.id)
      assert.same({ "alive" }, rows("SELECT state FROM keyring_meta WHERE id = '" .. k1 .. "'"))
    end)

    it("answers 204 for a form body", function()
      assert.equals(204, (admin("POST", "/keyring/activate", form({ { "key", k1 } }))))
      check_active(k1)
    end)

    it("answers 204 for a multipart body", function()
      local body, headers = multipart({ { "key", gen.id } })
      assert.equals(204, (admin("POST", "/keyring/activate", body, headers)))
      check_active(gen.id)
    end)

    it("answers 204 for the id in the query string", function()
      assert.equals(204, (admin("POST", "/keyring/activate?key=" .. url_escape(k1))))
      check_active(k1)
    end)

    it("answers 404 { error = 'not found' } for an unknown id and changes nothing", function()
      assert_error(404, "not found", admin("POST", "/keyring/activate", { key = "nosuchkey" }))
      check_active(k1)
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id = 'nosuchkey'"))
    end)

    it("answers 500 { error } when the database refuses it, keeps the node's active key, and recovers", function()
      local allow = refuse_keyring_meta_writes()
      finally(allow)
      -- several times, so that both workers (and their connections) see the error
      local workers = {}
      for _ = 1, 40 do
        local worker, status, _, json = pinned("POST", "/keyring/activate", { key = gen.id })
        workers[worker] = true
        assert.equals(500, status)
        assert.matches(REFUSED, json.error, 1, true)
        assert.equals(k1, active_id())
        if workers[0] and workers[1] then
          break
        end
      end
      assert.same({ 0, 1 }, keys_of(workers))
      allow()
      -- no connection was left inside an aborted transaction
      for _ = 1, 6 do
        activate(gen.id)
        activate(k1)
      end
      check_active(k1)
    end)

    it("answers 400 for an id with '-'", function()
      local status, _, json = admin("POST", "/keyring/activate", { key = "a-b" })
      assert.equals(400, status)
      assert.same({ "error" }, keys_of(json))
      assert.matches("invalid key id", json.error, 1, true)
      check_active(k1)
    end)
  end)


  describe("POST /keyring/import/raw", function()
    local raw_json, raw_form, raw_multi

    local function check_added(id, key)
      local now = ring()
      assert.is_true(contains(now.ids, id), id .. " not on the ring")
      assert.equals(k1, now.active)
      assert.same({ "alive" }, rows("SELECT state FROM keyring_meta WHERE id = '" .. id .. "'"))
      local kcv = row1("SELECT kcv FROM keyring_meta WHERE id = '" .. id .. "'")
      assert.is_true(kcv == kcv_of(key), "keyring_meta.kcv of " .. id .. " is not the key's check value")
      assert.equals(1, #rows("SELECT id FROM keyring_keys WHERE id = '" .. id .. "'"))
    end

    lazy_setup(function()
      raw_json = { id = "rawJson", key = new_key(true) }
      raw_form = { id = "raw.Form_1", key = new_key(true) }
      raw_multi = { id = "rawMulti", key = new_key(true) }
    end)

    it("answers 201 with an empty body for a JSON body; the key is added, not activated", function()
      local status, body = admin("POST", "/keyring/import/raw", { id = raw_json.id, data = raw_json.key })
      assert.equals(201, status)
      assert.equals("", body)
      check_added(raw_json.id, raw_json.key)
    end)

    it("answers 201 for a form body (base64 '+' and '/' escaped)", function()
      local status, body = admin("POST", "/keyring/import/raw",
                                 form({ { "id", raw_form.id }, { "data", raw_form.key } }))
      assert.equals(201, status)
      assert.equals("", body)
      check_added(raw_form.id, raw_form.key)
    end)

    it("answers 201 for a multipart body", function()
      local body, headers = multipart({ { "id", raw_multi.id }, { "data", raw_multi.key } })
      local status, res = admin("POST", "/keyring/import/raw", body, headers)
      assert.equals(201, status)
      assert.equals("", res)
      check_added(raw_multi.id, raw_multi.key)
    end)

    it("answers 201 again for the same id and bytes", function()
      assert.equals(201, (admin("POST", "/keyring/import/raw", { id = raw_json.id, data = raw_json.key })))
      check_added(raw_json.id, raw_json.key)
    end)

    it("answers 409 for an existing id with other bytes and keeps the first key", function()
      local kcv = row1("SELECT kcv FROM keyring_meta WHERE id = '" .. raw_json.id .. "'")
      assert_error(409, "key '" .. raw_json.id .. "' already exists with different material",
                   admin("POST", "/keyring/import/raw", { id = raw_json.id, data = new_key() }))
      assert_error(409, "key '" .. k1 .. "' already exists with different material",
                   admin("POST", "/keyring/import/raw", { id = k1, data = new_key() }))
      assert.equals(kcv, row1("SELECT kcv FROM keyring_meta WHERE id = '" .. raw_json.id .. "'"))
      check_added(raw_json.id, raw_json.key)
    end)

    it("answers 400 for a missing id or data", function()
      local message = "missing 'id' or 'data' params"
      assert_error(400, message, admin("POST", "/keyring/import/raw", { id = "onlyId" }))
      assert_error(400, message, admin("POST", "/keyring/import/raw", { data = new_key() }))
      assert_error(400, message, admin("POST", "/keyring/import/raw", form({ { "id", "x" }, { "data", "" } })))
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id IN ('onlyId', 'x')"))
    end)

    it("answers 400 'key must be 32 bytes' for 31 and 33 bytes", function()
      for _, n in ipairs({ 31, 33, 16 }) do
        assert_error(400, "key must be 32 bytes",
                     admin("POST", "/keyring/import/raw", { id = "short" .. n, data = b64(random_bytes(n)) }))
      end
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id LIKE 'short%'"))
    end)

    it("answers 400 { error } for data that is not base64", function()
      for _, data in ipairs({ "not base64 at all!", "%%%%", string.rep("*", 44) }) do
        local status, _, json = admin("POST", "/keyring/import/raw", { id = "notb64", data = data })
        assert.equals(400, status)
        assert.same({ "error" }, keys_of(json))
      end
      assert.is_false(contains(ring().ids, "notb64"))
    end)

    it("answers 400 { error } for an id with '-', '$', a space or over 255 chars, and adds nothing", function()
      for _, id in ipairs({ "a-b", "a$b", "a b", string.rep("i", 256) }) do
        local status, _, json = admin("POST", "/keyring/import/raw", { id = id, data = new_key() })
        assert.equals(400, status)
        assert.same({ "error" }, keys_of(json))
        assert.matches("invalid key id", json.error, 1, true)
      end
      for _, id in ipairs(ring().ids) do
        assert.is_nil(id:find("[%-%$ ]"), "invalid id '" .. id .. "' added")
      end
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id ~ '[-$ ]' OR length(id) > 255"))
    end)
  end)


  describe("POST /keyring/remove", function()
    it("answers 409 for the active key and keeps it", function()
      assert_error(409, "cannot remove active key", admin("POST", "/keyring/remove", { key = k1 }))
      assert.equals(k1, active_id())
      assert.same({ k1 }, db_active())
      assert.equals(1, #rows("SELECT id FROM keyring_keys WHERE id = '" .. k1 .. "'"))
    end)

    it("answers 204 for an unknown id", function()
      local status, body = admin("POST", "/keyring/remove", { key = "nosuchkey" })
      assert.equals(204, status)
      assert.equals("", body)
    end)

    it("answers 204, drops the key and deletes its keyring_meta and keyring_keys rows", function()
      local _, _, doomed = admin("POST", "/keyring/generate")
      saw_key(doomed.key)
      assert.equals(1, #rows("SELECT id FROM keyring_meta WHERE id = '" .. doomed.id .. "'"))
      assert.equals(1, #rows("SELECT id FROM keyring_keys WHERE id = '" .. doomed.id .. "'"))
      local body, headers = multipart({ { "key", doomed.id } })
      assert.equals(204, (admin("POST", "/keyring/remove", body, headers)))
      assert.is_false(contains(ring().ids, doomed.id))
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id = '" .. doomed.id .. "'"))
      assert.same({}, rows("SELECT id FROM keyring_keys WHERE id = '" .. doomed.id .. "'"))
      -- gone for both workers (one shared region)
      local workers = {}
      for _ = 1, 40 do
        local worker, status, body_, json = pinned("POST", "/keyring/activate", { key = doomed.id })
        assert_error(404, "not found", status, body_, json)
        workers[worker] = true
        if workers[0] and workers[1] then
          break
        end
      end
      assert.same({ 0, 1 }, keys_of(workers))
    end)

    it("answers 400 for an id with '-'", function()
      local status, _, json = admin("POST", "/keyring/remove", { key = "a-b" })
      assert.equals(400, status)
      assert.matches("invalid key id", json.error, 1, true)
    end)
  end)


  describe("POST /keyring/export", function()
    it("answers 200 with exactly { data }, a v2 blob holding every key and the active id", function()
      activate(gen.id)
      local now = ring()
      local status, _, json = admin("POST", "/keyring/export")
      assert.equals(200, status)
      assert.same({ "data" }, keys_of(json))
      local blob = json.data
      secrets["export blob"] = blob
      local envelope, inner = open_export(blob, paths.backup)
      assert.equals(2, envelope.v)
      assert.is_table(inner, "the export does not open with the backup private key")
      assert.equals(gen.id, inner.active)
      assert.same(sorted(now.ids), keys_of(inner.keys))
      for id, key in pairs(inner.keys) do
        local raw = unb64(key)
        assert.equals(32, raw and #raw, id)
        saw_key(key) -- the bootstrapped key is seen only here
      end
      assert.is_true(inner.keys[gen.id] == gen.key, "exported bytes of the generated key differ")
    end)

    it("answers 400 for an extra parameter", function()
      assert_error(400, "unknown parameter 'bogus'", admin("POST", "/keyring/export", { bogus = "1" }))
    end)
  end)


  describe("POST /keyring/import", function()
    local blob, blob_ids

    lazy_setup(function()
      activate(gen.id)
      blob_ids = sorted(ring().ids)
      local _, _, json = admin("POST", "/keyring/export")
      blob = json.data
    end)

    it("answers 200 { ids, active }, upserts keyring_meta and activates in the database", function()
      activate(k1)
      kr.psql("DELETE FROM keyring_meta WHERE id = '" .. gen.id .. "'")
      kr.psql("DELETE FROM keyring_keys WHERE id = '" .. gen.id .. "'")
      local status, body, json, headers = admin("POST", "/keyring/import", { data = blob })
      assert.equals(200, status)
      assert.matches("application/json", headers["Content-Type"], 1, true)
      assert.matches('^{"ids":%[', body)
      assert.same({ "active", "ids" }, keys_of(json))
      assert.same(blob_ids, sorted(json.ids))
      assert.equals(gen.id, json.active)
      assert.equals(gen.id, active_id())
      assert.same({ gen.id }, db_active())
      assert.same(blob_ids, sorted(rows("SELECT id FROM keyring_meta")))
      assert.same({ "alive" }, rows("SELECT state FROM keyring_meta WHERE id = '" .. k1 .. "'"))
      -- the recovery row of the re-imported key is written again
      assert.equals(1, #rows("SELECT id FROM keyring_keys WHERE id = '" .. gen.id .. "'"))
    end)

    it("answers 200 for a form body and for a multipart body", function()
      activate(k1)
      assert.equals(200, (admin("POST", "/keyring/import", form({ { "data", blob } }))))
      assert.same({ gen.id }, db_active())
      activate(k1)
      local body, headers = multipart({ { "data", blob } })
      assert.equals(200, (admin("POST", "/keyring/import", body, headers)))
      assert.equals(gen.id, active_id())
      assert.same({ gen.id }, db_active())
    end)

    it("imports a Kong Enterprise v1 blob and activates its active key everywhere", function()
      finally(function()
        activate(k1)
      end)
      local key = new_key()
      local ee = ee_blob(paths.backup_pub, { eeKey1 = key }, "eeKey1")
      secrets["EE blob"] = ee
      local status, _, json = admin("POST", "/keyring/import", { data = ee })
      assert.equals(200, status)
      assert.same({ "eeKey1" }, json.ids)
      assert.equals("eeKey1", json.active)
      assert.equals("eeKey1", active_id())
      assert.same({ "eeKey1" }, db_active())
      assert.is_true(row1("SELECT kcv FROM keyring_meta WHERE id = 'eeKey1'") == kcv_of(key), "kcv of eeKey1")
    end)

    it("answers 409 for a blob with an id held with other bytes, and imports nothing of it", function()
      local ee = ee_blob(paths.backup_pub, { [k1] = new_key(), eeNew = new_key() }, "eeNew")
      assert_error(409, "key '" .. k1 .. "' already exists with different material",
                   admin("POST", "/keyring/import", { data = ee }))
      assert.is_false(contains(ring().ids, "eeNew"))
      assert.equals(k1, active_id())
      assert.same({}, rows("SELECT id FROM keyring_meta WHERE id = 'eeNew'"))
      assert.same({ k1 }, db_active())
    end)

    it("answers 400 { error } for garbage, JSON that is no blob, and a blob for another key", function()
      local before = sorted(ring().ids)
      local bad = {
        "garbage!",
        b64("not json"),
        b64('{"k":"AAAA","n":"AAAA","d":"AAAA"}'),
        b64('{"v":9,"k":"","n":"","d":""}'),
        blob:sub(1, -9),
        ee_blob(paths.other_pub, { eeOther = new_key() }, "eeOther"),
      }
      for i, data in ipairs(bad) do
        local status, _, json = admin("POST", "/keyring/import", { data = data })
        assert.equals(400, status, "bad blob #" .. i)
        assert.same({ "error" }, keys_of(json))
        assert.is_string(json.error)
      end
      assert.same(before, sorted(ring().ids))
      assert.same({ k1 }, db_active())
    end)
  end)


  describe("POST /keyring/vault/sync under the cluster strategy", function()
    it("answers 400, whatever the parameters", function()
      local message = "endpoint only supported for 'vault' strategy"
      assert_error(400, message, admin("POST", "/keyring/vault/sync"))
      assert_error(400, message, admin("POST", "/keyring/vault/sync", { token = "api-spec-cluster-token" }))
      assert_error(400, message, admin("POST", "/keyring/vault/sync", { token = 1, bogus = true }))
      secrets["cluster token"] = "api-spec-cluster-token"
    end)
  end)


  describe("bad input", function()
    local before

    lazy_setup(function()
      before = worker_pids()
    end)

    describe("unknown methods and paths", function()
      local group_before

      lazy_setup(function()
        group_before = worker_pids()
      end)

      local CASES = {
        { "PUT", "/keyring" }, { "DELETE", "/keyring" }, { "POST", "/keyring" },
        { "POST", "/keyring/active" }, { "PATCH", "/keyring/active" },
        { "GET", "/keyring/generate" }, { "PUT", "/keyring/generate" },
        { "GET", "/keyring/activate" }, { "DELETE", "/keyring/activate" },
        { "GET", "/keyring/remove" }, { "DELETE", "/keyring/remove" },
        { "GET", "/keyring/export" }, { "GET", "/keyring/import" }, { "PUT", "/keyring/import" },
        { "GET", "/keyring/import/raw" }, { "PATCH", "/keyring/import/raw" },
        { "GET", "/keyring/recover" }, { "DELETE", "/keyring/recover" },
        { "GET", "/keyring/vault/sync" }, { "PUT", "/keyring/vault/sync" },
      }
      for _, case in ipairs(CASES) do
        -- lapis' respond_to raises "don't know how to respond to", which
        -- Kong's api_helpers.handle_error answers 405
        it(case[1] .. " " .. case[2] .. " answers Kong's 405 JSON", function()
          local status, _, json = admin(case[1], case[2], case[1] ~= "GET" and "" or nil)
          assert.equals(405, status)
          assert.same({ message = "Method not allowed" }, json)
        end)
      end

      it("OPTIONS lists the route's methods, as Kong does for every route", function()
        local status, _, _, headers = admin("OPTIONS", "/keyring/activate")
        assert.equals(204, status)
        assert.equals("OPTIONS, POST", headers["Allow"])
        status, _, _, headers = admin("OPTIONS", "/keyring")
        assert.equals(204, status)
        assert.equals("GET, HEAD, OPTIONS", headers["Allow"])
      end)

      it("an unknown /keyring path answers Kong's 404", function()
        for _, method in ipairs({ "GET", "POST" }) do
          local status, _, json = admin(method, "/keyring/nope")
          assert.equals(404, status)
          assert.same({ message = "Not found" }, json)
        end
      end)

      it("keeps both workers up and logs no alert", function()
        assert_workers_up(group_before)
      end)
    end)

    describe("unknown parameters", function()
      local group_before

      lazy_setup(function()
        group_before = worker_pids()
      end)

      for _, route in ipairs(ROUTES) do
        local label = route.method .. " " .. route.path

        it(label .. " answers 400 for an unknown query-string parameter", function()
          assert_error(400, "unknown parameter 'bogus'", admin(route.method, route.path .. "?bogus=1"))
        end)

        if route.method == "POST" then
          -- a valid request plus one unknown parameter must not act
          local function valid_fields()
            local fields = {}
            for _, p in ipairs(route.params) do
              fields[#fields + 1] = { p, p == "key" and k1 or "x" }
            end
            fields[#fields + 1] = { "bogus", "1" }
            return fields
          end

          it(label .. " answers 400 for an unknown parameter in JSON, form and multipart bodies", function()
            local ids = sorted(ring().ids)
            local json_body = {}
            for _, f in ipairs(valid_fields()) do
              json_body[f[1]] = f[2]
            end
            assert_error(400, "unknown parameter 'bogus'", admin("POST", route.path, json_body))
            assert_error(400, "unknown parameter 'bogus'", admin("POST", route.path, form(valid_fields())))
            assert_error(400, "unknown parameter 'bogus'", admin("POST", route.path, multipart(valid_fields())))
            assert.same(ids, sorted(ring().ids))
            assert.equals(k1, active_id())
          end)

          it(label .. " answers 400 for a JSON array body (its indexes are parameters)", function()
            assert_error(400, "unknown parameter '1'", admin("POST", route.path, '["x"]', JSON_CT))
          end)

          it(label .. " never echoes a parameter name that could be key material", function()
            local key = new_key()
            for _, body in ipairs({ key, url_escape(key), hex(unb64(key)) }) do
              local status, res, json = admin("POST", route.path, body)
              assert.equals(400, status)
              assert.same({ error = "unknown parameter (name not shown)" }, json)
              assert.is_true(#res < 60)
            end
          end)
        end
      end

      it("keeps both workers up and logs no alert", function()
        assert_workers_up(group_before)
      end)
    end)

    describe("wrong types", function()
      local group_before

      lazy_setup(function()
        group_before = worker_pids()
      end)

      local JSON_VALUES = { number = "1", float = "1.5", array = '["x"]', object = '{"a":"x"}', bool = "true",
                            empty_array = "[]" }

      for _, route in ipairs(ROUTES) do
        for _, param in ipairs(route.method == "POST" and route.params or {}) do
          local label = route.path .. " '" .. param .. "'"
          local message = "'" .. param .. "' must be a string"

          it(label .. " as a JSON number, float, array, object or bool answers 400", function()
            for kind, v in pairs(JSON_VALUES) do
              local body = '{"' .. param .. '":' .. v .. "}"
              local status, _, json = admin("POST", route.path, body, JSON_CT)
              assert.equals(400, status, kind)
              assert.same({ error = message }, json, kind)
            end
          end)

          it(label .. " nested in a form body or query string answers 400", function()
            local p = url_escape(param)
            assert_error(400, message, admin("POST", route.path, p .. "%5B%5D=a"))
            assert_error(400, message, admin("POST", route.path, p .. ".x=a"))
            assert_error(400, message, admin("POST", route.path .. "?" .. p .. "%5B%5D=a"))
          end)

          -- ngx_lua reads a form argument without '=' (and Kong's decode_args
          -- the values "true" / "false") as a boolean
          it(label .. " without '=' or as 'true' in a form body answers 400", function()
            local p = url_escape(param)
            assert_error(400, message, admin("POST", route.path, p))
            assert_error(400, message, admin("POST", route.path, p .. "=true"))
          end)
        end
      end

      it("a parameter given twice (form, query string, query string and body) answers 400, never acting "
         .. "on one of the values", function()
        -- lapis keeps only the last value of a repeated argument and the body
        -- overrides the query string; the plugin reads the raw arguments.
        -- A multipart field given twice cannot be seen (lapis streams
        -- multipart bodies; README: Admin API)
        for _, route in ipairs(ROUTES) do
          for _, param in ipairs(route.method == "POST" and route.params or {}) do
            local message = "'" .. param .. "' must be a string"
            local p = url_escape(param)
            assert_error(400, message, admin("POST", route.path, p .. "=a&" .. p .. "=b"))
            assert_error(400, message, admin("POST", route.path .. "?" .. p .. "=a&" .. p .. "=b"))
            assert_error(400, message, admin("POST", route.path .. "?" .. p .. "=a", form({ { param, "b" } })))
            assert_error(400, message, admin("POST", route.path .. "?" .. p .. "=a", { [param] = "b" }))
          end
        end
        assert.equals(k1, active_id())
      end)

      it("keeps both workers up and logs no alert", function()
        assert_workers_up(group_before)
      end)
    end)

    describe("missing parameters and invalid JSON", function()
      local group_before

      lazy_setup(function()
        group_before = worker_pids()
      end)

      for _, route in ipairs(ROUTES) do
        if route.missing then
          local label = route.method .. " " .. route.path

          it(label .. " answers 400 without its parameters: no body, {}, null and empty values", function()
            local empty_json = {}
            local empty_form = {}
            for _, p in ipairs(route.params) do
              empty_json[#empty_json + 1] = '"' .. p .. '":null'
              empty_form[#empty_form + 1] = { p, "" }
            end
            assert_error(400, route.missing, admin("POST", route.path))
            assert_error(400, route.missing, admin("POST", route.path, "{}", JSON_CT))
            assert_error(400, route.missing, admin("POST", route.path, "[]", JSON_CT))
            assert_error(400, route.missing,
                         admin("POST", route.path, "{" .. concat(empty_json, ",") .. "}", JSON_CT))
            assert_error(400, route.missing, admin("POST", route.path, form(empty_form)))
            assert_error(400, route.missing, admin("POST", route.path, multipart(empty_form)))
          end)
        end

        if route.method == "POST" then
          it(route.path .. " answers Kong's 400 for a body that is not JSON", function()
            for _, body in ipairs({ "{", '{"key":', "{'key':'x'}", "key=x", "\0\1\2" }) do
              local status, _, json = admin("POST", route.path, body, JSON_CT)
              assert.equals(400, status)
              assert.same({ message = "Cannot parse JSON body" }, json)
            end
          end)

          -- lapis' json_params hands a decoded `null` or string to pairs()
          -- (lapis/request.lua add_params) before any handler runs
          it(route.path .. " answers Kong's own 500 to a JSON body that is no object, as /consumers does", function()
            local ids = sorted(ring().ids)
            local logged = error_lines(LAPIS_PAIRS)
            for _, body in ipairs({ "null", '"a string"' }) do
              local status, _, json = admin("POST", route.path, body, JSON_CT)
              assert.equals(500, status)
              assert.same(KONG_500, json)
              local kong_status, _, kong_json = admin("POST", "/consumers", body, JSON_CT)
              assert.equals(kong_status, status)
              assert.same(kong_json, json)
            end
            assert.equals(logged + 4, error_lines(LAPIS_PAIRS))
            assert.same(ids, sorted(ring().ids))
            assert.equals(k1, active_id())
          end)

          it(route.path .. " answers Kong's 415 to a body that is neither JSON, form nor multipart", function()
            local status, res = admin("POST", route.path, "x", { ["Content-Type"] = "text/plain" })
            assert.equals(415, status)
            assert.matches("415 Unsupported Media Type", res, 1, true)
          end)
        end
      end

      it("keeps both workers up and logs no alert", function()
        assert_workers_up(group_before)
      end)
    end)

    describe("body size", function()
      local group_before

      lazy_setup(function()
        group_before = worker_pids()
      end)

      -- a JSON body of exactly `size` bytes: { "<param>": "AAAA..." } plus the route's other parameters
      local function json_of_size(route, size)
        local head = "{"
        local param = route.params[#route.params] or "pad"
        for i = 1, #route.params - 1 do
          head = head .. '"' .. route.params[i] .. '":"big",'
        end
        head = head .. '"' .. param .. '":"'
        return head .. string.rep("A", size - #head - 2) .. '"}'
      end

      for _, route in ipairs(ROUTES) do
        if route.method == "POST" then
          it(route.path .. " answers 4xx JSON to a body of exactly 10 MiB (it reaches the handler)", function()
            local body = json_of_size(route, MAX_BODY)
            assert.equals(MAX_BODY, #body)
            local status, res, json = admin("POST", route.path, body, JSON_CT)
            assert.is_true(status >= 400 and status < 500, "status " .. tostring(status))
            assert.is_table(json, res:sub(1, 200))
            assert.same({ "error" }, keys_of(json))
            assert.is_true(#json.error < 200, "the error echoes the body")
          end)
        end
      end

      it("answers 4xx JSON to a 10 MiB form body without '=' (an unknown parameter, name not shown)", function()
        local status, res, json = admin("POST", "/keyring/import/raw", string.rep("A", MAX_BODY))
        assert.equals(400, status)
        assert.same({ error = "unknown parameter (name not shown)" }, json)
        assert.is_true(#res < 200)
      end)

      it("answers 4xx JSON to a 10 MiB multipart body", function()
        local boundary = "kong-api-spec-size"
        local head = multipart({ { "data", "" } }, boundary)
        local body, headers = multipart({ { "data", string.rep("A", MAX_BODY - #head) } }, boundary)
        assert.equals(MAX_BODY, #body)
        local status, _, json = admin("POST", "/keyring/import", body, headers)
        assert.equals(400, status)
        assert.same({ "error" }, keys_of(json))
      end)

      -- Kong's Admin server has client_max_body_size 10m and no error_page:
      -- nginx refuses a larger body before any Lua runs, with its own HTML page
      it("one byte over 10 MiB is nginx's 413 HTML page, as Kong's Admin API answers", function()
        local logged = #kr.log_lines("client intended to send too large body: " .. (MAX_BODY + 1) .. " bytes")
        for _, path in ipairs({ "/keyring/import", "/keyring/import/raw", "/keyring/activate" }) do
          local route
          for _, r in ipairs(ROUTES) do
            if r.path == path then
              route = r
            end
          end
          local status, res, json = admin("POST", path, json_of_size(route, MAX_BODY + 1), JSON_CT)
          assert.equals(413, status)
          assert.is_nil(json)
          assert.matches("<title>413 Request Entity Too Large</title>", res, 1, true)
        end
        assert.equals(logged + 3,
                      #kr.log_lines("client intended to send too large body: " .. (MAX_BODY + 1) .. " bytes"))
      end)

      it("keeps both workers up and logs no alert", function()
        assert_workers_up(group_before)
      end)
    end)

    it("leaves the ring as it was", function()
      assert.equals(k1, active_id())
      assert.same({ k1 }, db_active())
      assert_workers_up(before)
    end)
  end)


  describe("after a restart (keys lost, recovery rows in the database)", function()
    local db_ids, db_active_id, cred

    lazy_setup(function()
      local status
      status, _, cred = admin("POST", "/consumers/api/basic-auth", { username = "api-recover", password = "pw" })
      assert.equals(201, status)
      -- a plugin whose config the proxy answers with, on a route (no
      -- service: the plugin answers in its access phase)
      assert.equals(201, (admin("POST", "/routes", { name = "api-recover", paths = { "/api-recover" } })))
      assert.equals(201, (admin("POST", "/routes/api-recover/plugins",
                                { name = "secret-probe", config = { secret = "api-recover-secret" } })))
      -- each worker picks the new route and plugin up on its own
      local in_a_row = 0
      helpers.wait_until(function()
        local probe_status, _, probe = kr.proxy("GET", "/api-recover")
        local ok = probe_status == 200 and probe.config.secret == "api-recover-secret"
        in_a_row = ok and in_a_row + 1 or 0
        return in_a_row >= 6
      end, 15)

      assert(helpers.restart_kong(main_env()))
      helpers.wait_until(function()
        local ok, s = pcall(admin, "GET", "/keyring")
        return ok and s == 200
      end, 10)
      -- a row no private key opens
      kr.psql("INSERT INTO keyring_keys (id, key_encrypted, recovery_key_id) VALUES ('brokenRow', '$ker$2$AAAA', 'x')")
      db_ids = sorted(rows("SELECT id FROM keyring_keys"))
      db_active_id = row1("SELECT id FROM keyring_meta WHERE state = 'active'")
    end)

    it("POST /keyring/remove of the database's active key answers 409 and keeps its rows", function()
      local status, _, json = admin("POST", "/keyring/remove", { key = db_active_id })
      assert.equals(409, status)
      assert.same({ error = "cannot remove active key" }, json)
      assert.same({ db_active_id }, db_active())
      assert.same({ db_active_id }, rows("SELECT id FROM keyring_keys WHERE id = '" .. db_active_id .. "'"))
    end)

    -- GET /keyring: nothing held, no active key, every id of the cluster missing
    local function assert_nothing_held()
      local status, body, json = admin("GET", "/keyring")
      assert.equals(200, status)
      assert.matches('^{"ids":%[%],"missing":%[', body)
      assert.same({ "encryptions", "ids", "missing" }, keys_of(json))
      assert.same(sorted(rows("SELECT id FROM keyring_meta")), sorted(json.missing))
    end

    it("GET /keyring answers { ids = [], missing = [...] } without 'active'", function()
      assert_nothing_held()
    end)

    it("GET /keyring/active answers 503", function()
      assert_error(503, "active key id not found", admin("GET", "/keyring/active"))
    end)

    it("Kong's node information (GET /) answers 200 on a node without keys", function()
      -- kong/api/routes/kong.lua GET / iterates kong.db.plugins:each() only to
      -- list distinct plugin names: rows it cannot decrypt get placeholders
      local status, _, json = admin("GET", "/")
      assert.equals(200, status)
      assert.same({ "secret-probe" }, json.plugins.enabled_in_cluster)
      assert.equals(2, #json.pids.workers)
    end)

    it("the proxy runs the plugin with a placeholder on both workers until the keys are recovered", function()
      local stored = row1("SELECT config->>'secret' FROM plugins WHERE name = 'secret-probe'")
      assert.matches(kr.MARKED, stored)
      local workers = {}
      for _ = 1, 40 do
        local status, _, json = kr.proxy("GET", "/api-recover")
        assert.equals(200, status)
        assert.matches("^%$ke%$unavailable%$", json.config.secret)
        assert.not_equals(stored, json.config.secret)
        workers[json.worker] = true
        if workers[0] and workers[1] then
          break
        end
      end
      assert.same({ 0, 1 }, keys_of(workers))
    end)

    it("POST /keyring/recover answers 400 for a public key", function()
      local pem = project.read_file(paths.recovery_pub)
      assert_error(400, "recovery needs a private key", admin("POST", "/keyring/recover", { recovery_private_key = pem }))
      assert_error(400, "recovery needs a private key",
                   admin("POST", "/keyring/recover", { recovery_private_key = b64(pem) }))
      assert_nothing_held()
    end)

    it("POST /keyring/recover answers 400 { error } for text that is no key", function()
      for _, text in ipairs({ "not a pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }) do
        local status, _, json = admin("POST", "/keyring/recover", { recovery_private_key = text })
        assert.equals(400, status)
        assert.same({ "error" }, keys_of(json))
      end
    end)

    it("POST /keyring/recover with another private key recovers nothing", function()
      local status, _, json = admin("POST", "/keyring/recover",
                                    { recovery_private_key = project.read_file(paths.other) })
      assert.equals(200, status)
      assert.equals("successfully recovered 0 keys", json.message)
      assert.same({}, json.recovered)
      assert.same(sorted(db_ids), sorted(json.not_recovered))
      assert_nothing_held()
    end)

    it("POST /keyring/recover (multipart) recovers every row it opens and activates the database's active key", function()
      local body, headers = multipart({ { "recovery_private_key", project.read_file(paths.recovery) } })
      local status, res, json = admin("POST", "/keyring/recover", body, headers)
      assert.equals(200, status)
      assert.matches('"recovered":[', res, 1, true)
      assert.same({ "message", "not_recovered", "recovered" }, keys_of(json))
      local expected = {}
      for _, id in ipairs(db_ids) do
        if id ~= "brokenRow" then
          expected[#expected + 1] = id
        end
      end
      assert.same(expected, sorted(json.recovered))
      assert.same({ "brokenRow" }, json.not_recovered)
      assert.equals("successfully recovered " .. #expected .. " keys", json.message)
      local now = ring()
      assert.same(expected, sorted(now.ids))
      assert.equals(db_active_id, now.active)
      assert.same({ id = db_active_id }, select(3, admin("GET", "/keyring/active")))
    end)

    it("the recovered keys decrypt on both workers, in the Admin API", function()
      local workers = {}
      for _ = 1, 40 do
        local worker, status, _, read = pinned("GET", "/consumers/api/basic-auth/" .. cred.id)
        assert.equals(200, status)
        assert.equals(cred.password, read.password)
        workers[worker] = true
        if workers[0] and workers[1] then
          break
        end
      end
      assert.same({ 0, 1 }, keys_of(workers))
    end)

    it("the recovered keys decrypt on both workers, in the plugin config the proxy runs", function()
      local workers = {}
      helpers.wait_until(function()
        local status, _, json = kr.proxy("GET", "/api-recover")
        if status == 200 and json.config.secret == "api-recover-secret" then
          workers[json.worker] = true
        end
        return workers[0] and workers[1]
      end, 15)
      assert.same({ 0, 1 }, keys_of(workers))
    end)

    it("POST /keyring/recover (JSON) again answers 200 and keeps the ring", function()
      local status, _, json = admin("POST", "/keyring/recover",
                                    { recovery_private_key = project.read_file(paths.recovery) })
      assert.equals(200, status)
      assert.same({ "brokenRow" }, json.not_recovered)
      assert.equals(db_active_id, active_id())
    end)
  end)


  describe("logs of the node", function()
    it("hold no key byte, no export blob, no private key and no secret body", function()
      assert.is_true(#seen_keys >= 10)
      assert_nothing_leaked()
    end)

    it("hold no alert, no worker crash, and only the errors this spec caused on purpose", function()
      assert_no_alert()
      assert.same({}, kr.log_lines("An unexpected error occurred"))
      local expected = {
        "client intended to send too large body: " .. (MAX_BODY + 1) .. " bytes", -- 413
        LAPIS_PAIRS,                                                             -- JSON null / string bodies
        -- the rounds' encryption counts while this spec makes keyring_meta read-only
        "cannot count encryptions in keyring_meta: .*" .. REFUSED:gsub("%p", "%%%0"),
      }
      for _, line in ipairs(kr.log_lines("[error]")) do
        local known = false
        for _, pattern in ipairs(expected) do
          known = known or line:find(pattern) ~= nil
        end
        assert.is_true(known, "unexpected error line: " .. line)
      end
    end)
  end)


  describe("on a node without backup keys", function()
    local env, port

    lazy_setup(function()
      env, port = other_node_env("bare", 2)
      assert(start(env))
      helpers.wait_until(function()
        local ok, status = pcall(admin, "GET", "/keyring", nil, nil, port)
        return ok and status == 200
      end, 10)
    end)

    lazy_teardown(function()
      kr.stop_kong(env.prefix)
    end)

    it("POST /keyring/export answers 500 'missing backup public key'", function()
      assert_error(500, "missing backup public key", admin("POST", "/keyring/export", nil, nil, port))
    end)

    it("POST /keyring/import answers 500 'missing backup private key'", function()
      assert_error(500, "missing backup private key",
                   admin("POST", "/keyring/import", { data = "eA==" }, nil, port))
    end)
  end)


  describe("with the keyring disabled", function()
    local env, port

    lazy_setup(function()
      env, port = other_node_env("off", 6, { keyring_enabled = "off" })
      assert(start(env))
      helpers.wait_until(function()
        local ok, status = pcall(admin, "GET", "/", nil, nil, port)
        return ok and status == 200
      end, 10)
    end)

    lazy_teardown(function()
      kr.stop_kong(env.prefix)
    end)

    it("answers 400 'keyring is not enabled' on every route", function()
      for _, route in ipairs(ROUTES) do
        assert_error(400, "keyring is not enabled", admin(route.method, route.path, nil, nil, port))
      end
      assert_error(400, "keyring is not enabled", admin("POST", "/keyring/vault/sync", nil, nil, port))
      assert.same({}, kr.log_lines("An unexpected error occurred", env.prefix))
    end)
  end)
end)
end
