local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"


local MARKED = kr.MARKED
local admin = kr.admin
local psql = kr.psql
local project = kr.project

local KONG_TREE = assert(os.getenv("KEYRING_KONG_SPEC_TREE"))
-- a second node of this file, for the start-up checks
local OTHER_PREFIX = kr.prefix .. "-other"
local OTHER_PROXY = kr.port_base + 2
local OTHER_ADMIN = kr.port_base + 3
-- the main node's TLS proxy listener
local PROXY_TLS = kr.port_base + 4


-- body lines of a PEM (no BEGIN/END armour)
local function pem_lines(pem)
  local lines = {}
  for line in pem:gmatch("[^\n]+") do
    if not line:find("-----", 1, true) then
      lines[#lines + 1] = line
    end
  end
  return lines
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (field kinds, start-up) [#" .. strategy .. "]", function()
  local dir, key_id

  lazy_setup(function()
    dir = project.tmp .. "/spec-04_fields"
    assert(project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    local priv, pub = project.rsa_pair(2048)
    project.write_file(dir .. "/cert.pem", pub)
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    assert(helpers.start_kong(kr.kong_env {
      proxy_listen = "127.0.0.1:" .. kr.port_base .. ", 127.0.0.1:" .. PROXY_TLS .. " ssl",
      keyring_public_key = dir .. "/cert.pem",
    }))
    key_id = kr.wait_active_key()
    -- the node's key, recorded for the leak sweep
    local status, _, json = admin("POST", "/keyring/export")
    assert.equals(200, status)
    assert.same({ key_id }, (kr.remember_blob_keys(json.data, priv)))
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  describe("certificates key and key_alt", function()
    local cert, key, cert_alt, key_alt, row

    lazy_setup(function()
      -- Kong's ECDSA test certificate, and an RSA one (cert_alt must be of
      -- another type than cert)
      cert = assert(project.read_file(KONG_TREE .. "/spec/fixtures/kong_spec.crt"))
      key = assert(project.read_file(KONG_TREE .. "/spec/fixtures/kong_spec.key"))
      assert(project.run("openssl req -x509 -newkey rsa:2048 -nodes -days 2"
                         .. " -subj /CN=alt.keyring.test -keyout " .. dir .. "/alt.key -out " .. dir .. "/alt.crt"))
      cert_alt = assert(project.read_file(dir .. "/alt.crt"))
      key_alt = assert(project.read_file(dir .. "/alt.key"))
      local status, body
      status, body, row = admin("POST", "/certificates",
                                { cert = cert, key = key, cert_alt = cert_alt, key_alt = key_alt })
      assert.equals(201, status, body)
    end)

    it("stores both private keys as v2 values bound to the row", function()
      local raw = psql("SELECT key || ' ' || key_alt || ' ' || cert FROM certificates WHERE id = '" .. row.id .. "'")
      local k, k_alt, c = raw:match("^(%S+) (%S+) (.*)$")
      assert.equals("$ke$2$-" .. key_id .. "-", k:sub(1, 8 + #key_id))
      assert.equals("$ke$2$-" .. key_id .. "-", k_alt:sub(1, 8 + #key_id))
      assert.not_equals(k, k_alt)
      -- the certificate is public: not marked encrypted, stored as given
      assert.equals((cert:gsub("%s+$", "")), (c:gsub("%s+$", "")))
    end)

    it("answers with the plaintext keys", function()
      assert.equals(key, row.key)
      assert.equals(key_alt, row.key_alt)
      local status, body, read = admin("GET", "/certificates/" .. row.id)
      assert.equals(200, status, body)
      assert.equals(key, read.key)
      assert.equals(key_alt, read.key_alt)
      assert.equals(cert_alt, read.cert_alt)
    end)

    it("never writes a private key to the database", function()
      local dump = kr.pg_dump()
      assert.truthy(dump:find(pem_lines(cert)[2], 1, true))  -- the dump does hold the table
      assert.truthy(dump:find(pem_lines(cert_alt)[2], 1, true))
      for _, pem in ipairs { key, key_alt } do
        for _, line in ipairs(pem_lines(pem)) do
          assert.falsy(dump:find(line, 1, true), "a line of a private key is in pg_dump")
        end
      end
    end)

    it("serves both certificates on the proxy's TLS listener (Kong reads the plaintext keys)", function()
      local sni = "alt.keyring.test"
      local status = admin("POST", "/snis", { name = sni, certificate = { id = row.id } })
      assert.equals(201, status)
      local function served_subject(sigalgs)
        local ok, out = project.run("echo | openssl s_client -connect 127.0.0.1:" .. PROXY_TLS
                                    .. " -servername " .. sni .. " -sigalgs " .. sigalgs .. " 2>/dev/null"
                                    .. " | openssl x509 -noout -subject")
        return ok and out:match("subject=%s*(.-)%s*$")
      end
      local ok, ec_subject = project.run("openssl x509 -noout -subject -in "
                                         .. KONG_TREE .. "/spec/fixtures/kong_spec.crt")
      assert(ok, ec_subject)
      ec_subject = ec_subject:match("subject=%s*(.-)%s*$")
      assert.not_equals("CN = alt.keyring.test", ec_subject)
      -- an RSA-only client gets cert_alt (so key_alt), an ECDSA-only one cert (so key)
      helpers.wait_until(function()
        return served_subject("RSA-PSS+SHA256:RSA+SHA256") == "CN = alt.keyring.test"
      end, 10)
      assert.equals(ec_subject, served_subject("ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512"))
    end)
  end)

  describe("entity arrays of strings and unique fields", function()
    local item

    lazy_setup(function()
      local status
      status, _, item = admin("POST", "/secret-probe/items", {
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
      assert.same({ "first-secret-value", "second-secret-value" }, item.values)
      local status, _, read = admin("GET", "/secret-probe/items/" .. item.id)
      assert.equals(200, status)
      assert.same({ "first-secret-value", "second-secret-value" }, read.values)
    end)

    it("leaves a unique field in plaintext, with a WARN naming it", function()
      assert.equals("lookup-code-1", psql("SELECT code FROM secret_probe_items WHERE id = '" .. item.id .. "'"))
      local warned = kr.log_lines("secret_probe_items.code is unique, the endpoint key or part of the cache key")
      assert.truthy(#warned > 0)
      assert.matches("%[warn%]", warned[1])
    end)

    it("keeps array elements out of the database", function()
      local dump = kr.pg_dump()
      assert.truthy(dump:find("lookup-code-1", 1, true))
      assert.falsy(dump:find("first-secret-value", 1, true))
      assert.falsy(dump:find("second-secret-value", 1, true))
    end)
  end)

  describe("start-up configuration", function()
    after_each(function()
      -- a start that should have failed may have left a node behind
      kr.stop_kong(OTHER_PREFIX)
    end)

    local function other_env(extra)
      local env = kr.kong_env(extra)
      env.prefix = OTHER_PREFIX
      env.proxy_listen = "127.0.0.1:" .. OTHER_PROXY
      env.admin_listen = "127.0.0.1:" .. OTHER_ADMIN
      return env
    end

    -- `kong start` must fail: its stderr, and the node's error.log
    local function failed_start(extra)
      local ok, err = helpers.start_kong(other_env(extra))
      assert.falsy(ok, "Kong started with a bad configuration")
      return tostring(err), kr.error_log(OTHER_PREFIX)
    end

    -- the message in both places, and never the value
    local function assert_refused(message, value, stderr, log)
      assert.matches(message, stderr, 1, true)
      assert.matches("%[error%] %d+#%d+: init_by_lua error: ", log)
      assert.matches(message, log, 1, true)
      if value then
        assert.falsy(stderr:find(value, 1, true), "the value is on stderr")
        assert.falsy(log:find(value, 1, true), "the value is in error.log")
      end
    end

    it("stops on an invalid value, naming the option and not echoing the value", function()
      local stderr, log = failed_start { keyring_wait_ms = "soon-ish-value" }
      assert_refused("invalid keyring_wait_ms (KONG_KEYRING_WAIT_MS)", "soon-ish-value", stderr, log)
    end)

    it("stops on a public key given where a private key is needed", function()
      local _, pub = project.rsa_pair(2048)
      project.write_file(dir .. "/pub.pem", pub)
      local stderr, log = failed_start { keyring_private_key = dir .. "/pub.pem" }
      assert_refused("invalid keyring_private_key (KONG_KEYRING_PRIVATE_KEY): expected an RSA private key",
                     pem_lines(pub)[2], stderr, log)
    end)

    it("stops on an unknown strategy", function()
      local stderr, log = failed_start { keyring_strategy = "etcd" }
      assert_refused("invalid keyring_strategy (KONG_KEYRING_STRATEGY)", nil, stderr, log)
    end)

    it("warns that kong.conf keyring_* lines are ignored when KONG_KEYRING_ENABLED is unset", function()
      -- a kong.conf with keyring lines (one invalid: were it read, start-up would stop)
      local conf = dir .. "/kong-keyring-lines.conf"
      project.write_file(conf, assert(project.read_file(helpers.test_conf_path))
                               .. "\nkeyring_enabled = on\nkeyring_strategy = etcd\n")
      helpers.clean_prefix(OTHER_PREFIX)
      local env = other_env { keyring_enabled = false }
      local ok, err = helpers.kong_exec("start --conf " .. conf, env)
      assert(ok, err)
      local lines = kr.log_lines("KONG_KEYRING_ENABLED is not set", OTHER_PREFIX)
      assert.truthy(#lines > 0)
      assert.matches("%[warn%]", lines[1])
      assert.matches("keyring_* lines in kong.conf are ignored", lines[1], 1, true)
      -- and the node runs with the keyring off: values pass through
      local status, _, consumer = admin("POST", "/consumers", { username = "plain" }, nil, OTHER_ADMIN)
      assert.equals(201, status)
      local cred
      status, _, cred = admin("POST", "/consumers/plain/basic-auth", { username = "plain", password = "pw" },
                              nil, OTHER_ADMIN)
      assert.equals(201, status)
      assert.equals(consumer.id, cred.consumer.id)
      assert.equals(cred.password, psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
      local _, _, ring = admin("GET", "/keyring", nil, nil, OTHER_ADMIN)
      assert.same({ error = "keyring is not enabled" }, ring)
    end)
  end)
end)
end
