local helpers = require "helpers"
local harness_server = require "harness.server"


local DB = "kong_spec_vaults"
local MARKED = "^%$ke%$2%$%-[%w]+%-"
local FIELDS_LOG = "[keyring] encrypting probe-vault vaults fields: "
                   .. "config.token, config.auth.secret_id, config.headers[].value"


describe("Plugin: keyring (vaults entity) [#postgres]", function()
  local node, key_id

  local function admin(method, path, body)
    return node:admin(method, path, body)
  end

  local function psql(sql)
    return node:psql_text(sql)
  end

  -- the raw JSONB value at `path` ("auth,secret_id") of the vault `prefix`
  local function stored(prefix, path)
    return psql("SELECT config #>> '{" .. path .. "}' FROM vaults WHERE prefix = '" .. prefix .. "'")
  end

  local function pg_dump()
    local ok, out = helpers.run("pg_dump -h 127.0.0.1 -p 55432 -U postgres --data-only " .. DB)
    assert(ok, out)
    return out
  end

  lazy_setup(function()
    harness_server.create_database(DB)
    node = harness_server.new {
      name = "kong-vaults",
      proxy_port = 18340,
      admin_port = 18341,
      plugins = { "keyring", "basic-auth" },
      vaults = { "probe-vault" },
      env = { KONG_KEYRING_ENABLED = "on" },
      db = { database = DB },
    }
    node:start()
    key_id = node:wait_active_key()
  end)

  lazy_teardown(function()
    if node then
      node:stop()
    end
    harness_server.drop_database(DB)
  end)

  describe("the harness entity", function()
    it("refuses a vault strategy that is not loaded", function()
      local status, _, json = admin("POST", "/vaults", { prefix = "nope-vault", name = "nope", config = {} })
      assert.equals(400, status)
      assert.equals("vault 'nope' is not installed", json.fields.name)
    end)

    it("refuses a prefix that is a loaded vault name", function()
      local status, _, json = admin("POST", "/vaults", { prefix = "probe-vault", name = "probe-vault", config = {} })
      assert.equals(400, status)
      assert.truthy(json.fields.prefix)
    end)
  end)

  describe("config secrets", function()
    local vault

    local SECRETS = { "vault-token-1", "secret-id-1", "header-secret-1", "header-secret-2" }

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
      local lines = node:log_lines("[keyring] encrypting probe-vault vaults fields:")
      assert.is_true(#lines > 0, "no log line naming the vault's encrypted fields")
      for _, line in ipairs(lines) do
        assert.matches("[info]", line, 1, true)
        assert.equals(FIELDS_LOG, line:match("(%[keyring%] encrypting .-),? client:")
                                  or line:match("(%[keyring%] encrypting .*)$"))
      end
    end)

    it("stores every encrypted config value as a v2 value under the active key", function()
      for _, path in ipairs({ "token", "auth,secret_id", "headers,0,value", "headers,1,value" }) do
        local raw = stored("probe-one", path)
        assert.matches(MARKED, raw, 1, false, path)
        assert.equals("$ke$2$-" .. key_id .. "-", raw:sub(1, 8 + #key_id), path)
      end
    end)

    it("stores the fields that are not marked as given", function()
      assert.equals("https://vault.example:8200", stored("probe-one", "address"))
      assert.equals("role-1", stored("probe-one", "auth,role_id"))
      assert.equals("X-One", stored("probe-one", "headers,0,name"))
      assert.equals("X-Two", stored("probe-one", "headers,1,name"))
      assert.equals("probe-vault|first probe",
                    psql("SELECT name || '|' || description FROM vaults WHERE prefix = 'probe-one'"))
    end)

    it("answers with plaintext by prefix, by id and in the list", function()
      assert.equals("vault-token-1", vault.config.token)
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
      assert.equals("secret-id-1", seen.config.auth.secret_id)
    end)

    it("never writes a config secret to the database", function()
      local dump = pg_dump()
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
      assert.equals("renamed probe", psql("SELECT description FROM vaults WHERE prefix = 'probe-one'"))
      for _, path in ipairs({ "token", "auth,secret_id", "headers,0,value", "headers,1,value" }) do
        assert.matches(MARKED, stored("probe-one", path), 1, false, path)
      end
      assert.equals("role-1", stored("probe-one", "auth,role_id"))
      -- re-encrypted from the read-before-write's plaintext, not written back as is
      assert.not_equals(before, stored("probe-one", "auth,secret_id"))
      for _, plain in ipairs(SECRETS) do
        assert.is_nil(pg_dump():find(plain, 1, true), plain .. " is in pg_dump")
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
        assert.equals("0", psql("SELECT count(*) FROM vaults WHERE prefix = 'probe-three'"))
      end)
    end)
  end)
end)
