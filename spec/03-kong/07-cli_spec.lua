-- The Kong CLI with the keyring plugin loaded (docs/design.md, "Where there is
-- no key region"): `kong config db_export` / `db_import` / `parse`,
-- `kong migrations list` / `up` / `finish`, `kong reload` (keys survive: the
-- region lives in the nginx master) and `kong restart` (keys are gone until
-- imported).
--
-- One node runs on this file's database with a consumer and its basic-auth
-- credential, a route with basic-auth + secret-probe (which echoes its
-- decrypted config on the proxy) and a certificate. Its data goes through
-- db_export and db_import into an empty second database, where a second node
-- reads every value back once the keys are imported.

local helpers = require "spec.helpers"
local ssl_fixtures = require "spec.fixtures.ssl"
local kr = require "keyring_helpers"
local lyaml = require "lyaml"
local cjson = require "cjson.safe"


local fmt = string.format
local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local MARKED = kr.MARKED


local DIR = kr.project.tmp .. "/07-cli"
local CONF = helpers.test_conf_path
local PORT = kr.port_base
local PROBE = {
  secret = "top-secret",
  label = "visible",
  redis = { host = "r1", password = "redis-pass" },
  headers = { { name = "a", value = "header-one" } },
  tokens = { "token-one", "token-two" },
}
local PLAINTEXTS = { "top-secret", "redis-pass", "header-one", "token-one", "token-two" }


--- `kong <cmd>` with the settings `env` (KONG_<NAME> each): ok, exit code,
-- stdout, stderr. Kong's kong_exec adds to the table it gets: it gets a copy.
local function kong(cmd, env)
  return helpers.kong_exec(cmd, kr.kong_env(env), true)
end


local function create_database(name)
  psql("DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)", "postgres")
  psql("CREATE DATABASE " .. name, "postgres")
end


local function drop_database(name)
  psql("DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)", "postgres")
end


local basic = kr.basic_auth


local function not_available(id)
  return "keyring key '" .. id .. "' is not available on this node"
end


--- The rows of this file's node as stored, for comparing with an export or
-- another database.
local function stored_values(database, ids)
  return {
    password = psql("SELECT password FROM basicauth_credentials WHERE id = '" .. ids.cred .. "'", database),
    cert_key = psql("SELECT key FROM certificates WHERE id = '" .. ids.cert .. "'", database),
    probe = cjson.decode(psql("SELECT config FROM plugins WHERE id = '" .. ids.probe .. "'", database)),
  }
end


--- The fields of PROBE in a secret-probe proxy answer (the plugins iterator
-- adds Kong's own keys to the config it echoes).
local function probe_config(answer)
  local config = {}
  for name in pairs(PROBE) do
    config[name] = answer.config[name]
  end
  return config
end


--- Splits an exported file in two declarative files: the certificates, and
-- all the rest. Returns { main = path, certificates = path }.
local function split_export(file, dc)
  local certs = {
    _format_version = dc._format_version,
    _transform = dc._transform,
    certificates = dc.certificates,
  }
  dc.certificates = nil
  local files = { main = file:gsub("%.yml$", "-main.yml"), certificates = file:gsub("%.yml$", "-certs.yml") }
  kr.project.write_file(files.main, lyaml.dump({ dc }))
  kr.project.write_file(files.certificates, lyaml.dump({ certs }))
  return files
end


--- pg_dump --data-only of `database`.
local function pg_dump(database)
  local c = kr.conf
  local ok, out = kr.project.run(fmt("pg_dump -h %s -p %d -U %s --data-only %s",
                                     c.pg_host, c.pg_port, c.pg_user, database))
  assert(ok, out)
  return out
end


local find_by_id = kr.find_by_id


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Kong CLI with the keyring plugin [#" .. strategy .. "]", function()
  local env        -- settings of every node and CLI run, keyring on
  local key_id     -- the first key, bootstrapped by the node
  local blob       -- POST /keyring/export, taken before any CLI run
  local ids = {}   -- cred, consumer, cert, probe, route
  local cred       -- bob's credential as the Admin API answered (password = hash)
  local stored     -- stored_values() of this file's database
  local exports = {}

  -- bob's credential and the certificate's key read back in plaintext
  local function assert_secrets_read_back()
    local status, _, json = admin("GET", "/consumers/bob/basic-auth/" .. ids.cred)
    assert.equals(200, status)
    assert.equals(cred.password, json.password)
    status, _, json = admin("GET", "/certificates/" .. ids.cert)
    assert.equals(200, status)
    assert.equals(ssl_fixtures.key, json.key)
  end

  lazy_setup(function()
    assert(os.execute("mkdir -p " .. DIR .. " && chmod 700 " .. DIR))
    local private, public = kr.project.rsa_pair()
    kr.project.write_file(DIR .. "/mgmt.key", private)
    kr.project.write_file(DIR .. "/mgmt.pub", public)
    env = kr.kong_env {
      keyring_public_key = DIR .. "/mgmt.pub",
      keyring_private_key = DIR .. "/mgmt.key",
    }

    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    assert(helpers.start_kong(kr.kong_env(env)))
    key_id = kr.wait_active_key()

    local status, consumer, service, route, probe, cert, exported
    status, _, consumer = admin("POST", "/consumers", { username = "bob" })
    assert.equals(201, status)
    status, _, cred = admin("POST", "/consumers/bob/basic-auth", { username = "bob", password = "hunter2" })
    assert.equals(201, status)
    status, _, service = admin("POST", "/services", { name = "probe", url = "http://127.0.0.1:1" })
    assert.equals(201, status)
    status, _, route = admin("POST", "/services/probe/routes", { name = "probe", paths = { "/probe" } })
    assert.equals(201, status)
    assert.equals(201, (admin("POST", "/routes/probe/plugins", { name = "basic-auth" })))
    status, _, probe = admin("POST", "/routes/probe/plugins", { name = "secret-probe", config = PROBE })
    assert.equals(201, status)
    status, _, cert = admin("POST", "/certificates", { cert = ssl_fixtures.cert, key = ssl_fixtures.key })
    assert.equals(201, status)
    status, _, exported = admin("POST", "/keyring/export")
    assert.equals(200, status)

    blob = exported.data
    ids = { consumer = consumer.id, cred = cred.id, service = service.id, route = route.id,
            probe = probe.id, cert = cert.id }
    stored = stored_values(nil, ids)
    assert.matches(MARKED, stored.password)
    assert.matches(MARKED, stored.cert_key)
    assert.matches(MARKED, stored.probe.secret)
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)


  -- db_export, then db_import into an empty database, then a node on that
  -- database: with the keyring off in the CLI (values pass through untouched)
  -- and on (the supported way: marked values pass, plaintext is refused). The
  -- export is imported in two files, the certificate apart.
  for _, mode in ipairs({
    { name = "keyring off in the CLI", keyring = "off", port = PORT + 4 },
    { name = "keyring on", keyring = "on", port = PORT + 2 },
  }) do
  describe("kong config, " .. mode.name .. ",", function()
    local database = kr.database .. "_import_" .. mode.keyring
    local prefix = kr.prefix .. "-import-" .. mode.keyring
    local cli_env, node_env
    local imported, node_up = false, false

    local function export_files()
      return assert(exports[mode.keyring], "no export file: this mode's db_export failed")
    end

    lazy_setup(function()
      cli_env = kr.kong_env {
        keyring_enabled = mode.keyring,
        keyring_public_key = DIR .. "/mgmt.pub",
        keyring_private_key = DIR .. "/mgmt.key",
        prefix = prefix,
        pg_database = database,
      }
      node_env = kr.kong_env {
        keyring_public_key = DIR .. "/mgmt.pub",
        keyring_private_key = DIR .. "/mgmt.key",
        prefix = prefix,
        pg_database = database,
        proxy_listen = "127.0.0.1:" .. mode.port,
        admin_listen = "127.0.0.1:" .. (mode.port + 1),
      }
      create_database(database)
      -- the target database is empty: Kong's and the plugins' tables, no rows
      local ok, _, stdout, stderr = kong("migrations bootstrap --conf " .. CONF, cli_env)
      assert(ok, stderr .. stdout)
    end)

    lazy_teardown(function()
      kr.stop_kong(prefix)
      drop_database(database)
    end)

    it("db_export writes the stored $ke$2$ values, never plaintext", function()
      local file = DIR .. "/export-" .. mode.keyring .. ".yml"
      os.remove(file)
      -- this file's node and database
      local ok, _, stdout, stderr = kong("config db_export " .. file .. " --conf " .. CONF, {
        keyring_enabled = mode.keyring,
        keyring_public_key = DIR .. "/mgmt.pub",
        keyring_private_key = DIR .. "/mgmt.key",
      })
      assert(ok, stderr .. stdout)
      local text = assert(kr.project.read_file(file))
      local dc = lyaml.load(text)

      local cred_out = find_by_id(dc.basicauth_credentials, ids.cred)
      assert.equals(stored.password, cred_out.password)
      local cert_out = find_by_id(dc.certificates, ids.cert)
      assert.equals(stored.cert_key, cert_out.key)
      local probe_out = find_by_id(dc.plugins, ids.probe)
      assert.same(stored.probe, probe_out.config)
      assert.matches(MARKED, probe_out.config.redis.password)
      assert.matches(MARKED, probe_out.config.tokens[2])

      -- no plaintext: not the basic-auth hash, not the TLS key, no config secret
      assert.is_nil(text:find(cred.password, 1, true))
      assert.is_nil(text:find(ssl_fixtures.key:match("\n([^\n]+)\n"), 1, true))
      assert.is_nil(text:find("PRIVATE KEY", 1, true))
      for _, plain in ipairs(PLAINTEXTS) do
        assert.is_nil(text:find(plain, 1, true), plain .. " is in the export")
      end
      assert.truthy(text:find("visible", 1, true))
      -- the keyring's own tables are never exported (wrapped keys)
      assert.is_nil(dc.keyring_meta)
      assert.is_nil(dc.keyring_keys)

      exports[mode.keyring] = split_export(file, dc)
    end)

    it("parse accepts the export (consumers, credentials, plugins)", function()
      local ok, _, stdout, stderr = kong("config parse " .. export_files().main .. " --conf " .. CONF, cli_env)
      assert(ok, stderr .. stdout)
      assert.matches("parse successful", stdout .. stderr, 1, true)
    end)

    it("db_import stores those values as they are in an empty database", function()
      assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials", database))
      local ok, _, stdout, stderr = kong("config db_import " .. export_files().main .. " --conf " .. CONF, cli_env)
      assert(ok, stderr .. stdout)
      assert.matches("import successful", stdout .. stderr, 1, true)
      imported = true

      local copy = stored_values(database, ids)
      assert.equals(stored.password, copy.password)
      assert.same(stored.probe, copy.probe)
      assert.equals(ids.consumer, psql("SELECT id FROM consumers WHERE username = 'bob'", database))
      -- the import wrote no plaintext anywhere
      local dump = pg_dump(database)
      assert.is_nil(dump:find(cred.password, 1, true))
      for _, plain in ipairs(PLAINTEXTS) do
        assert.is_nil(dump:find(plain, 1, true), plain .. " is in the imported database")
      end
    end)

    it("a node on that database reads every value back once the keys are imported", function()
      assert(imported, "nothing to read: the db_import above failed")
      assert(helpers.start_kong(kr.kong_env(node_env)))
      node_up = true
      local port = mode.port + 1
      -- an empty keyring in that database: the node bootstraps a key of its own
      local own = kr.wait_active_key(port)
      assert.not_equals(key_id, own)
      local path = "/consumers/bob/basic-auth/" .. ids.cred
      local status, _, json = admin("GET", path, nil, nil, port)
      assert.equals(503, status)
      assert.equals(not_available(key_id), json.message)

      local ring
      status, _, ring = admin("POST", "/keyring/import", { data = blob }, nil, port)
      assert.equals(200, status)
      assert.equals(key_id, ring.active)

      status, _, json = admin("GET", path, nil, nil, port)
      assert.equals(200, status)
      assert.equals(cred.password, json.password)
      status, _, json = admin("GET", "/plugins/" .. ids.probe, nil, nil, port)
      assert.equals(200, status)
      assert.same(PROBE, json.config)

      -- the proxy: bob authenticates, and the config the plugin runs with is plaintext
      local body
      helpers.wait_until(function()
        status, _, body = proxy("GET", "/probe", basic("bob", "hunter2"), nil, mode.port)
        return status == 200 and body and body.config.secret == PROBE.secret
      end, 15)
      assert.equals("bob", body.consumer.username)
      assert.same(PROBE, probe_config(body))
      assert.equals(401, (proxy("GET", "/probe", basic("bob", "wrong"), nil, mode.port)))
    end)

    it("parse and db_import take the exported certificate; the node reads its key back", function()
      assert(node_up, "no node: the test above failed")
      local file = export_files().certificates
      local ok, _, stdout, stderr = kong("config parse " .. file .. " --conf " .. CONF, cli_env)
      assert(ok, stderr .. stdout)
      ok, _, stdout, stderr = kong("config db_import " .. file .. " --conf " .. CONF, cli_env)
      assert(ok, stderr .. stdout)
      assert.equals(stored.cert_key, stored_values(database, ids).cert_key)
      local status, _, json = admin("GET", "/certificates/" .. ids.cert, nil, nil, mode.port + 1)
      assert.equals(200, status)
      assert.equals(ssl_fixtures.key, json.key)
    end)

    if mode.keyring == "on" then
      it("db_import refuses a plaintext value for an encrypted field", function()
        local plain_file = DIR .. "/plaintext.yml"
        kr.project.write_file(plain_file, table.concat({
          '_format_version: "3.0"',
          "consumers:",
          "- username: carol",
          "  basicauth_credentials:",
          "  - username: carol",
          "    password: carols-plaintext-password",
          "",
        }, "\n"))
        local ok, _, stdout, stderr = kong("config db_import " .. plain_file .. " --conf " .. CONF, cli_env)
        assert.falsy(ok, stdout)
        assert.matches("keyring keys are only available in a running node", stderr, 1, true)
        -- Kong's db_import writes entity after entity, without a transaction:
        -- the consumer before the refused credential is stored
        assert.equals("0", psql("SELECT count(*) FROM basicauth_credentials WHERE username = 'carol'", database))
        assert.is_nil(pg_dump(database):find("carols-plaintext-password", 1, true))
      end)
    end
  end)
  end


  describe("kong migrations list / up / finish", function()
    local database = kr.database .. "_migrations"
    local prefix = kr.prefix .. "-migrations"
    local with_plugin

    lazy_setup(function()
      with_plugin = kr.kong_env {
        keyring_public_key = DIR .. "/mgmt.pub",
        keyring_private_key = DIR .. "/mgmt.key",
        prefix = prefix,
        pg_database = database,
      }
      create_database(database)
      -- a database made by Kong without our plugins: theirs are new migrations
      local ok, _, stdout, stderr = kong("migrations bootstrap --conf " .. CONF,
                                         { plugins = "bundled", prefix = prefix, pg_database = database })
      assert(ok, stderr .. stdout)
    end)

    lazy_teardown(function()
      drop_database(database)
    end)

    it("list names the plugin's migrations as new (exit 5) with the keyring on", function()
      local ok, code, stdout, stderr = kong("migrations list --conf " .. CONF, with_plugin)
      assert.falsy(ok)
      assert.equals(5, code, stderr)
      assert.matches("New migrations available:%s+keyring: 000_base_keyring, 001_cluster_nodes, 002_rewrap", stdout)
      assert.matches("secret-probe: 000_base_secret_probe", stdout, 1, true)
      assert.matches("Run 'kong migrations up' to proceed", stdout, 1, true)
    end)

    it("up runs them: the keyring tables exist", function()
      local ok, _, stdout, stderr = kong("migrations up --conf " .. CONF, with_plugin)
      assert(ok, stderr .. stdout)
      assert.matches("keyring migrated up to: 000_base_keyring", stdout, 1, true)
      assert.matches("keyring migrated up to: 001_cluster_nodes", stdout, 1, true)
      assert.matches("keyring migrated up to: 002_rewrap", stdout, 1, true)
      assert.equals("keyring_keys\nkeyring_meta\nkeyring_nodes\nkeyring_rewrap", psql("SELECT tablename FROM pg_tables WHERE tablename "
                                                        .. "LIKE 'keyring%' ORDER BY tablename", database))
    end)

    it("finish has nothing left to do, and list is up to date (exit 0)", function()
      local ok, _, stdout, stderr = kong("migrations finish --conf " .. CONF, with_plugin)
      assert(ok, stderr .. stdout)
      assert.matches("No pending migrations to finish", stdout, 1, true)
      local code
      ok, code, stdout, stderr = kong("migrations list --conf " .. CONF, with_plugin)
      assert(ok, stderr .. stdout)
      assert.equals(0, code)
      assert.matches("Executed migrations:.*keyring: 000_base_keyring, 001_cluster_nodes, 002_rewrap", stdout)
      assert.is_nil(stdout:find("New migrations", 1, true))
    end)
  end)


  describe("kong reload", function()
    it("keeps the keys (the region lives in the nginx master): values still decrypt", function()
      local before = select(3, admin("GET", "/keyring"))
      local master = kr.project.read_file(kr.prefix .. "/pids/nginx.pid")
      local workers = helpers.get_kong_workers(2)
      local ok, stderr = helpers.kong_exec("reload --conf " .. CONF, kr.kong_env(env))
      assert(ok, stderr)
      helpers.wait_until_no_common_workers(workers, 2)
      assert.equals(master, kr.project.read_file(kr.prefix .. "/pids/nginx.pid"))

      local status, _, ring = admin("GET", "/keyring")
      assert.equals(200, status)
      assert.same(before.ids, ring.ids)
      assert.equals(key_id, ring.active)
      assert_secrets_read_back()
      local json
      -- the new workers authenticate bob and run the plugin with its plaintext config
      for _ = 1, 10 do
        status, _, json = proxy("GET", "/probe", basic("bob", "hunter2"))
        assert.equals(200, status)
        assert.same(PROBE, probe_config(json))
        assert.equals("bob", json.consumer.username)
      end
    end)
  end)


  describe("kong restart", function()
    local master

    lazy_setup(function()
      master = kr.project.read_file(kr.prefix .. "/pids/nginx.pid")
      local ok, stderr = helpers.kong_exec("restart --conf " .. CONF, kr.kong_env(env))
      assert(ok, stderr)
      helpers.wait_until(function()
        return admin("GET", "/keyring") == 200
      end, 15)
    end)

    it("loses the keys: reads answer 503 naming the key", function()
      assert.not_equals(master, kr.project.read_file(kr.prefix .. "/pids/nginx.pid"))
      local status, _, ring = admin("GET", "/keyring")
      assert.equals(200, status)
      assert.same({}, ring.ids)
      assert.is_nil(ring.active)
      local json
      status, _, json = admin("GET", "/consumers/bob/basic-auth/" .. ids.cred)
      assert.equals(503, status)
      assert.same({ message = not_available(key_id) }, json)
      status, _, json = admin("GET", "/certificates/" .. ids.cert)
      assert.equals(503, status)
      assert.same({ message = not_available(key_id) }, json)
      -- a write reads the row first: the same answer, and the row is left as it was
      status, _, json = admin("PATCH", "/consumers/bob/basic-auth/" .. ids.cred, { password = "new" })
      assert.equals(503, status)
      assert.same({ message = not_available(key_id) }, json)
      -- the proxy cannot check bob's password: no way in, and no stored value shown
      local body
      status, body = proxy("GET", "/probe", basic("bob", "hunter2"))
      assert.equals(500, status)
      assert.is_nil(body:find("$ke$", 1, true))
      assert.equals(stored.password, psql("SELECT password FROM basicauth_credentials WHERE id = '"
                                          .. ids.cred .. "'"))
    end)

    it("reads every value back after POST /keyring/import", function()
      local status, _, ring = admin("POST", "/keyring/import", { data = blob })
      assert.equals(200, status)
      assert.same({ ids = { key_id }, active = key_id }, ring)
      assert_secrets_read_back()
      local json
      -- configs built at start with placeholders are rebuilt once keys arrive
      local body
      helpers.wait_until(function()
        status, _, body = proxy("GET", "/probe", basic("bob", "hunter2"))
        return status == 200 and body.config.secret == PROBE.secret
      end, 15)
      assert.same(PROBE, probe_config(body))
      assert.equals("bob", body.consumer.username)
    end)
  end)
end)
end
