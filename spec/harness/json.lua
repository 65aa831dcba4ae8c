-- JSON for the harness. Decoding is lua-cjson's; encoding is our own because
-- Debian's lua-cjson 2.1.0 lacks OpenResty's `cjson.array_mt` /
-- `cjson.empty_array`, without which an empty array can only be written as
-- `{}`. Tables carrying `array_mt` (schema arrays and sets are marked by the
-- DAO, as Kong does) and non-empty sequences are written as arrays;
-- `ngx.null` is written as null.

local cjson = require "cjson.safe"


local type = type
local pairs = pairs
local next = next
local floor = math.floor
local huge = math.huge
local fmt = string.format
local concat = table.concat
local getmetatable = getmetatable
local setmetatable = setmetatable
local tostring = tostring
local encode_string = cjson.encode


local null = ngx and ngx.null or cjson.null


local _M = {}


local array_mt = {}
_M.array_mt = array_mt
_M.null = null


--- Marks `t` as an array (also when empty) and returns it.
function _M.as_array(t)
  return setmetatable(t, array_mt)
end


--- Adds `array_mt`, `empty_array_mt` and `empty_array` to cjson module tables
-- that lack them (Debian's lua-cjson), so plugin code written for Kong's
-- cjson loads. Only this module's encoder (kong.response.exit, the Admin API)
-- honours them; cjson.encode itself still writes `{}`.
function _M.polyfill_cjson()
  for _, name in ipairs({ "cjson", "cjson.safe" }) do
    local ok, mod = pcall(require, name)
    if ok and type(mod) == "table" then
      if mod.array_mt == nil then
        mod.array_mt = array_mt
      end
      if mod.empty_array_mt == nil then
        mod.empty_array_mt = array_mt
      end
      if mod.empty_array == nil then
        mod.empty_array = setmetatable({}, array_mt)
      end
    end
  end
end


local function is_sequence(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then
      return false
    end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end
  return n > 0
end


local encode_value


local function encode_table(t, depth)
  if depth > 100 then
    return nil, "cannot encode: nested too deeply"
  end
  local out = {}
  if getmetatable(t) == array_mt or is_sequence(t) then
    for i = 1, #t do
      local v, err = encode_value(t[i], depth + 1)
      if not v then
        return nil, err
      end
      out[i] = v
    end
    return "[" .. concat(out, ",") .. "]"
  end
  if getmetatable(t) == nil and next(t) == nil then
    return "{}"
  end
  for k, v in pairs(t) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" then
      return nil, "cannot encode a table key of type " .. kt
    end
    local ev, err = encode_value(v, depth + 1)
    if not ev then
      return nil, err
    end
    out[#out + 1] = encode_string(tostring(k)) .. ":" .. ev
  end
  return "{" .. concat(out, ",") .. "}"
end


encode_value = function(v, depth)
  local t = type(v)
  if v == nil or v == null then
    return "null"
  elseif t == "boolean" then
    return v and "true" or "false"
  elseif t == "number" then
    if v ~= v or v == huge or v == -huge then
      return nil, "cannot encode a NaN or infinite number"
    end
    if floor(v) == v and v > -1e15 and v < 1e15 then
      return fmt("%d", v)
    end
    return fmt("%.14g", v)
  elseif t == "string" then
    return encode_string(v)
  elseif t == "table" then
    return encode_table(v, depth)
  end
  return nil, "cannot encode a value of type " .. t
end


--- Encodes a Lua value; returns the JSON text or nil, err.
function _M.encode(v)
  return encode_value(v, 0)
end


--- Decodes JSON text; returns the value or nil, err.
function _M.decode(s)
  return cjson.decode(s)
end


return _M
