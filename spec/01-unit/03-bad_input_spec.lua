-- kong.keyring: bad input. Wrong types raise with the argument's name; bad
-- content answers nil, err with a message that names what is wrong; nothing
-- crashes and nothing malformed is ever passed through as plaintext.

local helpers = require "helpers"
local keyring = require "kong.keyring"


local CONTEXT = "vaults:5d1e2b0c-8f43-4c1e-b0a2-7d6f9e3a1c55"
local KEY_32 = string.rep("A", 43) .. "=" -- base64 of 32 zero bytes: the right length


local function pack(...)
  return { n = select("#", ...), ... }
end


describe("keyring (bad input)", function()
  local id, valid

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    local key
    id, key = assert(keyring.generate())
    helpers.remember_key(key)
    assert(keyring.activate(id))
    valid = assert(keyring.encrypt("the plaintext", CONTEXT))
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)


  describe("wrong types", function()
    for _, case in ipairs({
      { "a number", 42, "number" },
      { "a table", {}, "table" },
      { "a boolean", true, "boolean" },
      { "a function", print, "function" },
    }) do
      local title, value, typ = case[1], case[2], case[3]

      it("raises when encrypt gets " .. title, function()
        assert.has_error(function() keyring.encrypt(value) end,
                         "bad 'value' argument: string expected, got " .. typ)
      end)

      it("raises when decrypt gets " .. title, function()
        assert.has_error(function() keyring.decrypt(value) end,
                         "bad 'value' argument: string expected, got " .. typ)
      end)

      it("raises when encrypt gets " .. title .. " as context", function()
        assert.has_error(function() keyring.encrypt("x", value) end,
                         "bad 'context' argument: string expected, got " .. typ)
      end)

      it("raises when decrypt gets " .. title .. " as context", function()
        assert.has_error(function() keyring.decrypt(valid, value) end,
                         "bad 'context' argument: string expected, got " .. typ)
      end)
    end

    it("raises when add gets a non-string id or key", function()
      assert.has_error(function() keyring.add(nil, KEY_32) end, "bad 'id' argument: string expected, got nil")
      assert.has_error(function() keyring.add("BadType1", 32) end, "bad 'key' argument: string expected, got number")
    end)

    it("raises when activate, remove or check_value gets a non-string id", function()
      assert.has_error(function() keyring.activate(1) end, "bad 'id' argument: string expected, got number")
      assert.has_error(function() keyring.remove({}) end, "bad 'id' argument: string expected, got table")
      assert.has_error(function() keyring.check_value(nil) end, "bad 'id' argument: string expected, got nil")
    end)

    it("raises when export, import, recovery_row, recover or public_key_id get non-strings", function()
      assert.has_error(function() keyring.export(nil) end, "bad 'public_pem' argument: string expected, got nil")
      assert.has_error(function() keyring.import(nil, "pem") end, "bad 'blob' argument: string expected, got nil")
      assert.has_error(function() keyring.import("blob", false) end,
                       "bad 'private_pem' argument: string expected, got boolean")
      assert.has_error(function() keyring.recovery_row(id, 1) end,
                       "bad 'public_pem' argument: string expected, got number")
      assert.has_error(function() keyring.recover(id, nil, "pem") end, "bad 'row' argument: string expected, got nil")
      assert.has_error(function() keyring.public_key_id({}) end,
                       "bad 'public_pem' argument: string expected, got table")
    end)
  end)


  describe("nil, empty and large values", function()
    it("returns nil for encrypt(nil)", function()
      assert.same({ n = 1, nil }, pack(keyring.encrypt(nil)))
    end)

    it("returns nil for decrypt(nil)", function()
      assert.same({ n = 1, nil }, pack(keyring.decrypt(nil, CONTEXT)))
    end)

    it("returns '' for encrypt('')", function()
      assert.same({ n = 1, "" }, pack(keyring.encrypt("", CONTEXT)))
    end)

    it("returns '' for decrypt('')", function()
      assert.same({ n = 1, "" }, pack(keyring.decrypt("", CONTEXT)))
    end)

    it("round-trips a 1 MiB value", function()
      local plain = string.rep("0123456789abcdef", 65536)
      local value = assert(keyring.encrypt(plain, CONTEXT))
      assert.equals(#id + 8 + math.ceil((12 + 1048576 + 16) * 4 / 3), #value)
      assert.is_true(keyring.decrypt(value, CONTEXT) == plain)
    end)

    it("answers nil, err for a 1 MiB value under a wrong context", function()
      local value = assert(keyring.encrypt(string.rep("x", 1048576), CONTEXT))
      assert.same({ n = 3, nil, "authentication failed", "authentication" }, pack(keyring.decrypt(value, "other")))
    end)

    it("still round-trips a short value after a 1 MiB one", function()
      assert(keyring.encrypt(string.rep("x", 1048576)))
      local value = assert(keyring.encrypt("short", CONTEXT))
      assert.equals("short", keyring.decrypt(value, CONTEXT))
    end)
  end)


  describe("truncated values", function()
    it("never decrypts a prefix of a v2 value to the plaintext", function()
      for len = 0, #valid - 1 do
        local prefix = valid:sub(1, len)
        local res = pack(keyring.decrypt(prefix, CONTEXT))
        if len < 4 then
          -- shorter than the "$ke$" marker: plaintext, returned unchanged
          assert.same({ n = 1, prefix }, res)
        else
          assert.equals(3, res.n)
          assert.is_nil(res[1])
          local err = res[2]
          assert.equals(err == "authentication failed" and "authentication" or "invalid", res[3])
          assert.is_true(err == "authentication failed"
                         or err == "malformed encrypted value: unknown format version"
                         or err == "malformed encrypted value: missing key id"
                         or err == "malformed encrypted value: truncated v2 value"
                         or err == "malformed encrypted value: bad base64url in v2 value",
                         "prefix of length " .. len .. ": " .. tostring(err))
        end
      end
    end)

    it("answers nil, err for the header alone", function()
      assert.same({ n = 3, nil, "malformed encrypted value: truncated v2 value", "invalid" },
                  pack(keyring.decrypt("$ke$2$-" .. id .. "-", CONTEXT)))
    end)

    it("answers nil, err for a v2 value missing its last character", function()
      local res = pack(keyring.decrypt(valid:sub(1, -2), CONTEXT))
      assert.is_nil(res[1])
      assert.equals("string", type(res[2]))
    end)

    it("answers nil, err for a v2 value with its 16-byte tag cut off", function()
      -- 24 base64 chars are 18 bytes: what is left is shorter than nonce + tag
      local header = "$ke$2$-" .. id .. "-"
      local payload = valid:sub(#header + 1)
      local cut = payload:sub(1, #payload - 24)
      assert.same({ n = 3, nil, "malformed encrypted value: truncated v2 value", "invalid" },
                  pack(keyring.decrypt(header .. cut, CONTEXT)))
    end)
  end)


  describe("malformed values", function()
    local V1_NONCE = "000102030405060708090a0b"

    it("answers nil, err for odd-length hex in a v1 value", function()
      assert.same({ n = 3, nil, "malformed encrypted value: odd-length hex in v1 value", "invalid" },
                  pack(keyring.decrypt("$ke$1$-" .. id .. "-" .. V1_NONCE .. "-abc")))
    end)

    it("answers nil, err for a bad hex pair in a v1 value", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad hex in v1 value", "invalid" },
                  pack(keyring.decrypt("$ke$1$-" .. id .. "-" .. V1_NONCE .. "-ab0g")))
    end)

    it("answers nil, err for a bad hex nonce in a v1 value", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad v1 nonce", "invalid" },
                  pack(keyring.decrypt("$ke$1$-" .. id .. "-00010203040506070809zz0b-abcd")))
    end)

    it("answers nil, err for a short nonce in a v1 value", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad v1 nonce", "invalid" },
                  pack(keyring.decrypt("$ke$1$-" .. id .. "-0001-abcd")))
    end)

    it("answers nil, err for a v1 value without ciphertext part", function()
      assert.same({ n = 3, nil, "malformed encrypted value: truncated v1 value", "invalid" },
                  pack(keyring.decrypt("$ke$1$-" .. id .. "-" .. V1_NONCE)))
    end)

    for _, case in ipairs({
      { "'!'", "!" }, { "'*'", "*" }, { "standard base64 '+'", "+" }, { "standard base64 '/'", "/" },
      { "a space", " " },
    }) do
      it("answers nil, err for " .. case[1] .. " in a v2 payload", function()
        local i = #valid - 10
        local bad = valid:sub(1, i - 1) .. case[2] .. valid:sub(i + 1)
        assert.same({ n = 3, nil, "malformed encrypted value: bad base64url in v2 value", "invalid" },
                    pack(keyring.decrypt(bad, CONTEXT)))
      end)
    end

    it("answers nil, err for '=' padding after a v2 payload", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad base64url in v2 value", "invalid" },
                  pack(keyring.decrypt(valid .. "=", CONTEXT)))
    end)

    it("answers nil, err for an unknown marker version", function()
      assert.same({ n = 3, nil, "malformed encrypted value: unknown format version", "invalid" },
                  pack(keyring.decrypt("$ke$3$-" .. id .. "-" .. valid:sub(#id + 9), CONTEXT)))
    end)

    it("answers nil, err for the bare marker", function()
      assert.same({ n = 3, nil, "malformed encrypted value: unknown format version", "invalid" },
                  pack(keyring.decrypt("$ke$", CONTEXT)))
    end)

    it("answers nil, err for the $ke$unavailable$ placeholder", function()
      assert.same({ n = 3, nil, "malformed encrypted value: unknown format version", "invalid" },
                  pack(keyring.decrypt("$ke$unavailable$" .. string.rep("ab", 32), CONTEXT)))
    end)

    it("answers nil, err for a v2 value without key id", function()
      assert.same({ n = 3, nil, "malformed encrypted value: missing key id", "invalid" },
                  pack(keyring.decrypt("$ke$2$--" .. valid:sub(#id + 9), CONTEXT)))
    end)

    it("answers nil, err for a v2 value whose id is not a valid id", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad key id", "invalid" },
                  pack(keyring.decrypt("$ke$2$-a b-" .. valid:sub(#id + 9), CONTEXT)))
    end)

    it("answers nil, err for a v1 value whose id is not a valid id", function()
      assert.same({ n = 3, nil, "malformed encrypted value: bad key id", "invalid" },
                  pack(keyring.decrypt("$ke$1$-a b-" .. V1_NONCE .. "-abcd")))
    end)
  end)


  describe("unknown keys", function()
    it("answers nil, err naming the id for a v2 value under an unknown key", function()
      assert.same({ n = 3, nil, "keyring key 'NoSuchK1' is not available on this node", "unavailable" },
                  pack(keyring.decrypt("$ke$2$-NoSuchK1-" .. valid:sub(#id + 9), CONTEXT)))
    end)

    it("answers nil, err naming the id for a v1 value under an unknown key", function()
      assert.same({ n = 3, nil, "keyring key 'NoSuchK1' is not available on this node", "unavailable" },
                  pack(keyring.decrypt("$ke$1$-NoSuchK1-000102030405060708090a0b-abcd")))
    end)
  end)


  describe("keys", function()
    it("answers nil, err for a key of 30 bytes", function()
      assert.same({ n = 3, nil, "key must be 32 bytes", "invalid" }, pack(keyring.add("BadLen01", string.rep("A", 40))))
    end)

    it("answers nil, err for a key of 33 bytes", function()
      assert.same({ n = 3, nil, "key must be 32 bytes", "invalid" }, pack(keyring.add("BadLen02", string.rep("A", 44))))
    end)

    it("answers nil, err for an empty key", function()
      assert.same({ n = 3, nil, "key must be 32 bytes", "invalid" }, pack(keyring.add("BadLen03", "")))
    end)

    it("answers nil, err for a key that is not base64", function()
      assert.same({ n = 3, nil, "invalid base64 in key", "invalid" }, pack(keyring.add("BadB6401", "not base64 at all!")))
    end)

    it("answers nil, err for a base64url key", function()
      assert.same({ n = 3, nil, "invalid base64 in key", "invalid" },
                  pack(keyring.add("BadB6402", "-_" .. string.rep("A", 41) .. "=")))
    end)

    it("adds nothing when it refuses a key", function()
      keyring.add("BadLen04", string.rep("A", 40))
      for _, listed in ipairs(keyring.keys().ids) do
        assert.not_equals("BadLen04", listed)
      end
    end)
  end)


  describe("key ids", function()
    for _, case in ipairs({
      { "a '-'", "ab-cd", "invalid key id: '-' is not allowed" },
      { "a '$'", "ab$cd", "invalid key id: '$' is not allowed" },
      { "a space", "ab cd", "invalid key id: only printable ASCII without spaces" },
      { "a tab", "ab\tcd", "invalid key id: only printable ASCII without spaces" },
      { "a non-ASCII char", "ab\195\169cd", "invalid key id: only printable ASCII without spaces" },
      { "256 chars", string.rep("i", 256), "invalid key id: longer than 255 chars" },
      { "no char", "", "invalid key id: empty" },
    }) do
      local title, bad_id, message = case[1], case[2], case[3]

      it("answers nil, err when add gets an id with " .. title, function()
        assert.same({ n = 3, nil, message, "invalid" }, pack(keyring.add(bad_id, KEY_32)))
      end)

      it("answers nil, err when activate gets an id with " .. title, function()
        assert.same({ n = 3, nil, message, "invalid" }, pack(keyring.activate(bad_id)))
      end)

      it("answers nil, err when remove gets an id with " .. title, function()
        assert.same({ n = 3, nil, message, "invalid" }, pack(keyring.remove(bad_id)))
      end)

      it("answers nil, err when check_value gets an id with " .. title, function()
        assert.same({ n = 3, nil, message, "invalid" }, pack(keyring.check_value(bad_id)))
      end)
    end
  end)
end)
