-- Every write path of Kong's Admin API and DAO for entities with encrypted
-- fields, in real Kong (2 workers): basic-auth credentials (`password`),
-- certificates (`key`, `key_alt`) and secret-probe plugin configs (fields at
-- every depth). POST, PATCH, PUT with and without the `id` in the body, PUT
-- and PATCH by endpoint key, nested endpoints, DAO upserts with
-- `transform = false` and `kong config db_import`.
--
-- After each write: the stored value is encrypted under the active key
-- (psql), bound to its row (the Admin API reads back what was written) and
-- works through the proxy (a basic-auth login, a TLS handshake serving the
-- certificate, secret-probe echoing the plaintext config on both workers).

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"
local ssl_fixtures = require "spec.fixtures.ssl"
local basic_auth_crypto = require "kong.plugins.basic-auth.crypto"
local uuid = require("kong.tools.uuid").uuid
local random_string = require("kong.tools.rand").random_string


local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local on_both_workers = kr.on_both_workers
local fmt = string.format


local RUN = random_string():gsub("[^%w]", ""):sub(1, 10):lower()
local SSL_PORT = kr.port_base + 2
local RSA_SIGALGS = "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"
local ECDSA_SIGALGS = "ecdsa_secp256r1_sha256"

-- two certificate pairs: RSA `cert`/`key` and ECDSA `cert_alt`/`key_alt`
local PAIRS = {
  A = { cert = ssl_fixtures.cert, key = ssl_fixtures.key,
        cert_alt = ssl_fixtures.cert_ecdsa, key_alt = ssl_fixtures.key_ecdsa },
  B = { cert = ssl_fixtures.cert_alt_alt, key = ssl_fixtures.key_alt_alt,
        cert_alt = ssl_fixtures.cert_alt_ecdsa, key_alt = ssl_fixtures.key_alt_ecdsa },
}


-- helpers ------------------------------------------------------------------

--- One test per table-driven write case: `new(existing)` makes the row to
-- write (a new one or an existing one), `case.write` writes it, and
-- `check(row, id)` checks what is stored, read back and proxied.
local function write_cases(cases, new, check)
  for _, case in ipairs(cases) do
    it(case.name, function()
      local c = new(case.existing)
      local status, body, json = case.write(c)
      assert.equals(case.status, status, body)
      assert.is_table(json, body)
      if c.id then
        assert.equals(c.id, json.id)
      end
      check(c, json.id)
    end)
  end
end


