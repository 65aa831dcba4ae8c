-- kong.keyring: field encryption with a keyring shared by every nginx worker.
--
-- No Kong dependency: works in any OpenResty application (and plain LuaJIT).
-- The per-field hot path (encrypt/decrypt) calls the native library through
-- LuaJIT FFI, which the JIT compiles; everything else goes through the mlua
-- module `kong.keyring.native`. See README.md for the full API.

local ffi = require "ffi"
local cpu = require "kong.keyring.cpu"


-- The native library: on package.cpath, else where `luarocks make` puts it
-- beside these Lua files (Kong's CLI applies lua_package_path but not
-- lua_package_cpath), or in this repository's lib/.
local function native_path()
  local path = package.searchpath("kong.keyring.native", package.cpath)
  if path then
    return path, true
  end
  local lua_dir = debug.getinfo(1, "S").source:match("^@(.*)/kong/keyring/init%.lua$")
  if not lua_dir then
    return nil
  end
  local candidates = {
    (lua_dir:gsub("/share/lua/5%.1$", "/lib/lua/5.1")) .. "/kong/keyring/native.so",
    (lua_dir:gsub("/lua$", "/lib")) .. "/kong/keyring/native.so",
  }
  for _, candidate in ipairs(candidates) do
    local f = io.open(candidate, "rb")
    if f then
      f:close()
      return candidate, false
    end
  end
end


do
  local path, on_cpath = native_path()
  if path then -- when it is not found, the require below says so
    local ok, err = cpu.check(path)
    if not ok then
      error(err, 0)
    end
    if not on_cpath then
      package.preload["kong.keyring.native"] = assert(package.loadlib(path, "luaopen_kong_keyring_native"))
    end
  end
end


local native = require "kong.keyring.native"


local ffi_new = ffi.new
local ffi_cast = ffi.cast
local ffi_string = ffi.string
local type = type
local error = error
local tostring = tostring
local tonumber = tonumber


ffi.cdef [[
typedef int (*kong_keyring_field_fn)(const char *in, size_t in_len,
                                     const char *ctx, size_t ctx_len,
                                     char *out, size_t *out_len,
                                     char *err, size_t *err_len);
]]


-- return codes of src/ffi.rs
local KK_OK = 0
local KK_UNCHANGED = 1
local KK_AGAIN = -2

-- the kind of a failed field call, by its return code (src/ffi.rs)
local FIELD_KINDS = { [-1] = "internal", [-3] = "invalid", [-4] = "authentication", [-5] = "unavailable" }

local ERR_SIZE = 512

local kk_encrypt = ffi_cast("kong_keyring_field_fn", native.ffi.encrypt)
local kk_decrypt = ffi_cast("kong_keyring_field_fn", native.ffi.decrypt)

-- one scratch output buffer, doubled when the library asks for more (-2)
local buf_size = 4096
local buf = ffi_new("char[?]", buf_size)
local out_len = ffi_new("size_t[1]")
local err_buf = ffi_new("char[?]", ERR_SIZE)
local err_len = ffi_new("size_t[1]")


local _M = {
  _VERSION = "0.1.0",
}


local function check_string(name, value, level)
  if type(value) ~= "string" then
    error("bad '" .. name .. "' argument: string expected, got " .. type(value), level + 1)
  end
end


local function check_optional_string(name, value, level)
  if value ~= nil and type(value) ~= "string" then
    error("bad '" .. name .. "' argument: string expected, got " .. type(value), level + 1)
  end
end


local function grow(need)
  while buf_size < need do
    buf_size = buf_size * 2
  end
  buf = ffi_new("char[?]", buf_size)
end


