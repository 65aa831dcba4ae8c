-- The rewrap job, key usage and safe removal on two real Kong nodes (2
-- workers each, one PostgreSQL; docs/design.md, "Stored values and rewrap"):
-- 100,000 rows of basic-auth credentials, certificates and plugin configs
-- written with SQL under key A (some plaintext, some v1, two under a key no
-- node holds), then key B, the job under PATCH traffic on both nodes with
-- the node running it SIGKILLed halfway, every stored value decrypted in this
-- process and compared with its expected plaintext, and the removal of A.
-- The rows come from spec/rewrap_data.lua (shared with bench/rewrap.sh).

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local rd = require "rewrap_data"
local keyring = require "kong.keyring"
local cjson = require "cjson.safe"
local sha1 = require "resty.sha1"
local to_hex = require("resty.string").to_hex


local admin = kr.admin
local psql = kr.psql
local project = kr.project
local fmt = string.format
local lit = function(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end


local A, B = kr.node(0), kr.node(1)
local DIR = project.tmp .. "/spec-13_rewrap"
-- 100,000 rows with encrypted fields (plus the consumers and services the
-- plugins hang on)
local ROWS = { basicauth = 50000, certificates = 20000, session = 15000, secret_probe = 15000 }
local LABELS = { "basicauth_credentials", "certificates", "plugins:session", "plugins:secret-probe" }


local function call(node, method, path, body)
  return admin(method, path, body, nil, node.admin)
end


local function ok_call(node, want, method, path, body)
  local status, raw, json = call(node, method, path, body)
  assert(status == want, fmt("%s %s on %s: %s, want %d: %s", method, path, node.name, tostring(status), want,
                             tostring(raw)))
  return json
end


-- the Admin API path of a generated row
local function path_of(label, id)
  if label == "basicauth_credentials" then
    return "/basic-auths/" .. id
  elseif label == "certificates" then
    return "/certificates/" .. id
  end
  return "/plugins/" .. id
end


local function job_of(node)
  return ok_call(node, 200, "GET", "/keyring/rewrap")
end


-- GET /keyring/usage as { [label] = { keys = ..., plaintext = n } }
local function usage_by_label(node)
  local json = ok_call(node, 200, "GET", "/keyring/usage")
  local out = {}
  for _, t in ipairs(json.tables) do
    out[t.plugin and ("plugins:" .. t.plugin) or t.table] = { keys = t.keys, plaintext = t.plaintext }
  end
  return out, json
end


-- `keys` with zero counts dropped (an id with no values may be listed or not)
local function nonzero(keys)
  local out = {}
  for id, c in pairs(keys or {}) do
    if (c.v1 or 0) + (c.v2 or 0) > 0 then
      out[id] = { v1 = c.v1 or 0, v2 = c.v2 or 0 }
    end
  end
  return out
end


-- GET /keyring/usage of `node` says what a scan of the stored text says
local function assert_usage(node, scan)
  local counted = rd.usage_of(scan)
  local by_label, json = usage_by_label(node)
  for _, label in ipairs(LABELS) do
    local got = by_label[label]
    assert(got, "no usage entry for " .. label)
    assert.same(nonzero(counted.tables[label].keys), nonzero(got.keys), label .. " on " .. node.name)
    assert.equals(counted.tables[label].plaintext, got.plaintext, label .. " plaintext on " .. node.name)
  end
  -- the other tables and plugins with encrypted fields hold nothing here
  for label, got in pairs(by_label) do
    if not counted.tables[label] then
      assert.same({}, nonzero(got.keys), label)
      assert.equals(0, got.plaintext, label)
    end
  end
  assert.same(nonzero(counted.keys), nonzero(json.keys))
  assert.equals(counted.plaintext, json.plaintext)
  return counted
end


local function basicauth_hash(password, consumer_id)
  local d = sha1:new()
  d:update(password .. consumer_id)
  return to_hex(d:final())
end


-- sets `value` at `path` ("config.redis.password", "config.tokens[2]",
-- "config.headers[1].value") of a plugin's `config`
local function set_path(config, path, value)
  local node, segments = config, {}
  for seg in path:gmatch("[^.]+") do
    segments[#segments + 1] = seg
  end
  for i = 2, #segments do
    local name, index = segments[i]:match("^([^%[]+)%[(%d+)%]$")
    local key = name and node[name] or nil
    if name then
      node, name = key, tonumber(index)
    else
      name = segments[i]
    end
    if i == #segments then
      node[name] = value
    else
      node = node[name]
    end
  end
end


local function remember(json)
  project.remember_key(json.key)
  return json.id, json.key
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (rewrap: two nodes, 100,000 rows) [#" .. strategy .. "]", function()
  local gen, key_a, key_b, first_key, missing_key
  local stuck = {}       -- rows under the missing key: { label, id, values, sql, stored }
  local before = {}      -- ["label:id"] = the entity the Admin API showed before the big rewrap
  local patched_rows = {}  -- ["label:id"] = true: PATCHed during it
  local cert_pem, ec_key_pem

  lazy_setup(function()
    assert(project.run("rm -rf " .. DIR .. " && mkdir -p " .. DIR))
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    kr.start_kong_nowait(kr.node_env(A))
    kr.start_kong_nowait(kr.node_env(B))
    kr.wait_admin(A.admin)
    kr.wait_admin(B.admin)
    first_key = kr.wait_active_key(A.admin)
    assert.equals(first_key, kr.wait_active_key(B.admin))

    -- key A, generated on node A and active everywhere; this process holds it too
    assert(keyring.init())
    local a_b64
    key_a, a_b64 = remember(ok_call(A, 201, "POST", "/keyring/generate"))
    assert(keyring.add(key_a, a_b64))
    assert(keyring.activate(key_a))
    ok_call(A, 204, "POST", "/keyring/activate", { key = key_a })
    kr.within(5, function() return kr.ring(B).active == key_a end, "key A active on B")

    -- one row of each kind through the Admin API: the templates of the generated rows
    assert(project.run(fmt("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out ec.key && "
                           .. "openssl req -x509 -new -key ec.key -subj /CN=rewrap -days 3 -out ec.crt && "
                           .. "openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -subj /CN=rewrap -days 3 "
                           .. "-out rsa.crt", DIR)))
    cert_pem, ec_key_pem = project.read_file(DIR .. "/ec.crt"), project.read_file(DIR .. "/ec.key")
    local consumer = ok_call(A, 201, "POST", "/consumers", { username = "tpl" })
    ok_call(A, 201, "POST", "/consumers/tpl/basic-auth", { username = "tpl-user", password = "tpl-pw" })
    ok_call(A, 201, "POST", "/certificates", { cert = cert_pem, key = ec_key_pem,
      cert_alt = project.read_file(DIR .. "/rsa.crt"), key_alt = project.read_file(DIR .. "/rsa.key") })
    ok_call(A, 201, "POST", "/services", { name = "tpl-svc", url = "http://127.0.0.1:1" })
    ok_call(A, 201, "POST", "/services/tpl-svc/plugins", { name = "session" })
    ok_call(A, 201, "POST", "/plugins", { name = "secret-probe", consumer = { id = consumer.id }, config = {
      secret = "tpl-secret", redis = { host = "h", password = "tpl-redis" },
      headers = { { name = "X-T", value = "tpl-header" } }, tokens = { "tpl-t1", "tpl-t2" } } })

    local c = kr.conf
    gen = rd.new {
      psql = fmt("psql -h %s -p %d -U %s -d %s", c.pg_host, c.pg_port, c.pg_user, kr.database),
      dir = DIR, keyring = keyring, key_id = key_a, key_b64 = a_b64,
    }
    gen:load_templates()
    assert.equals(9, gen:expect_stored())
    local made, loaded = gen:generate(ROWS)
    print(fmt("generated %d rows in %.1f s, loaded them in %.1f s", ROWS.basicauth + ROWS.certificates
              + ROWS.session + ROWS.secret_probe, made, loaded))

    -- two rows written under a key no node holds (listed in keyring_meta):
    -- a credential, and a secret-probe plugin with every value under it
    local m_b64
    missing_key, m_b64 = keyring.generate()
    project.remember_key(m_b64)
    psql(fmt("INSERT INTO keyring_meta (id, state, kcv) VALUES (%s, 'alive', %s)", lit(missing_key),
             lit(assert(keyring.check_value(missing_key)))))
    assert(keyring.activate(missing_key))
    local cred = gen.ids.basicauth_credentials[101]
    local probe = gen.ids["plugins:secret-probe"][101]
    local sealed = assert(keyring.encrypt(gen.expected.basicauth_credentials[cred].password,
                                          "basicauth_credentials:" .. cred))
    psql(fmt("UPDATE basicauth_credentials SET password = %s WHERE id = %s", lit(sealed), lit(cred)))
    local config = assert(cjson.decode(psql("SELECT config FROM plugins WHERE id = " .. lit(probe))))
    local n = 0
    for path, plain in pairs(gen.expected["plugins:secret-probe"][probe]) do
      set_path(config, path, assert(keyring.encrypt(plain, "plugins:" .. probe)))
      n = n + 1
    end
    psql(fmt("UPDATE plugins SET config = %s::jsonb WHERE id = %s", lit(cjson.encode(config)), lit(probe)))
    assert(keyring.activate(key_a))
    stuck = {
      { label = "basicauth_credentials", id = cred, values = 1,
        sql = "SELECT password FROM basicauth_credentials WHERE id = " .. lit(cred) },
      { label = "plugins:secret-probe", id = probe, values = n,
        sql = "SELECT config::text FROM plugins WHERE id = " .. lit(probe) },
    }
    for _, r in ipairs(stuck) do
      r.stored = psql(r.sql)
    end
  end)

  lazy_teardown(function()
    kr.stop_kong(B.prefix)
    kr.stop_kong(A.prefix)
  end)

  it("generated rows: every stored value decrypts here to its expected plaintext", function()
    local report = gen:check(gen:scan())
    assert(rd.clean(report), rd.describe(report))
    local expected_values = 0
    for _, label in ipairs(LABELS) do
      local c = gen.counts[label]
      expected_values = expected_values + c.plaintext + c.v1 + c.v2
      assert.is_true(c.plaintext > 100 and c.v1 > 100, label)
    end
    assert.equals(expected_values + 9, report.compared)
  end)

  it("GET /keyring/rewrap is 404 before any job", function()
    local status, body, json = call(A, "GET", "/keyring/rewrap")
    assert.equals(404, status, body)
    assert.same({ error = "no rewrap job" }, json)
  end)

  it("GET /keyring/usage counts every value by key id and format, and plaintext, on both nodes", function()
    local counted = assert_usage(A, gen:scan())
    assert_usage(B, gen:scan())
    -- and the generator's own counts: plaintext, v1 and v2 under A, but for
    -- the values of the rows now under the missing key; the templates add
    -- their values as v2
    for _, label in ipairs(LABELS) do
      local c = gen.counts[label]
      local t = counted.tables[label]
      local a = t.keys[key_a]
      local templates = label == "plugins:secret-probe" and 5 or label == "certificates" and 2 or 1
      local stuck_here = 0
      for _, r in ipairs(stuck) do
        stuck_here = stuck_here + (r.label == label and r.values or 0)
      end
      assert.equals(stuck_here, (t.keys[missing_key] or { v2 = 0 }).v2, label)
      assert.equals(c.plaintext + c.v1 + c.v2 + templates, t.plaintext + a.v1 + a.v2 + stuck_here, label)
      assert.is_true(c.plaintext - t.plaintext <= stuck_here and c.v1 - a.v1 <= stuck_here
                     and c.v2 + templates - a.v2 <= stuck_here, label)
    end
  end)

  it("GET /keyring reports each key's encryptions and warns near 2^32 (also in the log)", function()
    local json = kr.ring(A)
    assert.equals("table", type(json.encryptions))
    assert.is_nil(json.warnings)
    psql(fmt("UPDATE keyring_meta SET encryptions = %.0f WHERE id = %s", 2 ^ 32 - 1000, lit(first_key)))
    for _, node in ipairs({ A, B }) do
      json = kr.ring(node)
      assert.equals(2 ^ 32 - 1000, json.encryptions[first_key])
      assert.equals(1, #json.warnings)
      assert.matches(first_key, json.warnings[1], 1, true)
      assert.matches("2^32", json.warnings[1], 1, true)
    end
    for _, node in ipairs({ A, B }) do
      kr.within(5, function()
        for _, line in ipairs(kr.log_lines("[keyring] key '" .. first_key .. "' has been used for", node.prefix)) do
          if line:find("[warn]", 1, true) then
            return true
          end
        end
      end, "the nonce warning in " .. node.name .. "'s log")
    end
    psql(fmt("UPDATE keyring_meta SET encryptions = 0 WHERE id = %s", lit(first_key)))
    assert.is_nil(kr.ring(A).warnings)
  end)

  it("activate B; removing A is refused with 409 and the usage counts", function()
    local b_b64
    key_b, b_b64 = remember(ok_call(A, 201, "POST", "/keyring/generate"))
    assert(keyring.add(key_b, b_b64))
    ok_call(A, 204, "POST", "/keyring/activate", { key = key_b })
    kr.within(5, function() return kr.ring(B).active == key_b end, "key B active on B")
    local counted = rd.usage_of(gen:scan())
    local want = {}
    for _, label in ipairs(LABELS) do
      local c = counted.tables[label].keys[key_a]
      want[label] = c.v1 + c.v2
    end
    for _, node in ipairs({ A, B }) do
      local json = ok_call(node, 409, "POST", "/keyring/remove", { key = key_a })
      assert.same(want, json.usage)
      assert.matches("still used", json.error, 1, true)
    end
    assert.is_true(kr.set_of(kr.ring(B).ids)[key_a])
  end)

  it("refuses bad rewrap parameters (400) and job commands without a job (409)", function()
    for _, params in ipairs({ { rate = "0" }, { rate = "abc" }, { rate = "1.5" }, { tables = "nosuch" },
                              { tables = "consumers" }, { bogus = "1" } }) do
      local status, body, json = call(A, "POST", "/keyring/rewrap", params)
      assert.equals(400, status, cjson.encode(params) .. ": " .. tostring(body))
      assert.equals("string", type(json.error))
    end
    for _, req in ipairs({ { "POST", "/keyring/rewrap/pause" }, { "POST", "/keyring/rewrap/resume" },
                           { "DELETE", "/keyring/rewrap" } }) do
      local status, body, json = call(B, req[1], req[2])
      assert.equals(409, status, req[2] .. ": " .. tostring(body))
      assert.equals("string", type(json.error))
    end
    assert.equals(404, (call(A, "GET", "/keyring/rewrap")))
  end)

  it("pause, resume and cancel a job; a second job is refused with 409 while one runs", function()
    local job = ok_call(A, 202, "POST", "/keyring/rewrap", { rate = "500", tables = "certificates" })
    assert.equals("running", job.state)
    assert.equals(key_b, job.target)
    assert.equals(500, job.rate)
    assert.equals(kr.node_id(A), job.node)
    -- one job per cluster, whichever node is asked
    local json = ok_call(B, 409, "POST", "/keyring/rewrap")
    assert.equals(job.id, json.job.id)
    assert.equals("string", type(json.error))
    kr.within(5, function() return job_of(B).rows_done > 0 end, "first rows done")

    json = ok_call(B, 200, "POST", "/keyring/rewrap/pause")
    assert.equals("paused", json.state)
    ngx.sleep(1.5)  -- a batch in flight ends
    local paused_at = job_of(A).rows_done
    ngx.sleep(1.5)
    assert.equals(paused_at, job_of(B).rows_done)
    assert.equals("paused", job_of(B).state)
    ok_call(A, 409, "POST", "/keyring/rewrap")
    -- pausing a paused job changes nothing
    assert.equals("paused", ok_call(A, 200, "POST", "/keyring/rewrap/pause").state)

    json = ok_call(B, 200, "POST", "/keyring/rewrap/resume")
    assert.equals("running", json.state)
    assert.equals(kr.node_id(B), json.node)
    kr.within(5, function() return job_of(A).rows_done > paused_at end, "progress after resume")
    ok_call(A, 409, "POST", "/keyring/rewrap/resume")

    json = ok_call(A, 200, "DELETE", "/keyring/rewrap")
    assert.equals("cancelled", json.state)
    assert.is_number(json.finished_at)
    ngx.sleep(1.5)
    local cancelled_at = job_of(B).rows_done
    ngx.sleep(1.5)
    json = job_of(A)
    assert.equals("cancelled", json.state)
    assert.equals(cancelled_at, json.rows_done)
    assert.is_true(json.rows_done < json.rows_total)
    assert.equals(1, #json.tables)
    assert.equals("certificates", json.tables[1].table)
    ok_call(B, 409, "DELETE", "/keyring/rewrap")
    -- what it did is sound: every value still decrypts to its plaintext
    local report = gen:check(gen:scan(), { skip = {} })
    assert(rd.clean(report), rd.describe(report))
  end)

  it("from=<id> rewraps only values under that key", function()
    local before = rd.usage_of(gen:scan())
    local job = ok_call(B, 202, "POST", "/keyring/rewrap", { from = first_key })
    assert.equals(first_key, job.from)
    kr.within(20, function() return job_of(A).state == "done" end, "the from= job")
    job = job_of(A)
    assert.equals(0, job.rewritten)
    assert.same({}, job.errors)
    assert.same(before, rd.usage_of(gen:scan()))
  end)

  it("rewraps 100,000 rows under PATCH traffic on both nodes, the node running it SIGKILLed halfway", function()
    local start_scan = gen:scan()
    local start_usage = rd.usage_of(start_scan)
    -- rows with a value not v2 under B (the rows under the missing key aside)
    local to_rewrap = 0
    for _, label in ipairs(LABELS) do
      for id, values in pairs(start_scan[label]) do
        local needs = false
        for _, v in pairs(values) do
          local kind, key = rd.classify(v)
          needs = needs or kind ~= "v2" or key ~= key_b
        end
        if needs and not (id == stuck[1].id or id == stuck[2].id) then
          to_rewrap = to_rewrap + 1
        end
      end
    end
    local patched = 0
    local rng_rows, generated = {}, {}
    for _, label in ipairs(LABELS) do
      rng_rows[label] = gen.ids[label]
      generated[label] = kr.set_of(gen.ids[label])
    end
    local skip = {}
    for _, s in ipairs(stuck) do
      skip[s.label .. ":" .. s.id] = true
    end

    -- the rows the job reads next: after its checkpoint in the source it is at
    local function ahead(n)
      local at = psql("SELECT key || ' ' || value FROM keyring_rewrap, jsonb_each_text(checkpoint) "
                      .. "WHERE state = 'running' AND value <> 'done'")
      local label, after = at:match("^(%S+) '(.*)'$")
      if not (label and rng_rows[label]) then
        return {}
      end
      local t, where = "plugins", " AND name = " .. lit(label:match("^plugins:(.*)$") or "")
      if not label:match("^plugins:") then
        t, where = label, ""
      end
      local out = {}
      for id in psql(fmt("SELECT id FROM %s WHERE id > %s%s ORDER BY id LIMIT %d", t, lit(after), where, n))
                :gmatch("%S+") do
        if generated[label][id] and not skip[label .. ":" .. id] then
          out[#out + 1] = { label, id }
        end
      end
      return out
    end

    -- one PATCH through `node` of a generated row (`target`, or a random
    -- one); its expected value follows
    local function patch_one(node, target)
      patched = patched + 1
      local k = patched
      local which = target and target[1] or LABELS[k % 4 + 1]
      local ids = rng_rows[which]
      local id = target and target[2] or ids[math.random(#ids)]
      while skip[which .. ":" .. id] do
        id = ids[math.random(#ids)]
      end
      patched_rows[which .. ":" .. id] = true
      if which == "basicauth_credentials" then
        local pw = "patched-" .. k
        local json = ok_call(node, 200, "PATCH", "/basic-auths/" .. id, { password = pw, tags = { "p" .. k },
                                                                          consumer = { id = gen.consumer_of[id] } })
        assert.same({ "p" .. k }, json.tags)
        gen:expect(which, id, "password", basicauth_hash(pw, gen.consumer_of[id]))
      elseif which == "certificates" then
        local key = "# patched " .. k .. "\n" .. ec_key_pem
        ok_call(node, 200, "PATCH", "/certificates/" .. id, { cert = cert_pem, key = key, tags = { "p" .. k } })
        gen:expect(which, id, "key", key)
      elseif which == "plugins:session" then
        ok_call(node, 200, "PATCH", "/plugins/" .. id, { config = { secret = "patched-" .. k } })
        gen:expect(which, id, "config.secret", "patched-" .. k)
      else
        -- arrays are replaced: tokens[2] goes
        ok_call(node, 200, "PATCH", "/plugins/" .. id, { config = { secret = "patched-" .. k, tokens = { "pt-" .. k } } })
        gen:expect(which, id, "config.secret", "patched-" .. k)
        gen:expect(which, id, "config.tokens[1]", "pt-" .. k)
        gen:expect(which, id, "config.tokens[2]", nil)
      end
    end

    -- a sample of whole entities, to compare with what the rewrap leaves
    for _, label in ipairs(LABELS) do
      local ids = gen.ids[label]
      for i = 1, 60 do
        local id = ids[(i * 997) % #ids + 1]
        local json = ok_call(A, 200, "GET", path_of(label, id))
        json.updated_at = nil
        before[label .. ":" .. id] = json
      end
    end

    local job = ok_call(A, 202, "POST", "/keyring/rewrap", { rate = "8000" })
    assert.equals("running", job.state)
    assert.equals(key_b, job.target)
    local job_id = job.id
    local nodes = { A, B }
    local ids = { [kr.node_id(A)] = A, [kr.node_id(B)] = B }
    local last_done = 0
    local victim, done_at_kill, killed_id, survivor

    -- PATCHes until halfway, then SIGKILL of the node running the job
    local deadline = kr.now() + 60
    while true do
      for i, target in ipairs(ahead(6)) do
        patch_one(nodes[i % 2 + 1], target)
      end
      for i = 1, 4 do
        patch_one(nodes[i % 2 + 1])
      end
      job = job_of(A)
      assert.equals(job_id, job.id)
      assert.is_true(job.rows_done >= last_done, "rows_done went back")
      last_done = job.rows_done
      assert.equals("running", job.state)
      if job.rows_done >= job.rows_total / 2 then
        break
      end
      assert(kr.now() < deadline, "the job never got halfway: " .. cjson.encode(job))
    end
    victim = assert(ids[job.node], "job run by an unknown node " .. tostring(job.node))
    killed_id = job.node
    survivor = victim == A and B or A
    -- what keyring_meta counts under B before the kill (the victim may add
    -- a round more before it dies: this is a lower bound)
    local counted_at_kill = kr.ring(survivor).encryptions[key_b] or 0
    assert(project.run("kill -KILL " .. table.concat(kr.node_pids(victim.prefix), " ")))
    local killed_at = kr.now()
    done_at_kill = job_of(survivor).rows_done
    print(fmt("killed node %s at rows_done %d of %d", victim.name, done_at_kill, job.rows_total))
    assert.is_true(done_at_kill < job.rows_total)

    -- PATCHes on the survivor meanwhile; the victim restarts
    for _ = 1, 20 do
      patch_one(survivor)
    end
    assert(helpers.start_kong(kr.node_env(victim)))
    kr.wait_admin(victim.admin)
    -- a restarted node has no key until the other sends them (docs/design.md, "Rounds")
    local ring_took = kr.within(5, function()
      local r = kr.ring(victim)
      return r.active == key_b and #r.ids == #kr.ring(survivor).ids
    end, "the ring on the restarted node")
    print(fmt("the restarted node had the ring %.1f s after its admin answered", ring_took))

    -- taken over (by the survivor or the restarted node) from the checkpoint
    local took_over_at
    deadline = kr.now() + 90
    while true do
      for _ = 1, 5 do
        patch_one(patched % 2 == 0 and A or B)
      end
      job = job_of(survivor)
      assert.equals(job_id, job.id)
      assert.is_true(job.rows_done >= done_at_kill, fmt("rows_done %d after the kill at %d", job.rows_done,
                                                      done_at_kill))
      if job.node ~= killed_id and not took_over_at then
        took_over_at = job.rows_done
        local after = kr.now() - killed_at
        print(fmt("taken over by %s %.1f s after the kill", ids[job.node] and ids[job.node].name or "the restarted "
                  .. victim.name, after))
        assert.is_true(after <= 15, "taken over " .. after .. " s after the kill")
      end
      if job.state == "done" then
        break
      end
      assert.equals("running", job.state)
      assert(kr.now() < deadline, "the job never finished: " .. cjson.encode(job))
      ngx.sleep(0.1)
    end
    assert(took_over_at, "the job was never taken over")
    assert.not_equals(killed_id, job.node)
    print(fmt("taken over at rows_done %d; done: %d rows, %d rewritten, %d PATCHes meanwhile", took_over_at,
              job.rows_done, job.rewritten, patched))

    -- its figures
    assert.equals(job.rows_total, job.rows_done)
    for _, t in ipairs(job.tables) do
      assert.equals(t.total, t.done, t.table)
    end
    assert.is_number(job.finished_at)
    local moved = 0
    for id, c in pairs(start_usage.keys) do
      if id ~= key_b then
        moved = moved + (id == missing_key and 0 or c.v1 + c.v2)
      end
    end
    moved = moved + start_usage.plaintext
    -- every row with a value to rewrap was written once (less those a PATCH
    -- rewrote first), none twice
    assert.is_true(job.rewritten <= to_rewrap and job.rewritten >= to_rewrap - patched,
                   fmt("%d rows rewritten, %d to rewrap, %d PATCHes", job.rewritten, to_rewrap, patched))

    -- the two rows under the missing key: reported with table and pk, left byte-identical
    local reported = {}
    for _, e in ipairs(job.errors) do
      reported[e.table .. ":" .. e.pk] = e.error
    end
    assert.equals(2, #job.errors, cjson.encode(job.errors))
    local scan = gen:scan()
    for _, s in ipairs(stuck) do
      assert(reported[s.label .. ":" .. s.id], "not reported: " .. s.label .. ":" .. s.id)
      assert.matches(missing_key, reported[s.label .. ":" .. s.id], 1, true)
      assert.equals(s.stored, psql(s.sql))
    end

    -- every other value: v2 under B, decrypting to its expected plaintext (PATCHes included)
    local report = gen:check(scan, { want_key = key_b, skip = skip })
    assert(rd.clean(report), rd.describe(report))
    local values = 0
    for label, rows in pairs(gen.expected) do
      for id, v in pairs(rows) do
        if not skip[label .. ":" .. id] then
          for _ in pairs(v) do
            values = values + 1
          end
        end
      end
    end
    assert.equals(values, report.compared)
    assert.is_true(report.rows >= 100000)
    print(fmt("checked %d rows, %d values (%d to rewrap)", report.rows, report.compared, moved))

    -- usage: nothing under A, no plaintext, no v1, on both nodes
    for _, node in ipairs({ A, B }) do
      local json = ok_call(node, 200, "GET", "/keyring/usage")
      assert.same({}, nonzero({ [key_a] = json.keys[key_a] }))
      assert.equals(0, json.plaintext)
      assert.same({ v1 = 0, v2 = stuck[1].values + stuck[2].values }, nonzero(json.keys)[missing_key])
      assert.equals(0, nonzero(json.keys)[key_b].v1)
      assert_usage(node, scan)
    end

    -- B's cluster-wide encryption count covers what the live nodes rewrapped
    -- after the kill: at least one value for each row the job had left then,
    -- less the rows with nothing to rewrap and those a PATCH rewrote first.
    -- (What the killed node encrypted since its last round is lost: counts
    -- go to keyring_meta once a round.)
    local least = job.rows_total - done_at_kill - (job.rows_total - to_rewrap) - patched
    local counted
    kr.within(5, function()
      counted = kr.ring(A).encryptions[key_b]
      return counted and counted - counted_at_kill >= least
    end, function()
      return fmt("B's encryptions in keyring_meta: %s, %d at the kill, want %d more", tostring(counted),
                 counted_at_kill, least)
    end)
    print(fmt("B's encryptions in keyring_meta: %d at the kill, %d after (at least %d more wanted; %d values moved)",
              counted_at_kill, counted, least, moved))

    -- each of the restarted node's workers asked for the keys at start (and
    -- worker 0 again each round until they came): they were added once,
    -- later answers ignored, so configuration was flushed once (its log
    -- begins at the restart: start_kong cleans the prefix)
    assert.equals(1, #kr.log_lines("[keyring] received keys", victim.prefix))
  end)

  it("a sample reads back identical through the Admin API on both nodes", function()
    local checked = 0
    for _, label in ipairs(LABELS) do
      local ids = gen.ids[label]
      for i = 1, 60 do
        local id = ids[(i * 997) % #ids + 1]
        local want = gen.expected[label][id]
        local stuck_row = false
        for _, s in ipairs(stuck) do
          stuck_row = stuck_row or s.id == id
        end
        if not stuck_row then
          for _, node in ipairs({ A, B }) do
            if label == "basicauth_credentials" then
              local json = ok_call(node, 200, "GET", "/basic-auths/" .. id)
              assert.equals(want.password, json.password)
            elseif label == "certificates" then
              local json = ok_call(node, 200, "GET", "/certificates/" .. id)
              assert.equals(want.key, json.key)
              assert.equals(want.key_alt, json.key_alt ~= cjson.null and json.key_alt or nil)
            else
              local json = ok_call(node, 200, "GET", "/plugins/" .. id)
              local c = json.config
              assert.equals(want["config.secret"], c.secret)
              if label == "plugins:secret-probe" then
                assert.equals(want["config.redis.password"], c.redis.password)
                for h, header in ipairs(c.headers) do
                  assert.equals(want["config.headers[" .. h .. "].value"], header.value)
                end
                for t, token in ipairs(c.tokens) do
                  assert.equals(want["config.tokens[" .. t .. "]"], token)
                end
              end
            end
            checked = checked + 1
          end
        end
      end
    end
    assert.is_true(checked >= 400)
  end)

  it("leaves every other field of the rows it rewrapped as it was", function()
    local compared = 0
    for key, was in pairs(before) do
      local label, id = key:match("^(.-):([^:]+)$")
      if not patched_rows[key] and not (id == stuck[1].id or id == stuck[2].id) then
        for _, node in ipairs({ A, B }) do
          local json = ok_call(node, 200, "GET", path_of(label, id))
          json.updated_at = nil
          assert.same(was, json, key)
          compared = compared + 1
        end
      end
    end
    assert.is_true(compared >= 400, compared .. " entities compared")
  end)

  it("removes A (204) once nothing uses it; the missing key goes only with force=true", function()
    ok_call(B, 204, "POST", "/keyring/remove", { key = key_a })
    kr.within(5, function()
      return not kr.set_of(kr.ring(A).ids)[key_a] and not kr.set_of(kr.ring(B).ids)[key_a]
    end, "A gone from both nodes")
    assert.equals("0", psql("SELECT count(*) FROM keyring_meta WHERE id = " .. lit(key_a)))

    local json = ok_call(A, 409, "POST", "/keyring/remove", { key = missing_key })
    assert.same({ basicauth_credentials = 1, ["plugins:secret-probe"] = stuck[2].values }, json.usage)
    json = ok_call(A, 400, "POST", "/keyring/remove", { key = missing_key, force = "yes" })
    assert.equals("'force' must be true or false", json.error)
    json = ok_call(A, 200, "POST", "/keyring/remove", { key = missing_key, force = "true" })
    assert.equals(1 + stuck[2].values, json.unreadable)
    assert.equals("0", psql("SELECT count(*) FROM keyring_meta WHERE id = " .. lit(missing_key)))
  end)

  it("rewraps a record column (keys.pem) with tables=keys, its other fields untouched", function()
    assert(project.run(fmt("cd %s && openssl ec -in ec.key -pubout -out ec.pub 2>/dev/null", DIR)))
    local public_pem = project.read_file(DIR .. "/ec.pub")
    ok_call(A, 201, "POST", "/key-sets", { name = "rewrap-set" })
    local key = ok_call(A, 201, "POST", "/keys", { name = "rewrap-key", kid = "rewrap-kid", set = { name = "rewrap-set" },
                                                  pem = { private_key = ec_key_pem, public_key = public_pem } })
    key.updated_at = nil
    local function stored_pem()
      return psql("SELECT pem->>'private_key' FROM keys WHERE id = " .. lit(key.id)),
             psql("SELECT pem->>'public_key' FROM keys WHERE id = " .. lit(key.id))
    end
    local private, public = stored_pem()
    assert.same({ "v2", key_b }, { rd.classify(private) })

    local key_c = remember(ok_call(A, 201, "POST", "/keyring/generate"))
    ok_call(A, 204, "POST", "/keyring/activate", { key = key_c })
    kr.within(5, function() return kr.ring(B).active == key_c end, "key C active on B")
    local job = ok_call(B, 202, "POST", "/keyring/rewrap", { tables = "keys" })
    kr.within(20, function() return job_of(A).state == "done" end, "the keys job")
    job = job_of(A)
    assert.equals(1, job.rows_done)
    assert.equals(1, job.rewritten)
    assert.same({}, job.errors)

    local private_after, public_after = stored_pem()
    assert.same({ "v2", key_c }, { rd.classify(private_after) })
    assert.not_equals(private, private_after)
    assert.equals(public, public_after)
    for _, node in ipairs({ A, B }) do
      local json = ok_call(node, 200, "GET", "/keys/" .. key.id)
      json.updated_at = nil
      assert.same(key, json)
      assert.equals(ec_key_pem, json.pem.private_key)
    end
  end)
end)
end
