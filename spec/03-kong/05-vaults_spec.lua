local helpers = require "spec.helpers"
local kr = require "keyring_helpers"


local MARKED = kr.MARKED
local admin = kr.admin
local psql = kr.psql

local FIELDS_LOG = "[keyring] encrypting probe-vault vaults fields: "
                   .. "config.token, config.auth.secret_id, config.headers[].value"
local SECRETS = { "vault-token-1", "secret-id-1", "header-secret-1", "header-secret-2" }
local ENCRYPTED = { "token", "auth,secret_id", "headers,0,value", "headers,1,value" }


-- the raw JSONB value at `path` ("auth,secret_id") of the vault `prefix`
-- (Kong's vaults entity lives in the table sm_vaults)
local function stored(prefix, path)
  return psql("SELECT config #>> '{" .. path .. "}' FROM sm_vaults WHERE prefix = '" .. prefix .. "'")
end


-- the message of an error.log line, without nginx's ", client: ..." or
-- ", context: ..." suffix
local function message_of(line)
  local msg = line:match("(%[keyring%] .*)$")
  return msg and (msg:gsub(", client: .*$", ""):gsub(", context: .*$", ""))
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (vaults entity) [#" .. strategy .. "]", function()
  local key_id

  lazy_setup(function()
    local dir = kr.project.tmp .. "/spec-05_vaults"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    local priv, pub = kr.project.rsa_pair(2048)
    kr.project.write_file(dir .. "/cert.pem", pub)
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    assert(helpers.start_kong(kr.kong_env { keyring_public_key = dir .. "/cert.pem" }))
    key_id = kr.wait_active_key()
    -- the node's key, recorded for the leak sweep
    local status, _, json = admin("POST", "/keyring/export")
    assert.equals(200, status)
    assert.same({ key_id }, (kr.remember_blob_keys(json.data, priv)))
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  describe("Kong's vaults entity", function()
    it("refuses a vault strategy that is not loaded", function()
      local status, _, json = admin("POST", "/vaults", { prefix = "nope-vault", name = "nope", config = {} })
      assert.equals(400, status)
      assert.equals("vault 'nope' is not installed", json.fields.name)
      assert.equals("0", psql("SELECT count(*) FROM sm_vaults WHERE prefix = 'nope-vault'"))
    end)

    it("refuses a prefix that is a loaded vault name", function()
      local status, _, json = admin("POST", "/vaults", { prefix = "probe-vault", name = "probe-vault", config = {} })
      assert.equals(400, status)
      -- Kong's vaults schema: `not_one_of` the loaded vault names
      assert.matches("^must not be one of: .*probe%-vault", json.fields.prefix)
      assert.equals("0", psql("SELECT count(*) FROM sm_vaults WHERE prefix = 'probe-vault'"))
    end)
  end)

  describe("config secrets", function()
    local vault

    lazy_setup(function()
      local status
      status, _, vault = admin("POST", "/vaults", {
        prefix = "probe-one",
        name = "probe-vault",
        description = "first probe",
        config = {
          token = "vault-token-1",
          address = "https://vault.example:8200",
          auth = { role_id = "role-1", secret_id = "secret-id-1" },
          headers = { { name = "X-One", value = "header-secret-1" },
                      { name = "X-Two", value = "header-secret-2" } },
        },
      })
      assert.equals(201, status)
    end)

    it("logs the encrypted fields of the vault strategy at INFO", function()
      local lines = kr.log_lines("[keyring] encrypting probe-vault vaults fields:")
      assert.is_true(#lines > 0, "no log line naming the vault's encrypted fields")
      for _, line in ipairs(lines) do
        assert.matches("[info]", line, 1, true)
        assert.equals(FIELDS_LOG, message_of(line))
      end
    end)

    it("stores every encrypted config value as a v2 value under the active key", function()
      for _, path in ipairs(ENCRYPTED) do
        local raw = stored("probe-one", path)
        assert.matches(MARKED, raw, 1, false, path)
        assert.equals("$ke$2$-" .. key_id .. "-", raw:sub(1, 8 + #key_id), path)
      end
      -- each value bound to its own place: no two ciphertexts alike
      assert.not_equals(stored("probe-one", "headers,0,value"), stored("probe-one", "headers,1,value"))
    end)

    it("stores the fields that are not marked as given", function()
      assert.equals("https://vault.example:8200", stored("probe-one", "address"))
      assert.equals("role-1", stored("probe-one", "auth,role_id"))
      assert.equals("X-One", stored("probe-one", "headers,0,name"))
      assert.equals("X-Two", stored("probe-one", "headers,1,name"))
      assert.equals("probe-vault|first probe",
                    psql("SELECT name || '|' || description FROM sm_vaults WHERE prefix = 'probe-one'"))
    end)

    it("answers with plaintext by prefix, by id and in the list", function()
      assert.equals("vault-token-1", vault.config.token)
      assert.equals("secret-id-1", vault.config.auth.secret_id)
      for _, path in ipairs({ "/vaults/probe-one", "/vaults/" .. vault.id }) do
        local status, _, read = admin("GET", path)
        assert.equals(200, status, path)
        assert.equals("vault-token-1", read.config.token)
        assert.equals("https://vault.example:8200", read.config.address)
        assert.same({ role_id = "role-1", secret_id = "secret-id-1" }, read.config.auth)
        assert.same({ { name = "X-One", value = "header-secret-1" },
                      { name = "X-Two", value = "header-secret-2" } }, read.config.headers)
      end
      local status, _, list = admin("GET", "/vaults")
      assert.equals(200, status)
      local seen
      for _, row in ipairs(list.data) do
        if row.prefix == "probe-one" then
          seen = row
        end
      end
      assert.is_table(seen, "probe-one is not in GET /vaults")
      assert.equals("vault-token-1", seen.config.token)
      assert.equals("secret-id-1", seen.config.auth.secret_id)
      assert.equals("header-secret-2", seen.config.headers[2].value)
    end)

    it("never writes a config secret to the database", function()
      local dump = kr.pg_dump()
      assert.truthy(dump:find("https://vault.example:8200", 1, true))
      for _, plain in ipairs(SECRETS) do
        assert.is_nil(dump:find(plain, 1, true), plain .. " is in pg_dump")
      end
    end)

    it("keeps every secret encrypted through a PATCH of the description", function()
      local before = stored("probe-one", "auth,secret_id")
      local status, _, patched = admin("PATCH", "/vaults/probe-one", { description = "renamed probe" })
      assert.equals(200, status)
      assert.equals("renamed probe", patched.description)
      assert.equals("vault-token-1", patched.config.token)
      assert.equals("renamed probe", psql("SELECT description FROM sm_vaults WHERE prefix = 'probe-one'"))
      for _, path in ipairs(ENCRYPTED) do
        assert.matches(MARKED, stored("probe-one", path), 1, false, path)
      end
      assert.equals("role-1", stored("probe-one", "auth,role_id"))
      -- re-encrypted from the read-before-write's plaintext, not written back as is
      assert.not_equals(before, stored("probe-one", "auth,secret_id"))
      local dump = kr.pg_dump()
      for _, plain in ipairs(SECRETS) do
        assert.is_nil(dump:find(plain, 1, true), plain .. " is in pg_dump")
      end
      local _, _, read = admin("GET", "/vaults/probe-one")
      assert.equals("secret-id-1", read.config.auth.secret_id)
      assert.equals("header-secret-2", read.config.headers[2].value)
    end)

    describe("a value copied from another vault row", function()
      local copied

      lazy_setup(function()
        local status = admin("POST", "/vaults", {
          prefix = "probe-two",
          name = "probe-vault",
          config = { token = "vault-token-2", headers = { { name = "X", value = "header-secret-3" } } },
        })
        assert.equals(201, status)
        copied = stored("probe-two", "token")
        assert.matches(MARKED, copied)
      end)

      it("is refused with 400 by a PATCH, and the row is kept", function()
        local before = stored("probe-one", "token")
        local status, _, json = admin("PATCH", "/vaults/probe-one", { config = { token = copied } })
        assert.equals(400, status)
        assert.matches("config.token: encrypted value cannot be stored in this row", json.message, 1, true)
        assert.equals(before, stored("probe-one", "token"))
        local _, _, read = admin("GET", "/vaults/probe-one")
        assert.equals("vault-token-1", read.config.token)
      end)

      it("is refused with 400 by a POST (nested in an array of records), and no row is created", function()
        local status, _, json = admin("POST", "/vaults", {
          prefix = "probe-three",
          name = "probe-vault",
          config = { headers = { { name = "X", value = stored("probe-two", "headers,0,value") } } },
        })
        assert.equals(400, status)
        assert.matches("config.headers[1].value: encrypted value cannot be stored in this row",
                       json.message, 1, true)
        assert.equals(404, (admin("GET", "/vaults/probe-three")))
        assert.equals("0", psql("SELECT count(*) FROM sm_vaults WHERE prefix = 'probe-three'"))
      end)

      it("is refused with 400 by a PUT by prefix, and the row is kept", function()
        local before = stored("probe-one", "token")
        local status, _, json = admin("PUT", "/vaults/probe-one", {
          name = "probe-vault",
          config = { token = copied },
        })
        assert.equals(400, status)
        assert.matches("config.token: encrypted value cannot be stored in this row", json.message, 1, true)
        assert.equals(before, stored("probe-one", "token"))
      end)
    end)
  end)
end)
end
