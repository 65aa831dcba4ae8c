-- Rotation of secret references by Kong's own vault framework, with our
-- `hcv` strategy against a real OpenBao and KONG_VAULT_ROTATION_INTERVAL=1
-- (Kong's node cache then keeps entries at least 2 s): a changed secret is
-- seen after its ttl, a deleted one is served for resurrect_ttl and then
-- fails, neg_ttl sets how long a failed lookup stays cached, a vault's
-- configured ttl / neg_ttl apply to references that name none, and
-- kong.vault.try re-resolves and calls again once when its callback fails.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"


local BAO_PORT = 18240        -- and 18241

local V = vh.remember_secrets({ a1 = "rot-a-one-51d2", a2 = "rot-a-two-7c0e", b1 = "rot-b-one-a93f",
                                c1 = "rot-c-one-2e77", d1 = "rot-d-one-f018", d2 = "rot-d-two-6b5a",
                                f1 = "rot-f-one-0c3b", f2 = "rot-f-two-d815" })


describe("vault rotation (hcv, OpenBao) [#postgres]", function()
  local bao

  local function put(path, value)
    assert.equals(200, (vh.bao(bao, "POST", "secret/data/" .. path, { data = { value = value } })))
  end

  local function delete(path)
    assert.equals(204, (vh.bao(bao, "DELETE", "secret/metadata/" .. path)))
  end

  lazy_setup(function()
    bao = vh.start_openbao(BAO_PORT)
    put("rot/a", V.a1)
    put("rot/b", V.b1)
    put("rot/d", V.d1)
    vh.db()
    helpers.setenv("KONG_VAULT_ROTATION_INTERVAL", "1")
    assert(helpers.start_kong(vh.kong_env {
      vault_hcv_port = BAO_PORT,
      vault_hcv_kv = "v2",
      vault_hcv_token = "root",
    }))
    helpers.unsetenv("KONG_VAULT_ROTATION_INTERVAL")
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  it("serves a changed secret once its ttl is over, on both workers", function()
    vh.probe_route("/rot-a", { secret = "{vault://hcv/rot/a/value?ttl=2}" })
    assert.equals(V.a1, vh.probe("/rot-a").config.secret)
    put("rot/a", V.a2)
    -- still cached right after the change
    assert.equals(V.a1, vh.probe("/rot-a").config.secret)
    helpers.wait_until(function()
      return vh.probe("/rot-a").config.secret == V.a2
    end, 10)
    kr.on_both_workers(function() return kr.proxy("GET", "/rot-a") end, function(status, json)
      assert.equals(200, status)
      assert.equals(V.a2, json.config.secret)
    end)
  end)

  it("serves a deleted secret for resurrect_ttl, then the failure shows", function()
    vh.probe_route("/rot-b", { secret = "{vault://hcv/rot/b/value?ttl=2&resurrect_ttl=6}" })
    assert.equals(V.b1, vh.probe("/rot-b").config.secret)
    local deleted = ngx.now()
    delete("rot/b")
    -- past its ttl (2 s) and a rotation or two, the value is resurrected
    ngx.sleep(3.5)
    kr.on_both_workers(function() return kr.proxy("GET", "/rot-b") end, function(status, json)
      assert.equals(200, status)
      assert.equals(V.b1, json.config.secret)
    end)
    -- then, within ttl + resurrect_ttl and a rotation, the field is empty
    helpers.wait_until(function()
      return vh.probe("/rot-b").config.secret == ""
    end, 15)
    assert.is_true(ngx.now() - deleted >= 4, "gone after " .. (ngx.now() - deleted) .. " s")
    assert.is_true(#kr.log_lines("{vault://hcv/rot/b/value?ttl=2&resurrect_ttl=6}") > 0)
    assert.is_true(#kr.log_lines("hcv: rot/b not found") > 0)
  end)

  it("keeps a failed lookup cached for neg_ttl", function()
    vh.probe_route("/rot-c", {})
    local ref = "{vault://hcv/rot/c/value?neg_ttl=30}"
    local value, err = vh.vault_get("/rot-c", ref)
    assert.is_nil(value)
    assert.matches("hcv: rot/c not found", err, 1, true)
    local json = vh.probe("/rot-c?shm=" .. ngx.escape_uri(ref))
    assert.equals(1, #json.shm)
    assert.is_true(json.shm[1].negative)
    assert.is_true(json.shm[1].ttl > 20, "negative entry ttl " .. json.shm[1].ttl)
    -- without neg_ttl a failure is cached for Kong's minimum (2 rotation intervals)
    local plain = "{vault://hcv/rot/c/value?ttl=5}"
    vh.vault_get("/rot-c", plain)
    json = vh.probe("/rot-c?shm=" .. ngx.escape_uri(plain))
    assert.is_true(json.shm[1].negative)
    assert.is_true(json.shm[1].ttl <= 2)
    -- the request path does not ask again while the entry lives; Kong's
    -- rotation timer retries negative entries every interval
    put("rot/c", V.c1)
    assert.is_nil((vh.vault_get("/rot-c", ref)))
    helpers.wait_until(function()
      return vh.vault_get("/rot-c", ref) == V.c1
    end, 10)
  end)

  it("takes ttl and neg_ttl from the vault's config when the reference has none", function()
    put("rot/f", V.f1)
    vh.put_vaults("hcv", { ["hcv-ttl"] = { port = BAO_PORT, kv = "v2", token = "root", ttl = 2, neg_ttl = 40 } })
    vh.probe_route("/rot-f", { secret = "{vault://hcv-ttl/rot/f/value}" })
    assert.equals(V.f1, vh.probe("/rot-f").config.secret)
    put("rot/f", V.f2)
    helpers.wait_until(function()
      return vh.probe("/rot-f").config.secret == V.f2
    end, 10)
    local missing = "{vault://hcv-ttl/rot/g/value}"
    assert.is_nil((vh.vault_get("/rot-f", missing)))
    local json = vh.probe("/rot-f?shm=" .. ngx.escape_uri(missing))
    assert.is_true(json.shm[1].negative)
    assert.is_true(json.shm[1].ttl > 30, "negative entry ttl " .. json.shm[1].ttl)
  end)

  describe("kong.vault.try", function()
    it("re-resolves and calls again once when the callback fails", function()
      vh.probe_route("/rot-d", { secret = "{vault://hcv/rot/d/value?ttl=1000}", expect = V.d2 })
      assert.equals(V.d1, vh.probe("/rot-d").config.secret)
      put("rot/d", V.d2)
      local json = vh.probe("/rot-d?try=1")
      assert.same({ calls = 2, value = V.d2 }, json.try)
    end)

    it("calls twice and gives up when the new value fails too", function()
      vh.probe_route("/rot-e", { secret = "{vault://hcv/rot/d/value?ttl=1001}", expect = "never" })
      local json = vh.probe("/rot-e?try=1")
      assert.equals(2, json.try.calls)
      assert.is_nil(json.try.value)
      assert.equals("not the expected secret", json.try.err)
    end)
  end)

  it("writes no secret to the error log", function()
    vh.assert_no_secret_in_log({ V.a1, V.a2, V.b1, V.c1, V.d1, V.d2 })
  end)
end)
