-- DAO error objects with Kong's codes and names (kong/db/errors.lua):
-- { code, name, message, strategy, fields? }, tostring() gives
-- "[postgres] <message>". The Admin API maps `code` to an HTTP status.

local type = type
local pairs = pairs
local sort = table.sort
local concat = table.concat
local tostring = tostring
local fmt = string.format
local setmetatable = setmetatable


local CODES = {
  INVALID_PRIMARY_KEY     = 1,
  SCHEMA_VIOLATION        = 2,
  PRIMARY_KEY_VIOLATION   = 3,
  FOREIGN_KEY_VIOLATION   = 4,
  UNIQUE_VIOLATION        = 5,
  NOT_FOUND               = 6,
  INVALID_OFFSET          = 7,
  DATABASE_ERROR          = 8,
  INVALID_SIZE            = 9,
  INVALID_UNIQUE          = 10,
  INVALID_OPTIONS         = 11,
  OPERATION_UNSUPPORTED   = 12,
  FOREIGN_KEYS_UNRESOLVED = 13,
  DECLARATIVE_CONFIG      = 14,
  TRANSFORMATION_ERROR    = 15,
  INVALID_FOREIGN_KEY     = 16,
}


local NAMES = {
  [CODES.INVALID_PRIMARY_KEY]   = "invalid primary key",
  [CODES.SCHEMA_VIOLATION]      = "schema violation",
  [CODES.PRIMARY_KEY_VIOLATION] = "primary key violation",
  [CODES.FOREIGN_KEY_VIOLATION] = "foreign key violation",
  [CODES.UNIQUE_VIOLATION]      = "unique constraint violation",
  [CODES.NOT_FOUND]             = "not found",
  [CODES.INVALID_OFFSET]        = "invalid offset",
  [CODES.DATABASE_ERROR]        = "database error",
  [CODES.INVALID_SIZE]          = "invalid size",
  [CODES.INVALID_UNIQUE]        = "invalid unique %s",
  [CODES.INVALID_OPTIONS]       = "invalid options",
  [CODES.OPERATION_UNSUPPORTED] = "operation unsupported",
  [CODES.TRANSFORMATION_ERROR]  = "transformation error",
  [CODES.INVALID_FOREIGN_KEY]   = "invalid foreign key",
}


local err_mt = {
  __tostring = function(e)
    return fmt("[%s] %s", e.strategy, e.message)
  end,
}


local _M = { codes = CODES }
local mt = { __index = _M }


function _M.new(strategy)
  return setmetatable({ strategy = strategy or "postgres" }, mt)
end


--- `{a="x", b=1}` with sorted keys, the way Kong prints keys in messages.
local function pretty(t)
  if type(t) ~= "table" then
    return type(t) == "string" and fmt("%q", t) or tostring(t)
  end
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = tostring(k) .. "=" .. pretty(t[k])
  end
  return "{" .. concat(parts, ",") .. "}"
end
_M.pretty = pretty


function _M:build(code, message, fields)
  return setmetatable({
    code = code,
    name = NAMES[code],
    message = message,
    strategy = self.strategy,
    fields = fields,
  }, err_mt)
end


-- "a: msg; b.c: msg" (entity-level messages first)
local function summarize(errors, prefix, out)
  out = out or {}
  if errors["@entity"] then
    for _, m in ipairs(errors["@entity"]) do
      out[#out + 1] = m
    end
  end
  local keys = {}
  for k in pairs(errors) do
    if k ~= "@entity" then
      keys[#keys + 1] = k
    end
  end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local v = errors[k]
    local name = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" then
      summarize(v, name, out)
    else
      out[#out + 1] = name .. ": " .. tostring(v)
    end
  end
  return out
end


function _M:schema_violation(errors)
  if type(errors) ~= "table" then
    errors = { ["@entity"] = { tostring(errors) } }
  end
  local msgs = summarize(errors)
  local head = #msgs == 1 and "schema violation" or (#msgs .. " schema violations")
  return self:build(CODES.SCHEMA_VIOLATION, fmt("%s (%s)", head, concat(msgs, "; ")), errors)
end


function _M:invalid_primary_key(errors)
  local msgs = type(errors) == "table" and summarize(errors) or { tostring(errors) }
  return self:build(CODES.INVALID_PRIMARY_KEY, fmt("invalid primary key: '%s'", concat(msgs, "; ")), errors)
end


function _M:primary_key_violation(pk)
  return self:build(CODES.PRIMARY_KEY_VIOLATION,
                    fmt("primary key violation on key '%s'", pretty(pk)), pk)
end


function _M:unique_violation(fields)
  return self:build(CODES.UNIQUE_VIOLATION,
                    fmt("UNIQUE violation detected on '%s'", pretty(fields)), fields)
end


function _M:foreign_key_violation(field_name, foreign_key, parent_name)
  return self:build(CODES.FOREIGN_KEY_VIOLATION,
                    fmt("the foreign key '%s' does not reference an existing '%s' entity.",
                        pretty(foreign_key), parent_name),
                    { [field_name] = foreign_key })
end


function _M:not_found(pk)
  return self:build(CODES.NOT_FOUND,
                    fmt("could not find the entity with primary key '%s'", pretty(pk)), pk)
end


function _M:not_found_by_field(filter)
  return self:build(CODES.NOT_FOUND, fmt("could not find the entity with '%s'", pretty(filter)), filter)
end


function _M:invalid_offset(offset, err)
  return self:build(CODES.INVALID_OFFSET, fmt("'%s' is not a valid offset: %s", tostring(offset), err))
end


function _M:invalid_size(err)
  return self:build(CODES.INVALID_SIZE, err)
end


function _M:invalid_unique(name, err)
  local e = self:build(CODES.INVALID_UNIQUE, fmt("invalid unique %s: %s", name, tostring(err)))
  e.name = fmt(NAMES[CODES.INVALID_UNIQUE], name)
  return e
end


function _M:invalid_options(errors)
  return self:build(CODES.INVALID_OPTIONS, "invalid options (" .. concat(summarize(errors), "; ") .. ")", errors)
end


function _M:database_error(err)
  return self:build(CODES.DATABASE_ERROR, err or "database error")
end


function _M:transformation_error(err)
  return self:build(CODES.TRANSFORMATION_ERROR, err or "transformation error")
end


function _M:operation_unsupported(err)
  return self:build(CODES.OPERATION_UNSUPPORTED, err)
end


return _M
