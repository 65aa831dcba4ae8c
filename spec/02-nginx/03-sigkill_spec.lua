-- A worker killed with SIGKILL while it holds the keyring's write lock: the
-- robust mutex hands the lock to the next writer (EOWNERDEAD), so the other
-- worker's next write goes through, reads keep working, and the worker the
-- master respawns sees the ring. Uses the test hook hold_write_lock(ms),
-- exported only with KONG_KEYRING_TEST_HOOKS=1.

local helpers = require "helpers"


local PORT = 18103
local HOLD_MS = 30000


describe("keyring in nginx (2 workers)", function()
  describe("writer killed with SIGKILL while holding the write lock", function()
    local server
    local hold_out
    local s = {} -- what the scenario observed; each `it` checks one part

    local function on(pid)
      return function(p)
        return p == pid
      end
    end

    local function has_id(ids, id)
      return ("," .. ids .. ","):find("," .. id .. ",", 1, true) ~= nil
    end

    lazy_setup(function()
      server = helpers.keyring_app {
        name = "keyring-sigkill",
        port = PORT,
        env = "KONG_KEYRING_TEST_HOOKS=1",
      }
      server:start()
      hold_out = server.prefix .. "/hold.out"

      local _, _, k1 = server:request("POST", "/generate")
      helpers.remember_key(k1.key)
      s.k1 = k1.id
      assert.equals(200, (server:request("POST", "/activate?id=" .. k1.id)))
      local _, _, enc = server:request("POST", "/encrypt?ctx=row:kill", "written before the kill")
      s.value = enc.value
      s.workers = server:worker_pids()
      -- both workers encrypt once, so each holds a cached copy of the ring
      for _, pid in ipairs(s.workers) do
        server:request_on(on(pid), "POST", "/encrypt?ctx=row:warm", "warm")
      end

      -- 1. one worker takes the write lock and sleeps with it
      server:request_async("GET", "/hold?ms=" .. HOLD_MS, hold_out)
      for _ = 1, 100 do
        local line = server:log_lines("takes the write lock")[1]
        s.holder = line and tonumber(line:match("app: worker (%d+) takes the write lock"))
        if s.holder then
          break
        end
        os.execute("sleep 0.05")
      end
      assert(s.holder, "the /hold request never started")
      os.execute("sleep 0.3")
      s.hold_pending = helpers.async_status(hold_out) == nil
      s.other = s.workers[1] == s.holder and s.workers[2] or s.workers[1]

      -- 2. while the lock is held, the other worker encrypts from its cached copy
      -- (connections that reach the sleeping holder time out after 1 s)
      for _ = 1, 20 do
        local t = helpers.now()
        local status, _, json = server:request("POST", "/encrypt?ctx=row:held", "during the hold", nil, 1)
        if json and json.pid == s.other then
          s.held_encrypt = { status = status, value = json.value, s = helpers.now() - t }
          break
        end
      end
      s.hold_pending_at_kill = helpers.async_status(hold_out) == nil

      -- 3. SIGKILL it, then write until the other worker has answered
      assert(helpers.run("kill -9 " .. s.holder))
      local t0 = helpers.now()
      s.writes = {}
      for _ = 1, 40 do
        local status, _, json = server:request("POST", "/generate")
        json = json or {}
        if json.key then
          helpers.remember_key(json.key)
        end
        local write = { status = status, pid = json.pid, id = json.id, error = json.error, after_s = helpers.now() - t0 }
        s.writes[#s.writes + 1] = write
        if write.pid == s.other then
          s.other_write = write
          break
        end
      end
      if s.held_encrypt then
        io.stderr:write(string.format("# encrypt in worker %d during the hold: %.1f ms\n", s.other, s.held_encrypt.s * 1e3))
      end
      if s.other_write then
        io.stderr:write(string.format("# write in worker %d answered %.1f ms after SIGKILL of %d (%d request(s))\n",
                                      s.other, s.other_write.after_s * 1e3, s.holder, #s.writes))
      end

      -- 4. the master respawns the killed worker
      for _ = 1, 100 do
        local pids = server:worker_pids()
        for _, pid in ipairs(pids) do
          if #pids == 2 and pid ~= s.other and pid ~= s.holder then
            s.respawned = pid
          end
        end
        if s.respawned then
          break
        end
        os.execute("sleep 0.05")
      end

      -- 5. the /hold request ends when its worker dies
      for _ = 1, 40 do
        if helpers.async_status(hold_out) then
          break
        end
        os.execute("sleep 0.05")
      end
      s.hold_status = helpers.async_status(hold_out)
    end)

    lazy_teardown(function()
      if server then
        server:stop()
      end
    end)

    it("kills a worker that was holding the lock", function()
      assert.is_true(s.hold_pending)
      assert.is_false(helpers.alive(s.holder))
    end)

    it("lets the other worker encrypt while the lock is held", function()
      assert.is_table(s.held_encrypt, "the other worker never answered during the hold")
      assert.is_true(s.hold_pending_at_kill)
      assert.equals(200, s.held_encrypt.status)
      assert.equals("$ke$2$-" .. s.k1 .. "-", s.held_encrypt.value:sub(1, #s.k1 + 8))
      assert.is_true(s.held_encrypt.s < 0.5, string.format("%.3f s", s.held_encrypt.s))
    end)

    it("lets the other worker's next write succeed in under 2 s", function()
      assert.is_table(s.other_write, "the other worker never answered a write")
      assert.same({ status = 201, pid = s.other }, { status = s.other_write.status, pid = s.other_write.pid })
      assert.is_true(s.other_write.after_s < 2, string.format("%.3f s", s.other_write.after_s))
    end)

    it("answers every write after the kill with a new key", function()
      for _, w in ipairs(s.writes) do
        assert.same({ status = 201 }, { status = w.status, error = w.error })
        assert.is_string(w.id)
      end
    end)

    it("keeps reads working in the other worker", function()
      local status, _, json = server:request_on(on(s.other), "GET", "/keys")
      assert.equals(200, status)
      assert.equals(s.k1, json.active)
      for _, w in ipairs(s.writes) do
        assert.is_true(has_id(json.ids, w.id), json.ids)
      end
    end)

    it("keeps decrypting in the other worker", function()
      local status, _, json = server:request_on(on(s.other), "POST", "/decrypt?ctx=row:kill", s.value)
      assert.equals(200, status)
      assert.equals("written before the kill", json.value)
    end)

    it("has the master respawn the killed worker", function()
      assert.is_number(s.respawned)
      assert.is_true(helpers.alive(s.respawned))
    end)

    it("lets the respawned worker see every key and the active id", function()
      local status, _, json = server:request_on(on(s.respawned), "GET", "/keys")
      assert.equals(200, status)
      assert.equals(s.k1, json.active)
      assert.is_true(has_id(json.ids, s.k1), json.ids)
      for _, w in ipairs(s.writes) do
        assert.is_true(has_id(json.ids, w.id), json.ids)
      end
    end)

    it("lets the respawned worker write and the other worker see it", function()
      local status, _, json = server:request_on(on(s.respawned), "POST", "/generate")
      assert.equals(201, status)
      helpers.remember_key(json.key)
      local status2, _, json2 = server:request_on(on(s.other), "POST", "/activate?id=" .. json.id)
      assert.equals(200, status2)
      assert.equals(json.id, json2.active)
    end)

    it("ends the /hold request without an answer", function()
      assert.equals(0, s.hold_status)
    end)

    it("logs the worker's exit on signal 9 once", function()
      local exits = {}
      for _, line in ipairs(server:log_lines("exited on signal")) do
        exits[#exits + 1] = line:match("worker process %d+ exited on signal %d+") or line
      end
      assert.same({ "worker process " .. s.holder .. " exited on signal 9" }, exits)
    end)
  end)
end)
