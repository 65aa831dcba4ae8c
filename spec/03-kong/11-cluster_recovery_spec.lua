-- Two real Kong nodes (2 workers each, one PostgreSQL): the cluster secret
-- against keys injected through the database, every node restarted then
-- recovery or import on one node, no key byte in any keyring table or
-- cluster event, and keyring_blob_path (docs/design.md, "Cluster strategy",
-- "Recovery").

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"
local pkey = require "resty.openssl.pkey"
local hmac = require "resty.openssl.hmac"
local to_hex = require("resty.string").to_hex


local admin = kr.admin
local psql = kr.psql
local project = kr.project
local lit = function(s) return "'" .. s:gsub("'", "''") .. "'" end


local A, B = kr.node(0), kr.node(1)
local DIR = project.tmp .. "/spec-11_cluster_recovery"
local SECRET = "cluster-secret-" .. ngx.now()


local now, ring, within, node_id = kr.now, kr.ring, kr.within, kr.node_id


local function holds(node, id)
  for _, v in ipairs(ring(node).ids) do
    if v == id then
      return true
    end
  end
  return false
end


-- a secret-probe plugin holding `secret`, made through `node`
local function new_plugin(node, route, secret)
  local status, body, json = admin("POST", "/routes/" .. route .. "/plugins",
                                   { name = "secret-probe", config = { secret = secret } }, nil, node.admin)
  assert.equals(201, status, body)
  return json
end


local function read_secret(node, plugin)
  local status, body, json = admin("GET", "/plugins/" .. plugin.id, nil, nil, node.admin)
  return status, status == 200 and json.config.secret or body
end


local function start_both(env_of)
  kr.start_kong_nowait(env_of(A))
  kr.start_kong_nowait(env_of(B))
  kr.wait_admin(A.admin)
  kr.wait_admin(B.admin)
end


local function stop_both()
  kr.stop_kong(A.prefix)
  kr.stop_kong(B.prefix)
end


