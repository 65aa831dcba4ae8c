-- What the keyring keeps consistent in real Kong (2 workers): one key per id
-- in the cluster, concurrent activations that leave the node and the
-- database agreeing, encrypted fields inside entity records (keys.pem),
-- unmarked values under keyring_accept_legacy = off, and no start-up next to
-- Kong's incremental sync (which would store decrypted rows).

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local cjson = require "cjson.safe"


local admin = kr.admin
local psql = kr.psql
local fmt = string.format


local function active_in_database()
  return psql("SELECT string_agg(id, ',') FROM keyring_meta WHERE state = 'active'")
end


local function generate()
  local status, body, json = admin("POST", "/keyring/generate")
  assert.equals(201, status, body)
  kr.project.remember_key(json.key)
  return json.id
end


for _, strategy in helpers.each_strategy({ "postgres" }) do
describe("Plugin: keyring (consistency) [#" .. strategy .. "]", function()
  local env

  lazy_setup(function()
    helpers.get_db_utils(strategy, nil, kr.PLUGINS, kr.VAULTS)
    local private, public = kr.project.rsa_pair()
    env = kr.kong_env {
      proxy_listen = fmt("127.0.0.1:%d reuseport", kr.port_base),
      admin_listen = fmt("127.0.0.1:%d reuseport", kr.port_base + 1),
      keyring_public_key = public,
      keyring_private_key = private,
    }
    assert(helpers.start_kong(env))
    kr.wait_active_key()
  end)

  lazy_teardown(function()
    kr.stop_kong()
  end)

  describe("an id the cluster lists with another key's check value", function()
    local id = "Conflict1"
    local other_kcv = string.rep("ab", 16)

    lazy_setup(function()
      psql(fmt("INSERT INTO keyring_meta (id, state, kcv) VALUES ('%s', 'alive', '%s')", id, other_kcv))
    end)

    it("is refused by POST /keyring/import/raw with 409 naming the id, and the node does not keep it", function()
      local status, body, json = admin("POST", "/keyring/import/raw", { id = id, data = kr.project.random_key_b64() })
      assert.equals(409, status, body)
      assert.equals(fmt("key '%s' already exists in the cluster with different material", id), json.error)
      assert.equals(other_kcv, psql(fmt("SELECT kcv FROM keyring_meta WHERE id = '%s'", id)))
      local _, _, ring = admin("GET", "/keyring")
      for _, held in ipairs(ring.ids) do
        assert.not_equals(id, held)
      end
    end)
  end)

  describe("POST /keyring/import when the database refuses it", function()
    it("answers 500 and leaves the node's ring as it was", function()
      local _, _, ring = admin("GET", "/keyring")
      local active = ring.active
      -- a blob whose active key this node then forgets
      local other = generate()
      assert.equals(204, (admin("POST", "/keyring/activate", { key = other })))
      local status, body, export = admin("POST", "/keyring/export")
      assert.equals(200, status, body)
      assert.equals(204, (admin("POST", "/keyring/activate", { key = active })))
      assert.equals(204, (admin("POST", "/keyring/remove", { key = other })))

      psql([[
        CREATE FUNCTION kk_refuse_import() RETURNS trigger LANGUAGE plpgsql AS
          $$ BEGIN RAISE EXCEPTION 'keyring_meta refuses writes (import spec)'; END $$;
        CREATE TRIGGER kk_refuse_import BEFORE INSERT OR UPDATE ON keyring_meta
          FOR EACH STATEMENT EXECUTE FUNCTION kk_refuse_import();
      ]])
      finally(function()
        psql("DROP TRIGGER kk_refuse_import ON keyring_meta; DROP FUNCTION kk_refuse_import()")
      end)
      local json
      status, body, json = admin("POST", "/keyring/import", { data = export.data })
      assert.equals(500, status, body)
      assert.matches("refuses writes", json.error, 1, true)
      for _ = 1, 10 do
        local _, _, now = admin("GET", "/keyring")
        assert.equals(active, now.active)
        for _, id in ipairs(now.ids) do
          assert.not_equals(other, id)
        end
      end
    end)
  end)

  describe("eight clients activating eight keys at once", function()
    it("get 204 or a clear 409, never a 500, and the node follows the database", function()
      for round = 1, 3 do
        local ids = {}
        for i = 1, 8 do
          ids[i] = generate()
        end
        -- one curl each, all started together, fresh connections (both workers)
        local dir = kr.project.tmp .. "/09-activate-" .. round
        os.execute("rm -rf " .. dir .. " && mkdir -p " .. dir)
        local jobs = {}
        for i, id in ipairs(ids) do
          jobs[i] = fmt("curl -s -m 60 -o %s/%d.body -w '%%{http_code}' -X POST -d key=%s "
                        .. "http://127.0.0.1:%d/keyring/activate > %s/%d.status", dir, i, id, kr.port_base + 1, dir, i)
        end
        os.execute("{ " .. table.concat(jobs, " & ") .. " & wait; }")

        local won = 0
        for i, id in ipairs(ids) do
          local status = tonumber(kr.project.read_file(dir .. "/" .. i .. ".status"))
          local body = kr.project.read_file(dir .. "/" .. i .. ".body") or ""
          assert.is_true(status == 204 or status == 409, fmt("round %d, key %s: %s %s", round, id, tostring(status), body))
          if status == 409 then
            local json = assert(cjson.decode(body))
            assert.matches("key '" .. id .. "' was activated, then key '[%w]+' by a concurrent request", json.error)
          else
            won = won + 1
          end
        end
        assert.is_true(won >= 1, "no activation was answered 204")

        -- exactly one active row, and the node (both workers) uses it
        local active = active_in_database()
        assert.matches("^[%w]+$", active)
        for _ = 1, 10 do
          local status, _, json = admin("GET", "/keyring")
          assert.equals(200, status)
          assert.equals(active, json.active)
        end
      end
    end)
  end)

  describe("keys.pem.private_key (an encrypted field inside a record of an entity)", function()
    local key

    lazy_setup(function()
      local private, public = kr.project.rsa_pair()
      local status, body
      status, body, key = admin("POST", "/keys", {
        kid = "pem-key", name = "pem-key",
        pem = { private_key = private, public_key = public },
      })
      assert.equals(201, status, body)
      key.private = private
    end)

    it("stores a v2 value bound to the row", function()
      local stored = psql(fmt("SELECT pem->>'private_key' FROM keys WHERE id = '%s'", key.id))
      assert.matches(kr.MARKED, stored)
      assert.equals(key.pem.public_key, psql(fmt("SELECT pem->>'public_key' FROM keys WHERE id = '%s'", key.id)))
    end)

    it("answers with the plaintext key", function()
      local status, _, read = admin("GET", "/keys/" .. key.id)
      assert.equals(200, status)
      assert.equals(key.private, read.pem.private_key)
    end)

    it("keeps the private key out of the database", function()
      local body_line = key.private:match("\n([^\n]+)\n")
      assert.is_nil(kr.pg_dump():find(body_line, 1, true))
    end)
  end)

  describe("a marked value written under a key this node does not hold", function()
    local plugin

    lazy_setup(function()
      local status, body
      status, body, plugin = admin("POST", "/plugins", { name = "secret-probe", config = { secret = "s" } })
      assert.equals(201, status, body)
      psql("INSERT INTO keyring_meta (id, state, kcv) VALUES ('Listed99', 'alive', '" .. string.rep("cd", 16) .. "')")
    end)

    local function marked_under(id)
      return "$ke$2$-" .. id .. "-" .. string.rep("A", 60)
    end

    it("is bad input (400) when the cluster does not list the key", function()
      local status, body, json = admin("PATCH", "/plugins/" .. plugin.id, { config = { secret = marked_under("Nosuch12") } })
      assert.equals(400, status, body)
      assert.matches("encrypted value under key 'Nosuch12', which the cluster does not list", json.message, 1, true)
    end)

    it("is 503 when the cluster lists the key but this node lacks it", function()
      local status, body, json = admin("PATCH", "/plugins/" .. plugin.id, { config = { secret = marked_under("Listed99") } })
      assert.equals(503, status, body)
      assert.matches("keyring key 'Listed99' is not available on this node", json.message, 1, true)
    end)
  end)

  describe("a stored value without the marker (written before the keyring was on)", function()
    local cred

    lazy_setup(function()
      local status, body
      status, body = admin("POST", "/consumers", { username = "legacy" })
      assert.equals(201, status, body)
      status, body, cred = admin("POST", "/consumers/legacy/basic-auth", { username = "legacy", password = "pw" })
      assert.equals(201, status, body)
      -- as Kong OSS without the keyring stored it
      psql(fmt("UPDATE basicauth_credentials SET password = '%s' WHERE id = '%s'", cred.password, cred.id))
    end)

    it("reads back as it is by default", function()
      local status, body, read = admin("GET", "/basic-auths/" .. cred.id)
      assert.equals(200, status, body)
      assert.equals(cred.password, read.password)
    end)

    it("is refused on every read with keyring_accept_legacy = off", function()
      assert(helpers.restart_kong(kr.kong_env {
        proxy_listen = env.proxy_listen, admin_listen = env.admin_listen, keyring_accept_legacy = "off",
      }))
      helpers.wait_until(function()
        return (admin("GET", "/keyring")) == 200
      end, 10)
      local status, body = admin("GET", "/basic-auths/" .. cred.id)
      assert.equals(500, status, body)
      assert.is_nil(body:find(cred.password, 1, true))
      assert.equals(1, #kr.log_lines("unencrypted value refused: keyring_accept_legacy is off"))
    end)
  end)

  describe("a new cluster whose database refuses the first key at start", function()
    it("retries the bootstrap until the database takes it", function()
      psql("DELETE FROM keyring_keys")
      psql("DELETE FROM keyring_meta")
      psql([[
        CREATE FUNCTION kk_refuse() RETURNS trigger LANGUAGE plpgsql AS
          $$ BEGIN RAISE EXCEPTION 'keyring_meta refuses writes (consistency spec)'; END $$;
        CREATE TRIGGER kk_refuse BEFORE INSERT ON keyring_meta FOR EACH STATEMENT EXECUTE FUNCTION kk_refuse();
      ]])
      assert(helpers.restart_kong(env))
      helpers.wait_until(function()
        return #kr.log_lines("start-up failed, retrying in") > 0
      end, 15)
      assert.equals("0", psql("SELECT count(*) FROM keyring_meta"))
      psql("DROP TRIGGER kk_refuse ON keyring_meta; DROP FUNCTION kk_refuse()")
      local id = kr.wait_active_key(nil, 20)
      assert.equals(id, active_in_database())
    end)
  end)

  describe("with Kong's incremental sync", function()
    it("refuses to start, naming both settings", function()
      local prefix = kr.prefix .. "-sync"
      local ok, err = helpers.start_kong(kr.kong_env {
        prefix = prefix,
        proxy_listen = fmt("127.0.0.1:%d", kr.port_base + 2),
        admin_listen = fmt("127.0.0.1:%d", kr.port_base + 3),
        cluster_rpc = "on",
        cluster_incremental_sync = "on",
      })
      assert.falsy(ok)
      local said = (err or "") .. kr.error_log(prefix)
      assert.matches("cannot be on together with cluster_rpc and cluster_incremental_sync", said, 1, true)
    end)
  end)
end)
end
