-- The proxy path in real Kong (2 workers): a consumer authenticates through
-- basic-auth (password stored encrypted), key-auth (its key is the unique
-- lookup field, stored as given) and a session cookie (the session plugin's
-- `secret` is stored encrypted), with secret-probe echoing its config on
-- every route; every answer is checked on both workers. Then the same after
-- a rotation (generate + activate + PATCH) and after a restart, first without
-- keys (nothing encrypted can be read) and then after POST /keyring/import.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local random_string = require("kong.tools.rand").random_string


local MARKED = kr.MARKED
local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local on_both_workers = kr.on_both_workers
local fmt = string.format
local encode_base64 = ngx.encode_base64


local RUN = random_string():gsub("[^%w]", ""):sub(1, 12)
local ROUTES = { "basic", "key", "session" }
local PLACEHOLDER = "^%$ke%$unavailable%$%x+$"


local basic = kr.basic_auth


-- secret-probe config of a route: every encrypted depth, distinct per route
local function probe_config(route)
  local tag = route .. "-" .. RUN
  return {
    secret = "probe-secret-" .. tag,
    label = "label-" .. tag,
    redis = { host = "redis-host", password = "redis-pass-" .. tag },
    headers = { { name = "x-one", value = "header-one-" .. tag }, { name = "x-two", value = "header-two-" .. tag } },
    tokens = { "token-one-" .. tag, "token-two-" .. tag },
  }
end


local function probe_secrets(route)
  local c = probe_config(route)
  return { c.secret, c.redis.password, c.headers[1].value, c.headers[2].value, c.tokens[1], c.tokens[2] }
end


