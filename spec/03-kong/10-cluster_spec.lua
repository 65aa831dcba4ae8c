-- Keys shared between two real Kong nodes (2 workers each, separate
-- prefixes, one PostgreSQL, db_update_frequency = 1): the first key, key
-- exchange after a restart, staged activation, removal, rotation under
-- traffic, a node killed in the middle of a broadcast (docs/design.md,
-- "Cluster strategy").

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"


local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local project = kr.project


local A, B = kr.node(0), kr.node(1)
-- db_update_frequency of spec/kong_tests.conf
local FREQUENCY = 1


local env_of = kr.node_env
local now, ring, set_of, within = kr.now, kr.ring, kr.set_of, kr.within
local node_id = kr.node_id


local function generate(node)
  local status, body, json = admin("POST", "/keyring/generate", nil, nil, node.admin)
  assert.equals(201, status, body)
  project.remember_key(json.key)
  return json.id
end


local function activate(node, id, force)
  return admin("POST", "/keyring/activate", { key = id, force = force and "true" or nil }, nil, node.admin)
end


-- key id of a stored v2 value
local function key_id_of(stored)
  return stored:match("^%$ke%$2%$%-([^-]+)%-")
end


-- a basic-auth credential created through `node`'s Admin API
local function new_credential(node, username, password)
  local status, body = admin("POST", "/consumers/alice/basic-auth", { username = username, password = password },
                             nil, node.admin)
  assert.equals(201, status, body)
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (cluster: two nodes) [#" .. strategy .. "]", function()

  lazy_setup(function()
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    -- both nodes start at the same moment on an empty database
    kr.start_kong_nowait(env_of(A))
    kr.start_kong_nowait(env_of(B))
    kr.wait_admin(A.admin)
    kr.wait_admin(B.admin)
    kr.wait_active_key(A.admin)
    kr.wait_active_key(B.admin)

    assert.equals(201, (admin("POST", "/consumers", { username = "alice" }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/services", { name = "upstream", url = "http://127.0.0.1:1" }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/services/upstream/routes", { name = "probe", paths = { "/probe" } },
                              nil, A.admin)))
    assert.equals(201, (admin("POST", "/routes/probe/plugins", { name = "basic-auth" }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/routes/probe/plugins", { name = "secret-probe", config = { secret = "s" } },
                              nil, A.admin)))
  end)

  lazy_teardown(function()
    kr.stop_kong(B.prefix)
    kr.stop_kong(A.prefix)
  end)

  it("both nodes start at the same moment on an empty database: exactly one key, both hold it", function()
    within(10, function()
      local a, b = ring(A), ring(B)
      return a.active ~= nil and a.active == b.active
    end, "the first key on both nodes")
    local a, b = ring(A), ring(B)
    assert.same({ a.active }, a.ids)
    assert.same(a.ids, b.ids)
    assert.equals("1", psql("SELECT count(*) FROM keyring_meta"))
    assert.equals(a.active, psql("SELECT id FROM keyring_meta WHERE state = 'active'"))
    -- exactly one node made it
    local made = #kr.log_lines("generated and activated the cluster's first key", A.prefix)
                 + #kr.log_lines("generated and activated the cluster's first key", B.prefix)
    assert.equals(1, made)
  end)

  it("keyring_nodes lists both nodes with their public key and the ids they hold", function()
    local a = ring(A)
    within(3, function()
      return psql("SELECT count(*) FROM keyring_nodes WHERE key_ids = '" .. a.active .. "'") == "2"
    end, "both heartbeats")
    local ids = set_of(project.lines_with(psql("SELECT node_id FROM keyring_nodes"), "-"))
    assert.truthy(ids[node_id(A)])
    assert.truthy(ids[node_id(B)])
    assert.equals("2", psql("SELECT count(*) FROM keyring_nodes WHERE public_key LIKE '-----BEGIN PUBLIC KEY-----%'"))
  end)

  it("a key generated on A reaches B at once, before it is activated", function()
    local id = generate(A)
    within(3, function()
      return set_of(ring(B).ids)[id]
    end, "the new key on B")
    assert.not_equals(id, ring(B).active)
  end)

  it("generate + activate on A: B encrypts with the new key within 3 s", function()
    local id = generate(A)
    local status, body = activate(A, id)
    assert.equals(204, status, body)
    local n = 0
    within(3, function()
      n = n + 1
      new_credential(B, "rot-" .. n, "pw")
      local stored = psql("SELECT password FROM basicauth_credentials WHERE username = 'rot-" .. n .. "'")
      return key_id_of(stored) == id
    end, "B writing with the new key")
    assert.equals(id, ring(B).active)
  end)

  it("remove on A: the key is gone from B within 3 s", function()
    local id = generate(A)
    within(3, function()
      return set_of(ring(B).ids)[id]
    end, "the new key on B")
    assert.equals(204, (admin("POST", "/keyring/remove", { key = id }, nil, A.admin)))
    within(3, function()
      return not set_of(ring(B).ids)[id]
    end, "removal on B")
    assert.equals("0", psql("SELECT count(*) FROM keyring_meta WHERE id = '" .. id .. "'"))
  end)

  it("a restarted node B gets every key from A within 3 s", function()
    local a = ring(A)
    assert(kr.stop_kong(B.prefix))
    assert(helpers.start_kong(env_of(B)))
    kr.wait_admin(B.admin)
    local took = within(3, function()
      local b = ring(B)
      return b.active == a.active and #b.ids == #a.ids
    end, "B's ring after its restart")
    assert.same(set_of(a.ids), set_of(ring(B).ids))
    print(("restarted node had the ring %.2f s after its Admin API answered"):format(took))
  end)

  it("a rotation on A while B reads freshly written rows: B never answers 503", function()
    for round = 1, 5 do
      local id = generate(A)
      assert.equals(204, (activate(A, id)))
      local status, body, plugin = admin("POST", "/routes/probe/plugins", {
        name = "secret-probe", config = { secret = "fresh-" .. round }, consumer = { username = "alice" },
      }, nil, A.admin)
      assert.equals(201, status, body)
      assert.equals(id, key_id_of(psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'")))
      status, body, plugin = admin("GET", "/plugins/" .. plugin.id, nil, nil, B.admin)
      assert.equals(200, status, body)
      assert.equals("fresh-" .. round, plugin.config.secret)
      assert.equals(204, (admin("DELETE", "/plugins/" .. plugin.id, nil, nil, A.admin)))
    end
  end)

  it("basic-auth written on A authenticates on B through 10 rotations: no 5xx, no 401", function()
    local users = {}
    for round = 1, 10 do
      local id = generate(A)
      local status, body = activate(A, id)
      assert.equals(204, status, body)
      local user = "traffic-" .. round
      new_credential(A, user, "pw-" .. round)
      users[#users + 1] = round
      for _, r in ipairs(users) do
        for _, node in ipairs({ A, B }) do
          local s, b = proxy("GET", "/probe", kr.basic_auth("traffic-" .. r, "pw-" .. r), nil, node.proxy)
          assert.equals(200, s, node.name .. " round " .. round .. " user " .. r .. ": " .. tostring(b))
        end
      end
    end
  end)

  it("a node that stopped with a recent heartbeat makes activate wait, then 409 naming it; force=true activates", function()
    local b_id = node_id(B)
    local id = generate(A)
    within(3, function()
      return set_of(ring(B).ids)[id]
    end, "the new key on B")
    -- a second key B never receives: B is stopped (SIGSTOP) right away
    local pids = kr.node_pids(B.prefix)
    assert(project.run("kill -STOP " .. table.concat(pids, " ")))
    local ok, err = pcall(function()
      local id2 = generate(A)
      local start = now()
      local status, body, json = activate(A, id2)
      local waited = now() - start
      assert.equals(409, status, body)
      assert.same({ b_id }, json.missing_on)
      assert.matches(b_id, json.error, 1, true)
      assert.is_true(waited >= 2 * FREQUENCY, "answered after " .. waited .. " s")
      assert.not_equals(id2, ring(A).active)
      status, body = activate(A, id2, true)
      assert.equals(204, status, body)
      assert.equals(id2, ring(A).active)
    end)
    assert(project.run("kill -CONT " .. table.concat(pids, " ")))
    assert(ok, err)
    -- B resumes and follows
    within(2 * FREQUENCY + 3, function()
      return ring(B).active == ring(A).active
    end, "B after it resumed")
  end)

  it("a node killed in the middle of a broadcast: the other keeps serving, the restarted one converges", function()
    local id = generate(A)
    -- SIGKILL every process of B while A sends it the key
    assert(project.run("kill -KILL " .. table.concat(kr.node_pids(B.prefix), " ")))
    assert.equals(204, (activate(A, id, true)))
    local s, b = proxy("GET", "/probe", kr.basic_auth("traffic-1", "pw-1"), nil, A.proxy)
    assert.equals(200, s, b)
    new_credential(A, "after-kill", "pw")
    assert(helpers.start_kong(env_of(B)))
    kr.wait_admin(B.admin)
    within(3, function()
      local a, r = ring(A), ring(B)
      return r.active == a.active and #r.ids == #a.ids
    end, "B converging")
    s, b = proxy("GET", "/probe", kr.basic_auth("after-kill", "pw"), nil, B.proxy)
    assert.equals(200, s, b)
  end)

  it("GET /keyring lists the ids a node lacks under 'missing', and the log names each once", function()
    -- an id the cluster lists that no node holds
    psql("INSERT INTO keyring_meta (id, state, kcv) VALUES ('nobodyHasIt', 'alive', '00')")
    within(3, function()
      local json = ring(B)
      return json.missing and json.missing[1] == "nobodyHasIt"
    end, "the missing id on B")
    helpers.wait_until(function()
      return #kr.log_lines("key 'nobodyHasIt' is listed in keyring_meta but no node sent it", B.prefix) > 0
    end, 5)
    ngx.sleep(3 * FREQUENCY)
    assert.equals(1, #kr.log_lines("key 'nobodyHasIt' is listed in keyring_meta but no node sent it", B.prefix))
    psql("DELETE FROM keyring_meta WHERE id = 'nobodyHasIt'")
    within(3, function()
      return ring(B).missing == nil
    end, "no missing id")
  end)
end)
end
