-- The Kong harness (spec/harness) behaves like Kong where the keyring plugin
-- depends on it: init order, schema transformations and DAO call order,
-- hooks, Admin API routing and status codes, worker and cluster events.
-- Two nodes (2 workers each) share one PostgreSQL database; the fixture
-- plugin harness-probe (spec/harness/fixtures) observes from the inside.
--
-- Needs the private PostgreSQL: scripts/pg.sh start

local helpers = require "helpers"

package.path = helpers.root .. "/spec/harness/?.lua;" .. package.path

local harness_server = require "harness.server"
local json = require "harness.json"


local DB_NAME = "kong_harness_spec"
local A = { name = "kong-harness-a", proxy_port = 18200, admin_port = 18201 }
local B = { name = "kong-harness-b", proxy_port = 18202, admin_port = 18203 }
local C = { name = "kong-harness-c", proxy_port = 18204, admin_port = 18205 }
local ENV = { KONG_DB_UPDATE_FREQUENCY = "1" }


local function node(def, plugins)
  return harness_server.new {
    name = def.name,
    proxy_port = def.proxy_port,
    admin_port = def.admin_port,
    plugins = plugins or { "harness-probe" },
    env = ENV,
    db = { database = DB_NAME },
  }
end


local function wait_until(fn, timeout, what)
  local deadline = helpers.now() + (timeout or 10)
  while helpers.now() < deadline do
    local res = fn()
    if res then
      return res
    end
    os.execute("sleep 0.1")
  end
  error("timed out waiting for " .. (what or "a condition"), 2)
end


local function sha1_hex(s)
  local f = os.tmpname()
  helpers.write_file(f, s)
  local ok, out = helpers.run("sha1sum " .. helpers.shell_quote(f))
  os.remove(f)
  assert(ok, out)
  return out:match("^(%x+)")
end


local function random_name(prefix)
  return prefix .. "-" .. tostring(math.random(1e9))
end


local function sorted(t)
  table.sort(t)
  return t
end