local function assert_prefix(key_id, raw, what)
  assert.equals("$ke$2$-" .. key_id .. "-", raw:sub(1, 8 + #key_id), what)
end


local function assert_probe_plaintext(route, config)
  local want = probe_config(route)
  assert.equals(want.secret, config.secret)
  assert.equals(want.label, config.label)
  assert.same(want.redis, config.redis)
  assert.same(want.headers, config.headers)
  assert.same(want.tokens, config.tokens)
end


--- The answers of `request()` over `n` connections (an answer with no
-- worker field, e.g. a 401, cannot name its worker: many connections make
-- both workers answer with overwhelming likelihood).
local function every_answer(n, request, check)
  for _ = 1, n do
    local status, body, json, headers = request()
    assert(status, body)
    check(status, json, body, headers)
  end
end


local function session_cookie(headers)
  local set_cookie = headers and headers["Set-Cookie"]
  if type(set_cookie) == "table" then
    set_cookie = table.concat(set_cookie, "\n")
  end
  return set_cookie and set_cookie:match("(session=[^;]+)")
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (proxy: basic-auth, key-auth, session) [#" .. strategy .. "]", function()
  local env, first_key, private_pem
  local bob, anonymous, basic_cred, key_cred
  local plugins = {}    -- route name -> secret-probe row
  local session_plugin
  local password = "pw-" .. RUN
  local apikey = "apikey-" .. RUN
  local session_secret = "session-secret-" .. RUN
  local hashes = {}     -- every basic-auth hash the Admin API answered
  local cookie          -- issued after a basic-auth login, before the rotation

  local function stored_password()
    return psql("SELECT password FROM basicauth_credentials WHERE id = '" .. basic_cred.id .. "'")
  end

  local function stored_config(plugin, path)
    return psql("SELECT config #>> '{" .. path .. "}' FROM plugins WHERE id = '" .. plugin.id .. "'")
  end

  local function assert_all_stored_under(key_id)
    assert_prefix(key_id, stored_password(), "basic-auth password")
    assert_prefix(key_id, stored_config(session_plugin, "secret"), "session secret")
    for _, route in ipairs(ROUTES) do
      for _, path in ipairs({ "secret", "redis,password", "headers,0,value", "headers,1,value",
                              "tokens,0", "tokens,1" }) do
        assert_prefix(key_id, stored_config(plugins[route], path), route .. " secret-probe " .. path)
      end
      assert.equals(probe_config(route).label, stored_config(plugins[route], "label"))
    end
  end

  local function assert_basic_auth_works(pw)
    on_both_workers(function()
      return proxy("GET", "/basic", basic("bob", pw))
    end, function(status, json, body)
      assert.equals(200, status, body)
      assert.same({ id = bob.id, username = "bob" }, json.consumer)
      assert_probe_plaintext("basic", json.config)
    end)
  end

  local function assert_key_auth_works()
    on_both_workers(function()
      return proxy("GET", "/key", { apikey = apikey })
    end, function(status, json, body)
      assert.equals(200, status, body)
      assert.same({ id = bob.id, username = "bob" }, json.consumer)
      assert_probe_plaintext("key", json.config)
    end)
  end

  local function assert_cookie_works(c)
    on_both_workers(function()
      return proxy("GET", "/session", { Cookie = c })
    end, function(status, json, body)
      assert.equals(200, status, body)
      assert.same({ id = bob.id, username = "bob" }, json.consumer)
      assert_probe_plaintext("session", json.config)
    end)
  end

  local function assert_wrong_credentials_refused(pw)
    every_answer(12, function()
      return proxy("GET", "/basic", basic("bob", pw))
    end, function(status, _, body)
      assert.equals(401, status, body)
    end)
    every_answer(12, function()
      return proxy("GET", "/key", { apikey = apikey .. "-wrong" })
    end, function(status, _, body)
      assert.equals(401, status, body)
    end)
    every_answer(6, function()
      return proxy("GET", "/basic")
    end, function(status, _, body)
      assert.equals(401, status, body)
    end)
  end

  local function login()
    local status, body, json, headers = proxy("GET", "/session", basic("bob", password))
    assert.equals(200, status, body)
    assert.same({ id = bob.id, username = "bob" }, json.consumer)
    local c = session_cookie(headers)
    assert.is_string(c, "no session cookie after a basic-auth login")
    return c
  end

  lazy_setup(function()
    local public_pem
    private_pem, public_pem = kr.project.rsa_pair()
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    env = kr.kong_env {
      keyring_public_key = public_pem,
      keyring_private_key = private_pem,
      -- reuseport: the kernel spreads connections over both workers
      proxy_listen = "127.0.0.1:" .. kr.port_base .. " reuseport",
    }
    assert(helpers.start_kong(env))
    first_key = kr.wait_active_key()

    local status
    status, _, bob = admin("POST", "/consumers", { username = "bob" })
    assert.equals(201, status)
    status, _, anonymous = admin("POST", "/consumers", { username = "anonymous" })
    assert.equals(201, status)
    status, _, basic_cred = admin("POST", "/consumers/bob/basic-auth", { username = "bob", password = password })
    assert.equals(201, status)
    hashes[#hashes + 1] = basic_cred.password
    status, _, key_cred = admin("POST", "/consumers/bob/key-auth", { key = apikey })
    assert.equals(201, status)

    assert.equals(201, (admin("POST", "/services", { name = "upstream", url = "http://127.0.0.1:1" })))
    for _, route in ipairs(ROUTES) do
      local r
      status, _, r = admin("POST", "/services/upstream/routes", { name = route, paths = { "/" .. route } })
      assert.equals(201, status)
      status, _, plugins[route] = admin("POST", "/routes/" .. r.id .. "/plugins",
                                        { name = "secret-probe", config = probe_config(route) })
      assert.equals(201, status)
    end
    assert.equals(201, (admin("POST", "/routes/basic/plugins", { name = "basic-auth" })))
    assert.equals(201, (admin("POST", "/routes/key/plugins", { name = "key-auth" })))
    -- the session route: a session cookie, or a basic-auth login, or anonymous
    status, _, session_plugin = admin("POST", "/routes/session/plugins", {
      name = "session", config = { secret = session_secret, cookie_secure = false },
    })
    assert.equals(201, status)
    assert.equals(201, (admin("POST", "/routes/session/plugins",
                              { name = "basic-auth", config = { anonymous = anonymous.id } })))

    for _, route in ipairs(ROUTES) do
      kr.proxy_until_routed("GET", "/" .. route, nil)
    end
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  describe("with the first key", function()
    it("stores the basic-auth password, the session secret and the secret-probe configs under it", function()
      assert.matches(MARKED, stored_password())
      assert_all_stored_under(first_key)
    end)

    it("answers the session secret in plaintext through the Admin API", function()
      local status, body, read = admin("GET", "/plugins/" .. session_plugin.id)
      assert.equals(200, status, body)
      assert.equals(session_secret, read.config.secret)
      assert.equals(session_secret, session_plugin.config.secret)
    end)

    it("stores the key-auth key as given: it is the unique lookup field", function()
      assert.equals(apikey, psql("SELECT key FROM keyauth_credentials WHERE id = '" .. key_cred.id .. "'"))
      assert.equals(apikey, key_cred.key)
    end)

    it("keeps every plaintext and the basic-auth hash out of pg_dump", function()
      local dump = kr.pg_dump(true)
      -- the dump has the rows: the plaintext label and the key-auth key are in it
      assert.truthy(dump:find(probe_config("basic").label, 1, true))
      assert.truthy(dump:find(apikey, 1, true))
      local plains = { password, basic_cred.password, session_secret }
      for _, route in ipairs(ROUTES) do
        for _, s in ipairs(probe_secrets(route)) do
          plains[#plains + 1] = s
        end
      end
      for _, plain in ipairs(plains) do
        assert.is_nil(dump:find(plain, 1, true), "a plaintext is in pg_dump")
      end
    end)

    it("authenticates basic-auth on both workers", function()
      assert_basic_auth_works(password)
    end)

    it("authenticates key-auth on both workers", function()
      assert_key_auth_works()
    end)

    it("answers 401 to wrong or missing credentials", function()
      assert_wrong_credentials_refused(password .. "-wrong")
    end)

    it("issues a session cookie after a basic-auth login that authenticates on both workers", function()
      cookie = login()
      assert_cookie_works(cookie)
      -- without the cookie, or with a forged one, the route sees the anonymous consumer
      for _, c in ipairs({ false, "session=" .. encode_base64(random_string()) }) do
        on_both_workers(function()
          return proxy("GET", "/session", c and { Cookie = c } or nil)
        end, function(status, json, body)
          assert.equals(200, status, body)
          assert.same({ id = anonymous.id, username = "anonymous" }, json.consumer)
        end)
      end
    end)
  end)

  describe("after a rotation (generate + activate + PATCH)", function()
    local second_key, old_password
    local new_password = "pw-rotated-" .. RUN

    lazy_setup(function()
      local status, _, gen = admin("POST", "/keyring/generate")
      assert.equals(201, status)
      kr.project.remember_key(gen.key)
      second_key = gen.id
      assert.equals(204, (admin("POST", "/keyring/activate", { key = second_key })))

      local cred
      status, _, cred = admin("PATCH", "/consumers/bob/basic-auth/" .. basic_cred.id, { password = new_password })
      assert.equals(200, status)
      hashes[#hashes + 1] = cred.password
      old_password, password = password, new_password
      -- PATCHes that do not name an encrypted field rewrite every one of them
      for _, route in ipairs(ROUTES) do
        assert.equals(200, (admin("PATCH", "/plugins/" .. plugins[route].id, { tags = { "rotated" } })))
      end
      assert.equals(200, (admin("PATCH", "/plugins/" .. session_plugin.id, { tags = { "rotated" } })))
    end)

    it("stores every value under the new key id", function()
      assert.not_equals(first_key, second_key)
      assert_all_stored_under(second_key)
    end)

    it("authenticates the new password on both workers and refuses the old one", function()
      assert_basic_auth_works(new_password)
      assert_wrong_credentials_refused(old_password)
    end)

    it("still authenticates key-auth on both workers", function()
      assert_key_auth_works()
    end)

    it("accepts the cookie issued before the rotation and a fresh one on both workers", function()
      assert_cookie_works(cookie)
      assert_cookie_works(login())
    end)

    it("keeps the new plaintexts out of pg_dump", function()
      local dump = kr.pg_dump(true)
      for _, plain in ipairs({ new_password, hashes[#hashes], session_secret }) do
        assert.is_nil(dump:find(plain, 1, true), "a plaintext is in pg_dump")
      end
    end)
  end)

  describe("after a restart", function()
    local blob, key_ids

    lazy_setup(function()
      local status, _, json = admin("POST", "/keyring/export")
      assert.equals(200, status)
      blob = json.data
      status, _, json = admin("GET", "/keyring")
      assert.equals(200, status)
      key_ids = json.ids
      table.sort(key_ids)
      -- the blob holds both keys: recorded for the leak sweep, never printed
      local blob_ids, blob_active = kr.remember_blob_keys(blob, private_pem)
      assert.same(key_ids, blob_ids)
      assert.equals(json.active, blob_active)
      -- the first key and the rotated one
      assert.equals(2, #key_ids)
      assert.truthy(key_ids[1] == first_key or key_ids[2] == first_key)
      assert.not_equals(first_key, json.active)
      assert(helpers.restart_kong(env))
    end)

    it("without keys: no credential can be read and the configs hold placeholders", function()
      local status, _, ring = admin("GET", "/keyring")
      assert.equals(200, status)
      assert.same({}, ring.ids)

      -- basic-auth cannot read the stored hash: an error, never a login
      local started = ngx.now()
      every_answer(6, function()
        return proxy("GET", "/basic", basic("bob", password))
      end, function(s, json, body)
        assert.equals(500, s, body)
        assert.is_nil(json and json.consumer)
      end)
      ngx.update_time()
      assert.is_true(ngx.now() - started < 5, "the answers took " .. (ngx.now() - started) .. " s")
      -- why, once per key and worker in the error log, not once per request
      local lines = kr.log_lines("[keyring] cannot read stored values: keyring key '")
      assert.is_true(#lines >= 1 and #lines <= 2, #lines .. " lines")
      for _, line in ipairs(lines) do
        assert.matches("keyring key '[%w]+' is not available on this node", line)
      end
      -- the key-auth key is plaintext, so its login works; the plugin
      -- iterator was built at start without keys: placeholders, never the
      -- stored ciphertext
      local stored_secret = stored_config(plugins.key, "secret")
      on_both_workers(function()
        return proxy("GET", "/key", { apikey = apikey })
      end, function(s, json, body)
        assert.equals(200, s, body)
        assert.same({ id = bob.id, username = "bob" }, json.consumer)
        for _, v in ipairs({ json.config.secret, json.config.redis.password, json.config.headers[1].value,
                             json.config.tokens[2] }) do
          assert.matches(PLACEHOLDER, v)
        end
        assert.not_equals(stored_secret, json.config.secret)
        assert.equals(probe_config("key").label, json.config.label)
      end)
      -- the session secret is a placeholder: the cookie is not accepted
      on_both_workers(function()
        return proxy("GET", "/session", { Cookie = cookie })
      end, function(s, json, body)
        assert.equals(200, s, body)
        assert.same({ id = anonymous.id, username = "anonymous" }, json.consumer)
      end)
      -- the Admin API names the missing key
      local astatus, _, ajson = admin("GET", "/consumers/bob/basic-auth/" .. basic_cred.id)
      assert.equals(503, astatus)
      assert.matches("is not available on this node", ajson.message, 1, true)
    end)

    it("after POST /keyring/import: everything authenticates again with plaintext configs", function()
      local status, body, json = admin("POST", "/keyring/import", { data = blob })
      assert.equals(200, status, body)
      table.sort(json.ids)
      table.sort(key_ids)
      assert.same(key_ids, json.ids)

      assert_basic_auth_works(password)
      assert_key_auth_works()
      assert_cookie_works(cookie)
      assert_wrong_credentials_refused(password .. "-wrong")
      -- the configs of every route are plaintext on both workers
      on_both_workers(function()
        return proxy("GET", "/basic", basic("bob", password))
      end, function(s, j, body)
        assert.equals(200, s, body)
        assert.not_matches(PLACEHOLDER, j.config.secret)
        assert_probe_plaintext("basic", j.config)
      end)
    end)
  end)
end)
end