local function assert_prefix(key_id, raw, what)
  assert.equals("$ke$2$-" .. key_id .. "-", raw:sub(1, 8 + #key_id), what)
end


local basic = kr.basic_auth


local function run(cmd)
  return kr.project.run(cmd)
end


local function fingerprint(pem)
  local path = os.tmpname()
  kr.project.write_file(path, pem)
  local ok, out = run("openssl x509 -noout -fingerprint -sha256 -in " .. path)
  os.remove(path)
  assert(ok, out)
  return (assert(out:match("=(%S+)")))
end


--- The fingerprint of the certificate the proxy's TLS listener serves for
-- `sni` to a client that accepts only `sigalgs` (nil: no certificate).
local function served(sni, sigalgs)
  local _, out = run(fmt("openssl s_client -connect 127.0.0.1:%d -servername %s -sigalgs %s </dev/null 2>/dev/null"
                         .. " | openssl x509 -noout -fingerprint -sha256", SSL_PORT, sni, sigalgs))
  return out:match("Fingerprint=(%S+)")
end


--- A row as the database holds it (what `kong config db_export` writes).
local function stored_row(table_name, id)
  return cjson.decode(kr.psql("SELECT row_to_json(t) FROM " .. table_name .. " t WHERE id = '" .. id .. "'"))
end


-- secret-probe config, every field distinct per tag
local function probe_config(tag)
  tag = tag .. "-" .. RUN
  return {
    secret = "probe-secret-" .. tag,
    label = "label-" .. tag,
    redis = { host = "redis-host", password = "redis-pass-" .. tag },
    headers = { { name = "x-one", value = "header-one-" .. tag }, { name = "x-two", value = "header-two-" .. tag } },
    tokens = { "token-one-" .. tag, "token-two-" .. tag },
  }
end


local CONFIG_PATHS = { "secret", "redis,password", "headers,0,value", "headers,1,value", "tokens,0", "tokens,1" }


local function config_secrets(config)
  return { config.secret, config.redis.password, config.headers[1].value, config.headers[2].value,
           config.tokens[1], config.tokens[2] }
end


local function assert_config(want, got)
  assert.is_table(got)
  assert.equals(want.secret, got.secret)
  assert.equals(want.label, got.label)
  assert.same(want.redis, got.redis)
  assert.same(want.headers, got.headers)
  assert.same(want.tokens, got.tokens)
end


-- a PEM's longest base64 line: what a dump would show of it
local function pem_line(pem)
  local best = ""
  for line in pem:gmatch("[^\n]+") do
    if #line > #best and not line:find("-----", 1, true) then
      best = line
    end
  end
  return best
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (write paths of encrypted fields) [#" .. strategy .. "]", function()
  local env, active_key, bob, ba_probe
  local visible_label     -- a plaintext config field the dump must show
  local n = 0
  local plaintexts = {}   -- every plaintext written: none may reach the database

  local function next_n()
    n = n + 1
    return n
  end

  local function remember_plaintext(...)
    for _, v in ipairs({ ... }) do
      plaintexts[#plaintexts + 1] = v
    end
  end

  lazy_setup(function()
    local private_pem, public_pem = kr.project.rsa_pair()
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    env = kr.kong_env {
      keyring_public_key = public_pem,
      keyring_private_key = private_pem,
      -- reuseport: the kernel spreads connections over both workers
      proxy_listen = fmt("127.0.0.1:%d reuseport, 127.0.0.1:%d ssl reuseport", kr.port_base, SSL_PORT),
    }
    assert(helpers.start_kong(env))
    active_key = kr.wait_active_key()

    local status
    status, _, bob = admin("POST", "/consumers", { username = "bob" })
    assert.equals(201, status)
    -- the route basic-auth logins go through
    assert.equals(201, (admin("POST", "/services", { name = "ba", url = "http://127.0.0.1:1" })))
    assert.equals(201, (admin("POST", "/services/ba/routes", { name = "ba", paths = { "/ba" } })))
    assert.equals(201, (admin("POST", "/routes/ba/plugins", { name = "basic-auth" })))
    status, _, ba_probe = admin("POST", "/routes/ba/plugins", { name = "secret-probe", config = { label = "ba" } })
    assert.equals(201, status)
    kr.proxy_until_routed("GET", "/ba", nil)
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  ---------------------------------------------------------------------------
  -- basic-auth credentials
  ---------------------------------------------------------------------------

  -- a case's state: username, password, the row id when known, and the row
  -- written before (old_password) for writes to an existing credential
  local function new_credential(existing)
    local i = next_n()
    local c = { username = fmt("user-%d-%s", i, RUN), password = fmt("pw-%d-%s", i, RUN) }
    remember_plaintext(c.password)
    if existing then
      c.old_password = "old-" .. c.password
      remember_plaintext(c.old_password)
      local status, body, json = admin("POST", "/consumers/bob/basic-auth",
                                       { username = c.username, password = c.old_password })
      assert.equals(201, status, body)
      c.id = json.id
      c.old_stored = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. c.id .. "'")
    end
    return c
  end

  --- The stored password is encrypted under the active key, reads back as
  -- the hash of what was written and logs bob in on both workers.
  local function check_credential(c, id)
    local hash = basic_auth_crypto.hash(bob.id, c.password)
    remember_plaintext(hash)
    local raw = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. id .. "'")
    assert_prefix(active_key, raw, "stored password")
    assert.not_equals(c.old_stored, raw)

    local status, body, read = admin("GET", "/basic-auths/" .. id)
    assert.equals(200, status, body)
    assert.equals(hash, read.password)
    assert.equals(c.username, read.username)
    assert.equals(bob.id, read.consumer.id)

    on_both_workers(function()
      return proxy("GET", "/ba", basic(c.username, c.password))
    end, function(s, json, b)
      assert.equals(200, s, b)
      assert.same({ id = bob.id, username = "bob" }, json.consumer)
    end)
    if c.old_password then
      for _ = 1, 6 do
        assert.equals(401, (proxy("GET", "/ba", basic(c.username, c.old_password))))
      end
    end
  end

  local function db_import_entity(table_name, id, entity)
    return admin("PUT", "/secret-probe/db-import/" .. table_name .. "/" .. id, { entity = cjson.encode(entity) })
  end

  -- { name, existing, status, write(c) -> status, body, json } ; `id` in the
  -- answer must be c.id when the case knows it
  local CREDENTIAL_CASES = {
    { name = "POST /consumers/:consumer/basic-auth (nested)", status = 201,
      write = function(c)
        return admin("POST", "/consumers/bob/basic-auth", { username = c.username, password = c.password })
      end },
    { name = "POST /basic-auths", status = 201,
      write = function(c)
        return admin("POST", "/basic-auths", { consumer = { id = bob.id }, username = c.username,
                                               password = c.password })
      end },
    { name = "PATCH /basic-auths/:id", existing = true, status = 200,
      write = function(c)
        -- basic-auth's hash needs the consumer: Kong wants both or neither
        return admin("PATCH", "/basic-auths/" .. c.id, { consumer = { id = bob.id }, password = c.password })
      end },
    { name = "PATCH /basic-auths/:username (endpoint key)", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/basic-auths/" .. c.username, { consumer = { id = bob.id }, password = c.password })
      end },
    { name = "PATCH /consumers/:consumer/basic-auth/:id (nested)", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/consumers/bob/basic-auth/" .. c.id, { password = c.password })
      end },
    { name = "PATCH /consumers/:consumer/basic-auth/:username (nested, endpoint key)", existing = true,
      status = 200,
      write = function(c)
        return admin("PATCH", "/consumers/" .. bob.id .. "/basic-auth/" .. c.username, { password = c.password })
      end },
    { name = "PATCH /basic-auths/:id of the username only (the password is rewritten)", existing = true,
      status = 200,
      write = function(c)
        c.username = c.username .. "-renamed"
        c.password, c.old_password = c.old_password, nil
        return admin("PATCH", "/basic-auths/" .. c.id, { username = c.username })
      end },
    { name = "PUT /basic-auths/:id with the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/basic-auths/" .. c.id, { id = c.id, consumer = { id = bob.id },
                                                       username = c.username, password = c.password })
      end },
    { name = "PUT /basic-auths/:id with the id in the body (existing row)", existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/basic-auths/" .. c.id, { id = c.id, consumer = { id = bob.id },
                                                       username = c.username, password = c.password })
      end },
    { name = "PUT /consumers/:consumer/basic-auth/:id with the id in the body (nested)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/consumers/bob/basic-auth/" .. c.id, { id = c.id, username = c.username,
                                                                    password = c.password })
      end },
    { name = "PUT /basic-auths/:username without an id (endpoint key, new row)", status = 200,
      write = function(c)
        return admin("PUT", "/basic-auths/" .. c.username, { consumer = { id = bob.id }, password = c.password })
      end },
    { name = "PUT /basic-auths/:username with the id in the body (endpoint key, existing row)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/basic-auths/" .. c.username, { id = c.id, consumer = { id = bob.id },
                                                             password = c.password })
      end },
    { name = "PUT /consumers/:consumer/basic-auth/:username with the id in the body (nested, endpoint key)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/consumers/bob/basic-auth/" .. c.username, { id = c.id, password = c.password })
      end },
    { name = "DAO upsert with transform = false and the id (what db_import does; new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return db_import_entity("basicauth_credentials", c.id, {
          id = c.id, consumer = { id = bob.id }, username = c.username,
          password = basic_auth_crypto.hash(bob.id, c.password),
        })
      end },
    { name = "DAO upsert with transform = false and the id (what db_import does; existing row)", existing = true,
      status = 200,
      write = function(c)
        return db_import_entity("basicauth_credentials", c.id, {
          id = c.id, consumer = { id = bob.id }, username = c.username,
          password = basic_auth_crypto.hash(bob.id, c.password),
        })
      end },
    { name = "DAO upsert with transform = false of the row as stored (what db_import of an export does)",
      existing = true, status = 200,
      write = function(c)
        local row = stored_row("basicauth_credentials", c.id)
        -- the value is kept as it is: same password, same ciphertext
        c.password, c.old_password, c.old_stored = c.old_password, nil, nil
        return db_import_entity("basicauth_credentials", c.id, { id = c.id, consumer = { id = bob.id },
                                                                 username = row.username, password = row.password })
      end },
    -- known data loss
    { name = "PUT /basic-auths/:id without the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/basic-auths/" .. c.id, { consumer = { id = bob.id }, username = c.username,
                                                       password = c.password })
      end },
    { name = "PUT /basic-auths/:id without the id in the body (existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/basic-auths/" .. c.id, { consumer = { id = bob.id }, username = c.username,
                                                       password = c.password })
      end },
    { name = "PUT /consumers/:consumer/basic-auth/:id without the id in the body (nested)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/consumers/bob/basic-auth/" .. c.id, { username = c.username, password = c.password })
      end },
    { name = "PUT /basic-auths/:username without the id (endpoint key, existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/basic-auths/" .. c.username, { consumer = { id = bob.id }, password = c.password })
      end },
    { name = "PUT /consumers/:consumer/basic-auth/:username without the id (nested, endpoint key, existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/consumers/bob/basic-auth/" .. c.username, { password = c.password })
      end },
    { name = "DAO upsert with transform = false without the id in the entity", status = 200,
      write = function(c)
        c.id = uuid()
        return db_import_entity("basicauth_credentials", c.id, {
          consumer = { id = bob.id }, username = c.username, password = basic_auth_crypto.hash(bob.id, c.password),
        })
      end },
  }

  describe("basic-auth credential:", function()
    write_cases(CREDENTIAL_CASES, new_credential, check_credential)

    it("DAO upsert with transform = false of a value copied from another row is refused", function()
      local a = new_credential(true)
      local b = new_credential(true)
      local function stored(c)
        return psql("SELECT password FROM basicauth_credentials WHERE id = '" .. c.id .. "'")
      end
      local before = stored(b)
      local status, body = db_import_entity("basicauth_credentials", b.id, {
        id = b.id, consumer = { id = bob.id }, username = b.username, password = stored(a),
      })
      assert.equals(400, status, body)
      assert.matches("encrypted value cannot be stored in this row", body, 1, true)
      assert.equals(before, stored(b))
      on_both_workers(function()
        return proxy("GET", "/ba", basic(b.username, b.old_password))
      end, function(s, json, res_body)
        assert.equals(200, s, res_body)
        assert.same({ id = bob.id, username = "bob" }, json.consumer)
      end)
    end)
  end)

  ---------------------------------------------------------------------------
  -- certificates
  ---------------------------------------------------------------------------

  local function certificate_body(pair, sni, id)
    return { id = id, cert = pair.cert, key = pair.key, cert_alt = pair.cert_alt, key_alt = pair.key_alt,
             snis = { sni } }
  end

  local function new_certificate(existing)
    local i = next_n()
    local c = { sni = fmt("c%d-%s.test", i, RUN), pair = PAIRS.A }
    if existing then
      local status, body, json = admin("POST", "/certificates", certificate_body(PAIRS.A, c.sni))
      assert.equals(201, status, body)
      c.id = json.id
      c.old_stored = psql("SELECT key || key_alt FROM certificates WHERE id = '" .. c.id .. "'")
      c.pair = PAIRS.B
    end
    return c
  end

  --- `key` and `key_alt` are encrypted under the active key, read back as
  -- written, and the proxy serves the certificate for the SNI (RSA and
  -- ECDSA clients) on both workers.
  local function check_certificate(c, id)
    local raw = psql("SELECT key || ' ' || key_alt FROM certificates WHERE id = '" .. id .. "'")
    local key, key_alt = raw:match("^(%S+) (%S+)$")
    assert_prefix(active_key, key, "stored key")
    assert_prefix(active_key, key_alt, "stored key_alt")
    assert.not_equals(c.old_stored, key .. key_alt)

    local status, body, read = admin("GET", "/certificates/" .. id)
    assert.equals(200, status, body)
    assert.equals(c.pair.key, read.key)
    assert.equals(c.pair.key_alt, read.key_alt)
    assert.equals(c.pair.cert, read.cert)
    assert.equals(c.pair.cert_alt, read.cert_alt)
    assert.same({ c.sni }, read.snis)

    -- a certificate whose key cannot be read is never served (Kong falls
    -- back to its default certificate, RSA, and has none for ECDSA)
    for sigalgs, cert in pairs({ [RSA_SIGALGS] = c.pair.cert, [ECDSA_SIGALGS] = c.pair.cert_alt }) do
      local want = fingerprint(cert)
      local got
      helpers.wait_until(function()
        for _ = 1, 4 do
          got = served(c.sni, sigalgs)
          if got ~= want then
            return false
          end
        end
        return true
      end, 10)
      assert.equals(want, got)
    end
  end

  local CERTIFICATE_CASES = {
    { name = "POST /certificates", status = 201,
      write = function(c)
        return admin("POST", "/certificates", certificate_body(c.pair, c.sni))
      end },
    { name = "PATCH /certificates/:id", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/certificates/" .. c.id, certificate_body(c.pair, c.sni))
      end },
    { name = "PATCH /certificates/:sni (by SNI name)", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/certificates/" .. c.sni, certificate_body(c.pair, c.sni))
      end },
    { name = "PATCH /certificates/:id of the tags only (the keys are rewritten)", existing = true, status = 200,
      write = function(c)
        c.pair = PAIRS.A
        return admin("PATCH", "/certificates/" .. c.id, { tags = { "patched" } })
      end },
    { name = "PUT /certificates/:id with the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/certificates/" .. c.id, certificate_body(c.pair, c.sni, c.id))
      end },
    { name = "PUT /certificates/:id with the id in the body (existing row)", existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/certificates/" .. c.id, certificate_body(c.pair, c.sni, c.id))
      end },
    { name = "PUT /certificates/:sni with the id in the body (by SNI name, existing row)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/certificates/" .. c.sni, certificate_body(c.pair, c.sni, c.id))
      end },
    { name = "DAO upsert with transform = false and the id (what db_import does)", status = 200,
      write = function(c)
        c.id = uuid()
        return db_import_entity("certificates", c.id, certificate_body(c.pair, c.sni, c.id))
      end },
    -- known data loss
    { name = "DAO upsert with transform = false of the row as stored (what db_import of an export does)",
      existing = true, status = 200,
      write = function(c)
        local row = stored_row("certificates", c.id)
        c.pair, c.old_stored = PAIRS.A, nil
        return db_import_entity("certificates", c.id, { id = c.id, cert = row.cert, key = row.key,
                                                        cert_alt = row.cert_alt, key_alt = row.key_alt,
                                                        snis = { c.sni } })
      end },
    { name = "PUT /certificates/:id without the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/certificates/" .. c.id, certificate_body(c.pair, c.sni))
      end },
    { name = "PUT /certificates/:id without the id in the body (existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/certificates/" .. c.id, certificate_body(c.pair, c.sni))
      end },
    { name = "PUT /certificates/:sni without the id (by SNI name, existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/certificates/" .. c.sni, certificate_body(c.pair, c.sni))
      end },
    { name = "PUT /certificates/:sni without the id (by SNI name, new row)", status = 200,
      write = function(c)
        return admin("PUT", "/certificates/" .. c.sni, certificate_body(c.pair, c.sni))
      end },
  }

  describe("certificate:", function()
    write_cases(CERTIFICATE_CASES, new_certificate, check_certificate)
  end)

  ---------------------------------------------------------------------------
  -- secret-probe plugin configs
  ---------------------------------------------------------------------------

  -- a case's service and route (/p-<i>); with `existing`, a secret-probe
  -- already on it (on the route with existing = "route")
  local function new_plugin(existing)
    local i = next_n()
    local c = { i = i, path = "/p-" .. i, instance = fmt("probe-%d-%s", i, RUN) }
    local status, body
    status, body, c.service = admin("POST", "/services", { name = "svc-" .. i, url = "http://127.0.0.1:1" })
    assert.equals(201, status, body)
    status, body, c.route = admin("POST", "/services/svc-" .. i .. "/routes", { name = "r-" .. i,
                                                                                paths = { c.path } })
    assert.equals(201, status, body)
    c.config = probe_config("p" .. i)
    if existing then
      local old = probe_config("old-p" .. i)
      remember_plaintext(unpack(config_secrets(old)))
      local scope = existing == "route" and { route = { id = c.route.id } } or { service = { id = c.service.id } }
      status, body, c.existing = admin("POST", "/plugins", { name = "secret-probe", instance_name = c.instance,
                                                             route = scope.route, service = scope.service,
                                                             config = old })
      assert.equals(201, status, body)
      c.id = c.existing.id
      c.old_stored = psql("SELECT config::text FROM plugins WHERE id = '" .. c.id .. "'")
    end
    remember_plaintext(unpack(config_secrets(c.config)))
    kr.proxy_until_routed("GET", c.path, nil)
    return c
  end

  --- Every encrypted config field is stored under the active key, the Admin
  -- API reads back the plaintext written, and secret-probe echoes it on the
  -- proxy on both workers.
  local function check_plugin(c, id)
    for _, path in ipairs(CONFIG_PATHS) do
      local raw = psql("SELECT config #>> '{" .. path .. "}' FROM plugins WHERE id = '" .. id .. "'")
      assert_prefix(active_key, raw, "stored config " .. path)
    end
    assert.equals(c.config.label, psql("SELECT config ->> 'label' FROM plugins WHERE id = '" .. id .. "'"))
    visible_label = c.config.label
    assert.not_equals(c.old_stored, psql("SELECT config::text FROM plugins WHERE id = '" .. id .. "'"))

    local status, body, read = admin("GET", "/plugins/" .. id)
    assert.equals(200, status, body)
    assert_config(c.config, read.config)

    on_both_workers(function()
      return proxy("GET", c.path)
    end, function(s, json, b)
      assert.equals(200, s, b)
      assert_config(c.config, json.config)
    end)
  end

  local function plugin_body(c, extra)
    local body = { name = "secret-probe", config = c.config }
    for k, v in pairs(extra or {}) do
      body[k] = v
    end
    return body
  end

  local PLUGIN_CASES = {
    { name = "POST /plugins", status = 201,
      write = function(c)
        return admin("POST", "/plugins", plugin_body(c, { service = { id = c.service.id } }))
      end },
    { name = "POST /services/:service/plugins (nested)", status = 201,
      write = function(c)
        return admin("POST", "/services/" .. c.service.name .. "/plugins", plugin_body(c))
      end },
    { name = "POST /routes/:route/plugins (nested)", status = 201,
      write = function(c)
        return admin("POST", "/routes/" .. c.route.id .. "/plugins", plugin_body(c))
      end },
    { name = "PATCH /plugins/:id", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/plugins/" .. c.id, { config = c.config })
      end },
    { name = "PATCH /plugins/:instance_name (endpoint key)", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/plugins/" .. c.instance, { config = c.config })
      end },
    { name = "PATCH /services/:service/plugins/:id (nested)", existing = true, status = 200,
      write = function(c)
        return admin("PATCH", "/services/" .. c.service.name .. "/plugins/" .. c.id, { config = c.config })
      end },
    { name = "PATCH /routes/:route/plugins/:id (nested)", existing = "route", status = 200,
      write = function(c)
        return admin("PATCH", "/routes/" .. c.route.name .. "/plugins/" .. c.id, { config = c.config })
      end },
    { name = "PATCH /plugins/:id of the label only (every secret is rewritten)", existing = true, status = 200,
      write = function(c)
        local old = probe_config("old-p" .. c.i)
        old.label = c.config.label
        c.config = old
        return admin("PATCH", "/plugins/" .. c.id, { config = { label = c.config.label } })
      end },
    { name = "PUT /plugins/:id with the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/plugins/" .. c.id, plugin_body(c, { id = c.id, service = { id = c.service.id } }))
      end },
    { name = "PUT /plugins/:id with the id in the body (existing row)", existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/plugins/" .. c.id, plugin_body(c, { id = c.id, service = { id = c.service.id } }))
      end },
    { name = "PUT /services/:service/plugins/:id with the id in the body (nested)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/services/" .. c.service.name .. "/plugins/" .. c.id, plugin_body(c, { id = c.id }))
      end },
    { name = "PUT /routes/:route/plugins/:id with the id in the body (nested)", existing = "route", status = 200,
      write = function(c)
        return admin("PUT", "/routes/" .. c.route.name .. "/plugins/" .. c.id, plugin_body(c, { id = c.id }))
      end },
    { name = "PUT /plugins/:instance_name without an id (endpoint key, new row)", status = 200,
      write = function(c)
        return admin("PUT", "/plugins/" .. c.instance, plugin_body(c, { service = { id = c.service.id } }))
      end },
    { name = "PUT /plugins/:instance_name with the id in the body (endpoint key, existing row)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/plugins/" .. c.instance, plugin_body(c, { id = c.id, service = { id = c.service.id } }))
      end },
    { name = "DAO upsert with transform = false and the id (what db_import does)", status = 200,
      write = function(c)
        c.id = uuid()
        return db_import_entity("plugins", c.id, plugin_body(c, { id = c.id, service = { id = c.service.id } }))
      end },
    { name = "DAO upsert with transform = false of the row as stored (what db_import of an export does)",
      existing = true, status = 200,
      write = function(c)
        local row = stored_row("plugins", c.id)
        c.config, c.old_stored = probe_config("old-p" .. c.i), nil
        return db_import_entity("plugins", c.id, { id = c.id, name = "secret-probe", instance_name = row.instance_name,
                                                   service = { id = c.service.id }, config = row.config })
      end },
    -- known data loss
    { name = "PUT /plugins/:id without the id in the body (new row)", status = 200,
      write = function(c)
        c.id = uuid()
        return admin("PUT", "/plugins/" .. c.id, plugin_body(c, { service = { id = c.service.id } }))
      end },
    { name = "PUT /plugins/:id without the id in the body (existing row)", existing = true,
      status = 200,
      write = function(c)
        return admin("PUT", "/plugins/" .. c.id, plugin_body(c, { service = { id = c.service.id } }))
      end },
    { name = "PUT /services/:service/plugins/:id without the id in the body (nested)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/services/" .. c.service.name .. "/plugins/" .. c.id, plugin_body(c))
      end },
    { name = "PUT /routes/:route/plugins/:id without the id in the body (nested)",
      existing = "route", status = 200,
      write = function(c)
        return admin("PUT", "/routes/" .. c.route.name .. "/plugins/" .. c.id, plugin_body(c))
      end },
    { name = "PUT /plugins/:instance_name without the id (endpoint key, existing row)",
      existing = true, status = 200,
      write = function(c)
        return admin("PUT", "/plugins/" .. c.instance, plugin_body(c, { service = { id = c.service.id } }))
      end },
  }

  describe("secret-probe plugin config:", function()
    write_cases(PLUGIN_CASES, new_plugin, check_plugin)

    it("a change reaches the proxy while another plugin row cannot be opened", function()
      local other = new_plugin(true)
      local broken = new_plugin(true)
      finally(function()
        psql("DELETE FROM plugins WHERE id = '" .. broken.id .. "'")
        assert.equals(200, (admin("PATCH", "/plugins/" .. ba_probe.id, { tags = { "rebuild-" .. broken.i } })))
      end)
      -- both workers serve the configs as they are
      local old_config = probe_config("old-p" .. other.i)
      on_both_workers(function()
        return proxy("GET", other.path)
      end, function(s, json, b)
        assert.equals(200, s, b)
        assert_config(old_config, json.config)
      end)
      -- a value the node cannot open (here: moved from another row; the same
      -- as a row written under a key this node does not hold yet)
      psql("UPDATE plugins SET config = jsonb_set(config, '{secret}', (SELECT config -> 'secret' FROM plugins "
           .. "WHERE id = '" .. other.id .. "')) WHERE id = '" .. broken.id .. "'")
      local status, body = admin("PATCH", "/plugins/" .. other.id, { config = other.config })
      assert.equals(200, status, body)
      -- Kong rebuilds each worker's plugins iterator after the change's
      -- event reached it: allow it a moment, then both must serve the change
      helpers.wait_until(function()
        return pcall(on_both_workers, function()
          return proxy("GET", other.path)
        end, function(s, json, b)
          assert.equals(200, s, b)
          assert_config(other.config, json.config)
        end)
      end, 10)
    end)
  end)

  ---------------------------------------------------------------------------
  -- the whole database
  ---------------------------------------------------------------------------

  describe("every write", function()
    it("keeps every plaintext out of pg_dump", function()
      local dump = kr.pg_dump(true)
      -- the dump has the rows: plaintext labels and certificates are in it
      assert.is_string(visible_label)
      assert.truthy(dump:find(visible_label, 1, true))
      assert.truthy(dump:find(pem_line(PAIRS.A.cert), 1, true))
      local secrets = {}
      for _, v in ipairs(plaintexts) do
        secrets[#secrets + 1] = v
      end
      for _, pair in pairs(PAIRS) do
        secrets[#secrets + 1] = pem_line(pair.key)
        secrets[#secrets + 1] = pem_line(pair.key_alt)
      end
      assert.is_true(#secrets > 40)
      for _, plain in ipairs(secrets) do
        assert.is_nil(dump:find(plain, 1, true), "a plaintext is in pg_dump")
      end
    end)
  end)

  ---------------------------------------------------------------------------
  -- kong config db_import
  ---------------------------------------------------------------------------

  describe("kong config db_import", function()
    local function kong_config(cmd, file, plugins)
      local cli_env = kr.kong_env(plugins and { plugins = plugins } or nil)
      return helpers.kong_exec(fmt("config %s %s --conf %s", cmd, file, helpers.test_conf_path), cli_env, true)
    end

    local function write_json(doc)
      local path = fmt("%s/db-import-%s-%d.json", kr.project.tmp, RUN, next_n())
      kr.project.write_file(path, assert(cjson.encode(doc)))
      return path
    end

    it("of encrypted rows (an export, _transform = false) stores them encrypted, bound and working", function()
      -- rows written by the node, read as they are stored, then deleted
      local cred = new_credential(false)
      local status, body, json = admin("POST", "/consumers/bob/basic-auth", { username = cred.username,
                                                                              password = cred.password })
      assert.equals(201, status, body)
      cred.id = json.id
      local plugin = new_plugin(false)
      status, body, json = admin("POST", "/plugins", plugin_body(plugin, { service = { id = plugin.service.id } }))
      assert.equals(201, status, body)
      plugin.id = json.id

      local c_row = stored_row("basicauth_credentials", cred.id)
      local p_row = stored_row("plugins", plugin.id)
      for _, v in ipairs({ c_row.password, p_row.config.secret, p_row.config.redis.password }) do
        assert.matches(kr.MARKED, v)
      end
      local file = write_json {
        _format_version = "3.0",
        _transform = false,
        consumers = { { id = bob.id, username = "bob" } },
        basicauth_credentials = { { id = cred.id, consumer = bob.id, username = c_row.username,
                                    password = c_row.password } },
        services = { { id = plugin.service.id, name = plugin.service.name, url = "http://127.0.0.1:1" } },
        routes = { { id = plugin.route.id, name = plugin.route.name, service = plugin.service.id,
                     paths = { plugin.path } } },
        plugins = { { id = plugin.id, name = "secret-probe", service = plugin.service.id, config = p_row.config } },
      }
      finally(function()
        os.remove(file)
      end)
      assert.equals(204, (admin("DELETE", "/basic-auths/" .. cred.id)))
      assert.equals(204, (admin("DELETE", "/plugins/" .. plugin.id)))
      assert.equals("0", psql("SELECT count(*) FROM plugins WHERE id = '" .. plugin.id .. "'"))
      -- the file is a valid declarative config for Kong (the keyring not loaded)
      local ok, _, _, stderr = kong_config("parse", file, "bundled,secret-probe")
      assert.is_true(ok, stderr)

      local imported, _, stdout, err = kong_config("db_import", file)
      assert.is_true(imported, err)
      assert.matches("import successful", stdout, 1, true)
      -- the CLI wrote behind the node's back (no events): make the workers
      -- rebuild their plugins iterator
      assert.equals(200, (admin("PATCH", "/plugins/" .. ba_probe.id, { tags = { "after-db-import" } })))
      check_credential(cred, cred.id)
      check_plugin(plugin, plugin.id)
    end)

    it("of plaintext in an encrypted field is refused: keys live only in a running node", function()
      local id = uuid()
      local password = "cli-pw-" .. RUN
      local file = write_json {
        _format_version = "3.0",
        consumers = { { id = bob.id, username = "bob" } },
        basicauth_credentials = { { id = id, consumer = bob.id, username = "cli-" .. RUN, password = password } },
      }
      finally(function()
        os.remove(file)
      end)
      local ok, _, _, stderr = kong_config("parse", file, "bundled,secret-probe")
      assert.is_true(ok, stderr)

      local imported, _, _, err = kong_config("db_import", file)
      assert.is_false(imported)
      assert.matches("keyring keys are only available in a running node", err, 1, true)
      assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE id = '" .. id .. "'"))
      -- whatever the CLI did, the plaintext never reached the database
      assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE id = '" .. id .. "'"))
      assert.is_nil(kr.pg_dump():find(password, 1, true))
    end)
  end)
end)
end