describe("kong.hooks (harness)", function()
  local hooks

  before_each(function()
    package.loaded["kong.hooks"] = nil
    hooks = require "kong.hooks"
  end)

  it("returns the first argument when no hook is registered", function()
    assert.same({ "a" }, { hooks.run_hook("none", "a", "b") })
  end)

  it("runs hooks in registration order with the original arguments", function()
    local seen = {}
    hooks.register_hook("h", function(x) seen[#seen + 1] = "1:" .. x; return x .. "!" end)
    hooks.register_hook("h", function(x) seen[#seen + 1] = "2:" .. x; return x .. "?", "more" end)
    assert.same({ "v?", "more" }, { hooks.run_hook("h", "v") })
    assert.same({ "1:v", "2:v" }, seen)
  end)

  it("skips later hooks after a falsy first value and returns that result", function()
    local ran = false
    hooks.register_hook("h", function() return nil, "refused" end)
    hooks.register_hook("h", function() ran = true; return true end)
    assert.same({ nil, "refused" }, { hooks.run_hook("h", "v") })
    assert.is_false(ran)
  end)

  it("lets a low_level hook see and replace a failure", function()
    hooks.register_hook("h", function() return nil, "refused" end)
    hooks.register_hook("h", function(acc, x)
      assert.same({ n = 2, nil, "refused" }, acc)
      return { n = 1, "recovered:" .. x }
    end, { low_level = true })
    assert.same({ "recovered:v" }, { hooks.run_hook("h", "v") })
  end)

  it("forgets every hook on clear_hooks", function()
    hooks.register_hook("h", function() return "x" end)
    hooks.clear_hooks()
    assert.equals("a", hooks.run_hook("h", "a"))
  end)
end)


describe("Kong harness [#postgres]", function()
  local a, b

  lazy_setup(function()
    harness_server.create_database(DB_NAME)
    a = node(A)
    b = node(B)
    a:start()
    b:start()
  end)

  lazy_teardown(function()
    if a then
      a:stop()
    end
    if b then
      b:stop()
    end
    harness_server.drop_database(DB_NAME)
  end)

  local function admin(n, method, path, body, headers)
    local status, res, body_json = n:admin(method, path, body, headers)
    assert(status, res)
    return status, body_json, res
  end

  describe("init (Kong.init / Kong.init_worker order)", function()
    it("runs a plugin's handler module in init_by_lua, after the core DAOs exist", function()
      local status, state = admin(a, "GET", "/harness-probe/state")
      assert.equals(200, status)
      assert.same({ phase = "init", saw_basicauth_dao = true }, state.loaded)
    end)

    it("runs every loaded plugin's init_worker once in each worker", function()
      local _, state = admin(a, "GET", "/harness-probe/state")
      local pids = {}
      for _, e in ipairs(state.init_worker) do
        assert.equals("init_worker", e.phase)
        pids[#pids + 1] = e.pid
      end
      assert.same(sorted(a:worker_pids()), sorted(pids))
    end)

    it("exposes a read-only kong.configuration with the loaded plugins set", function()
      local _, state = admin(a, "GET", "/harness-probe/state")
      assert.same({ "basic-auth", "harness-probe" }, state.loaded_plugins)
      assert.equals("traditional", state.role)
      assert.equals("postgres", state.database)
      assert.matches("cannot write to configuration", state.config_write_error, 1, true)
    end)

    it("gives plain-style plugin routes an empty table as db", function()
      local _, state = admin(a, "GET", "/harness-probe/state")
      assert.is_true(state.db_is_empty_table)
    end)

    it("runs plugin migrations (up and up_f) once and creates the plugin's DAO", function()
      local rows = a:psql([[SELECT subsystem, array_to_string(executed, ',') FROM schema_meta ORDER BY subsystem]])
      assert.same({ "basic-auth|000_base_basic_auth", "core|000_base",
                    "harness-probe|000_base_harness_probe" }, rows)
      local status, item = admin(a, "GET", "/harness-probe/items/seeded")
      assert.equals(200, status)
      assert.equals("h:seed", item.secret)
    end)

    it("exposes Kong's schema shape: encrypted marks, fields by name, plugin subschemas", function()
      local _, res = admin(a, "GET", "/harness-probe/encrypted-fields")
      assert.same({
        "basicauth_credentials.password",
        "certificates.key",
        "certificates.key_alt",
        "harness_probe_items.secret",
        "plugins[harness-probe].config.secret",
        "plugins[harness-probe].config.nested.token",
        "plugins[harness-probe].config.items[].password",
      }, res.fields)
    end)

    it("gives each node its own id, kept in <prefix>/kong.id", function()
      local _, na = admin(a, "GET", "/__harness/node")
      local _, nb = admin(b, "GET", "/__harness/node")
      assert.not_equals(na.node_id, nb.node_id)
      assert.equals(na.node_id, (helpers.read_file(a.prefix .. "/kong.id"):match("^(%S+)")))
    end)
  end)

  describe("Admin API", function()
    describe("/consumers", function()
      it("creates a consumer: 201 with generated id, created_at and nulls", function()
        local status, c = admin(a, "POST", "/consumers", { username = "api-alice" })
        assert.equals(201, status)
        assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", c.id)
        assert.is_number(c.created_at)
        assert.equals("api-alice", c.username)
        assert.equals(json.null, c.custom_id)
      end)

      it("reads a consumer by id and by username", function()
        local _, c = admin(a, "POST", "/consumers", { username = "api-bob" })
        local status, by_id = admin(a, "GET", "/consumers/" .. c.id)
        assert.equals(200, status)
        assert.equals("api-bob", by_id.username)
        local status2, by_name = admin(a, "GET", "/consumers/api-bob")
        assert.equals(200, status2)
        assert.equals(c.id, by_name.id)
      end)

      it("answers 404 Not found for an unknown consumer and an unknown path", function()
        local status, body = admin(a, "GET", "/consumers/nobody-here")
        assert.equals(404, status)
        assert.same({ message = "Not found" }, body)
        status, body = admin(a, "GET", "/no/such/route")
        assert.equals(404, status)
        assert.same({ message = "Not found" }, body)
      end)

      it("answers 409 to a duplicate username", function()
        admin(a, "POST", "/consumers", { username = "api-dup" })
        local status, body = admin(a, "POST", "/consumers", { username = "api-dup" })
        assert.equals(409, status)
        assert.equals("unique constraint violation", body.name)
        assert.same({ username = "api-dup" }, body.fields)
        assert.equals("UNIQUE violation detected on '{username=\"api-dup\"}'", body.message)
      end)

      it("answers 400 to a duplicate primary key, as Kong's endpoints do", function()
        local _, c = admin(a, "POST", "/consumers", { username = "api-pk" })
        local status, body = admin(a, "POST", "/consumers", { id = c.id, username = "api-pk2" })
        assert.equals(400, status)
        assert.equals("primary key violation", body.name)
        assert.same({ id = c.id }, body.fields)
      end)

      it("answers 400 to a schema violation", function()
        local status, body = admin(a, "POST", "/consumers", { tags = { "x" } })
        assert.equals(400, status)
        assert.equals("schema violation", body.name)
        assert.matches("at least one of these fields must be non-empty: 'custom_id', 'username'",
                       body.message, 1, true)
        status, body = admin(a, "POST", "/consumers", { username = "api-x", color = "red" })
        assert.equals(400, status)
        assert.equals("unknown field", body.fields.color)
      end)

      it("answers 400 Cannot parse JSON body to broken JSON", function()
        local status, body = admin(a, "POST", "/consumers", "{not json",
                                   { ["Content-Type"] = "application/json" })
        assert.equals(400, status)
        assert.same({ message = "Cannot parse JSON body" }, body)
      end)

      it("accepts form-urlencoded and multipart bodies", function()
        local status, c = admin(a, "POST", "/consumers", "username=api-form&tags[]=t1&tags[]=t2")
        assert.equals(201, status)
        assert.equals("api-form", c.username)
        assert.same({ "t1", "t2" }, c.tags)
        local boundary = "XyZzY"
        local body = "--" .. boundary .. "\r\n"
                     .. 'Content-Disposition: form-data; name="username"\r\n\r\napi-multi\r\n'
                     .. "--" .. boundary .. "--\r\n"
        status, c = admin(a, "POST", "/consumers", body,
                          { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary })
        assert.equals(201, status)
        assert.equals("api-multi", c.username)
      end)

      it("updates with PATCH (200) and answers 404 for an unknown one", function()
        admin(a, "POST", "/consumers", { username = "api-patch" })
        local status, c = admin(a, "PATCH", "/consumers/api-patch", { username = "api-patched" })
        assert.equals(200, status)
        assert.equals("api-patched", c.username)
        status = admin(a, "PATCH", "/consumers/api-nobody", { custom_id = "x" })
        assert.equals(404, status)
      end)

      it("creates or replaces with PUT (200)", function()
        local id = "6f1d5c2e-9b1a-4c3d-8e2f-0a1b2c3d4e5f"
        local status, c = admin(a, "PUT", "/consumers/" .. id, { username = "api-put" })
        assert.equals(200, status)
        assert.equals(id, c.id)
        status, c = admin(a, "PUT", "/consumers/" .. id, { username = "api-put2" })
        assert.equals(200, status)
        assert.equals("api-put2", c.username)
      end)

      it("deletes with 204, also when it is already gone", function()
        admin(a, "POST", "/consumers", { username = "api-del" })
        assert.equals(204, (admin(a, "DELETE", "/consumers/api-del")))
        assert.equals(404, (admin(a, "GET", "/consumers/api-del")))
        assert.equals(204, (admin(a, "DELETE", "/consumers/api-del")))
      end)

      it("pages with size and offset, data always an array", function()
        local status, page = admin(a, "GET", "/consumers?size=1")
        assert.equals(200, status)
        assert.equals(1, #page.data)
        assert.matches("^/consumers%?offset=", page.next)
        local seen = { [page.data[1].id] = true }
        local _, page2 = admin(a, "GET", page.next .. "&size=1") -- Kong's next omits size
        assert.equals(1, #page2.data)
        assert.is_nil(seen[page2.data[1].id])
        local _, bad = admin(a, "GET", "/consumers?offset=@@@")
        assert.equals("invalid offset", bad.name)
      end)

      it("answers 405 Method not allowed for a known path and another method", function()
        local status, body = admin(a, "PATCH", "/consumers", { username = "x" })
        assert.equals(405, status)
        assert.same({ message = "Method not allowed" }, body)
        status = admin(a, "OPTIONS", "/consumers")
        assert.equals(204, status)
        assert.equals("GET, HEAD, POST, OPTIONS", a:last_header("Allow"))
      end)
    end)

    describe("/consumers/:consumers/basic-auth", function()
      it("creates credentials under the consumer and lists them", function()
        admin(a, "POST", "/consumers", { username = "ba-owner" })
        local status, cred = admin(a, "POST", "/consumers/ba-owner/basic-auth",
                                   { username = "ba-user", password = "s3cret" })
        assert.equals(201, status)
        assert.equals("ba-user", cred.username)
        local _, list = admin(a, "GET", "/consumers/ba-owner/basic-auth")
        assert.equals(1, #list.data)
        assert.equals(cred.id, list.data[1].id)
        local s2, by_name = admin(a, "GET", "/consumers/ba-owner/basic-auth/ba-user")
        assert.equals(200, s2)
        assert.equals(cred.id, by_name.id)
      end)

      it("answers 404 for a credential of another consumer or an unknown consumer", function()
        admin(a, "POST", "/consumers", { username = "ba-other" })
        assert.equals(404, (admin(a, "GET", "/consumers/ba-other/basic-auth/ba-user")))
        assert.equals(404, (admin(a, "GET", "/consumers/ba-nobody/basic-auth")))
        assert.equals(404, (admin(a, "POST", "/consumers/ba-nobody/basic-auth",
                                  { username = "u", password = "p" })))
      end)
    end)

    describe("/certificates and /plugins", function()
      it("creates a certificate (201) and reads it back (200)", function()
        local status, cert = admin(a, "POST", "/certificates", { cert = "CERT PEM", key = "KEY PEM" })
        assert.equals(201, status)
        local s2, got = admin(a, "GET", "/certificates/" .. cert.id)
        assert.equals(200, s2)
        assert.equals("KEY PEM", got.key)
        assert.equals(json.null, got.key_alt)
      end)

      it("refuses a plugin that is not loaded with Kong's message", function()
        local status, body = admin(a, "POST", "/plugins", { name = "nope" })
        assert.equals(400, status)
        assert.equals("plugin 'nope' not enabled; add it to the 'plugins' configuration property",
                      body.fields.name)
      end)

      it("fills config defaults from the plugin's schema", function()
        local status, p = admin(a, "POST", "/plugins", { name = "harness-probe", enabled = false })
        assert.equals(201, status)
        assert.equals("Plain", p.config.plain)
        assert.equals(1, p.config.nested.depth)
        assert.same({ "http", "https" }, p.protocols)
        assert.equals(204, (admin(a, "DELETE", "/plugins/" .. p.id)))
      end)
    end)

    describe("plugin routes (plain style)", function()
      it("answers 500 and logs a handler's Lua error", function()
        local status, body = admin(a, "GET", "/harness-probe/fail/lua-error")
        assert.equals(500, status)
        assert.same({ message = "An unexpected error occurred" }, body)
        assert.is_true(#a:log_lines("probe exploded") > 0)
      end)

      it("answers 500 to a handler that returns nil, err", function()
        local status, body = admin(a, "GET", "/harness-probe/fail/nil-err")
        assert.equals(500, status)
        assert.same({ message = "An unexpected error occurred" }, body)
        assert.is_true(#a:log_lines("probe returned an error") > 0)
      end)

      it("maps helpers.yield_error and endpoints.handle_error like Kong", function()
        local status, body = admin(a, "GET", "/harness-probe/fail/yield")
        assert.equals(409, status)
        assert.equals("unique constraint violation", body.name)
        status, body = admin(a, "GET", "/harness-probe/fail/handle-error")
        assert.equals(404, status)
        assert.equals("not found", body.name)
      end)

      it("sends an empty body for exit(status) without one", function()
        local status, body, raw = admin(a, "POST", "/harness-probe/empty")
        assert.equals(201, status)
        assert.equals("", raw)
        assert.is_nil(body)
      end)

      it("sends a string body as it is", function()
        local status, _, raw = admin(a, "GET", "/harness-probe/raw")
        assert.equals(200, status)
        assert.equals('{"ids":[]}', raw)
      end)

      it("merges JSON, form and multipart bodies into self.params", function()
        local _, r = admin(a, "POST", "/harness-probe/echo?q=1", { small = "1", a = { b = "c" } })
        assert.same({ small = "1", q = "1", a = { b = "c" } }, r.params)
        _, r = admin(a, "POST", "/harness-probe/echo", "small=1&config.x.y=z")
        assert.same({ small = "1", config = { x = { y = "z" } } }, r.params)
        local boundary = "b0undary"
        local body = "--" .. boundary .. "\r\n"
                     .. 'Content-Disposition: form-data; name="small"\r\n\r\n1\r\n'
                     .. "--" .. boundary .. "\r\n"
                     .. 'Content-Disposition: form-data; name="pem"; filename="k.pem"\r\n'
                     .. "Content-Type: application/x-pem-file\r\n\r\nline1\nline2\r\n"
                     .. "--" .. boundary .. "--\r\n"
        _, r = admin(a, "POST", "/harness-probe/echo", body,
                     { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary })
        assert.same({ small = "1", pem = "line1\nline2" }, r.params)
      end)

      it("passes a 10 MiB body to the handler and answers 413 above it", function()
        local limit = 10 * 1024 * 1024
        local status, r = admin(a, "POST", "/harness-probe/echo", "x=" .. string.rep("a", limit - 2))
        assert.equals(200, status)
        assert.equals(limit - 2, r.sizes.x)
        status = admin(a, "POST", "/harness-probe/echo", "x=" .. string.rep("a", limit - 1))
        assert.equals(413, status)
      end)
    end)
  end)

  describe("transformations and the DAO call order", function()
    before_each(function()
      admin(a, "DELETE", "/harness-probe/calls")
    end)

    local function calls(prefix)
      local _, r = admin(a, "GET", "/harness-probe/calls")
      local out = {}
      for _, c in ipairs(r.calls) do
        if not prefix or c.what:find(prefix, 1, true) == 1 then
          out[#out + 1] = c
        end
      end
      return out
    end

    it("hashes a basic-auth password before the appended transformations run", function()
      local _, c = admin(a, "POST", "/consumers", { username = "order-owner" })
      local status, cred = admin(a, "POST", "/consumers/" .. c.id .. "/basic-auth",
                                 { username = "order-user", password = "pa55" })
      assert.equals(201, status)
      local hash = sha1_hex("pa55" .. c.id)
      assert.same({ hash:upper() }, a:psql("SELECT password FROM basicauth_credentials WHERE id = '"
                                           .. cred.id .. "'"))
      assert.equals(hash, cred.password) -- on_read ran on the returned row
    end)

    it("skips an input transformation when a PATCH does not carry its field", function()
      local _, c = admin(a, "POST", "/consumers", { username = "skip-owner" })
      local _, cred = admin(a, "POST", "/consumers/" .. c.id .. "/basic-auth",
                            { username = "skip-user", password = "pw" })
      local status = admin(a, "PATCH", "/consumers/" .. c.id .. "/basic-auth/" .. cred.id,
                           { username = "skip-user2" })
      assert.equals(200, status)
      local hash = sha1_hex("pw" .. c.id)
      assert.same({ "skip-user2|" .. hash:upper() },
                  a:psql("SELECT username, password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
    end)

    it("passes the whole entity to a no-input transformation on a PATCH without that field", function()
      local _, c = admin(a, "POST", "/consumers", { username = "whole-1", custom_id = "Orig" })
      assert.same({ "ORIG" }, a:psql("SELECT custom_id FROM consumers WHERE id = '" .. c.id .. "'"))
      a:psql("UPDATE consumers SET custom_id = 'raw-lower' WHERE id = '" .. c.id .. "'")
      admin(a, "DELETE", "/harness-probe/calls")
      local status, updated = admin(a, "PATCH", "/consumers/" .. c.id, { username = "whole-2" })
      assert.equals(200, status)
      assert.equals("raw-lower", updated.custom_id)
      -- the read-before-write row went through on_read, then the merged row
      -- through on_write, then the full-row UPDATE rewrote custom_id
      assert.same({ "whole-2|RAW-LOWER" },
                  a:psql("SELECT username, custom_id FROM consumers WHERE id = '" .. c.id .. "'"))
      local seq = {}
      for _, call in ipairs(calls("consumers.")) do
        seq[#seq + 1] = call.what
      end
      assert.same({ "consumers.on_read", "consumers.on_write", "consumers.on_read" }, seq)
      assert.matches("custom_id", calls("consumers.on_write")[1].keys, 1, true)
    end)

    it("runs on_read on select, select_by, page and each", function()
      local _, c = admin(a, "POST", "/consumers", { username = "read-1", custom_id = "x" })
      a:psql("UPDATE consumers SET custom_id = 'MIXED-Case' WHERE id = '" .. c.id .. "'")
      local _, by_id = admin(a, "GET", "/consumers/" .. c.id)
      assert.equals("mixed-case", by_id.custom_id)
      local _, by_name = admin(a, "GET", "/consumers/read-1")
      assert.equals("mixed-case", by_name.custom_id)
      local found
      local path = "/consumers?size=2"
      while path ~= json.null and not found do
        local _, page = admin(a, "GET", path)
        for _, row in ipairs(page.data) do
          if row.id == c.id then
            found = row
          end
        end
        path = page.next
      end
      assert.equals("mixed-case", found.custom_id)
      local _, each = admin(a, "GET", "/harness-probe/consumers/each")
      local from_each
      for _, row in ipairs(each.data) do
        if row.id == c.id then
          from_each = row
        end
      end
      assert.equals("mixed-case", from_each.custom_id)
    end)

    it("skips on_write but runs dao:upsert:pre on an upsert with transform = false", function()
      local id = "0c7e4a55-3b9d-4f6e-a1c2-7d8e9f0a1b2c"
      local status = admin(a, "POST", "/harness-probe/upsert-raw",
                           { id = id, username = "raw-up", custom_id = "kept-as-is" })
      assert.equals(200, status)
      assert.same({ "kept-as-is|{upsert-pre-hook}" },
                  a:psql("SELECT custom_id, tags FROM consumers WHERE id = '" .. id .. "'"))
      assert.equals(0, #calls("consumers.on_write"))
    end)

    it("runs on_write on an upsert through PUT", function()
      local id = "1d8f5b66-4cae-4a7f-b2d3-8e9fa0b1c2d3"
      assert.equals(200, (admin(a, "PUT", "/consumers/" .. id, { username = "put-up", custom_id = "put" })))
      assert.same({ "PUT|" }, a:psql("SELECT custom_id, tags FROM consumers WHERE id = '" .. id .. "'"))
    end)

    it("fails a DAO call with TRANSFORMATION_ERROR, answered 500 by the Admin API", function()
      local status, r = admin(a, "POST", "/harness-probe/insert", { username = "tf-1", custom_id = "fail-me" })
      assert.equals(400, status)
      assert.equals(15, r.code)
      assert.equals("transformation error", r.name)
      assert.equals("transformation failed: probe refuses custom_id", r.message)
      assert.equals("[postgres] transformation failed: probe refuses custom_id", r.err)
      local s2, body = admin(a, "POST", "/consumers", { username = "tf-2", custom_id = "fail-me" })
      assert.equals(500, s2)
      assert.same({ message = "An unexpected error occurred" }, body)
      assert.same({}, a:psql("SELECT id FROM consumers WHERE username IN ('tf-1', 'tf-2')"))
    end)

    it("transforms plugin config fields at any depth through the plugins schema", function()
      local status, p = admin(a, "POST", "/plugins", {
        name = "harness-probe",
        config = { secret = "Sec", nested = { token = "Tok" }, items = { { password = "Pw" } } },
      })
      assert.equals(201, status)
      assert.same({ secret = "sec", plain = "Plain", nested = { token = "tok", depth = 1 },
                    items = { { password = "pw" } } }, p.config)
      local raw = a:psql("SELECT config FROM plugins WHERE id = '" .. p.id .. "'")[1]
      assert.same({ secret = "SEC", plain = "Plain", nested = { token = "TOK", depth = 1 },
                    items = { { password = "PW" } } }, json.decode(raw))
      local s2, patched = admin(a, "PATCH", "/plugins/" .. p.id, { config = { plain = "Other" } })
      assert.equals(200, s2)
      assert.same({ secret = "sec", plain = "Other", nested = { token = "tok", depth = 1 },
                    items = { { password = "pw" } } }, patched.config)
      assert.equals(204, (admin(a, "DELETE", "/plugins/" .. p.id)))
    end)

    it("posts crud events for DAO writes (dao:crud -> crud, <table>)", function()
      admin(a, "POST", "/consumers", { username = random_name("crud") })
      wait_until(function()
        local _, r = admin(a, "GET", "/harness-probe/crud-events")
        for _, e in ipairs(r.received) do
          if e.operation == "create" and e.name == "consumers" then
            return true
          end
        end
      end, 5, "a crud event")
    end)
  end)

  describe("connector", function()
    it("shapes query results like Kong's Postgres connector", function()
      local status, r = admin(a, "POST", "/harness-probe/query", {
        sql = [[SELECT 1::int AS n, 1.5::float8 AS f, true AS b, '{"k":[1,2]}'::jsonb AS j,
                       ARRAY['x','y,z']::text[] AS a, NULL::text AS z, 'it''s' AS s]],
        literal = "it's",
      })
      assert.equals(200, status)
      assert.same({ { n = 1, f = 1.5, b = true, j = { k = { 1, 2 } }, a = { "x", "y,z" },
                      z = json.null, s = "it's" } }, r.result)
      assert.equals("'it''s'", r.literal)
    end)

    it("reconnects after the server ends its connections", function()
      a:psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"
             .. DB_NAME .. "' AND pid <> pg_backend_pid()")
      for _ = 1, 4 do -- fresh connections: both workers get their turn
        local status, c = admin(a, "GET", "/consumers/api-bob")
        assert.equals(200, status)
        assert.equals("api-bob", c.username)
      end
    end)

    it("keeps a request's transaction to itself across a yield", function()
      for _, case in ipairs({ { "tx-rollback", "rollback", 404 }, { "tx-commit", "commit", 200 } }) do
        local name, finish, after = case[1], case[2], case[3]
        local out = a.prefix .. "/" .. name .. ".out"
        a.nginx:request_async("POST", "/harness-probe/tx?sleep=1.5&username=" .. name
                                      .. "&finish=" .. finish, out)
        os.execute("sleep 0.3")
        for _ = 1, 6 do -- both workers: none sees the uncommitted row, none waits
          assert.equals(404, (admin(a, "GET", "/consumers/" .. name)))
        end
        assert.equals(200, wait_until(function() return helpers.async_status(out) end, 10, "the tx"))
        assert.same({ seen_inside = true }, json.decode(helpers.read_file(out)))
        assert.equals(after, (admin(a, "GET", "/consumers/" .. name)))
      end
    end)

    it("returns affected_rows for commands and nil, err for bad SQL", function()
      local _, r = admin(a, "POST", "/harness-probe/query",
                         { sql = "UPDATE consumers SET tags = tags WHERE username = 'api-bob'" })
      assert.same({ affected_rows = 1 }, r.result)
      local status, bad = admin(a, "POST", "/harness-probe/query", { sql = "SELECT nope" })
      assert.equals(400, status)
      assert.matches('column "nope" does not exist', bad.error, 1, true)
    end)
  end)

  describe("plugins iterator", function()
    local function iterator(n)
      local _, r = admin(n, "GET", "/__harness/plugins_iterator")
      return r.iterator, r.pid
    end

    local function has_plugin(it, id)
      for _, p in ipairs(it.plugins) do
        if p.id == id then
          return p
        end
      end
    end

    -- asks until both workers have answered with a matching iterator
    local function wait_both_workers(n, pred, what)
      local ok_pids = {}
      wait_until(function()
        local it, pid = iterator(n)
        if pred(it) then
          ok_pids[pid] = true
        end
        local count = 0
        for _ in pairs(ok_pids) do
          count = count + 1
        end
        return count == 2
      end, 15, what)
    end

    it("is rebuilt in both workers of this node and of the other node after a plugin write", function()
      local _, p = admin(a, "POST", "/plugins", { name = "harness-probe", config = { secret = "ItSec" } })
      local function has_it(it)
        local got = has_plugin(it, p.id)
        return got and got.config.secret == "itsec"
      end
      wait_both_workers(a, has_it, "node A to rebuild its iterator")
      wait_both_workers(b, has_it, "node B to rebuild its iterator (cluster invalidation)")
    end)

    it("is rebuilt on kong.core_cache:purge(), with on_read applied", function()
      local id = "2e9a6c77-5dbf-4b80-83e4-9fab01c2d3e4"
      a:psql([[INSERT INTO plugins (id, name, config, enabled, protocols) VALUES (']] .. id
             .. [[', 'harness-probe', '{"secret":"RAW","plain":"p","nested":{"depth":2}}', true, '{http}')]])
      local before = iterator(a)
      assert.is_nil(has_plugin(before, id))
      assert.equals(204, (admin(a, "POST", "/__harness/core_cache/purge")))
      wait_both_workers(a, function(it)
        local got = has_plugin(it, id)
        return got and got.config.secret == "raw" and it.phase == "core_cache:purge"
      end, "the purge to rebuild the iterator")
    end)
  end)

  describe("worker events", function()
    it("reach both workers of the node", function()
      local token = random_name("we")
      assert.equals(201, (admin(a, "POST", "/harness-probe/worker-event", { token = token })))
      local pids = wait_until(function()
        local _, r = admin(a, "GET", "/harness-probe/worker-event")
        local got = {}
        for _, e in ipairs(r.received) do
          if e.token == token then
            assert.equals("ping", e.event)
            assert.equals("harness-probe", e.source)
            got[#got + 1] = e.pid
          end
        end
        return #got >= 2 and got
      end, 5, "both workers")
      assert.same(sorted(a:worker_pids()), sorted(pids))
    end)
  end)

  describe("cluster events", function()
    local function received(n, data)
      local _, r = admin(n, "GET", "/harness-probe/cluster-event")
      local out = {}
      for _, e in ipairs(r.received) do
        if e.data == data then
          out[#out + 1] = e
        end
      end
      return out
    end

    it("reach the other node once, in one worker, and never the broadcasting node", function()
      local data = random_name("ce")
      local status, sent = admin(a, "POST", "/harness-probe/cluster-event", { data = data })
      assert.equals(201, status)
      local got = wait_until(function()
        local r = received(b, data)
        return #r > 0 and r
      end, 10, "node B to receive the cluster event")
      local _, nb = admin(b, "GET", "/__harness/node")
      assert.equals(nb.node_id, got[1].node_id)
      -- two more poll intervals: no duplicate on B, nothing on A
      os.execute("sleep 2.5")
      assert.equals(1, #received(b, data))
      assert.equals(0, #received(a, data))
      assert.same({ "harness-probe|" .. data .. "|" .. sent.node_id },
                  a:psql("SELECT channel, data, node_id FROM cluster_events WHERE data = '" .. data .. "'"))
    end)
  end)

  describe("restart", function()
    it("keeps the node id and rebuilds the iterator in init with on_read", function()
      local _, before = admin(a, "GET", "/__harness/node")
      a:restart()
      local _, after = admin(a, "GET", "/__harness/node")
      assert.equals(before.node_id, after.node_id)
      local _, r = admin(a, "GET", "/__harness/plugins_iterator")
      assert.equals("init", r.iterator.phase)
      local secrets = {}
      for _, p in ipairs(r.iterator.plugins) do
        secrets[#secrets + 1] = p.config.secret
      end
      assert.same({ "itsec", "raw" }, sorted(secrets))
    end)
  end)
end)


describe("Kong harness: a plugin loaded before basic-auth [#postgres]", function()
  local c

  lazy_setup(function()
    harness_server.create_database(DB_NAME .. "_c")
    c = harness_server.new {
      name = C.name, proxy_port = C.proxy_port, admin_port = C.admin_port,
      plugins = { "harness-probe", "basic-auth" }, env = ENV,
      db = { database = DB_NAME .. "_c" },
    }
    c:start()
  end)

  lazy_teardown(function()
    if c then
      c:stop()
    end
    harness_server.drop_database(DB_NAME .. "_c")
  end)

  it("builds the plugins iterator in init (phase init) from kong.db.plugins:each()", function()
    local status, _, r = c:admin("GET", "/__harness/plugins_iterator")
    assert.equals(200, status)
    assert.equals("init", r.iterator.phase)
    assert.same({}, r.iterator.plugins)
  end)

  it("does not see kong.db.basicauth_credentials at handler load (Kong's pairs() order)", function()
    local status, _, st = c:admin("GET", "/harness-probe/state")
    assert.equals(200, status)
    assert.same({ phase = "init", saw_basicauth_dao = false }, st.loaded)
  end)

  it("still applies a transformation appended to basic-auth's daos definition", function()
    local _, _, cons = c:admin("POST", "/consumers", { username = "late" })
    local status, _, cred = c:admin("POST", "/consumers/late/basic-auth", { username = "late-u", password = "pw" })
    assert.equals(201, status)
    assert.same({ sha1_hex("pw" .. cons.id):upper() },
                c:psql("SELECT password FROM basicauth_credentials WHERE id = '" .. cred.id .. "'"))
  end)
end)
