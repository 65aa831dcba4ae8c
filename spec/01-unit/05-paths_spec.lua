-- One case table, run through both bindings of the core: the FFI hot path
-- (`kong.keyring` encrypt/decrypt) and the mlua module (`kong.keyring.native`
-- encrypt/decrypt). Both must give the same results and the same messages.

local helpers = require "helpers"
local keyring = require "kong.keyring"
local native = require "kong.keyring.native"


local CONTEXT = "basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2"
local MIB = string.rep("0123456789abcdef", 65536)
local NONCE = "000102030405060708090a0b"


local PATHS = {
  { name = "FFI path (kong.keyring)", encrypt = keyring.encrypt, decrypt = keyring.decrypt },
  { name = "mlua path (kong.keyring.native)", encrypt = native.encrypt, decrypt = native.decrypt },
}


local function pack(...)
  return { n = select("#", ...), ... }
end


-- Values the cases need, made in lazy_setup: `fx.id` (active), `fx.other`,
-- `fx.v2` ("hello" under CONTEXT), `fx.v1` ("legacy" in EE's format).
local fx = {}


local function payload(value)
  return value:sub(#fx.id + 9)
end


-- Each case: `op`, `value` (or `make`, a function returning it once fx is
-- ready), `context`, and one of
--   returns   = exact results (or `returns_fn` giving them);
--   encrypts  = the plaintext: the result is a v2 value under the active key,
--               exactly sized, that both paths decrypt back under `context`;
--   raises    = the type named in the error (the Lua API's exact message is
--               "bad '<arg>' argument: string expected, got <type>").
local CASES = {
  -- encrypt
  { title = "encrypts a value without context", op = "encrypt", value = "s3cr3t", encrypts = "s3cr3t" },
  { title = "encrypts a value with a context", op = "encrypt", value = "s3cr3t", context = CONTEXT,
    encrypts = "s3cr3t" },
  { title = "encrypts binary bytes", op = "encrypt", value = "\0\1\255 bytes\0", context = "ctx\0",
    encrypts = "\0\1\255 bytes\0" },
  { title = "encrypts a 1 MiB value", op = "encrypt", value = MIB, context = CONTEXT, encrypts = MIB },
  { title = "returns nil for a nil value", op = "encrypt", value = nil, returns = { n = 1, nil } },
  { title = "returns an empty value unchanged", op = "encrypt", value = "", context = CONTEXT,
    returns = { n = 1, "" } },
  { title = "returns a marked value unchanged", op = "encrypt", make = function() return fx.v2 end,
    returns_fn = function() return { n = 1, fx.v2 } end },
  { title = "raises for a number value", op = "encrypt", value = 42, raises = "number", arg = "value" },
  { title = "raises for a table value", op = "encrypt", value = {}, raises = "table", arg = "value" },
  { title = "raises for a boolean value", op = "encrypt", value = false, raises = "boolean", arg = "value" },
  { title = "raises for a function value", op = "encrypt", value = print, raises = "function", arg = "value" },
  { title = "raises for a number context", op = "encrypt", value = "x", context = 7, raises = "number",
    arg = "context" },
  { title = "raises for a table context", op = "encrypt", value = "x", context = {}, raises = "table",
    arg = "context" },

  -- decrypt
  { title = "decrypts a v2 value under its context", op = "decrypt", make = function() return fx.v2 end,
    context = CONTEXT, returns = { n = 1, "hello" } },
  { title = "decrypts a v1 value", op = "decrypt", make = function() return fx.v1 end,
    returns = { n = 1, "legacy" } },
  { title = "decrypts a v1 value with uppercase hex", op = "decrypt",
    make = function() return fx.v1:sub(1, #fx.id + 8) .. fx.v1:sub(#fx.id + 9):upper() end,
    returns = { n = 1, "legacy" } },
  { title = "decrypts a 1 MiB value", op = "decrypt", make = function() return fx.v2_mib end, context = CONTEXT,
    returns = { n = 1, MIB } },
  { title = "returns an unmarked value unchanged", op = "decrypt", value = "plain text", context = CONTEXT,
    returns = { n = 1, "plain text" } },
  { title = "returns nil for a nil value", op = "decrypt", value = nil, returns = { n = 1, nil } },
  { title = "returns an empty value unchanged", op = "decrypt", value = "", returns = { n = 1, "" } },
  { title = "returns a prefix shorter than the marker unchanged", op = "decrypt", value = "$ke",
    returns = { n = 1, "$ke" } },
  { title = "answers nil, err for a wrong context", op = "decrypt", make = function() return fx.v2 end,
    context = "basicauth_credentials:another-row", returns = { n = 3, nil, "authentication failed", "authentication" } },
  { title = "answers nil, err for a missing context", op = "decrypt", make = function() return fx.v2 end,
    returns = { n = 3, nil, "authentication failed", "authentication" } },
  { title = "answers nil, err for a changed payload", op = "decrypt", context = CONTEXT,
    make = function()
      local i = #fx.v2 - 3
      return fx.v2:sub(1, i - 1) .. (fx.v2:sub(i, i) == "A" and "B" or "A") .. fx.v2:sub(i + 1)
    end,
    returns = { n = 3, nil, "authentication failed", "authentication" } },
  { title = "answers nil, err for a swapped key id", op = "decrypt", context = CONTEXT,
    make = function() return "$ke$2$-" .. fx.other .. "-" .. payload(fx.v2) end,
    returns = { n = 3, nil, "authentication failed", "authentication" } },
  { title = "answers nil, err for a truncated v2 value", op = "decrypt", context = CONTEXT,
    make = function() return fx.v2:sub(1, #fx.id + 20) end,
    returns = { n = 3, nil, "malformed encrypted value: truncated v2 value", "invalid" } },
  { title = "answers nil, err for bad base64url in a v2 value", op = "decrypt", context = CONTEXT,
    make = function() return fx.v2:sub(1, -6) .. "!" .. fx.v2:sub(-4) end,
    returns = { n = 3, nil, "malformed encrypted value: bad base64url in v2 value", "invalid" } },
  { title = "answers nil, err for a v2 value without key id", op = "decrypt",
    make = function() return "$ke$2$--" .. payload(fx.v2) end,
    returns = { n = 3, nil, "malformed encrypted value: missing key id", "invalid" } },
  { title = "answers nil, err for a v2 value with an invalid key id", op = "decrypt",
    make = function() return "$ke$2$-a$b-" .. payload(fx.v2) end,
    returns = { n = 3, nil, "malformed encrypted value: bad key id", "invalid" } },
  { title = "answers nil, err for an unknown marker version", op = "decrypt",
    make = function() return "$ke$3$-" .. fx.id .. "-" .. payload(fx.v2) end,
    returns = { n = 3, nil, "malformed encrypted value: unknown format version", "invalid" } },
  { title = "answers nil, err for the $ke$unavailable$ placeholder", op = "decrypt",
    value = "$ke$unavailable$" .. string.rep("0f", 32),
    returns = { n = 3, nil, "malformed encrypted value: unknown format version", "invalid" } },
  { title = "answers nil, err for a v2 value under an unknown key", op = "decrypt",
    make = function() return "$ke$2$-NoSuchK1-" .. payload(fx.v2) end,
    returns = { n = 3, nil, "keyring key 'NoSuchK1' is not available on this node", "unavailable" } },
  { title = "answers nil, err for a v1 value under an unknown key", op = "decrypt",
    value = "$ke$1$-NoSuchK1-" .. NONCE .. "-abcd",
    returns = { n = 3, nil, "keyring key 'NoSuchK1' is not available on this node", "unavailable" } },
  { title = "answers nil, err for odd-length hex in a v1 value", op = "decrypt",
    make = function() return "$ke$1$-" .. fx.id .. "-" .. NONCE .. "-abc" end,
    returns = { n = 3, nil, "malformed encrypted value: odd-length hex in v1 value", "invalid" } },
  { title = "answers nil, err for bad hex in a v1 value", op = "decrypt",
    make = function() return "$ke$1$-" .. fx.id .. "-" .. NONCE .. "-zz" end,
    returns = { n = 3, nil, "malformed encrypted value: bad hex in v1 value", "invalid" } },
  { title = "answers nil, err for a bad nonce in a v1 value", op = "decrypt",
    make = function() return "$ke$1$-" .. fx.id .. "-0102-abcd" end,
    returns = { n = 3, nil, "malformed encrypted value: bad v1 nonce", "invalid" } },
  { title = "raises for a number value", op = "decrypt", value = 42, raises = "number", arg = "value" },
  { title = "raises for a table value", op = "decrypt", value = {}, raises = "table", arg = "value" },
  { title = "raises for a boolean value", op = "decrypt", value = true, raises = "boolean", arg = "value" },
  { title = "raises for a function value", op = "decrypt", value = print, raises = "function", arg = "value" },
  { title = "raises for a number context", op = "decrypt", value = "x", context = 7, raises = "number",
    arg = "context" },
}


local function input(case)
  if case.make then
    return case.make()
  end
  return case.value
end


local function call(path, case)
  return pack(path[case.op](input(case), case.context))
end


local function check_encrypted(case, res)
  local header = "$ke$2$-" .. fx.id .. "-"
  assert.equals(1, res.n)
  assert.equals("string", type(res[1]))
  assert.equals(header, res[1]:sub(1, #header))
  assert.equals(#header + math.ceil((12 + #case.encrypts + 16) * 4 / 3), #res[1])
  for _, other in ipairs(PATHS) do
    local back = pack(other.decrypt(res[1], case.context))
    assert.equals(1, back.n)
    assert.is_true(back[1] == case.encrypts, other.name .. " does not decrypt it back")
  end
end


describe("keyring (FFI and mlua paths)", function()
  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    fx.id = helpers.generate_key()
    fx.other = helpers.generate_key()
    assert(keyring.activate(fx.id))
    fx.v2 = assert(keyring.encrypt("hello", CONTEXT))
    fx.v2_mib = assert(keyring.encrypt(MIB, CONTEXT))
    assert(keyring.init({ write_format = "v1" }))
    fx.v1 = assert(keyring.encrypt("legacy"))
    assert(keyring.init({}))
  end)

  before_each(function()
    assert(keyring.activate(fx.id))
  end)


  for _, path in ipairs(PATHS) do
    describe(path.name, function()
      for _, case in ipairs(CASES) do
        it(case.op .. " " .. case.title, function()
          if case.raises then
            local ok, err = pcall(path[case.op], input(case), case.context)
            assert.is_false(ok, case.op .. " did not raise for a " .. case.raises .. " " .. case.arg)
            local message = "bad '" .. case.arg .. "' argument: string expected, got " .. case.raises
            if path.encrypt == keyring.encrypt then
              assert.equals(message, (tostring(err):gsub("^.-:%d+: ", "", 1)))
            else
              -- the same text, inside mlua's "runtime error: ..." and traceback
              assert.truthy(tostring(err):find(message, 1, true))
            end

          elseif case.encrypts then
            check_encrypted(case, call(path, case))

          else
            local expected = case.returns_fn and case.returns_fn() or case.returns
            local res = call(path, case)
            -- compare long strings without printing them
            if expected[1] == MIB then
              assert.equals(expected.n, res.n)
              assert.is_true(res[1] == MIB)
            else
              assert.same(expected, res)
            end
          end
        end)
      end
    end)
  end


  it("gives the same results on both paths for every case", function()
    -- lists the cases that differ (raised or not, count, value, message);
    -- values are compared, never printed
    local differ = {}
    for _, case in ipairs(CASES) do
      if not case.encrypts then
        local ra = pack(pcall(PATHS[1][case.op], input(case), case.context))
        local rb = pack(pcall(PATHS[2][case.op], input(case), case.context))
        if ra[1] ~= rb[1] then
          differ[#differ + 1] = case.op .. " " .. case.title .. ": raises on one path only"
        elseif ra[1] and (ra.n ~= rb.n or ra[2] ~= rb[2] or ra[3] ~= rb[3]) then
          differ[#differ + 1] = case.op .. " " .. case.title .. ": different results"
        end
      end
    end
    assert.same({}, differ)
  end)

  it("counts encryptions from both paths in one usage counter", function()
    local before = keyring.usage()[fx.id]
    assert(keyring.encrypt("a"))
    assert(native.encrypt("b"))
    assert(native.encrypt("c", CONTEXT))
    assert.equals(before + 3, keyring.usage()[fx.id])
  end)
end)