-- What an attacker with write access to the database (and no cluster
-- secret) can do: list a key of their own in keyring_meta, send it to
-- `target` wrapped for the public key the node publishes in keyring_nodes,
-- and announce its activation. Returns the key's id.
local function inject_key(target, id)
  local key = string.rep("k", 32)
  local kcv = to_hex(assert(hmac.new(key, "sha256"):final("kong-keyring-kcv"))):sub(1, 32)
  local target_id = node_id(target)
  local public = psql("SELECT public_key FROM keyring_nodes WHERE node_id = " .. lit(target_id))
  local wrapped = assert(assert(pkey.new(public)):encrypt(key, pkey.PADDINGS.RSA_PKCS1_OAEP_PADDING,
                                                          { oaep_md = "sha256", mgf1_md = "sha256" }))
  local message = cjson.encode({ host = target_id, keys = { { id = id, data = ngx.encode_base64(wrapped) } } })
  psql("INSERT INTO keyring_meta (id, state, kcv) VALUES (" .. lit(id) .. ", 'alive', " .. lit(kcv) .. ")")
  for channel, data in pairs({ keyring_broadcast = message, keyring_activate = id }) do
    psql("INSERT INTO cluster_events (id, node_id, at, expire_at, channel, data) VALUES (gen_random_uuid(), "
         .. "gen_random_uuid(), CURRENT_TIMESTAMP, CURRENT_TIMESTAMP + INTERVAL '1 hour', "
         .. lit(channel) .. ", " .. lit(data) .. ")")
  end
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (cluster: trust, recovery, import, blob file) [#" .. strategy .. "]", function()
  local mgmt_private, mgmt_public, recovery_private, recovery_public

  lazy_setup(function()
    assert(project.run("rm -rf " .. DIR .. " && mkdir -p " .. DIR .. " && chmod 777 " .. DIR))
    mgmt_private, mgmt_public = project.rsa_pair(2048)
    recovery_private, recovery_public = project.rsa_pair(2048)
  end)

  lazy_teardown(stop_both)

  describe("without a cluster secret", function()
    lazy_setup(function()
      helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
      start_both(function(node)
        return kr.node_env(node)
      end)
      kr.wait_active_key(A.admin)
      kr.wait_active_key(B.admin)
    end)

    lazy_teardown(stop_both)

    it("trusts the database: a key injected through keyring_meta and cluster_events is taken", function()
      -- the control for the cluster-secret case below: the same injection works here
      inject_key(B, "injectedKey")
      within(3, function()
        return holds(B, "injectedKey")
      end, "the injected key on B")
    end)
  end)

  describe("with keyring_cluster_secret", function()
    local first

    lazy_setup(function()
      helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
      start_both(function(node)
        return kr.node_env(node, { keyring_cluster_secret = SECRET })
      end)
      first = kr.wait_active_key(A.admin)
      assert.equals(first, kr.wait_active_key(B.admin))
    end)

    lazy_teardown(stop_both)

    it("signs keyring_meta and keyring_nodes rows", function()
      assert.matches("^%x+$", psql("SELECT mac FROM keyring_meta WHERE id = " .. lit(first)))
      helpers.wait_until(function()
        return psql("SELECT count(*) FROM keyring_nodes WHERE mac ~ '^[0-9a-f]{64}$'") == "2"
      end, 5)
    end)

    it("still shares keys between the nodes", function()
      local status, body, json = admin("POST", "/keyring/generate", nil, nil, A.admin)
      assert.equals(201, status, body)
      project.remember_key(json.key)
      within(3, function()
        return holds(B, json.id)
      end, "the new key on B")
      assert.equals(204, (admin("POST", "/keyring/activate", { key = json.id }, nil, A.admin)))
      within(3, function()
        return ring(B).active == json.id
      end, "the activation on B")
    end)

    it("ignores a key injected through keyring_meta and cluster_events on both nodes", function()
      local active = ring(A).active
      inject_key(B, "injectedKey")
      inject_key(A, "injectedKeyA")
      psql("UPDATE keyring_meta SET state = 'alive' WHERE state = 'active'")
      psql("UPDATE keyring_meta SET state = 'active' WHERE id = 'injectedKey'")
      -- three polls: every node has seen the events
      ngx.sleep(3)
      for _, node in ipairs({ A, B }) do
        assert.is_false(holds(node, "injectedKey"))
        assert.is_false(holds(node, "injectedKeyA"))
        assert.equals(active, ring(node).active)
      end
      assert.truthy(#kr.log_lines("does not authenticate under keyring_cluster_secret", B.prefix) > 0)
      -- the database back as the nodes wrote it
      psql("UPDATE keyring_meta SET state = 'alive' WHERE id = 'injectedKey'")
      psql("UPDATE keyring_meta SET state = 'active' WHERE id = " .. lit(active))
      psql("DELETE FROM keyring_meta WHERE id LIKE 'injected%'")
    end)
  end)

  describe("every node restarted", function()
    local plugins = {}

    local function env_of(node)
      return kr.node_env(node, {
        keyring_public_key = mgmt_public,
        keyring_private_key = mgmt_private,
        keyring_recovery_public_key = recovery_public,
      })
    end

    lazy_setup(function()
      helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
      start_both(env_of)
      kr.wait_active_key(A.admin)
      kr.wait_active_key(B.admin)
      assert.equals(201, (admin("POST", "/services", { name = "s", url = "http://127.0.0.1:1" }, nil, A.admin)))
      for i = 1, 3 do
        assert.equals(201, (admin("POST", "/services/s/routes", { name = "r" .. i, paths = { "/r" .. i } },
                                  nil, A.admin)))
        -- one plugin under each of three keys, written on either node
        plugins[i] = new_plugin(i % 2 == 1 and A or B, "r" .. i, "secret-" .. i)
        if i < 3 then
          local _, _, key = admin("POST", "/keyring/generate", nil, nil, A.admin)
          project.remember_key(key.key)
          assert.equals(204, (admin("POST", "/keyring/activate", { key = key.id }, nil, A.admin)))
          within(3, function()
            return ring(B).active == key.id
          end, "the activation on B")
        end
      end
      -- every key has its recovery row, wherever it was made
      within(3, function()
        return psql("SELECT count(*) FROM keyring_keys") == "3"
      end, "three recovery rows")
      stop_both()
      start_both(env_of)
    end)

    lazy_teardown(stop_both)

    it("reads fail fast with 503 naming the key", function()
      for _, node in ipairs({ A, B }) do
        local start = now()
        local status, body = read_secret(node, plugins[1])
        assert.equals(503, status, body)
        assert.matches("key '[^']+' is not available on this node", body)
        assert.is_true(now() - start < 1)
      end
    end)

    it("recover with a private key that does not match recovers nothing; a public key is a 400", function()
      local other = project.rsa_pair(2048)
      local status, body, json = admin("POST", "/keyring/recover", { recovery_private_key = other }, nil, A.admin)
      assert.equals(200, status, body)
      assert.same({}, json.recovered)
      assert.equals(3, #json.not_recovered)
      status, body = admin("POST", "/keyring/recover", { recovery_private_key = recovery_public }, nil, A.admin)
      assert.equals(400, status, body)
      assert.equals("recovery needs a private key", cjson.decode(body).error)
    end)

    it("POST /keyring/recover on A restores reading on both nodes; a corrupt row is listed, not fatal", function()
      psql("INSERT INTO keyring_meta (id, state, kcv) VALUES ('corruptRow', 'alive', '00')")
      psql("INSERT INTO keyring_keys (id, key_encrypted, recovery_key_id) VALUES ('corruptRow', '$ker$2$AAAA', 'x')")
      local status, body, json = admin("POST", "/keyring/recover", { recovery_private_key = recovery_private },
                                       nil, A.admin)
      assert.equals(200, status, body)
      assert.equals(3, #json.recovered)
      assert.same({ "corruptRow" }, json.not_recovered)
      psql("DELETE FROM keyring_keys WHERE id = 'corruptRow'")
      psql("DELETE FROM keyring_meta WHERE id = 'corruptRow'")
      for i, plugin in ipairs(plugins) do
        assert.same({ 200, "secret-" .. i }, { read_secret(A, plugin) })
      end
      within(3, function()
        for i, plugin in ipairs(plugins) do
          local s, secret = read_secret(B, plugin)
          if s ~= 200 or secret ~= "secret-" .. i then
            return false
          end
        end
        return true
      end, "reading on B")
    end)

    it("writes work again on both nodes, under the active key", function()
      local active = ring(A).active
      assert.equals(active, psql("SELECT id FROM keyring_meta WHERE state = 'active'"))
      within(3, function()
        return ring(B).active == active
      end, "the active key on B")
      for _, node in ipairs({ A, B }) do
        local route = "after-recovery-" .. node.name
        assert.equals(201, (admin("POST", "/services/s/routes", { name = route, paths = { "/" .. route } },
                                  nil, node.admin)))
        local p = new_plugin(node, route, "after-recovery-" .. node.name)
        local stored = psql("SELECT config->>'secret' FROM plugins WHERE id = " .. lit(p.id))
        assert.matches("^%$ke%$2%$%-" .. active .. "%-", stored)
        assert.equals(204, (admin("DELETE", "/plugins/" .. p.id, nil, nil, node.admin)))
      end
    end)

    it("export on A, restart everything, import on B: every row is readable on both nodes", function()
      local status, body, json = admin("POST", "/keyring/export", nil, nil, A.admin)
      assert.equals(200, status, body)
      local blob = json.data
      kr.remember_blob_keys(blob, mgmt_private)
      stop_both()
      psql("DELETE FROM keyring_keys")
      start_both(env_of)
      assert.equals(503, (read_secret(A, plugins[1])))
      status, body = admin("POST", "/keyring/import", { data = blob }, nil, B.admin)
      assert.equals(200, status, body)
      within(3, function()
        for _, node in ipairs({ A, B }) do
          for i, plugin in ipairs(plugins) do
            local s, secret = read_secret(node, plugin)
            if s ~= 200 or secret ~= "secret-" .. i then
              return false
            end
          end
        end
        return true
      end, "reading on both nodes after the import")
    end)

    it("no key byte in any cluster event, keyring row, node row or error log", function()
      local seen = assert(project.read_file(project.tmp .. "/keys-seen.txt"))
      local keys = {}
      for b64 in seen:gmatch("[^\n]+") do
        keys[#keys + 1] = b64
      end
      local tables = psql("SELECT channel || ' ' || data FROM cluster_events WHERE channel LIKE 'keyring%'")
      -- the sweep is meaningful: keys did travel through these events
      assert.truthy(tables:find("keyring_broadcast", 1, true))
      tables = tables .. psql("SELECT key_encrypted FROM keyring_keys")
                      .. psql("SELECT id || kcv FROM keyring_meta")
                      .. psql("SELECT public_key || key_ids FROM keyring_nodes")
      local logs = kr.error_log(A.prefix) .. kr.error_log(B.prefix)
      local checked = 0
      for _, b64 in ipairs(keys) do
        local raw = ngx.decode_base64(b64)
        if raw and #raw == 32 then
          checked = checked + 1
          for _, form in ipairs({ b64, to_hex(raw), (ngx.encode_base64(raw):gsub("=+$", "")) }) do
            assert.is_nil(tables:find(form, 1, true), "a key in the database")
            assert.is_nil(logs:find(form, 1, true), "a key in an error log")
          end
        end
      end
      assert.is_true(checked >= 3)
    end)
  end)

  describe("keyring_blob_path", function()
    local path = DIR .. "/keyring.blob"

    local function env_of()
      return kr.node_env(A, {
        keyring_public_key = mgmt_public,
        keyring_private_key = mgmt_private,
        keyring_blob_path = path,
      })
    end

    local function blob_ring()
      local ids, active = kr.remember_blob_keys(assert(project.read_file(path)), mgmt_private)
      return ids, active
    end

    lazy_setup(function()
      helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
      os.remove(path)
      assert(helpers.start_kong(env_of()))
    end)

    lazy_teardown(function()
      kr.stop_kong(A.prefix)
    end)

    it("is written with mode 0600 after the first key, and rewritten after every change", function()
      local first = kr.wait_active_key(A.admin)
      helpers.wait_until(function()
        return project.read_file(path) ~= nil
      end, 5)
      local _, mode = project.run("stat -c %a " .. path)
      assert.equals("600", mode:match("%d+"))
      local ids, active = blob_ring()
      assert.same({ first }, ids)
      assert.equals(first, active)
      local _, _, json = admin("POST", "/keyring/generate", nil, nil, A.admin)
      project.remember_key(json.key)
      helpers.wait_until(function()
        return #blob_ring() == 2
      end, 5)
    end)

    it("is loaded at start, its active key activated", function()
      local ids, active = blob_ring()
      kr.stop_kong(A.prefix)
      psql("DELETE FROM keyring_keys")
      psql("DELETE FROM keyring_meta")
      psql("DELETE FROM keyring_nodes")
      assert(helpers.start_kong(env_of()))
      assert.equals(active, kr.wait_active_key(A.admin))
      table.sort(ids)
      local got = ring(A).ids
      table.sort(got)
      assert.same(ids, got)
      assert.equals(#ids, tonumber(psql("SELECT count(*) FROM keyring_meta")))
    end)

    it("an unreadable blob is logged and start-up goes on", function()
      kr.stop_kong(A.prefix)
      project.write_file(path, "not a blob")
      psql("DELETE FROM keyring_meta")
      assert(helpers.start_kong(env_of()))
      helpers.wait_until(function()
        return #kr.log_lines("cannot load keyring_blob_path", A.prefix) > 0
      end, 5)
      kr.wait_active_key(A.admin)
    end)
  end)
end)
end
