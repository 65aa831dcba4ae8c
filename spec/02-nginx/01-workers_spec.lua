-- One keyring shared by both workers of a real nginx: writes in one worker are
-- seen by the other on its next request, nonces never repeat across workers,
-- the region is locked and excluded from core dumps, and bad requests are
-- answered without hurting a worker.

local helpers = require "helpers"


local PORT = 18101
local NONCES_PER_WORKER = 100000


local function timing(fmt, ...)
  io.stderr:write("# ", string.format(fmt, ...), "\n")
end


describe("keyring in nginx (2 workers)", function()
  local server
  local workers -- the two worker pids, sorted

  local function other_than(pid)
    return function(p)
      return p ~= pid
    end
  end

  local function generate()
    local status, body, json = server:request("POST", "/generate")
    assert.equals(201, status, body)
    helpers.remember_key(json.key)
    return json.id, json.pid
  end

  local function activate(id)
    local status, body, json = server:request("POST", "/activate?id=" .. id)
    assert.equals(200, status, body)
    return json.pid
  end

  local function encrypt(plain, ctx)
    local status, body, json = server:request("POST", "/encrypt?ctx=" .. ctx, plain)
    assert.equals(200, status, body)
    return json.value, json.pid
  end

  local function sorted_workers()
    local pids = server:worker_pids()
    table.sort(pids)
    return pids
  end

  lazy_setup(function()
    server = helpers.keyring_app { name = "keyring-workers", port = PORT }
    server:start()
    workers = sorted_workers()
    -- an active key for the encrypting tests
    activate((generate()))
  end)

  lazy_teardown(function()
    if server then
      server:stop()
    end
  end)


  describe("across workers", function()
    it("lists a key generated in one worker in the other on its next request", function()
      local id, a = generate()
      local t0 = helpers.now()
      local status, _, json = server:request_on(other_than(a), "GET", "/keys")
      timing("generate in %d -> listed in %d: %.1f ms between the answers", a, json.pid, (helpers.now() - t0) * 1e3)
      assert.equals(200, status)
      assert.truthy(("," .. json.ids .. ","):find("," .. id .. ",", 1, true), json.ids)
    end)

    it("encrypts with a key activated in the other worker", function()
      local id = generate()
      local a = activate(id)
      local t0 = helpers.now()
      local status, _, json = server:request_on(other_than(a), "POST", "/encrypt?ctx=row:1", "s3cr3t")
      timing("activate in %d -> encrypt in %d: %.1f ms between the answers", a, json.pid, (helpers.now() - t0) * 1e3)
      assert.equals(200, status)
      assert.equals("$ke$2$-" .. id .. "-", json.value:sub(1, #id + 8))
    end)

    it("reports the active id set in the other worker", function()
      local id = generate()
      local a = activate(id)
      local status, _, json = server:request_on(other_than(a), "GET", "/keys")
      assert.equals(200, status)
      assert.equals(id, json.active)
    end)

    it("decrypts in one worker a value encrypted in the other", function()
      local value, a = encrypt("s3cr3t-password", "basicauth_credentials:fc46ce48")
      local status, _, json = server:request_on(other_than(a), "POST", "/decrypt?ctx=basicauth_credentials:fc46ce48",
                                                value)
      assert.equals(200, status)
      assert.equals("s3cr3t-password", json.value)
    end)

    it("uses a key added in one worker in the other", function()
      local key = helpers.random_key_b64()
      local id = "added" .. math.random(1e6)
      local status, body, json = server:request("POST", "/add?id=" .. id, key)
      assert.equals(201, status, body)
      local a = json.pid
      local status2, _, json2 = server:request_on(other_than(a), "POST", "/activate?id=" .. id)
      assert.equals(200, status2)
      assert.equals(id, json2.active)
    end)

    describe("after a remove in the other worker", function()
      local removed, value, a

      lazy_setup(function()
        -- a value under `removed`, then another key active so `removed` can go
        removed = generate()
        activate(removed)
        value = encrypt("written before the remove", "row:2")
        activate((generate()))
        local status, body, json = server:request("POST", "/remove?id=" .. removed)
        assert.equals(200, status, body)
        a = json.pid
      end)

      it("no longer lists the key", function()
        local status, _, json = server:request_on(other_than(a), "GET", "/keys")
        assert.equals(200, status)
        assert.falsy(("," .. json.ids .. ","):find("," .. removed .. ",", 1, true), json.ids)
      end)

      it("refuses values under the key", function()
        local status, _, json = server:request_on(other_than(a), "POST", "/decrypt?ctx=row:2", value)
        assert.equals(400, status)
        assert.equals("keyring key '" .. removed .. "' is not available on this node", json.error)
      end)
    end)

    it("counts encryptions of both workers in the shared usage counters", function()
      local id = generate()
      activate(id)
      -- encrypt until both workers have encrypted at least once
      local n, seen = 0, {}
      repeat
        local _, pid = encrypt("counted", "c")
        n, seen[pid] = n + 1, true
      until (seen[workers[1]] and seen[workers[2]]) or n == 60
      assert.same({ [workers[1]] = true, [workers[2]] = true }, seen)
      local status, _, json = server:request("GET", "/usage")
      assert.equals(200, status)
      assert.equals(n, json.usage[id])
    end)
  end)


  describe("nonces", function()
    local answers -- the two /nonces answers, from two different workers
    local attempts = 0

    lazy_setup(function()
      -- both requests run at once; reuseport may send both to one worker, so
      -- repeat until the two answers come from different workers
      local t0 = helpers.now()
      repeat
        attempts = attempts + 1
        answers = server:concurrent("GET", { "/nonces?n=" .. NONCES_PER_WORKER, "/nonces?n=" .. NONCES_PER_WORKER })
        local p1 = answers[1].body:match("^(%d+)\n")
        local p2 = answers[2].body:match("^(%d+)\n")
      until (p1 and p2 and p1 ~= p2) or attempts == 20
      timing("2 x %d encryptions: %.2f s over %d attempt(s)", NONCES_PER_WORKER, helpers.now() - t0, attempts)
    end)

    it("come from both workers, 100,000 each", function()
      local pids, counts = {}, {}
      for i, answer in ipairs(answers) do
        assert.equals(200, answer.status)
        local pid, rest = answer.body:match("^(%d+)\n(.*)$")
        pids[i] = tonumber(pid)
        local n = 0
        for nonce in rest:gmatch("[^\n]+") do
          assert(#nonce == 16 and not nonce:find("[^%w_%-]"), "not a 16-char base64url nonce: " .. nonce)
          n = n + 1
        end
        counts[i] = n
      end
      table.sort(pids)
      assert.same(workers, pids)
      assert.same({ NONCES_PER_WORKER, NONCES_PER_WORKER }, counts)
    end)

    it("never repeat across 2 x 100,000 encryptions", function()
      local seen, total, duplicates = {}, 0, {}
      for _, answer in ipairs(answers) do
        for nonce in answer.body:match("^%d+\n(.*)$"):gmatch("[^\n]+") do
          if seen[nonce] then
            duplicates[#duplicates + 1] = nonce
          end
          seen[nonce] = true
          total = total + 1
        end
      end
      assert.equals(2 * NONCES_PER_WORKER, total)
      assert.same({}, duplicates)
    end)
  end)


  describe("shared region", function()
    local regions -- [pid] = /region answer

    local function status_of(pid)
      return assert(helpers.read_file("/proc/" .. pid .. "/status"))
    end

    -- the smaps block of the mapping that starts at `address`
    local function smaps_block(pid, address)
      local smaps = assert(helpers.read_file("/proc/" .. pid .. "/smaps"))
      local start = tonumber(address, 16)
      for from, to, block in smaps:gmatch("(%x+)%-(%x+) ([^\n]*\n.-VmFlags:[^\n]*)") do
        if tonumber(from, 16) == start then
          return block, tonumber(to, 16) - start
        end
      end
      return nil
    end

    lazy_setup(function()
      regions = {}
      for _, pid in ipairs(workers) do
        local _, _, json = server:request_on(function(p)
          return p == pid
        end, "GET", "/region")
        regions[pid] = json
      end
    end)

    it("is mapped at the same address in both workers", function()
      local a, b = regions[workers[1]], regions[workers[2]]
      assert.equals(a.address, b.address)
      assert.equals(a.size, b.size)
    end)

    it("is locked in RAM by both workers (VmLck covers it)", function()
      for _, pid in ipairs(workers) do
        local kb = tonumber(status_of(pid):match("VmLck:%s+(%d+) kB"))
        assert(kb and kb * 1024 >= regions[pid].size,
               "worker " .. pid .. " VmLck " .. tostring(kb) .. " kB < region " .. regions[pid].size .. " bytes")
      end
    end)

    it("is one whole mapping of its reported size in both workers", function()
      for _, pid in ipairs(workers) do
        local block, len = smaps_block(pid, regions[pid].address)
        assert(block, "no mapping at 0x" .. regions[pid].address .. " in /proc/" .. pid .. "/smaps")
        assert.equals(regions[pid].size, len)
        assert.truthy(block:match("^rw%-s "), block:match("^[^\n]*"))
      end
    end)

    it("is excluded from core dumps in both workers (VmFlags dd)", function()
      for _, pid in ipairs(workers) do
        local flags = " " .. smaps_block(pid, regions[pid].address):match("VmFlags:([^\n]*)") .. " "
        assert.truthy(flags:find(" dd ", 1, true), "worker " .. pid .. " VmFlags:" .. flags)
      end
    end)

    it("is marked locked in both workers (VmFlags lo)", function()
      for _, pid in ipairs(workers) do
        local flags = " " .. smaps_block(pid, regions[pid].address):match("VmFlags:([^\n]*)") .. " "
        assert.truthy(flags:find(" lo ", 1, true), "worker " .. pid .. " VmFlags:" .. flags)
      end
    end)
  end)


  describe("bad requests", function()
    local before

    -- every case is sent until both workers have answered it
    local function on_both(method, path, body)
      local answers, seen = {}, {}
      for _ = 1, 60 do
        local status, _, json = server:request(method, path, body)
        assert(json, "no JSON answer to " .. path)
        answers[#answers + 1] = { status = status, error = json.error }
        seen[json.pid] = true
        if seen[workers[1]] and seen[workers[2]] then
          return answers
        end
      end
      error("both workers never answered " .. path)
    end

    local function expect_everywhere(status, err, method, path, body)
      for _, answer in ipairs(on_both(method, path, body)) do
        assert.same({ status = status, error = err }, answer)
      end
    end

    lazy_setup(function()
      before = sorted_workers()
    end)

    it("answers 400 to decrypting a value with no key id", function()
      expect_everywhere(400, "malformed encrypted value: missing key id", "POST", "/decrypt", "$ke$2$-")
    end)

    it("answers 400 to decrypting a truncated value", function()
      expect_everywhere(400, "malformed encrypted value: truncated v2 value", "POST", "/decrypt", "$ke$2$-abc-AAAA")
    end)

    it("answers 400 to decrypting a payload that is not base64url", function()
      -- the key lookup comes first: name a key the ring holds
      local _, _, json = server:request("GET", "/keys")
      expect_everywhere(400, "malformed encrypted value: bad base64url in v2 value", "POST", "/decrypt",
                        "$ke$2$-" .. json.active .. "-" .. ("!"):rep(40))
    end)

    it("answers 400 to decrypting an unknown format version", function()
      expect_everywhere(400, "malformed encrypted value: unknown format version", "POST", "/decrypt", "$ke$9$-x-y")
    end)

    it("answers 400 to decrypting a v1 value with a bad nonce", function()
      expect_everywhere(400, "malformed encrypted value: bad v1 nonce", "POST", "/decrypt", "$ke$1$-x-zz-00")
    end)

    it("answers 400 to decrypting a value under a key this node lacks", function()
      expect_everywhere(400, "keyring key 'nosuchid' is not available on this node", "POST", "/decrypt",
                        "$ke$2$-nosuchid-" .. ("A"):rep(40))
    end)

    it("answers 400 to decrypting a tampered value", function()
      local value = encrypt("tamper me", "row:3")
      -- a character inside the tag (the last one may carry only padding bits)
      local at = #value - 5
      local swapped = value:sub(at, at) == "A" and "B" or "A"
      expect_everywhere(400, "authentication failed", "POST", "/decrypt?ctx=row:3",
                        value:sub(1, at - 1) .. swapped .. value:sub(at + 1))
    end)

    it("answers 400 to decrypting under another context", function()
      local value = encrypt("bound to row 4", "row:4")
      expect_everywhere(400, "authentication failed", "POST", "/decrypt?ctx=row:5", value)
    end)

    it("answers 400 to activating an invalid id", function()
      expect_everywhere(400, "invalid key id: '-' is not allowed", "POST", "/activate?id=no-such")
    end)

    it("answers 400 to activating an empty id", function()
      expect_everywhere(400, "invalid key id: empty", "POST", "/activate")
    end)

    it("answers 400 to activating an unknown id", function()
      expect_everywhere(400, "key 'unknownid' not found", "POST", "/activate?id=unknownid")
    end)

    it("answers 400 to adding a key that is not base64", function()
      expect_everywhere(400, "invalid base64 in key", "POST", "/add?id=badkey", "not base64!")
    end)

    it("answers 400 to adding a key of 16 bytes", function()
      expect_everywhere(400, "key must be 32 bytes", "POST", "/add?id=shortkey", "AAAAAAAAAAAAAAAAAAAAAA==")
    end)

    it("answers 409 to removing the active key", function()
      local _, _, json = server:request("GET", "/keys")
      expect_everywhere(409, "cannot remove active key", "POST", "/remove?id=" .. json.active)
    end)

    it("answers 404 to an unknown route", function()
      expect_everywhere(404, "not found", "GET", "/nothing")
    end)

    it("keeps both workers alive", function()
      assert.same(before, sorted_workers())
    end)

    it("logs no error, alert, crit or panic", function()
      local bad = {}
      for line in (server:error_log() or ""):gmatch("[^\n]+") do
        if line:find("[error]", 1, true) or line:find("[alert]", 1, true) or line:find("[crit]", 1, true)
           or line:find("panicked", 1, true) then
          bad[#bad + 1] = line
        end
      end
      assert.same({}, bad)
    end)
  end)
end)
