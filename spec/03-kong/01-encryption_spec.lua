local helpers = require "spec.helpers"
local kr = require "keyring_helpers"


local MARKED = kr.MARKED
local admin = kr.admin
local psql = kr.psql


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (field encryption) [#" .. strategy .. "]", function()
  local key_id

  lazy_setup(function()
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    assert(helpers.start_kong(kr.kong_env()))
    -- the first node of a cluster generates and activates the first key
    key_id = kr.wait_active_key()
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  describe("basic-auth password", function()
    local consumer, cred

    lazy_setup(function()
      local status
      status, _, consumer = admin("POST", "/consumers", { username = "bob" })
      assert.equals(201, status)
      status, _, cred = admin("POST", "/consumers/bob/basic-auth", { username = "bob", password = "hunter2" })
      assert.equals(201, status)
    end)

    it("stores a v2 value bound to the row and answers with the hash", function()
      local raw = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'")
      assert.matches(MARKED, raw)
      assert.equals("$ke$2$-" .. key_id .. "-", raw:sub(1, 8 + #key_id))
      -- basic-auth hashed first: the API answer is the 40-char SHA-1 hex
      assert.equals(40, #cred.password)
      local _, _, read = admin("GET", "/consumers/bob/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
    end)

    it("keeps the password encrypted through a PATCH of another field", function()
      local status = admin("PATCH", "/consumers/bob/basic-auth/" .. cred.id, { username = "bobby" })
      assert.equals(200, status)
      assert.matches(MARKED, psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
    end)

    it("never writes the plaintext hash to the database", function()
      assert.is_nil(kr.pg_dump(true):find(cred.password, 1, true))
    end)

    it("carries the new key id after generate + activate + PATCH (seed rotation)", function()
      local _, _, old = admin("POST", "/consumers/bob/basic-auth", { username = "bob-old", password = "old-pass" })
      local status, _, gen = admin("POST", "/keyring/generate")
      assert.equals(201, status)
      kr.project.remember_key(gen.key)
      assert.equals(204, (admin("POST", "/keyring/activate", { key = gen.id })))
      assert.equals(200, (admin("PATCH", "/consumers/bob/basic-auth/" .. cred.id, { password = "new-pass" })))
      local raw = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'")
      assert.equals("$ke$2$-" .. gen.id .. "-", raw:sub(1, 8 + #gen.id))
      -- rows written under the old key stay readable
      local old_raw = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. old.id .. "'")
      assert.equals("$ke$2$-" .. key_id .. "-", old_raw:sub(1, 8 + #key_id))
      local read_status, _, read = admin("GET", "/consumers/bob/basic-auth/" .. old.id)
      assert.equals(200, read_status)
      assert.equals(old.password, read.password)
    end)
  end)

  describe("plugin config", function()
    local plugin

    lazy_setup(function()
      local status
      status, _, plugin = admin("POST", "/plugins", {
        name = "secret-probe",
        config = {
          secret = "top-secret", label = "visible",
          redis = { host = "r1", password = "redis-pass" },
          headers = { { name = "a", value = "header-one" }, { name = "b", value = "header-two" } },
          tokens = { "token-one", "token-two" },
        },
      })
      assert.equals(201, status)
    end)

    local SECRETS = { "top-secret", "redis-pass", "header-one", "header-two", "token-one", "token-two" }

    local function stored(path)
      return psql("SELECT config #>> '{" .. path .. "}' FROM plugins WHERE id = '" .. plugin.id .. "'")
    end

    it("stores a v2 value bound to the row in records, arrays of records and arrays of strings", function()
      for _, path in ipairs({ "secret", "redis,password", "headers,0,value", "headers,1,value",
                              "tokens,0", "tokens,1" }) do
        assert.matches(MARKED, stored(path), 1, false, path)
      end
      -- fields not marked encrypted are left as they are
      assert.equals("visible", stored("label"))
      assert.equals("r1", stored("redis,host"))
      assert.equals("a", stored("headers,0,name"))
    end)

    it("never writes a config secret to the database", function()
      local dump = kr.pg_dump()
      assert.truthy(dump:find("visible", 1, true))
      for _, plain in ipairs(SECRETS) do
        assert.is_nil(dump:find(plain, 1, true), plain .. " is in pg_dump")
      end
    end)

    it("keeps every secret encrypted through a PATCH of another config field", function()
      local before = stored("redis,password")
      local status = admin("PATCH", "/plugins/" .. plugin.id, { config = { label = "still-visible" } })
      assert.equals(200, status)
      assert.equals("still-visible", stored("label"))
      assert.matches(MARKED, stored("secret"))
      assert.matches(MARKED, stored("redis,password"))
      assert.matches(MARKED, stored("headers,1,value"))
      -- re-encrypted with a fresh nonce, not the same bytes written back
      assert.not_equals(before, stored("redis,password"))
    end)

    it("refuses a value copied from another row with 400 and keeps the row", function()
      -- Kong allows one global instance of a plugin: the other row is scoped to a service
      local _, _, service = admin("POST", "/services", { name = "copy-source", url = "http://127.0.0.1:1" })
      local _, _, other = admin("POST", "/services/" .. service.id .. "/plugins",
                                { name = "secret-probe", config = { secret = "other" } })
      local copied = psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. other.id .. "'")
      local before = psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'")
      local status, _, json = admin("PATCH", "/plugins/" .. plugin.id, { config = { secret = copied } })
      assert.equals(400, status)
      assert.matches("encrypted value cannot be stored in this row", json.message, 1, true)
      assert.equals(before, psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'"))
    end)

    it("answers with plaintext", function()
      local _, _, read = admin("GET", "/plugins/" .. plugin.id)
      assert.equals("top-secret", read.config.secret)
      assert.equals("redis-pass", read.config.redis.password)
      assert.equals("header-two", read.config.headers[2].value)
      assert.same({ "token-one", "token-two" }, read.config.tokens)
    end)
  end)
end)
end
