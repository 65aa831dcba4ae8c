local helpers = require "helpers"
local harness_server = require "harness.server"


local DB = "kong_spec_keys"
local MARKED = "^%$ke%$2%$%-"
local PLACEHOLDER = "^%$ke%$unavailable%$%x+$"


describe("Plugin: keyring (keys missing, disabled, db_import) [#postgres]", function()
  local dir, node, key_id, blob, cred, plugin

  local function new_node(name, port, enabled, cli, role)
    return harness_server.new {
      cli = cli,
      name = name,
      proxy_port = port,
      admin_port = port + 1,
      plugins = { "keyring", "basic-auth", "secret-probe" },
      env = {
        KONG_KEYRING_ENABLED = enabled and "on" or "off",
        KONG_KEYRING_PUBLIC_KEY = dir .. "/cert.pem",
        KONG_KEYRING_PRIVATE_KEY = dir .. "/key.pem",
        KONG_ROLE = role,
      },
      db = { database = DB },
    }
  end

  local function psql(sql)
    return node:psql_text(sql)
  end

  -- status and seconds, measured by curl itself (no process start-up in it)
  local function timed_get(path)
    local _, out = helpers.run("curl -s -o /dev/null -w '%{http_code} %{time_total}' "
                               .. helpers.shell_quote("http://127.0.0.1:" .. node.admin_port .. path))
    local status, seconds = out:match("(%d+) ([%d%.]+)")
    return tonumber(status), tonumber(seconds)
  end

  local function iterator_config(name)
    local _, _, json = node:admin("GET", "/__harness/plugins_iterator")
    for _, row in ipairs(json and json.iterator and json.iterator.plugins or {}) do
      if row.name == name then
        return row.config
      end
    end
  end

  local function wait_for(fn)
    for _ = 1, 100 do
      local v = fn()
      if v then
        return v
      end
      os.execute("sleep 0.05")
    end
  end

  lazy_setup(function()
    dir = helpers.tmp .. "/keys-spec"
    os.execute("mkdir -p " .. dir)
    local priv, pub = helpers.rsa_pair(2048)
    helpers.write_file(dir .. "/key.pem", priv)
    helpers.write_file(dir .. "/cert.pem", pub)

    harness_server.create_database(DB)
    node = new_node("kong-keys", 18320, true)
    node:start()
    key_id = node:wait_active_key()

    local status
    status = node:admin("POST", "/consumers", { username = "alice" })
    assert.equals(201, status)
    status, _, cred = node:admin("POST", "/consumers/alice/basic-auth", { username = "alice", password = "pw" })
    assert.equals(201, status)
    status, _, plugin = node:admin("POST", "/plugins", { name = "secret-probe", config = { secret = "session-secret" } })
    assert.equals(201, status)
    local json
    status, _, json = node:admin("POST", "/keyring/export")
    assert.equals(200, status)
    blob = json.data
  end)

  lazy_teardown(function()
    if node then
      node:stop()
    end
    harness_server.drop_database(DB)
  end)

  describe("after a restart, before the keys are back", function()
    lazy_setup(function()
      node:stop()
      node:start()
    end)

    it("answers 503 naming the key id within 100 ms", function()
      local status, seconds = timed_get("/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(503, status)
      assert.is_true(seconds <= 0.1, "took " .. seconds .. " s")
      local _, _, json = node:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.same({ message = "keyring key '" .. key_id .. "' is not available on this node" }, json)
    end)

    it("builds plugin configs with a per-process placeholder, never the stored ciphertext", function()
      local config = iterator_config("secret-probe")
      assert.is_table(config)
      assert.matches(PLACEHOLDER, config.secret)
      assert.equals(16 + 64, #config.secret)
      assert.not_equals(psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'"), config.secret)
    end)

    it("refuses writes of encrypted fields with 503 while no key is active", function()
      local status, _, json = node:admin("POST", "/consumers/alice/basic-auth", { username = "a2", password = "x" })
      assert.equals(503, status)
      assert.same({ message = "no active keyring key on this node" }, json)
    end)

    it("reads back and rebuilds plugin configs with plaintext once the export is imported", function()
      local status = node:admin("POST", "/keyring/import", { data = blob })
      assert.equals(200, status)
      local _, _, read = node:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
      assert.equals("session-secret", wait_for(function()
        local config = iterator_config("secret-probe")
        return config and config.secret == "session-secret" and config.secret
      end))
    end)
  end)

  describe("kong config db_import (upsert with transform = false)", function()
    it("still stores encrypted fields as ciphertext", function()
      local id = "6f1d2f0a-3c39-4d5e-9a53-1b2c3d4e5f60"
      local consumer = select(3, node:admin("GET", "/consumers/alice"))
      local entity = require("cjson").encode({ consumer = { id = consumer.id }, username = "imported",
                                                password = "0123456789abcdef0123456789abcdef01234567" })
      local status = node:admin("PUT", "/secret-probe/db-import/basicauth_credentials/" .. id, { entity = entity })
      assert.equals(200, status)
      local raw = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. id .. "'")
      assert.matches(MARKED, raw)
      local _, _, read = node:admin("GET", "/consumers/alice/basic-auth/" .. id)
      assert.equals("0123456789abcdef0123456789abcdef01234567", read.password)
    end)
  end)

  describe("in the Kong CLI (kong config db_export / db_import)", function()
    local cli, stored

    lazy_setup(function()
      stored = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'")
      cli = new_node("kong-keys-cli", 18328, true, true)
      cli:start()
    end)

    lazy_teardown(function()
      cli:stop()
    end)

    it("exports stored ciphertext as it is", function()
      local status, _, read = cli:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(200, status)
      assert.equals(stored, read.password)
    end)

    it("imports marked values as they are", function()
      local entity = require("cjson").encode({ consumer = { id = cred.consumer.id }, username = cred.username,
                                                password = stored })
      local status, body = cli:admin("PUT", "/secret-probe/db-import/basicauth_credentials/" .. cred.id,
                                     { entity = entity })
      assert.equals(200, status, body)
      assert.equals(stored, psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
      -- and the running node still reads it
      local _, _, read = node:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
    end)

    it("refuses to import a plaintext value into an encrypted field", function()
      local entity = require("cjson").encode({ consumer = { id = cred.consumer.id }, username = cred.username,
                                                password = "plaintext-from-a-file" })
      local status, body = cli:admin("PUT", "/secret-probe/db-import/basicauth_credentials/" .. cred.id,
                                     { entity = entity })
      assert.equals(400, status)
      assert.matches("keyring keys are only available in a running node", body, 1, true)
      assert.equals(stored, psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
      assert.equals(0, tonumber(psql("SELECT count(*) FROM basicauth_credentials WHERE password LIKE 'plaintext%'")))
    end)

    it("creates no key region and runs no strategy", function()
      local _, _, json = cli:admin("GET", "/keyring")
      assert.is_nil(json and json.active)
      assert.same({}, cli:log_lines("generated and activated"))
    end)
  end)

  describe("on a hybrid-mode data plane (role = data_plane)", function()
    local dp

    lazy_setup(function()
      dp = new_node("kong-keys-dp", 18322, true, false, "data_plane")
      dp:start()
    end)

    lazy_teardown(function()
      dp:stop()
    end)

    it("passes values through, exposes no keyring and runs no strategy", function()
      local stored = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'")
      local status, _, read = dp:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(200, status)
      assert.equals(stored, read.password)
      local _, _, json = dp:admin("GET", "/keyring")
      assert.same({ error = "keyring is not enabled" }, json)
      assert.same({}, dp:log_lines("generated and activated"))
    end)
  end)

  describe("with the keyring disabled", function()
    local plain_cred

    lazy_setup(function()
      node:stop()
      node = new_node("kong-keys-off", 18324, false)
      node:start()
    end)

    it("passes stored ciphertext through unchanged", function()
      local status, _, read = node:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(200, status)
      assert.matches(MARKED, read.password)
    end)

    it("stores new values as given", function()
      local status
      status, _, plain_cred = node:admin("POST", "/consumers/alice/basic-auth", { username = "plain", password = "pw2" })
      assert.equals(201, status)
      assert.equals(plain_cred.password, psql("SELECT password FROM basicauth_credentials WHERE id = '" .. plain_cred.id .. "'"))
    end)

    it("leaves marked values readable once enabled again", function()
      node:stop()
      node = new_node("kong-keys-on", 18326, true)
      node:start()
      assert.equals(200, (node:admin("POST", "/keyring/import", { data = blob })))
      local _, _, read = node:admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
      local _, _, plain = node:admin("GET", "/consumers/alice/basic-auth/" .. plain_cred.id)
      assert.equals(plain_cred.password, plain.password)
    end)
  end)
end)
