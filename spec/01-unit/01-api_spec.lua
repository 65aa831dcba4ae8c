-- kong.keyring: the Lua API, one behaviour per `it`.
--
-- Every spec file of spec/01-unit runs in one LuaJIT process and the region is
-- process-wide: each block works with the keys it adds and reads `keys()`
-- relative to them. States this process cannot reach any more (before init, an
-- empty ring) are checked in a fresh `luajit` started for the purpose.

local helpers = require "helpers"
local keyring = require "kong.keyring"


local CONTEXT = "basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2"


local function pack(...)
  return { n = select("#", ...), ... }
end


local function contains(list, value)
  for i, v in ipairs(list) do
    if v == value then
      return i
    end
  end
  return nil
end


-- Runs `script` in a fresh luajit with this tree's paths; returns its stdout.
local function run_fresh(script)
  local cmd = "cd " .. helpers.shell_quote(helpers.root)
              .. " && LUA_PATH=" .. helpers.shell_quote(helpers.lua_path .. ";;")
              .. " LUA_CPATH=" .. helpers.shell_quote(helpers.lua_cpath .. ";;")
              .. " luajit -e " .. helpers.shell_quote(script)
  local ok, out = helpers.run(cmd)
  assert(ok, out)
  return out
end


describe("keyring (Lua API)", function()
  local id

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    id = helpers.generate_key()
    assert(keyring.activate(id))
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)


  describe("init", function()
    it("answers true and keeps the keys when called again", function()
      assert.same({ n = 1, true }, pack(keyring.init()))
      assert.truthy(contains(keyring.keys().ids, id))
      assert.equals(id, keyring.active_id())
    end)

    it("accepts an empty options table", function()
      assert.same({ n = 1, true }, pack(keyring.init({})))
    end)

    it("accepts write_format 'v2' and accept_legacy true", function()
      assert.same({ n = 1, true }, pack(keyring.init({ write_format = "v2", accept_legacy = true })))
    end)

    it("answers nil, err when write_format is 'v3'", function()
      assert.same({ n = 3, nil, "bad 'write_format' option: 'v1' or 'v2' expected, got v3", "invalid" },
                  pack(keyring.init({ write_format = "v3" })))
    end)

    it("answers nil, err when accept_legacy is the string 'yes'", function()
      assert.same({ n = 3, nil, "bad 'accept_legacy' option: boolean expected, got string", "invalid" },
                  pack(keyring.init({ accept_legacy = "yes" })))
    end)

    it("raises when opts is not a table", function()
      assert.has_error(function() keyring.init("v1") end, "bad 'opts' argument: table expected, got string")
      assert.has_error(function() keyring.init(true) end, "bad 'opts' argument: table expected, got boolean")
    end)

    it("leaves the options unchanged when it refuses them", function()
      assert.is_nil(keyring.init({ write_format = "v1", accept_legacy = "yes" }))
      assert.equals("$ke$2$-" .. id .. "-", assert(keyring.encrypt("still v2")):sub(1, #id + 8))
    end)
  end)


  describe("init_worker", function()
    it("answers true", function()
      assert.same({ n = 1, true }, pack(keyring.init_worker()))
    end)

    it("answers true when called again", function()
      assert.same({ n = 1, true }, pack(keyring.init_worker()))
    end)
  end)


  describe("encrypt / decrypt", function()
    it("round-trips a value without context", function()
      local value = assert(keyring.encrypt("s3cr3t"))
      assert.equals("s3cr3t", keyring.decrypt(value))
    end)

    it("round-trips a value with a context", function()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      assert.equals("s3cr3t", keyring.decrypt(value, CONTEXT))
    end)

    it("treats a nil context as the empty context", function()
      local value = assert(keyring.encrypt("s3cr3t", nil))
      assert.equals("s3cr3t", keyring.decrypt(value, ""))
    end)

    it("writes $ke$2$-<active id>-<base64url of nonce, ciphertext, tag>", function()
      local value = assert(keyring.encrypt("0123456789", CONTEXT))
      local header = "$ke$2$-" .. id .. "-"
      assert.equals(header, value:sub(1, #header))
      local payload = value:sub(#header + 1)
      assert.equals(math.ceil((12 + 10 + 16) * 4 / 3), #payload)
      assert.truthy(payload:match("^[A-Za-z0-9_-]+$"))
    end)

    it("writes a different value each time (random nonce)", function()
      assert.not_equals(keyring.encrypt("same", CONTEXT), keyring.encrypt("same", CONTEXT))
    end)

    it("round-trips binary bytes and a binary context", function()
      local bytes = "\0\1\2\255\254 \0 end\0"
      local value = assert(keyring.encrypt(bytes, "ctx\0\255"))
      assert.equals(bytes, keyring.decrypt(value, "ctx\0\255"))
    end)

    it("round-trips values whose ciphertext is around the 4096-byte scratch buffer", function()
      local sizes = {}
      for n = 3030, 3110 do
        local plain = string.rep("p", n)
        local value = assert(keyring.encrypt(plain, CONTEXT))
        sizes[#value] = true
        assert.equals(plain, keyring.decrypt(value, CONTEXT))
      end
      assert.is_true(sizes[4095] or sizes[4094] or sizes[4093])
      assert.is_true(sizes[4096] or sizes[4097] or sizes[4098])
    end)

    it("answers nil, err when decrypting with a wrong context", function()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      assert.same({ n = 3, nil, "authentication failed", "authentication" },
                  pack(keyring.decrypt(value, "basicauth_credentials:other-row")))
    end)

    it("answers nil, err when decrypting a context-bound value without context", function()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      assert.same({ n = 3, nil, "authentication failed", "authentication" }, pack(keyring.decrypt(value)))
    end)

    it("answers nil, err when decrypting a value without context under a context", function()
      local value = assert(keyring.encrypt("s3cr3t"))
      assert.same({ n = 3, nil, "authentication failed", "authentication" }, pack(keyring.decrypt(value, CONTEXT)))
    end)

    it("answers nil, err when the key id in the header is swapped for another key's", function()
      local other = helpers.generate_key()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      local swapped = "$ke$2$-" .. other .. "-" .. value:sub(#id + 9)
      assert.same({ n = 3, nil, "authentication failed", "authentication" }, pack(keyring.decrypt(swapped, CONTEXT)))
      assert(keyring.remove(other))
    end)

    it("answers nil, err when one payload character is changed", function()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      local i = #value - 5
      local c = value:sub(i, i) == "A" and "B" or "A"
      local tampered = value:sub(1, i - 1) .. c .. value:sub(i + 1)
      assert.same({ n = 3, nil, "authentication failed", "authentication" }, pack(keyring.decrypt(tampered, CONTEXT)))
    end)

    it("returns a value that already carries a marker unchanged", function()
      local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
      assert.same({ n = 1, value }, pack(keyring.encrypt(value, "another context")))
    end)

    it("returns an unmarked value unchanged on decrypt", function()
      assert.same({ n = 1, "plaintext written before the keyring" },
                  pack(keyring.decrypt("plaintext written before the keyring", CONTEXT)))
    end)

    it("decrypts a value written under a key that is no longer active", function()
      local value = assert(keyring.encrypt("old", CONTEXT))
      local next_id = helpers.generate_key()
      assert(keyring.activate(next_id))
      assert.equals("old", keyring.decrypt(value, CONTEXT))
      assert.equals("$ke$2$-" .. next_id .. "-", assert(keyring.encrypt("new")):sub(1, #next_id + 8))
      assert(keyring.activate(id))
      assert(keyring.remove(next_id))
    end)
  end)


  describe("generate", function()
    it("returns an id of 8 alphanumeric chars and the base64 of 32 bytes", function()
      local new_id, key = assert(keyring.generate())
      helpers.remember_key(key)
      assert.truthy(new_id:match("^%w%w%w%w%w%w%w%w$"))
      assert.equals(44, #key)
      -- 43 base64 chars + one '=' of padding is exactly 32 bytes
      assert.truthy(key:match("^[A-Za-z0-9+/]+=$"))
      assert(keyring.remove(new_id))
    end)

    it("adds the key without activating it", function()
      local new_id = helpers.generate_key()
      local ring = keyring.keys()
      assert.truthy(contains(ring.ids, new_id))
      assert.equals(id, ring.active)
      assert(keyring.remove(new_id))
    end)

    it("returns the bytes of the key it added", function()
      local new_id, key = helpers.generate_key()
      -- the same id with the same bytes is a no-op, with other bytes a conflict
      assert.same({ n = 1, true }, pack(keyring.add(new_id, key)))
      assert(keyring.remove(new_id))
    end)

    it("returns a fresh id and key each time", function()
      local a, ka = helpers.generate_key()
      local b, kb = helpers.generate_key()
      assert.not_equals(a, b)
      assert.is_false(ka == kb)
      assert.not_equals(keyring.check_value(a), keyring.check_value(b))
      assert(keyring.remove(a))
      assert(keyring.remove(b))
    end)
  end)


  describe("add", function()
    it("adds a key that is not activated", function()
      local _, key = helpers.generate_key()
      assert.same({ n = 1, true }, pack(keyring.add("ApiAdd01", key)))
      local ring = keyring.keys()
      assert.truthy(contains(ring.ids, "ApiAdd01"))
      assert.equals(id, ring.active)
    end)

    it("answers true when the same id is added again with the same bytes", function()
      local _, key = helpers.generate_key()
      assert(keyring.add("ApiAdd02", key))
      assert.same({ n = 1, true }, pack(keyring.add("ApiAdd02", key)))
    end)

    it("answers nil, err when the same id is added with different bytes", function()
      local _, key = helpers.generate_key()
      local _, other = helpers.generate_key()
      assert(keyring.add("ApiAdd03", key))
      assert.same({ n = 3, nil, "key 'ApiAdd03' already exists with different material", "conflict" },
                  pack(keyring.add("ApiAdd03", other)))
    end)

    it("keeps the original bytes after a refused conflicting add", function()
      local _, key = helpers.generate_key()
      local _, other = helpers.generate_key()
      assert(keyring.add("ApiAdd04", key))
      local kcv = keyring.check_value("ApiAdd04")
      assert.is_nil(keyring.add("ApiAdd04", other))
      assert.equals(kcv, keyring.check_value("ApiAdd04"))
    end)

    it("accepts an id of 255 printable chars and encrypts under it", function()
      local long_id = string.rep("L", 254) .. "!"
      local _, key = helpers.generate_key()
      assert.same({ n = 1, true }, pack(keyring.add(long_id, key)))
      assert(keyring.activate(long_id))
      local value = assert(keyring.encrypt("long id", CONTEXT))
      assert.equals("$ke$2$-" .. long_id .. "-", value:sub(1, 263))
      assert.equals("long id", keyring.decrypt(value, CONTEXT))
      assert(keyring.activate(id))
      assert(keyring.remove(long_id))
    end)
  end)


  describe("activate", function()
    it("makes a key the one used for writes", function()
      local new_id = helpers.generate_key()
      assert.same({ n = 1, true }, pack(keyring.activate(new_id)))
      assert.equals(new_id, keyring.active_id())
      assert.equals("$ke$2$-" .. new_id .. "-", assert(keyring.encrypt("x")):sub(1, 16))
      assert(keyring.activate(id))
      assert(keyring.remove(new_id))
    end)

    it("answers true when the key is already active", function()
      assert.same({ n = 1, true }, pack(keyring.activate(id)))
    end)

    it("answers nil, err when the id is unknown", function()
      assert.same({ n = 3, nil, "key 'NoSuchId' not found", "not_found" }, pack(keyring.activate("NoSuchId")))
      assert.equals(id, keyring.active_id())
    end)
  end)


  describe("remove", function()
    it("removes a key that is not active", function()
      local new_id = helpers.generate_key()
      assert.same({ n = 1, true }, pack(keyring.remove(new_id)))
      assert.is_nil(contains(keyring.keys().ids, new_id))
    end)

    it("makes values under the removed key undecryptable", function()
      local new_id = helpers.generate_key()
      assert(keyring.activate(new_id))
      local value = assert(keyring.encrypt("gone", CONTEXT))
      assert(keyring.activate(id))
      assert(keyring.remove(new_id))
      assert.same({ n = 3, nil, "keyring key '" .. new_id .. "' is not available on this node", "unavailable" },
                  pack(keyring.decrypt(value, CONTEXT)))
    end)

    it("answers nil, err when the key is active", function()
      assert.same({ n = 3, nil, "cannot remove active key", "conflict" }, pack(keyring.remove(id)))
      assert.truthy(contains(keyring.keys().ids, id))
      assert.equals(id, keyring.active_id())
    end)

    it("answers true when the id is unknown", function()
      assert.same({ n = 1, true }, pack(keyring.remove("NoSuchId")))
    end)

    it("lets the id be added again with other bytes", function()
      local _, key = helpers.generate_key()
      local _, other = helpers.generate_key()
      assert(keyring.add("ApiRm01", key))
      assert(keyring.remove("ApiRm01"))
      assert.same({ n = 1, true }, pack(keyring.add("ApiRm01", other)))
    end)
  end)


  describe("keys", function()
    it("returns { ids = array of ids, active = id }", function()
      local ring = keyring.keys()
      assert.equals("table", type(ring))
      assert.equals("table", type(ring.ids))
      local n = 0
      for k, v in pairs(ring.ids) do
        n = n + 1
        assert.equals("number", type(k))
        assert.equals("string", type(v))
      end
      assert.equals(#ring.ids, n)
      assert.equals(id, ring.active)
      for k in pairs(ring) do
        assert.truthy(k == "ids" or k == "active")
      end
    end)

    it("lists a key once it is added and no more once it is removed", function()
      local before = #keyring.keys().ids
      local new_id = helpers.generate_key()
      assert.equals(before + 1, #keyring.keys().ids)
      assert(keyring.remove(new_id))
      assert.equals(before, #keyring.keys().ids)
      assert.is_nil(contains(keyring.keys().ids, new_id))
    end)

    it("lists ids in creation order", function()
      local _, key = helpers.generate_key()
      -- added in this order; alphabetical order would be the reverse
      assert(keyring.add("zzzOrder", key))
      assert(keyring.add("aaaOrder", key))
      local listed = {}
      for _, v in ipairs(keyring.keys().ids) do
        if v == "zzzOrder" or v == "aaaOrder" then
          listed[#listed + 1] = v
        end
      end
      assert.same({ "zzzOrder", "aaaOrder" }, listed)
    end)
  end)


  describe("active_id", function()
    it("returns the active id", function()
      assert.same({ n = 1, id }, pack(keyring.active_id()))
    end)

    it("agrees with keys().active", function()
      assert.equals(keyring.keys().active, keyring.active_id())
    end)
  end)


  describe("usage", function()
    it("returns { [id] = count } with a number for every listed id", function()
      local usage = keyring.usage()
      for _, listed in ipairs(keyring.keys().ids) do
        assert.equals("number", type(usage[listed]))
      end
    end)

    it("counts exactly the encryptions done", function()
      local before = keyring.usage()[id]
      for i = 1, 7 do
        assert(keyring.encrypt("counted " .. i, CONTEXT))
      end
      assert.equals(before + 7, keyring.usage()[id])
    end)

    it("counts 0 for a key that encrypted nothing", function()
      local new_id = helpers.generate_key()
      assert.equals(0, keyring.usage()[new_id])
      assert(keyring.remove(new_id))
    end)

    it("does not count decryptions or values returned unchanged", function()
      local value = assert(keyring.encrypt("x", CONTEXT))
      local before = keyring.usage()[id]
      assert(keyring.decrypt(value, CONTEXT))
      assert.equals(value, keyring.encrypt(value))
      assert.equals("", keyring.encrypt(""))
      assert.is_nil(keyring.encrypt(nil))
      assert.equals(before, keyring.usage()[id])
    end)

    it("counts the encryptions under the key that was active", function()
      local new_id = helpers.generate_key()
      local before = keyring.usage()[id]
      assert(keyring.activate(new_id))
      for _ = 1, 3 do
        assert(keyring.encrypt("y"))
      end
      assert(keyring.activate(id))
      assert.equals(3, keyring.usage()[new_id])
      assert.equals(before, keyring.usage()[id])
    end)
  end)


  describe("check_value", function()
    it("returns 32 lowercase hex chars", function()
      assert.truthy(keyring.check_value(id):match("^" .. string.rep("[0-9a-f]", 32) .. "$"))
    end)

    it("is stable for a key", function()
      assert.equals(keyring.check_value(id), keyring.check_value(id))
    end)

    it("is the first 32 hex chars of HMAC-SHA256(key, 'kong-keyring-kcv')", function()
      -- a fixed test key (the bytes "0123456789abcdef" twice), checked with luaossl
      local raw = "0123456789abcdef0123456789abcdef"
      assert(keyring.add("ApiKcv01", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="))
      local mac = require("openssl.hmac").new(raw, "sha256"):final("kong-keyring-kcv")
      local hex = mac:gsub(".", function(c) return string.format("%02x", c:byte()) end)
      assert.equals(hex:sub(1, 32), keyring.check_value("ApiKcv01"))
    end)

    it("depends on the key bytes only, not on the id", function()
      local new_id, key = helpers.generate_key()
      assert(keyring.add("ApiKcv02", key))
      assert.equals(keyring.check_value(new_id), keyring.check_value("ApiKcv02"))
    end)

    it("answers nil, err when the id is unknown", function()
      assert.same({ n = 3, nil, "key 'NoSuchId' not found", "not_found" }, pack(keyring.check_value("NoSuchId")))
    end)
  end)


  describe("in a fresh process", function()
    it("answers nil, err when called before init", function()
      local out = run_fresh([[
        local keyring = require "kong.keyring"
        io.write(tostring(select(2, keyring.encrypt("x"))), "\n")
        io.write(tostring(select(2, keyring.decrypt("$ke$2$-abc-" .. string.rep("A", 40)))), "\n")
        io.write(tostring(select(2, keyring.generate())), "\n")
        io.write(tostring(select(2, keyring.keys())), "\n")
      ]])
      local msg = "keyring not initialized: call init() in init_by_lua first\n"
      assert.equals(msg .. msg .. msg .. msg, out)
    end)

    it("starts with an empty ring and no active key", function()
      local out = run_fresh([[
        local keyring = require "kong.keyring"
        assert(keyring.init())
        assert(keyring.init_worker())
        local ring = keyring.keys()
        io.write(#ring.ids, " ", tostring(ring.active), "\n")
        io.write(tostring(keyring.active_id()), " ", tostring(select(2, keyring.active_id())), "\n")
      ]])
      assert.equals("0 nil\nnil no active keyring key on this node\n", out)
    end)

    it("answers nil, err when encrypting with no active key", function()
      local out = run_fresh([[
        local keyring = require "kong.keyring"
        assert(keyring.init())
        assert(keyring.generate())
        local v, err = keyring.encrypt("x")
        io.write(tostring(v), " ", tostring(err), "\n")
        io.write("[", keyring.encrypt(""), "]\n")
      ]])
      assert.equals("nil no active keyring key on this node\n[]\n", out)
    end)
  end)
end)