-- No loop and no tail call to ffi.string here: either would abort the JIT
-- trace of the caller's loop (LuaJIT: "leaving loop in root trace").
-- Called as a tail call from the public functions, so argument errors at
-- level 2 point at their caller.
local field_call
function field_call(fn, value, context)
  if value == nil then
    return nil
  end
  check_string("value", value, 2)
  check_optional_string("context", context, 2)
  context = context or ""

  out_len[0] = buf_size
  err_len[0] = ERR_SIZE
  local rc = fn(value, #value, context, #context, buf, out_len, err_buf, err_len)
  if rc == KK_AGAIN then
    -- only the first value larger than the buffer gets here
    grow(tonumber(out_len[0]))
    out_len[0] = buf_size
    err_len[0] = ERR_SIZE
    rc = fn(value, #value, context, #context, buf, out_len, err_buf, err_len)
  end

  if rc == KK_OK then
    local result = ffi_string(buf, out_len[0])
    return result
  end

  if rc == KK_UNCHANGED then
    return value
  end

  if rc == KK_AGAIN then
    -- the active key changed between the two calls and its value needs more
    -- room still: grow again (rare; the error buffer holds nothing here)
    grow(tonumber(out_len[0]))
    local again, again_err, kind = field_call(fn, value, context)
    return again, again_err, kind
  end

  local err = ffi_string(err_buf, err_len[0])
  return nil, err, FIELD_KINDS[rc] or "internal"
end


---
-- Creates the shared keyring region. Call once in `init_by_lua*` (before
-- nginx forks its workers); calling it again (e.g. on `nginx -s reload`) keeps
-- the keys and applies the new options.
-- @tparam[opt] table opts `write_format` ("v2" or "v1"), `accept_legacy` (boolean)
-- @return true, or nil and an error string
function _M.init(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad 'opts' argument: table expected, got " .. type(opts), 2)
  end

  if opts then
    local format = opts.write_format
    if format ~= nil and format ~= "v1" and format ~= "v2" then
      return nil, "bad 'write_format' option: 'v1' or 'v2' expected, got " .. tostring(format), "invalid"
    end

    if opts.accept_legacy ~= nil and type(opts.accept_legacy) ~= "boolean" then
      return nil, "bad 'accept_legacy' option: boolean expected, got " .. type(opts.accept_legacy), "invalid"
    end
  end

  return native.init(opts)
end


---
-- Prepares a worker: locks the region in RAM and reseeds the nonce generator.
-- Call in `init_worker_by_lua*`.
-- @return true, or nil and an error string
function _M.init_worker()
  return native.init_worker()
end


---
-- Encrypts a field value with the active key, bound to `context` (e.g.
-- `"basicauth_credentials:<id>"`). nil stays nil; "" and values that already
-- carry a `$ke$` marker are returned unchanged.
-- @return the encrypted value, or nil and an error string
function _M.encrypt(value, context)
  return field_call(kk_encrypt, value, context)
end


---
-- Decrypts a marked value; an unmarked value is returned unchanged (unless
-- `accept_legacy` is off). The context must be the one used to encrypt.
-- @return the plaintext, or nil and an error string
function _M.decrypt(value, context)
  return field_call(kk_decrypt, value, context)
end


---
-- Generates a key and adds it to the ring without activating it.
-- @return the id and the base64 of the 32 key bytes, or nil and an error string
function _M.generate()
  return native.generate()
end


---
-- Adds a key (not activated). Adding the same id and bytes again is a no-op;
-- the same id with other bytes is an error.
-- @return true, or nil and an error string
function _M.add(id, key_b64)
  check_string("id", id, 2)
  check_string("key", key_b64, 2)
  local _, err, kind = native.add(id, key_b64)
  if err then
    return nil, err, kind
  end
  return true
end


--- Makes `id` the key used for writes. @return true, or nil and an error string
function _M.activate(id)
  check_string("id", id, 2)
  return native.activate(id)
end


---
-- Removes `id` and zeroes its slot; the active key cannot be removed.
-- @return true (also for an unknown id), or nil and an error string
function _M.remove(id)
  check_string("id", id, 2)
  local _, err, kind = native.remove(id)
  if err then
    return nil, err, kind
  end
  return true
end


--- @return `{ ids = { ... }, active = id or nil }`, or nil and an error string
function _M.keys()
  return native.keys()
end


--- @return the active id, or nil and an error string
function _M.active_id()
  local ring, err = native.keys()
  if not ring then
    return nil, err
  end
  if not ring.active then
    return nil, "no active keyring key on this node", "unavailable"
  end
  return ring.active
end


---
-- Exports every key, wrapped for `public_pem` (PEM or base64 of PEM).
-- @return the base64 blob, or nil and an error string
function _M.export(public_pem)
  check_string("public_pem", public_pem, 2)
  return native.export(public_pem)
end


---
-- Imports a blob made by `export` (or by Kong Enterprise) and activates its
-- active key. All or nothing: a conflicting id changes nothing.
-- @return `{ ids = { ... }, active = id }`, or nil and an error string
function _M.import(blob, private_pem)
  check_string("blob", blob, 2)
  check_string("private_pem", private_pem, 2)
  return native.import(blob, private_pem)
end


---
-- Backs up key `id` for `public_pem` as a `$ker$2$` recovery value.
-- @return the row value and the recovery key id (hex SHA-256 of the public key), or nil and an error string
function _M.recovery_row(id, public_pem)
  check_string("id", id, 2)
  check_string("public_pem", public_pem, 2)
  return native.recovery_row(id, public_pem)
end


---
-- Opens a `$ker$2$` or `$ker$1$` recovery value and adds the key as `id`.
-- With `check_value` (the key's `check_value()`, e.g. from `keyring_meta.kcv`)
-- a key that does not match is refused: RSA PKCS#1 v1.5 (`$ker$1$`) cannot
-- always tell a wrong private key from the right one.
-- @return true, or nil and an error string
function _M.recover(id, row, private_pem, check_value)
  check_string("id", id, 2)
  check_string("row", row, 2)
  check_string("private_pem", private_pem, 2)
  check_optional_string("check_value", check_value, 2)
  return native.recover(id, row, private_pem, check_value)
end


---
-- This process's transport key for the cluster exchange: an RSA-2048 pair
-- made on the first call (in the master during `init`, so that the workers
-- inherit it) whose private half stays in locked memory excluded from core
-- dumps and never reaches Lua.
-- @return the public key (PEM), or nil and an error string
function _M.transport_key()
  return native.transport_key()
end


---
-- `recover` with the transport key: adds key `id` another node wrapped for
-- `transport_key()` (a `$ker$2$` value), refused when it does not match
-- `check_value`.
-- @return true, or nil and an error string
function _M.receive(id, row, check_value)
  check_string("id", id, 2)
  check_string("row", row, 2)
  check_optional_string("check_value", check_value, 2)
  return native.receive(id, row, check_value)
end


--- @return hex SHA-256 of the public key's DER (the `recovery_key_id`), or nil and an error string
function _M.public_key_id(public_pem)
  check_string("public_pem", public_pem, 2)
  return native.public_key_id(public_pem)
end


--- @return hex SHA-256 of the DER of the private key's public half, or nil and an error string
function _M.private_key_id(private_pem)
  check_string("private_pem", private_pem, 2)
  return native.private_key_id(private_pem)
end


--- @return `{ [id] = encryptions counted on this node }`, or nil and an error string
function _M.usage()
  return native.usage()
end


--- @return the key check value of `id` (32 hex chars), or nil and an error string
function _M.check_value(id)
  check_string("id", id, 2)
  return native.check_value(id)
end


return _M
