local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"
local lyaml = require "lyaml"


local MARKED = kr.MARKED
local PLACEHOLDER = "^%$ke%$unavailable%$%x+$"
local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local project = kr.project
local fmt = string.format

local KONG_TREE = assert(os.getenv("KEYRING_KONG_SPEC_TREE"))
local CLUSTER_CERT = KONG_TREE .. "/spec/fixtures/kong_clustering.crt"
local CLUSTER_CERT_KEY = KONG_TREE .. "/spec/fixtures/kong_clustering.key"

-- the hybrid-mode nodes of this file (scripts/kong.sh: base + 2 .. base + 9)
local CP_PREFIX = kr.prefix .. "-cp"
local CP_ADMIN = kr.port_base + 2
local CP_CLUSTER = kr.port_base + 3
local DP_PREFIX = kr.prefix .. "-dp"
local DP_PROXY = kr.port_base + 4
local DP_ADMIN = kr.port_base + 5

local basic = kr.basic_auth


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (keys missing, hybrid mode, CLI, disabled) [#" .. strategy .. "]", function()
  local dir, priv, key_id, blob, alice, cred, plugin

  -- Kong settings of every node here: the keyring with a management key pair
  local function env(extra)
    local e = kr.kong_env {
      keyring_public_key = dir .. "/cert.pem",
      keyring_private_key = dir .. "/key.pem",
    }
    for k, v in pairs(extra or {}) do
      e[k] = v or nil
    end
    return e
  end

  local function restart(extra)
    assert(kr.stop_kong())
    assert(helpers.start_kong(env(extra), nil, true))
    helpers.wait_until(function()
      local ok, status = pcall(admin, "GET", "/status")
      return ok and status == 200
    end, 10)
  end

  local function stored_password(id)
    return psql("SELECT password FROM basicauth_credentials WHERE id = '" .. id .. "'")
  end

  -- status and seconds, measured by curl itself (no process start-up in it)
  local function timed_get(path)
    local _, out = project.run("curl -s -o /dev/null -w '%{http_code} %{time_total}' "
                               .. project.shell_quote("http://127.0.0.1:" .. kr.port_base + 1 .. path))
    local status, seconds = out:match("(%d+) ([%d%.]+)")
    return tonumber(status), tonumber(seconds)
  end

  -- the secret-probe echo of each worker of a node, once both answered
  -- (and `want(config)` holds for both, when given): { [worker id] = config }
  local function probe_configs(path, headers, port, want)
    local seen = {}
    helpers.wait_until(function()
      local status, _, json = proxy("GET", path, headers, nil, port)
      if status == 200 and json and (not want or want(json.config)) then
        seen[json.worker] = json.config
      end
      return seen[0] ~= nil and seen[1] ~= nil
    end, 15)
    return seen
  end

  lazy_setup(function()
    dir = project.tmp .. "/spec-03_keys"
    assert(project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    local pub
    priv, pub = project.rsa_pair(2048)
    project.write_file(dir .. "/key.pem", priv)
    project.write_file(dir .. "/cert.pem", pub)

    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    -- reuseport: new connections reach both workers
    assert(helpers.start_kong(env { proxy_listen = "127.0.0.1:" .. kr.port_base .. " reuseport" }))
    key_id = kr.wait_active_key()

    local status
    status, _, alice = admin("POST", "/consumers", { username = "alice" })
    assert.equals(201, status)
    status, _, cred = admin("POST", "/consumers/alice/basic-auth", { username = "alice", password = "pw" })
    assert.equals(201, status)
    local service
    status, _, service = admin("POST", "/services", { name = "probe", url = "http://127.0.0.1:1" })
    assert.equals(201, status)
    local route
    status, _, route = admin("POST", "/services/probe/routes", { name = "probe", paths = { "/probe" } })
    assert.equals(201, status)
    status, _, plugin = admin("POST", "/routes/probe/plugins",
                              { name = "secret-probe", config = { secret = "session-secret" } })
    assert.equals(201, status)
    assert.equals(route.id, plugin.route.id)
    assert.equals(service.id, route.service.id)
    -- the proxy runs the plugin with its plaintext config
    local configs = probe_configs("/probe")
    assert.equals("session-secret", configs[0].secret)
    assert.equals("session-secret", configs[1].secret)

    local json
    status, _, json = admin("POST", "/keyring/export")
    assert.equals(200, status)
    blob = json.data
    -- the export holds the node's one key, recorded for the leak sweep
    local ids, active = kr.remember_blob_keys(blob, priv)
    assert.same({ key_id }, ids)
    assert.equals(key_id, active)
  end)

  lazy_teardown(function()
    kr.stop_kong(DP_PREFIX)
    kr.stop_kong(CP_PREFIX)
    kr.stop_kong()
  end)

  describe("after a restart, before the keys are back", function()
    lazy_setup(function()
      restart { proxy_listen = "127.0.0.1:" .. kr.port_base .. " reuseport" }
    end)

    it("answers 503 naming the key id within 100 ms", function()
      local _, _, ring = admin("GET", "/keyring")
      assert.is_nil(ring.active)
      local status, seconds = timed_get("/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(503, status)
      assert.is_true(seconds <= 0.1, "took " .. seconds .. " s")
      local _, _, json = admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.same({ message = "keyring key '" .. key_id .. "' is not available on this node" }, json)
    end)

    it("builds plugin configs with a per-process placeholder, never the stored ciphertext", function()
      local ciphertext = psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'")
      assert.matches(MARKED, ciphertext)
      local configs = probe_configs("/probe")
      for worker = 0, 1 do
        local secret = configs[worker].secret
        assert.matches(PLACEHOLDER, secret)
        assert.equals(16 + 64, #secret)
        assert.not_equals(ciphertext, secret)
      end
      -- built in init (the plugins iterator), where Kong cannot fail
      local warned = kr.log_lines("[keyring] stored plugins value unreadable during init")
      assert.truthy(#warned > 0)
      assert.matches("%[warn%].* during init[_%w]*: keyring key '" .. key_id .. "' is not available on this node$",
                     warned[1])
    end)

    it("refuses writes of encrypted fields with 503 while no key is active", function()
      local status, _, json = admin("POST", "/consumers/alice/basic-auth", { username = "a2", password = "x" })
      assert.equals(503, status)
      assert.same({ message = "no active keyring key on this node" }, json)
      assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE username = 'a2'"))
      status, _, json = admin("POST", "/services/probe/plugins",
                              { name = "secret-probe", config = { secret = "new-secret" } })
      assert.equals(503, status)
      assert.same({ message = "no active keyring key on this node" }, json)
      assert.equals("1", psql("SELECT count(*) FROM plugins WHERE name = 'secret-probe'"))
    end)

    it("reads back and rebuilds plugin configs with plaintext once the export is imported", function()
      local status = admin("POST", "/keyring/import", { data = blob })
      assert.equals(200, status)
      assert.truthy(#kr.log_lines("[keyring] keys arrived: flushing configuration built with placeholders") > 0)
      local _, _, ring = admin("GET", "/keyring")
      assert.equals(key_id, ring.active)
      local _, _, read = admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
      -- every worker's plugins iterator is rebuilt, with plaintext
      local configs = probe_configs("/probe", nil, nil, function(config)
        return config.secret == "session-secret"
      end)
      assert.equals("session-secret", configs[0].secret)
      assert.equals("session-secret", configs[1].secret)
    end)
  end)

  describe("kong config (the Kong CLI)", function()
    local file_n = 0

    -- `kong config <args>` with this node's settings
    local function kong_config(args)
      local ok, _, stdout, stderr = helpers.kong_exec("config " .. args .. " -c " .. helpers.test_conf_path,
                                                      env(), true)
      return ok, (stdout or "") .. (stderr or "")
    end

    local function declarative_file(config)
      file_n = file_n + 1
      local path = fmt("%s/import-%d.json", dir, file_n)
      config._format_version = "3.0"
      project.write_file(path, assert(cjson.encode(config)))
      return path
    end

    local function keyring_tables()
      return psql("SELECT string_agg(id || ':' || state, ',' ORDER BY id) FROM keyring_meta")
             .. "|" .. psql("SELECT count(*) FROM keyring_keys")
    end

    describe("db_import of a file with _transform: false (upsert with transform = false)", function()
      it("never stores a plaintext value of an encrypted field", function()
        local id = "6f1d2f0a-3c39-4d5e-9a53-1b2c3d4e5f60"
        local hash = "0123456789abcdef0123456789abcdef01234567"
        local file = declarative_file {
          _transform = false,
          consumers = { { id = alice.id, username = "alice" } },
          basicauth_credentials = { { id = id, consumer = alice.id, username = "imported", password = hash } },
        }
        local ok, out = kong_config("db_import " .. file)
        assert.falsy(ok, "db_import stored a plaintext password")
        assert.matches("keyring keys are only available in a running node", out, 1, true)
        assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE id = '" .. id .. "'"))
        assert.is_nil(kr.pg_dump():find(hash, 1, true))
      end)
    end)

    describe("db_export and db_import, where no key region exists", function()
      local stored, plugin_secret, before

      lazy_setup(function()
        stored = stored_password(cred.id)
        plugin_secret = psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'")
        before = keyring_tables()
      end)

      it("exports stored ciphertext as it is", function()
        local file = dir .. "/export.yml"
        os.remove(file)
        local ok, out = kong_config("db_export " .. file)
        assert(ok, out)
        local exported = assert(lyaml.load(assert(project.read_file(file))))
        local seen = kr.find_by_id(exported.basicauth_credentials, cred.id)
        assert.is_table(seen, "the credential is not in the export")
        assert.equals(stored, seen.password)
        local probe = kr.find_by_id(exported.plugins, plugin.id)
        assert.is_table(probe, "the secret-probe plugin is not in the export")
        assert.equals(plugin_secret, probe.config.secret)
        local text = project.read_file(file)
        assert.is_nil(text:find(cred.password, 1, true))
        assert.is_nil(text:find("session-secret", 1, true))
        -- the keyring's tables are never exported
        assert.is_nil(exported.keyring_meta)
        assert.is_nil(exported.keyring_keys)
      end)

      it("imports marked values as they are", function()
        local file = declarative_file {
          _transform = false,
          consumers = { { id = alice.id, username = "alice" } },
          basicauth_credentials = { { id = cred.id, consumer = alice.id, username = "alice", password = stored } },
        }
        local ok, out = kong_config("db_import " .. file)
        assert(ok, out)
        assert.equals(stored, stored_password(cred.id))
        -- and the running node still reads it
        local _, _, read = admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
        assert.equals(cred.password, read.password)
      end)

      it("refuses to import a plaintext value into an encrypted field", function()
        local file = declarative_file {
          consumers = { { id = alice.id, username = "alice" } },
          basicauth_credentials = { { id = cred.id, consumer = alice.id, username = "alice",
                                      password = "plaintext-from-a-file" } },
        }
        local ok, out = kong_config("db_import " .. file)
        assert.falsy(ok)
        assert.matches("keyring keys are only available in a running node", out, 1, true)
        assert.equals(stored, stored_password(cred.id))
        assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE password LIKE 'plaintext%'"))
        -- nor its basic-auth hash
        local hash = require("kong.plugins.basic-auth.crypto").hash(alice.id, "plaintext-from-a-file")
        assert.is_nil(kr.pg_dump():find(hash, 1, true))
      end)

      it("creates no key region and runs no strategy", function()
        local ok, out = kong_config("db_export " .. dir .. "/export-" .. os.time() .. ".yml")
        assert(ok, out)
        assert.is_nil(out:find("generated and activated", 1, true))
        assert.is_nil(out:find("cannot lock the keyring region", 1, true))
        assert.equals(before, keyring_tables())
        local _, _, ring = admin("GET", "/keyring")
        assert.equals(key_id, ring.active)
      end)
    end)
  end)

  describe("in hybrid mode", function()
    local dp_plugin, dp_cred

    -- a control plane on this database, with its own prefix and ports
    local function cp_env()
      return env {
        role = "control_plane",
        prefix = CP_PREFIX,
        proxy_listen = "off",
        admin_listen = "127.0.0.1:" .. CP_ADMIN,
        cluster_listen = "127.0.0.1:" .. CP_CLUSTER,
        cluster_cert = CLUSTER_CERT,
        cluster_cert_key = CLUSTER_CERT_KEY,
      }
    end

    local function wait_cp_admin()
      helpers.wait_until(function()
        local ok, status = pcall(admin, "GET", "/status", nil, nil, CP_ADMIN)
        return ok and status == 200
      end, 10)
    end

    -- the DP's secret-probe echo, both workers, for alice-dp
    local function dp_configs()
      return probe_configs("/probe-auth", basic("alice-dp", "dp-pw"), DP_PROXY)
    end

    lazy_setup(function()
      -- the control plane has no key until it imports the export
      assert(helpers.start_kong(cp_env()))
      wait_cp_admin()
      local _, _, ring = admin("GET", "/keyring", nil, nil, CP_ADMIN)
      assert.is_nil(ring.active)
      assert.equals(200, (admin("POST", "/keyring/import", { data = blob }, nil, CP_ADMIN)))

      local status
      status = admin("POST", "/services/probe/routes", { name = "probe-auth", paths = { "/probe-auth" } },
                     nil, CP_ADMIN)
      assert.equals(201, status)
      status = admin("POST", "/routes/probe-auth/plugins", { name = "basic-auth" }, nil, CP_ADMIN)
      assert.equals(201, status)
      status, _, dp_plugin = admin("POST", "/routes/probe-auth/plugins", {
        name = "secret-probe",
        config = { secret = "dp-secret", redis = { host = "r1", password = "dp-redis-pass" } },
      }, nil, CP_ADMIN)
      assert.equals(201, status)
      status, _, dp_cred = admin("POST", "/consumers/alice/basic-auth", { username = "alice-dp", password = "dp-pw" },
                                 nil, CP_ADMIN)
      assert.equals(201, status)

      -- a data plane: no database, its config comes from the control plane
      assert(helpers.start_kong(env {
        role = "data_plane",
        database = "off",
        prefix = DP_PREFIX,
        proxy_listen = "127.0.0.1:" .. DP_PROXY .. " reuseport",
        admin_listen = "127.0.0.1:" .. DP_ADMIN,
        cluster_control_plane = "127.0.0.1:" .. CP_CLUSTER,
        cluster_cert = CLUSTER_CERT,
        cluster_cert_key = CLUSTER_CERT_KEY,
      }))
    end)

    lazy_teardown(function()
      kr.stop_kong(DP_PREFIX)
      kr.stop_kong(CP_PREFIX)
    end)

    it("stores the control plane's writes encrypted", function()
      assert.matches(MARKED, stored_password(dp_cred.id))
      assert.matches(MARKED, psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. dp_plugin.id .. "'"))
      assert.matches(MARKED, psql("SELECT config #>> '{redis,password}' FROM plugins WHERE id = '"
                                  .. dp_plugin.id .. "'"))
    end)

    it("sends the data plane plaintext config: a credential stored encrypted authenticates", function()
      -- both workers of the data plane run the plugin with plaintext config
      -- for the consumer that basic-auth identified
      local configs = dp_configs()
      for worker = 0, 1 do
        assert.equals("dp-secret", configs[worker].secret)
        assert.equals("dp-redis-pass", configs[worker].redis.password)
        assert.equals("r1", configs[worker].redis.host)
      end
      local status, _, json = proxy("GET", "/probe-auth", basic("alice-dp", "dp-pw"), nil, DP_PROXY)
      assert.equals(200, status)
      assert.same({ id = alice.id, username = "alice" }, json.consumer)
      -- the credential the first node wrote authenticates too
      status, _, json = proxy("GET", "/probe-auth", basic("alice", "pw"), nil, DP_PROXY)
      assert.equals(200, status)
      assert.equals(alice.id, json.consumer.id)
      -- and a wrong password does not
      status = proxy("GET", "/probe-auth", basic("alice-dp", "wrong"), nil, DP_PROXY)
      assert.equals(401, status)
      -- the control plane lists the data plane as connected
      local _, _, dps = admin("GET", "/clustering/data-planes", nil, nil, CP_ADMIN)
      assert.equals(1, #dps.data)
    end)

    it("exposes no keyring and runs no strategy on the data plane", function()
      -- no Admin API at all on a data plane, so no /keyring routes
      local ok, err = pcall(admin, "GET", "/keyring", nil, nil, DP_ADMIN)
      assert.falsy(ok)
      assert.matches("connection refused", tostring(err), 1, true)
      local status = proxy("GET", "/keyring", nil, nil, DP_PROXY)
      assert.equals(404, status)
      -- the plugin is loaded there, and values pass through: no
      -- transformation installed, no key made
      local kong_env = assert(project.read_file(DP_PREFIX .. "/.kong_env"))
      assert.truthy(kong_env:find("\nplugins = bundled," .. table.concat(kr.PLUGINS, ",") .. "\n", 1, true))
      assert.matches("\nrole = data_plane\n", kong_env)
      local log = kr.error_log(DP_PREFIX)
      assert.is_nil(log:find("[keyring] encrypting", 1, true))
      assert.is_nil(log:find("generated and activated", 1, true))
      assert.is_nil(log:find("cannot lock the keyring region", 1, true))
    end)

    it("keeps the data plane's last config while the control plane cannot decrypt", function()
      -- restarted, the control plane has no key: it must push nothing
      -- (neither ciphertext nor placeholders) to the data plane reconnecting.
      -- The traditional node is stopped too: it would send the control plane
      -- its keys (docs/design.md, "Cluster strategy")
      assert(kr.stop_kong())
      assert(kr.stop_kong(CP_PREFIX))
      assert(helpers.start_kong(cp_env(), nil, true))
      wait_cp_admin()
      local refused = "unable to send initial configuration to data plane"
      helpers.wait_until(function()
        return #kr.log_lines(refused, CP_PREFIX) > 0
      end, 30)
      local configs = dp_configs()
      for worker = 0, 1 do
        assert.equals("dp-secret", configs[worker].secret)
        assert.equals("dp-redis-pass", configs[worker].redis.password)
      end
      assert.equals(401, (proxy("GET", "/probe-auth", basic("alice-dp", "wrong"), nil, DP_PROXY)))
      -- refused for the missing key, and nothing else broke on the way
      local line = kr.log_lines(refused, CP_PREFIX)[1]
      assert.matches("keyring key '" .. key_id .. "' is not available on this node", line, 1, true)
      assert.same({}, kr.log_lines("in a read-only transaction", CP_PREFIX))
      assert(helpers.start_kong(env(), nil, true))
    end)
  end)

  describe("with the keyring disabled", function()
    local stored, plain_cred

    lazy_setup(function()
      stored = stored_password(cred.id)
      restart { keyring_enabled = "off" }
    end)

    it("passes stored ciphertext through unchanged", function()
      local status, _, read = admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(200, status)
      assert.matches(MARKED, read.password)
      assert.equals(stored, read.password)
    end)

    it("stores new values as given", function()
      local status
      status, _, plain_cred = admin("POST", "/consumers/alice/basic-auth", { username = "plain", password = "pw2" })
      assert.equals(201, status)
      assert.equals(40, #plain_cred.password)
      assert.equals(plain_cred.password, stored_password(plain_cred.id))
    end)

    it("leaves marked values readable once enabled again", function()
      restart()
      assert.equals(200, (admin("POST", "/keyring/import", { data = blob })))
      local _, _, read = admin("GET", "/consumers/alice/basic-auth/" .. cred.id)
      assert.equals(cred.password, read.password)
      local _, _, plain = admin("GET", "/consumers/alice/basic-auth/" .. plain_cred.id)
      assert.equals(plain_cred.password, plain.password)
    end)
  end)
end)
end
