-- kong.keyring: write_format = "v1" and accept_legacy = false
-- (docs/formats.md, "When to write v1").
-- Options are process-wide: every block restores the defaults in after_each.

local helpers = require "helpers"
local keyring = require "kong.keyring"
local cipher = require "openssl.cipher"


local CONTEXT = "plugins:3c6d3a6b-6b1d-4b4e-9a60-0f5a4e1f7c11"

-- A fixed test key, "0123456789abcdef" twice, so luaossl can check the format.
local TEST_KEY_ID = "FmtKey01"
local TEST_KEY_RAW = "0123456789abcdef0123456789abcdef"
local TEST_KEY_B64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


local function pack(...)
  return { n = select("#", ...), ... }
end


local function from_hex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end


local function to_hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end


-- AES-256-CTR from nonce || 00 00 00 02: GCM's keystream, what v1 stores.
local function ctr(raw_key, nonce, data)
  return cipher.new("aes-256-ctr"):encrypt(raw_key, nonce .. "\0\0\0\2"):final(data)
end


describe("keyring (format v1)", function()
  local id

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    id = helpers.generate_key()
    assert(keyring.add(TEST_KEY_ID, TEST_KEY_B64))
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)

  after_each(function()
    assert(keyring.init({}))
  end)


  it("writes $ke$1$-<id>-<nonce hex>-<ciphertext hex> with write_format 'v1'", function()
    assert.same({ n = 1, true }, pack(keyring.init({ write_format = "v1" })))
    local value = assert(keyring.encrypt("hello", CONTEXT))
    local vid, nonce, ct = value:match("^%$ke%$1%$%-([^-]+)%-([^-]+)%-([^-]+)$")
    assert.equals(id, vid)
    assert.truthy(nonce:match("^" .. string.rep("[0-9a-f]", 24) .. "$"))
    assert.truthy(ct:match("^" .. string.rep("[0-9a-f]", 10) .. "$"))
  end)

  it("decrypts the v1 values it writes", function()
    assert(keyring.init({ write_format = "v1" }))
    local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
    assert.equals("s3cr3t", keyring.decrypt(value, CONTEXT))
  end)

  it("decrypts v1 values after switching back to v2", function()
    assert(keyring.init({ write_format = "v1" }))
    local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
    assert(keyring.init({}))
    assert.equals("s3cr3t", keyring.decrypt(value, CONTEXT))
  end)

  it("writes v2 again after init({})", function()
    assert(keyring.init({ write_format = "v1" }))
    assert(keyring.init({}))
    assert.equals("$ke$2$-" .. id .. "-", assert(keyring.encrypt("x")):sub(1, #id + 8))
  end)

  it("writes v2 again after init() without options", function()
    assert(keyring.init({ write_format = "v1" }))
    assert(keyring.init())
    assert.equals("$ke$2$-" .. id .. "-", assert(keyring.encrypt("x")):sub(1, #id + 8))
  end)

  it("ignores the context of v1 values (the format has no AAD)", function()
    assert(keyring.init({ write_format = "v1" }))
    local value = assert(keyring.encrypt("s3cr3t", CONTEXT))
    assert.equals("s3cr3t", keyring.decrypt(value, "another:row"))
  end)

  it("stores the GCM keystream from nonce || 00000002 (checked with luaossl)", function()
    assert(keyring.init({ write_format = "v1" }))
    assert(keyring.activate(TEST_KEY_ID))
    local value = assert(keyring.encrypt("basic-auth sha1 hex 0123456789abcdef0123"))
    local nonce, ct = value:match("^%$ke%$1%$%-FmtKey01%-(%x+)%-(%x+)$")
    assert.equals("basic-auth sha1 hex 0123456789abcdef0123", ctr(TEST_KEY_RAW, from_hex(nonce), from_hex(ct)))
  end)

  it("decrypts a v1 value built with luaossl", function()
    local nonce = from_hex("000102030405060708090a0b")
    local ct = ctr(TEST_KEY_RAW, nonce, "written by kong enterprise")
    local value = "$ke$1$-" .. TEST_KEY_ID .. "-" .. to_hex(nonce) .. "-" .. to_hex(ct)
    assert.equals("written by kong enterprise", keyring.decrypt(value, CONTEXT))
  end)

  it("decrypts a v1 value with uppercase hex", function()
    local nonce = from_hex("0A0B0C0D0E0F101112131415")
    local ct = ctr(TEST_KEY_RAW, nonce, "upper")
    local value = "$ke$1$-" .. TEST_KEY_ID .. "-" .. to_hex(nonce):upper() .. "-" .. to_hex(ct):upper()
    assert.equals("upper", keyring.decrypt(value))
  end)

  it("counts v1 encryptions in usage", function()
    assert(keyring.init({ write_format = "v1" }))
    local before = keyring.usage()[id]
    assert(keyring.encrypt("a"))
    assert(keyring.encrypt("b"))
    assert.equals(before + 2, keyring.usage()[id])
  end)

  it("returns a v2 value unchanged in v1 mode (no double encryption)", function()
    local v2 = assert(keyring.encrypt("x", CONTEXT))
    assert(keyring.init({ write_format = "v1" }))
    assert.same({ n = 1, v2 }, pack(keyring.encrypt(v2, CONTEXT)))
  end)
end)


describe("keyring (accept_legacy = false)", function()
  local id, v1, v2

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    id = helpers.generate_key()
    assert(keyring.activate(id))
    assert(keyring.init({ write_format = "v1" }))
    v1 = assert(keyring.encrypt("legacy", CONTEXT))
    assert(keyring.init({}))
    v2 = assert(keyring.encrypt("current", CONTEXT))
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)

  after_each(function()
    assert(keyring.init({}))
  end)


  it("answers nil, err for a v1 value", function()
    assert.same({ n = 1, true }, pack(keyring.init({ accept_legacy = false })))
    assert.same({ n = 3, nil, "legacy v1 value refused: keyring_accept_legacy is off", "invalid" },
                pack(keyring.decrypt(v1, CONTEXT)))
  end)

  it("answers nil, err for an unmarked value", function()
    assert(keyring.init({ accept_legacy = false }))
    assert.same({ n = 3, nil, "unencrypted value refused: keyring_accept_legacy is off", "invalid" },
                pack(keyring.decrypt("substituted plaintext", CONTEXT)))
  end)

  it("still decrypts v2 values", function()
    assert(keyring.init({ accept_legacy = false }))
    assert.same({ n = 1, "current" }, pack(keyring.decrypt(v2, CONTEXT)))
  end)

  it("still returns the empty string (an empty field) unchanged", function()
    assert(keyring.init({ accept_legacy = false }))
    assert.same({ n = 1, "" }, pack(keyring.decrypt("", CONTEXT)))
  end)

  it("still encrypts, in v2", function()
    assert(keyring.init({ accept_legacy = false }))
    local value = assert(keyring.encrypt("new", CONTEXT))
    assert.equals("$ke$2$-" .. id .. "-", value:sub(1, #id + 8))
    assert.equals("new", keyring.decrypt(value, CONTEXT))
  end)

  it("accepts v1 and unmarked values again after init({})", function()
    assert(keyring.init({ accept_legacy = false }))
    assert(keyring.init({}))
    assert.equals("legacy", keyring.decrypt(v1, CONTEXT))
    assert.equals("plain", keyring.decrypt("plain", CONTEXT))
  end)

  it("accepts them again after init({ accept_legacy = true })", function()
    assert(keyring.init({ accept_legacy = false }))
    assert(keyring.init({ accept_legacy = true }))
    assert.equals("legacy", keyring.decrypt(v1, CONTEXT))
  end)
end)
