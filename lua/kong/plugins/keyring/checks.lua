-- Kong validates some encrypted fields before its transformations run: the
-- certificates entity's `key` and `key_alt` are parsed as PEM private keys by
-- their field validator (typedefs.key) and by custom entity checks, in
-- validate_insert / validate_upsert / validate_update (kong/db/dao/init.lua),
-- and declarative config (kong config parse / db_import) validates exported
-- rows the same way. A stored, marked value would fail there.
--
-- Kong's CLI builds its schemas before it loads plugin handlers, so the
-- validators are wrapped where every schema finds them, on Kong's Schema
-- class (kong/db/schema/init.lua):
--   - `Schema:validate_field`: a marked value in an `encrypted` field skips
--     the field's custom validator (it sees a value without its row, and
--     cannot open it); the other checks (type, length...) still apply;
--   - the `custom_entity_check` checker: a check that reads an `encrypted`
--     field holding a marked value passes, and runs again from our on_write
--     (`run_deferred`), which has the whole row, on the plaintext opened
--     under the row's context. In Kong's CLI, where nothing can be opened,
--     such rows pass: the node that wrote a marked value validated it.

local Schema = require "kong.db.schema"
local transform = require "kong.plugins.keyring.transform"
local fields = require "kong.plugins.keyring.fields"


local type = type
local pairs = pairs
local ipairs = ipairs


local marked = transform.marked


local _M = {}


-- field definitions without their custom validator, made once per field
local unchecked = setmetatable({}, { __mode = "k" })

local function without_custom_validator(field)
  local copy = unchecked[field]
  if not copy then
    copy = fields.copy(field)
    copy.custom_validator = nil
    unchecked[field] = copy
  end
  return copy
end


local function reads_encrypted(schema, sources)
  local fields = type(schema) == "table" and schema.fields
  if type(fields) ~= "table" then
    return false
  end
  for _, name in ipairs(sources or {}) do
    local def = fields[name]
    if type(def) == "table" and def.encrypted then
      return true
    end
  end
  return false
end


local function any_marked(entity, sources)
  for _, name in ipairs(sources or {}) do
    if marked(entity[name]) then
      return true
    end
  end
  return false
end


-- entity checks passed over: [entity name] = { [check function] = field_sources }
local deferred = {}
local installed = false


--- Wraps Kong's field validation and custom entity checks (once per process).
function _M.install()
  if installed then
    return
  end
  installed = true

  local validate_field = Schema.validate_field
  Schema.validate_field = function(self, field, value)
    if type(field) == "table" and field.encrypted and field.custom_validator and marked(value) then
      field = without_custom_validator(field)
    end
    return validate_field(self, field, value)
  end

  local checker = Schema.entity_checkers.custom_entity_check
  local check = checker.fn
  checker.fn = function(entity, arg, schema, ...)
    local sources = arg and arg.field_sources
    if reads_encrypted(schema, sources) and any_marked(entity, sources) then
      local name = schema.name or ""
      deferred[name] = deferred[name] or {}
      deferred[name][arg.fn] = sources
      return true
    end
    return check(entity, arg, schema, ...)
  end
end


--- Runs the entity checks passed over for marked values on the plaintext of
-- the whole `entity` (from on_write). In Kong's CLI they pass.
-- @return true, or nil, the check's error and its kind
function _M.run_deferred(schema, plan, entity)
  local checks = deferred[schema.name]
  if not checks then
    return true
  end
  local plain
  for fn, sources in pairs(checks) do
    if any_marked(entity, sources) then
      if plain == nil then
        local err, kind
        plain, err, kind = transform.open_entity(schema, plan, entity)
        if plain == nil then
          return nil, err, kind
        end
      end
      if plain then
        local input = {}
        for _, name in ipairs(sources) do
          input[name] = plain[name]
        end
        local ok, err = fn(input)
        if not ok then
          return nil, err or "entity check failed", "invalid"
        end
      end
    end
  end
  return true
end


return _M
