-- The attacker's view of a running node (docs/design.md, "Memory that holds
-- keys"): after 10 keys were generated or added, used by both workers (v2
-- and v1 values, an export and an import) and 4 of them removed, a core dump
-- of each worker and of the master (`gcore`) holds no key, no v2 subkey and
-- no third AES round key of either; nor does any readable mapping of
-- /proc/PID/mem outside the mappings that are both locked and excluded from
-- dumps (VmFlags `lo` and `dd`). Positive controls prove the search works: a
-- planted byte string is found in the cores and outside, and the kept keys
-- are found inside the locked mappings. Removed keys are found nowhere.
-- The transport key the master made (the private half of the cluster
-- exchange's RSA pair) is found inside the locked mappings of all three
-- processes and nowhere else.
--
-- Output names counts and offsets only, never key bytes. Core files go to
-- .tmp/core-dump-<pid> and are deleted.

local ffi = require "ffi"
local bit = require "bit"
local hmac = require "openssl.hmac"
local cipher = require "openssl.cipher"
local pkey = require "openssl.pkey"
local cjson = require "cjson.safe"
local helpers = require "helpers"


local PORT = 18104
local CHUNK = 16 * 1024 * 1024
local OVERLAP = 64


ffi.cdef [[
  int core_spec_open(const char *path, int flags) __asm__("open");
  int core_spec_close(int fd) __asm__("close");
  long core_spec_pread(int fd, void *buf, size_t count, int64_t offset) __asm__("pread");
  void *core_spec_memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen) __asm__("memmem");
]]
local C = ffi.C


local function note(fmt, ...)
  io.stderr:write("# ", string.format(fmt, ...), "\n")
end


-- AES-256 key expansion (FIPS-197 §5.2), enough to name the third round key:
-- the first two round keys of AES-256 are the key itself.
local SBOX = {}
do
  local function xtime(a)
    a = bit.lshift(a, 1)
    return a >= 0x100 and bit.bxor(a, 0x11b) or a
  end
  local function mul(a, b)
    local p = 0
    while b > 0 do
      if bit.band(b, 1) == 1 then
        p = bit.bxor(p, a)
      end
      a, b = xtime(a), bit.rshift(b, 1)
    end
    return p
  end
  local function rotl8(x, n)
    return bit.band(bit.bor(bit.lshift(x, n), bit.rshift(x, 8 - n)), 0xff)
  end
  for x = 0, 255 do
    local inv = 0
    for y = 1, 255 do
      if x ~= 0 and mul(x, y) == 1 then
        inv = y
        break
      end
    end
    SBOX[x] = bit.bxor(inv, rotl8(inv, 1), rotl8(inv, 2), rotl8(inv, 3), rotl8(inv, 4), 0x63)
  end
end

