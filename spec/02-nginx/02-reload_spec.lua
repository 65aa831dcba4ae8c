-- `nginx -s reload` runs init_by_lua again in the same master and forks new
-- workers: the keyring region, its keys and its active id must carry over.

local helpers = require "helpers"


local PORT = 18102


describe("keyring in nginx (2 workers)", function()
  describe("nginx -s reload", function()
    local server
    local before = {} -- master, workers, keys answer, region, value, active id
    local after = {}

    local function sorted(pids)
      table.sort(pids)
      return pids
    end

    local function on(pid)
      return function(p)
        return p == pid
      end
    end

    local function call(method, path, body)
      local status, res, json = server:request(method, path, body)
      assert(json, "no JSON answer to " .. path .. ": " .. tostring(res))
      return status, json
    end

    lazy_setup(function()
      server = helpers.keyring_app { name = "keyring-reload", port = PORT }
      server:start()

      local _, k1 = call("POST", "/generate")
      helpers.remember_key(k1.key)
      local _, k2 = call("POST", "/generate")
      helpers.remember_key(k2.key)
      local _, k3 = call("POST", "/generate")
      helpers.remember_key(k3.key)
      call("POST", "/activate?id=" .. k2.id)

      before.master = server:master_pid()
      before.workers = sorted(server:worker_pids())
      before.active = k2.id
      before.keys = select(2, call("GET", "/keys"))
      before.region = select(2, call("GET", "/region"))
      local status, enc = call("POST", "/encrypt?ctx=row:reload", "written before the reload")
      assert.equals(200, status, enc.error)
      before.value = enc.value

      local t0 = helpers.now()
      server:reload()
      after.reload_s = helpers.now() - t0
      io.stderr:write(string.format("# reload: 2 new workers serving after %.0f ms\n", after.reload_s * 1e3))

      after.master = server:master_pid()
      after.workers = sorted(server:worker_pids())
      after.keys, after.region = {}, {}
      for _, pid in ipairs(after.workers) do
        local _, _, keys = server:request_on(on(pid), "GET", "/keys")
        local _, _, region = server:request_on(on(pid), "GET", "/region")
        after.keys[pid], after.region[pid] = keys, region
      end
    end)

    lazy_teardown(function()
      if server then
        server:stop()
      end
    end)

    it("keeps the master and replaces both workers", function()
      assert.equals(before.master, after.master)
      assert.equals(2, #after.workers)
      local old = { [before.workers[1]] = true, [before.workers[2]] = true }
      for _, pid in ipairs(after.workers) do
        assert.is_nil(old[pid], "worker " .. pid .. " survived the reload")
      end
    end)

    it("keeps every key id in both new workers", function()
      for _, pid in ipairs(after.workers) do
        assert.equals(before.keys.ids, after.keys[pid].ids)
      end
    end)

    it("keeps the active id in both new workers", function()
      for _, pid in ipairs(after.workers) do
        assert.equals(before.active, after.keys[pid].active)
      end
    end)

    it("keeps the same region in both new workers", function()
      for _, pid in ipairs(after.workers) do
        assert.same({ address = before.region.address, size = before.region.size, pid = pid }, after.region[pid])
      end
    end)

    it("decrypts in both new workers a value encrypted before the reload", function()
      for _, pid in ipairs(after.workers) do
        local status, _, json = server:request_on(on(pid), "POST", "/decrypt?ctx=row:reload", before.value)
        assert.equals(200, status)
        assert.equals("written before the reload", json.value)
      end
    end)

    it("encrypts after the reload with the active key of before", function()
      local status, _, json = server:request("POST", "/encrypt?ctx=row:reload", "written after the reload")
      assert.equals(200, status)
      assert.equals("$ke$2$-" .. before.active .. "-", json.value:sub(1, #before.active + 8))
    end)
  end)
end)
