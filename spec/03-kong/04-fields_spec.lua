local helpers = require "helpers"
local harness_server = require "harness.server"
local cjson = require "cjson.safe"


local DB = "kong_spec_fields"
local MARKED = "^%$ke%$2%$%-[%w]+%-"


describe("Plugin: keyring (field kinds, start-up) [#postgres]", function()
  local dir, node, key_id

  local function new_node(name, port, env)
    return harness_server.new {
      name = name,
      proxy_port = port,
      admin_port = port + 1,
      plugins = { "keyring", "basic-auth", "secret-probe" },
      env = env,
      db = { database = DB },
    }
  end

  local function psql(sql)
    return node:psql_text(sql)
  end

  -- every row of every table, as PostgreSQL itself dumps it
  local function pg_dump()
    local ok, out = helpers.run("pg_dump -h 127.0.0.1 -p 55432 -U postgres --data-only " .. DB)
    assert(ok, out)
    return out
  end

  local function self_signed(cn)
    local key = dir .. "/" .. cn .. ".key"
    local crt = dir .. "/" .. cn .. ".crt"
    assert(helpers.run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=" .. cn
                       .. " -keyout " .. key .. " -out " .. crt .. " 2>&1"))
    return helpers.read_file(crt), helpers.read_file(key)
  end

  lazy_setup(function()
    dir = helpers.tmp .. "/fields-spec"
    os.execute("rm -rf " .. dir .. " && mkdir -p " .. dir)
    harness_server.create_database(DB)
    node = new_node("kong-fields", 18330, { KONG_KEYRING_ENABLED = "on" })
    node:start()
    key_id = node:wait_active_key()
  end)

  lazy_teardown(function()
    if node then
      node:stop()
    end
    harness_server.drop_database(DB)
  end)

  describe("certificates key and key_alt", function()
    local cert, key, cert_alt, key_alt, row

    lazy_setup(function()
      cert, key = self_signed("main")
      cert_alt, key_alt = self_signed("alt")
      local status
      status, _, row = node:admin("POST", "/certificates",
                                  { cert = cert, key = key, cert_alt = cert_alt, key_alt = key_alt })
      assert.equals(201, status)
    end)

    it("stores both private keys as v2 values bound to the row", function()
      local raw = psql("SELECT key || ' ' || key_alt || ' ' || cert FROM certificates WHERE id = '" .. row.id .. "'")
      local k, k_alt, c = raw:match("^(%S+) (%S+) (.*)$")
      assert.matches(MARKED, k)
      assert.matches(MARKED, k_alt)
      assert.not_equals(k, k_alt)
      -- the certificate is public: not marked encrypted, stored as given
      assert.equals((cert:gsub("%s+$", "")), (c:gsub("%s+$", "")))
    end)

    it("answers with the plaintext keys", function()
      assert.equals(key, row.key)
      local status, body, read = node:admin("GET", "/certificates/" .. row.id)
      assert.equals(200, status, body)
      assert.equals(key, read.key)
      assert.equals(key_alt, read.key_alt)
    end)

    it("never writes a private key to the database", function()
      local dump = pg_dump()
      assert.truthy(dump:find(cert:match("\n([^\n]+)\n"), 1, true))  -- the dump does hold the table
      for _, pem in ipairs { key, key_alt } do
        for line in pem:gmatch("[^\n]+") do
          if not line:find("-----", 1, true) then
            assert.falsy(dump:find(line, 1, true), "a line of a private key is in pg_dump")
          end
        end
      end
    end)
  end)

  describe("entity arrays of strings and unique fields", function()
    local item

    lazy_setup(function()
      local status
      status, _, item = node:admin("POST", "/secret-probe/items", {
        name = "item-1",
        code = "lookup-code-1",
        values = cjson.encode({ "first-secret-value", "second-secret-value" }),
      })
      assert.equals(201, status)
    end)

    it("encrypts every element of an array of strings, each bound to the row", function()
      local raw = psql("SELECT array_to_json(\"values\") FROM secret_probe_items WHERE id = '" .. item.id .. "'")
      local values = assert(cjson.decode(raw))
      assert.equals(2, #values)
      assert.matches(MARKED, values[1])
      assert.matches(MARKED, values[2])
      assert.not_equals(values[1], values[2])
      local status, _, read = node:admin("GET", "/secret-probe/items/" .. item.id)
      assert.equals(200, status)
      assert.same({ "first-secret-value", "second-secret-value" }, read.values)
    end)

    it("leaves a unique field in plaintext, with a WARN naming it", function()
      assert.equals("lookup-code-1", psql("SELECT code FROM secret_probe_items WHERE id = '" .. item.id .. "'"))
      local warned = node:log_lines("secret_probe_items.code is unique, the endpoint key or part of the cache key")
      assert.truthy(#warned > 0)
      assert.matches("%[warn%]", warned[1])
    end)

    it("keeps array elements out of the database", function()
      local dump = pg_dump()
      assert.truthy(dump:find("lookup-code-1", 1, true))
      assert.falsy(dump:find("first-secret-value", 1, true))
      assert.falsy(dump:find("second-secret-value", 1, true))
    end)
  end)

  describe("start-up configuration", function()
    local other

    after_each(function()
      if other then
        other:stop()
        other = nil
      end
    end)

    local function failed_start(env)
      other = new_node("kong-fields-bad", 18332, env)
      local ok, err = pcall(other.start, other)
      assert.falsy(ok, "nginx started with a bad configuration")
      return tostring(err)
    end

    it("stops on an invalid value, naming the option and not echoing the value", function()
      local err = failed_start { KONG_KEYRING_ENABLED = "on", KONG_KEYRING_WAIT_MS = "soon-ish-value" }
      assert.matches("keyring_wait_ms", err, 1, true)
      assert.falsy(err:find("soon-ish-value", 1, true))
    end)

    it("stops on a public key given where a private key is needed", function()
      local _, pub = helpers.rsa_pair(2048)
      helpers.write_file(dir .. "/pub.pem", pub)
      local err = failed_start { KONG_KEYRING_ENABLED = "on", KONG_KEYRING_PRIVATE_KEY = dir .. "/pub.pem" }
      assert.matches("keyring_private_key", err, 1, true)
    end)

    it("stops on an unknown strategy", function()
      local err = failed_start { KONG_KEYRING_ENABLED = "on", KONG_KEYRING_STRATEGY = "etcd" }
      assert.matches("keyring_strategy", err, 1, true)
    end)

    it("warns that kong.conf keyring_* lines are ignored when KONG_KEYRING_ENABLED is unset", function()
      other = new_node("kong-fields-unset", 18334, {})
      other:start()
      local lines = other:log_lines("KONG_KEYRING_ENABLED is not set")
      assert.truthy(#lines > 0)
      assert.matches("%[warn%]", lines[1])
      assert.matches("KONG_KEYRING_ENABLED", lines[1], 1, true)
      -- and the node runs with the keyring off: values pass through
      local status = other:admin("POST", "/consumers", { username = "plain" })
      assert.equals(201, status)
    end)
  end)
end)