--- Bytes 32..47 of the AES-256 key schedule of `key` (round key 2, the third).
local function third_round_key(key)
  local w = {}
  for i = 0, 7 do
    w[i] = { key:byte(4 * i + 1, 4 * i + 4) }
  end
  local rcon = 1
  for i = 8, 11 do
    local t = { w[i - 1][1], w[i - 1][2], w[i - 1][3], w[i - 1][4] }
    if i % 8 == 0 then
      t = { SBOX[t[2]], SBOX[t[3]], SBOX[t[4]], SBOX[t[1]] }
      t[1] = bit.bxor(t[1], rcon)
    elseif i % 8 == 4 then
      t = { SBOX[t[1]], SBOX[t[2]], SBOX[t[3]], SBOX[t[4]] }
    end
    w[i] = {}
    for j = 1, 4 do
      w[i][j] = bit.bxor(w[i - 8][j], t[j])
    end
  end
  local out = {}
  for i = 8, 11 do
    out[#out + 1] = string.char(unpack(w[i]))
  end
  return table.concat(out)
end

local function hmac_sha256(key, data)
  return hmac.new(key, "sha256"):final(data)
end

--- The v2 subkey: HKDF-SHA256(key, no salt, info "kong-keyring field v2"), 32 bytes.
local function v2_subkey(key)
  local prk = hmac_sha256(string.rep("\0", 32), key)
  return hmac_sha256(prk, "kong-keyring field v2\1")
end

local function from_hex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

--- A v1 value (Kong Enterprise's format) of `plain` under `key`:
-- AES-256-CTR from nonce || 00000002, hex.
local function v1_value(id, key, nonce, plain)
  local ct = cipher.new("aes-256-ctr"):encrypt(key, nonce .. "\0\0\0\2"):final(plain)
  return "$ke$1$-" .. id .. "-" .. helpers.hex(nonce) .. "-" .. helpers.hex(ct)
end


-- Memory search --------------------------------------------------------------

local buf = ffi.new("uint8_t[?]", CHUNK)

--- Searches `len` bytes of the open `fd` from `offset` for every needle;
-- `found(i, position)` per hit (position = offset of the hit in the file).
local function search_fd(fd, offset, len, needles, found)
  local done, seen = 0, {}
  while done < len do
    local want = math.min(CHUNK, len - done)
    local got = tonumber(C.core_spec_pread(fd, buf, want, offset + done))
    if got <= 0 then
      return done > 0
    end
    for i, needle in ipairs(needles) do
      local at, left = buf, got
      while left >= #needle do
        local p = C.core_spec_memmem(at, left, needle, #needle)
        if p == nil then
          break
        end
        local rel = ffi.cast("uint8_t *", p) - buf
        local pos = offset + done + tonumber(rel)
        if not seen[i .. ":" .. pos] then
          seen[i .. ":" .. pos] = true
          found(i, pos)
        end
        at = ffi.cast("uint8_t *", p) + 1
        left = got - tonumber(rel) - 1
      end
    end
    if got < want or done + got >= len then
      return true
    end
    done = done + got - OVERLAP
  end
  return true
end

local function with_fd(path, f)
  local fd = C.core_spec_open(path, 0)
  assert(fd >= 0, "cannot open " .. path)
  local ok, err = pcall(f, fd)
  C.core_spec_close(fd)
  assert(ok, err)
end

--- Readable mappings of `pid`: { from, to, name, protected = locked and not dumped }.
local function mappings(pid)
  local smaps = assert(helpers.read_file("/proc/" .. pid .. "/smaps"))
  local out, current = {}, nil
  for line in smaps:gmatch("[^\n]+") do
    local from, to, perms, rest = line:match("^(%x+)%-(%x+) (%S+) %S+ %S+ %S+%s*(.*)$")
    if from then
      current = { from = tonumber(from, 16), to = tonumber(to, 16), readable = perms:sub(1, 1) == "r",
                  name = rest ~= "" and rest or "[anon]" }
      out[#out + 1] = current
    elseif current and line:find("^VmFlags:") then
      local flags = " " .. line:sub(9) .. " "
      current.protected = flags:find(" lo ", 1, true) ~= nil and flags:find(" dd ", 1, true) ~= nil
    end
  end
  return out
end

--- Hits of every needle in the readable memory of `pid`, split into inside
-- (locked and not dumped) and outside: counts[i] = { inside = n, outside = n }
-- plus where[i] = { "0xADDR in NAME", ... } for the hits outside.
local function search_process(pid, needles)
  local counts, where, scanned, areas = {}, {}, 0, {}
  for i = 1, #needles do
    counts[i], where[i] = { inside = 0, outside = 0 }, {}
  end
  with_fd("/proc/" .. pid .. "/mem", function(fd)
    for _, m in ipairs(mappings(pid)) do
      if m.readable and m.name ~= "[vvar]" and m.name ~= "[vsyscall]" and m.name ~= "[vvar_vclock]" then
        local ok = search_fd(fd, m.from, m.to - m.from, needles, function(i, pos)
          if m.protected then
            counts[i].inside = counts[i].inside + 1
          else
            counts[i].outside = counts[i].outside + 1
            where[i][#where[i] + 1] = string.format("0x%x in %s", pos, m.name)
          end
        end)
        if ok then
          scanned = scanned + (m.to - m.from)
          areas[#areas + 1] = m
        end
      end
    end
  end)
  return counts, where, scanned
end

--- Hits of every needle in a whole file: counts[i], offsets[i].
local function search_file(path, needles)
  local counts, offsets = {}, {}
  for i = 1, #needles do
    counts[i], offsets[i] = 0, {}
  end
  local size = assert(io.open(path, "rb")):seek("end")
  with_fd(path, function(fd)
    search_fd(fd, 0, size, needles, function(i, pos)
      counts[i] = counts[i] + 1
      offsets[i][#offsets[i] + 1] = pos
    end)
  end)
  return counts, offsets, size
end


describe("keyring in nginx (2 workers): core dumps and process memory", function()
  local server, workers, master
  local keys = {}      -- { id, raw, b64, kept }
  local needles = {}   -- byte strings searched for
  local labels = {}    -- labels[i] names needles[i] without its bytes
  local kinds = {}     -- kinds[i]: "raw", "round3", "subkey", "subkey round3", "planted"
  local owner = {}     -- owner[i]: the key record of needles[i] (nil for the planted one)
  local planted        -- index of the planted needle
  local transport      -- index of the transport private key's needle
  local cores = {}     -- [pid] = { counts, offsets, size }
  local memory = {}    -- [pid] = { counts, where, scanned }
  local dump_dir

  local function on(pid)
    return function(p)
      return p == pid
    end
  end

  local function ok_request(pid, method, path, body, status)
    local got, resp, json = server:request_on(on(pid), method, path, body)
    assert.equals(status or 200, got, resp)
    return json
  end

  local function add_needle(bytes, kind, key)
    needles[#needles + 1] = bytes
    kinds[#needles] = kind
    owner[#needles] = key
    labels[#needles] = (key and ("key " .. key.id .. " ") or "") .. kind
  end

  lazy_setup(function()
    -- the helpers this spec computes with, checked against published vectors
    assert.equals("9ba354118e6925afa51a8b5f2067fcde", helpers.hex(third_round_key(from_hex(
      "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"))), "FIPS-197 A.3")
    assert.equals("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d",
                  helpers.hex(hmac_sha256(hmac_sha256(string.rep("\0", 32), string.rep("\11", 22)), "\1")),
                  "RFC 5869 A.3")

    server = helpers.keyring_app { name = "keyring-core-dump", port = PORT, transport_key = true }
    server:start()
    workers = server:worker_pids()
    table.sort(workers)
    master = server:master_pid()

    -- 10 keys: 5 generated by the ring, 5 chosen here and added
    for i = 1, 10 do
      local rec = {}
      if i <= 5 then
        local status, body, json = server:request("POST", "/generate")
        assert.equals(201, status, body)
        rec.id, rec.b64 = json.id, json.key
        helpers.remember_key(rec.b64)
      else
        rec.id, rec.b64 = "dump" .. i, helpers.random_key_b64()
        local status, body = server:request("POST", "/add?id=" .. rec.id, rec.b64)
        assert.equals(201, status, body)
      end
      rec.raw = assert(helpers.b64_decode(rec.b64))
      assert.equals(32, #rec.raw)
      keys[i] = rec
    end

    -- every key writes and reads on both workers, v2 and v1
    for i, rec in ipairs(keys) do
      assert.equals(200, (server:request("POST", "/activate?id=" .. rec.id)))
      for _, pid in ipairs(workers) do
        local ctx = "row:" .. i .. ":" .. pid
        local value = ok_request(pid, "POST", "/encrypt?ctx=" .. ctx, "secret " .. i).value
        for _, reader in ipairs(workers) do
          assert.equals("secret " .. i, ok_request(reader, "POST", "/decrypt?ctx=" .. ctx, value).value)
          local v1 = v1_value(rec.id, rec.raw, ("n"):rep(11) .. string.char(i), "legacy " .. i)
          assert.equals("legacy " .. i, ok_request(reader, "POST", "/decrypt", v1).value)
        end
      end
    end

    -- an export from one worker, imported by the other
    local private, public = helpers.rsa_pair(2048)
    local blob = ok_request(workers[1], "POST", "/export", public).blob
    ok_request(workers[2], "POST", "/import", cjson.encode({ blob = blob, private = private }))

    -- the transport key the master made, the same in both workers; each
    -- worker receives key 1 wrapped for it (parsing the private half)
    local sent = ok_request(workers[1], "GET", "/transport_key?id=" .. keys[1].id)
    assert.equals(sent.pem, ok_request(workers[2], "GET", "/transport_key?id=" .. keys[1].id).pem)
    for n, pid in ipairs(workers) do
      ok_request(pid, "POST", "/receive", cjson.encode({ id = "received" .. n, row = sent.row }))
    end

    -- key 1 stays active; keys 2, 4, 7 and 9 go
    assert.equals(200, (server:request("POST", "/activate?id=" .. keys[1].id)))
    for i, rec in ipairs(keys) do
      rec.kept = not (i == 2 or i == 4 or i == 7 or i == 9)
      if not rec.kept then
        local status, body = server:request("POST", "/remove?id=" .. rec.id)
        assert.equals(200, status, body)
      end
    end
    -- each worker rebuilds its cache, and draws enough random bytes that
    -- its generator's buffer no longer holds a key it generated
    for _, pid in ipairs(workers) do
      -- 30 nonces of 12 bytes: more than the generator's 256-byte buffer
      for n = 1, 30 do
        ok_request(pid, "POST", "/encrypt?ctx=after", "after the removal " .. n)
      end
    end

    for _, rec in ipairs(keys) do
      local sub = v2_subkey(rec.raw)
      add_needle(rec.raw, "raw", rec)
      add_needle(third_round_key(rec.raw), "round3", rec)
      add_needle(sub, "subkey", rec)
      add_needle(third_round_key(sub), "subkey round3", rec)
    end
    -- the private half's PKCS#8 DER holds the modulus, then e = 65537, then
    -- the start of d: bytes no public key encoding has
    local modulus = pkey.new(sent.pem):getParameters().n:toBinary()
    assert.equals(256, #modulus)
    add_needle(modulus .. "\2\3\1\0\1\2\130\1", "transport private key")
    transport = #needles
    -- a known, non-secret string in each worker's Lua heap
    local f = assert(io.open("/dev/urandom", "rb"))
    local marker = f:read(32)
    f:close()
    for _, pid in ipairs(workers) do
      ok_request(pid, "POST", "/plant", marker)
    end
    add_needle(marker, "planted")
    planted = #needles

    -- 1. core dumps
    dump_dir = helpers.tmp .. "/core-dump-" .. tostring(master)
    os.execute("rm -rf " .. dump_dir .. " && mkdir -p " .. dump_dir)
    local pids = { workers[1], workers[2], master }
    for _, pid in ipairs(pids) do
      local ok, out = helpers.run("gcore -o " .. dump_dir .. "/core " .. pid .. " >/dev/null 2>&1")
      local path = dump_dir .. "/core." .. pid
      assert(ok and helpers.read_file(path) ~= nil, "gcore of " .. pid .. " failed: " .. out)
      local counts, offsets, size = search_file(path, needles)
      cores[pid] = { counts = counts, offsets = offsets, size = size }
      os.remove(path)
      note("core of %d: %.1f MiB searched", pid, size / 1048576)
    end
    os.execute("rm -rf " .. dump_dir)

    -- 2. live memory
    for _, pid in ipairs(pids) do
      local counts, where, scanned = search_process(pid, needles)
      memory[pid] = { counts = counts, where = where, scanned = scanned }
      note("memory of %d: %.1f MiB of readable mappings searched", pid, scanned / 1048576)
    end
  end)

  lazy_teardown(function()
    if dump_dir then
      os.execute("rm -rf " .. dump_dir)
    end
    if server then
      server:stop()
    end
  end)

  -- needles of keys (kept or removed) with hits, as "label: n" strings
  local function key_hits(count_of)
    local bad = {}
    for i = 1, #needles do
      if i ~= planted and count_of(i) > 0 then
        bad[#bad + 1] = labels[i] .. ": " .. count_of(i)
      end
    end
    return bad
  end

  it("finds the planted string in each worker's core and outside locked memory (the search works)", function()
    for _, pid in ipairs(workers) do
      note("worker %d: planted string %d time(s) in the core (offsets %s), %d outside locked memory",
           pid, cores[pid].counts[planted], table.concat(cores[pid].offsets[planted], ","),
           memory[pid].counts[planted].outside)
      assert(cores[pid].counts[planted] > 0, "planted string not found in the core of " .. pid)
      assert(memory[pid].counts[planted].outside > 0, "planted string not found in the memory of " .. pid)
    end
  end)

  it("finds no key, subkey or third round key in the core dump of either worker or the master", function()
    for _, pid in ipairs({ workers[1], workers[2], master }) do
      local bad = key_hits(function(i) return cores[pid].counts[i] end)
      for _, line in ipairs(bad) do
        local i
        for j = 1, #needles do
          if line:find(labels[j] .. ":", 1, true) == 1 then
            i = j
          end
        end
        note("core of %d: %s at offsets %s", pid, line, i and table.concat(cores[pid].offsets[i], ",") or "?")
      end
      assert.same({}, bad)
    end
  end)

  it("finds no key, subkey or third round key in /proc/PID/mem outside the locked, undumped mappings", function()
    for _, pid in ipairs({ workers[1], workers[2], master }) do
      local bad = key_hits(function(i) return memory[pid].counts[i].outside end)
      for i = 1, #needles do
        if i ~= planted and #memory[pid].where[i] > 0 then
          note("memory of %d: %s at %s", pid, labels[i], table.concat(memory[pid].where[i], ", "))
        end
      end
      assert.same({}, bad)
    end
  end)

  it("finds every kept key, and in the workers its expanded schedules, inside the locked mappings", function()
    for _, pid in ipairs({ workers[1], workers[2], master }) do
      local missing, found = {}, 0
      for i = 1, #needles do
        local rec = owner[i]
        -- the master holds the region (raw keys) and no cache
        local expected = rec and rec.kept and (pid ~= master or kinds[i] == "raw")
        if expected then
          if memory[pid].counts[i].inside == 0 then
            missing[#missing + 1] = labels[i]
          else
            found = found + 1
          end
        end
      end
      note("%s %d: %d kept-key patterns found inside locked memory", pid == master and "master" or "worker", pid, found)
      assert.same({}, missing)
    end
  end)

  it("finds the removed keys nowhere, locked memory included", function()
    for _, pid in ipairs({ workers[1], workers[2], master }) do
      local bad = {}
      for i = 1, #needles do
        if owner[i] and not owner[i].kept and memory[pid].counts[i].inside > 0 then
          bad[#bad + 1] = labels[i] .. ": " .. memory[pid].counts[i].inside
        end
      end
      assert.same({}, bad)
    end
  end)

  it("keeps the transport private key inside the locked mappings of the master and both workers only", function()
    for _, pid in ipairs({ workers[1], workers[2], master }) do
      local c = memory[pid].counts[transport]
      note("%d: transport private key %d time(s) inside locked memory, %d outside, %d in the core",
           pid, c.inside, c.outside, cores[pid].counts[transport])
      assert(c.inside > 0, "the transport private key is not in the locked memory of " .. pid)
      assert.equals(0, c.outside)
      assert.equals(0, cores[pid].counts[transport])
    end
  end)

  it("locked every key mapping in both workers (no mlock failure)", function()
    for _, pid in ipairs(workers) do
      local json = ok_request(pid, "GET", "/lock_failures")
      assert.equals(0, json.lock_failures)
    end
  end)
end)
