-- Entity schemas with the parts of Kong's kong/db/schema/init.lua that a
-- plugin relies on (behaviour reproduced, code written anew):
--
-- * Schema.new deep-copies the definition; `fields` stays an array of
--   one-entry tables `{ { name = def }, ... }` and every field (and every
--   field of a record, recursively) is also reachable by name;
--   `each_field(values)` resolves a subschema's specialised fields.
-- * `transform(input, original_input, context)`: `self.transformations`,
--   then the subschema's; on_read when context == "select", else on_write;
--   with `input`/`needs` the arguments come from the fields (input fields are
--   looked up in the original, partial input, and the transformation is
--   skipped when one is empty); without them the whole entity is passed;
--   results are merged with `merge_values`; an error gives
--   nil, "transformation failed: <err>".
-- * `merge_values(top, bottom)`: schema-aware merge, records merged field by
--   field, arrays replaced.
-- * `process_auto_fields(data, context, nulls)`: auto uuid / timestamps,
--   defaults, array marks, and on "select" nulls -> nil, unknown keys dropped.
--   Vault references are not resolved (the harness has no kong.vault).
-- * `validate(input, full_check)`: types, required, a few validators,
--   unknown fields, entity checks (at_least_one_of, mutually_required,
--   only_one_of, custom_entity_check).

local json = require "harness.json"
local uuid = require "kong.tools.uuid"


local type = type
local next = next
local pairs = pairs
local ipairs = ipairs
local unpack = unpack
local tostring = tostring
local floor = math.floor
local find = string.find
local sub = string.sub
local fmt = string.format
local concat = table.concat
local setmetatable = setmetatable
local getmetatable = getmetatable


local null = ngx.null


local Schema = {}
Schema.__index = Schema


local registry = {} -- name -> schema (for foreign references)


local ERR = {
  REQUIRED = "required field missing",
  UNKNOWN = "unknown field",
  STRING = "expected a string",
  NUMBER = "expected a number",
  INTEGER = "expected an integer",
  BOOLEAN = "expected a boolean",
  ARRAY = "expected an array",
  SET = "expected a set",
  MAP = "expected a map",
  RECORD = "expected a record",
  UUID = "expected a valid UUID",
  TRANSFORMATION_ERROR = "transformation failed: %s",
}
Schema.errors = ERR


local function deep_copy(v, seen)
  if type(v) ~= "table" then
    return v
  end
  seen = seen or {}
  if seen[v] then
    return seen[v]
  end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do
    c[deep_copy(k, seen)] = deep_copy(x, seen)
  end
  return setmetatable(c, getmetatable(v))
end
Schema.deep_copy = deep_copy


local function is_nonempty(v)
  return not (v == nil or v == null
              or (type(v) == "table" and next(v) == nil)
              or (type(v) == "string" and v == ""))
end
Schema.is_nonempty = is_nonempty


local function get_field(tbl, name)
  if tbl == nil or tbl == null then
    return nil
  end
  local dot = find(name, ".", 1, true)
  if not dot then
    return tbl[name]
  end
  return get_field(tbl[sub(name, 1, dot - 1)], sub(name, dot + 1))
end


local function is_array_like(t)
  if getmetatable(t) == json.array_mt then
    return true
  end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then
      return false
    end
    n = n + 1
  end
  return n == #t
end


-- fields by name too, in records at any depth (also as array elements)
local index_fields


local function index_field(def)
  if type(def) ~= "table" then
    return
  end
  if def.type == "record" and def.fields then
    index_fields(def.fields)
  end
  index_field(def.elements)
  index_field(def.values)
end


index_fields = function(fields)
  for i = 1, #fields do
    local name, def = next(fields[i])
    fields[name] = def
    index_field(def)
  end
end


--- A schema object from a definition (deep-copied, as Kong does).
function Schema.new(definition, is_subschema)
  if type(definition) ~= "table" then
    return nil, "expected a definition table"
  end
  if type(definition.fields) ~= "table" then
    return nil, "error in schema definition: no 'fields' table"
  end
  local self = setmetatable(deep_copy(definition), Schema)
  index_fields(self.fields)
  for _, field in self:each_field() do
    if field.type == "foreign" then
      field.schema = registry[field.reference]
    end
  end
  if self.name and not is_subschema then
    registry[self.name] = self
  end
  return self
end


function Schema.get(name)
  return registry[name]
end


--- Adds a subschema (e.g. a plugin's schema under `plugins`).
function Schema:new_subschema(key, definition)
  if not self.subschema_key then
    return nil, fmt("error in definition of '%s': entities of type '%s' cannot have subschemas",
                    key, tostring(self.name))
  end
  local sub_schema, err = Schema.new(definition, true)
  if not sub_schema then
    return nil, err
  end
  -- a plugin's `config` is always there (filled with defaults when omitted)
  local config = sub_schema.fields.config
  if config and config.type == "record" and config.required == nil then
    config.required = true
  end
  self.subschemas = self.subschemas or {}
  self.subschemas[key] = sub_schema
  return true
end


function Schema:get_subschema(values)
  if self.subschema_key and self.subschemas and type(values) == "table" then
    local key = values[self.subschema_key]
    if type(key) == "string" then
      return self.subschemas[key]
    end
  end
end
local get_subschema = Schema.get_subschema


--- Iterates `name, field` in definition order; with `values`, a subschema's
-- specialised field replaces the parent's (e.g. a plugin's `config`).
function Schema:each_field(values)
  local sub_schema = values and get_subschema(self, values)
  local fields = self.fields
  local i = 0
  return function()
    i = i + 1
    local item = fields[i]
    if not item then
      return nil
    end
    local name, field = next(item)
    if sub_schema then
      field = sub_schema.fields[name] or field
    end
    return name, field
  end
end


local function field_schema(field)
  return setmetatable({ fields = field.fields or {} }, Schema)
end


function Schema:extract_pk_values(entity)
  local pk = {}
  for _, name in ipairs(self.primary_key) do
    pk[name] = entity[name]
  end
  return pk
end


--- Schema-aware merge: values of `top` win, records are merged field by field.
function Schema:merge_values(top, bottom)
  local output = {}
  bottom = (bottom ~= nil and bottom ~= null) and bottom or {}
  for k, v in pairs(bottom) do
    output[k] = v
  end
  for k, v in pairs(top) do
    output[k] = v
  end
  for name, field in self:each_field(bottom) do
    local top_v = top[name]
    if top_v == nil then
      output[name] = bottom[name]
    elseif field.type == "record" and not field.abstract and type(top_v) == "table" then
      output[name] = field_schema(field):merge_values(top_v, bottom[name])
    else
      output[name] = top_v
    end
  end
  return output
end


local function transform_args(input, original_input, output, transformation)
  local args, n = {}, 0
  for _, name in ipairs(transformation.input or {}) do
    local value = get_field(output or original_input or input, name)
    if not is_nonempty(value) then
      return nil
    end
    n = n + 1
    args[n] = original_input and get_field(output or input, name) or value
  end
  for _, name in ipairs(transformation.needs or {}) do
    local value = get_field(output or input, name)
    if not is_nonempty(value) then
      return nil
    end
    n = n + 1
    args[n] = value
  end
  return args, n
end


local function run_transformations(self, transformations, input, original_input, context)
  local output
  for i = 1, #transformations do
    local t = transformations[i]
    local fn
    if context == "select" then
      fn = t.on_read
    else
      fn = t.on_write
    end
    if fn then
      local data, err
      if t.input or t.needs then
        local args, n = transform_args(input, original_input, output, t)
        if args then
          data, err = fn(unpack(args, 1, n))
          if err then
            return nil, fmt(ERR.TRANSFORMATION_ERROR, tostring(err))
          end
          output = self:merge_values(data or {}, output or input)
        end
      else
        data, err = fn(output or input)
        if err then
          return nil, fmt(ERR.TRANSFORMATION_ERROR, tostring(err))
        end
        output = self:merge_values(data or {}, output or input)
      end
    end
  end
  return output or input
end


--- Runs the transformations: the schema's, then the subschema's.
function Schema:transform(input, original_input, context)
  local output, err
  if self.transformations then
    output, err = run_transformations(self, self.transformations, input, original_input, context)
    if not output then
      return nil, err
    end
  end
  local sub_schema = get_subschema(self, input)
  if sub_schema and sub_schema.transformations then
    output, err = run_transformations(sub_schema, sub_schema.transformations,
                                      output or input, original_input, context)
    if not output then
      return nil, err
    end
  end
  return output or input
end


function Schema:has_transformations(input)
  if self.transformations then
    return true
  end
  local sub_schema = get_subschema(self, input)
  return sub_schema and sub_schema.transformations and true or false
end


-- auto fields, defaults, nulls ----------------------------------------------


local adjust


local function missing(field)
  if field.default ~= nil then
    local d = deep_copy(field.default)
    if type(d) == "table" and (field.type == "array" or field.type == "set") then
      json.as_array(d)
    end
    return d
  end
  if field.required then
    return nil
  end
  return null
end


local function make_set(t)
  local seen, out = {}, {}
  for _, v in ipairs(t) do
    if not seen[v] then
      seen[v] = true
      out[#out + 1] = v
    end
  end
  return json.as_array(out)
end


adjust = function(field, value, context, nulls)
  if field.abstract then
    return value
  end
  if field.type == "record" then
    local recurse
    if context == "update" then
      recurse = value ~= nil and value ~= null
    else
      recurse = value ~= null and (value ~= nil or field.required or field.default ~= nil)
    end
    if recurse then
      if value == nil then
        value = field.default ~= nil and deep_copy(field.default) or {}
      end
      if type(value) == "table" then
        return field_schema(field):process_auto_fields(value, context, nulls)
      end
    end
  elseif type(value) == "table" then
    local elements
    if field.type == "array" then
      if is_array_like(value) then
        json.as_array(value)
      end
      elements = field.elements
    elseif field.type == "set" then
      if is_array_like(value) then
        value = make_set(value)
      end
      elements = field.elements
    elseif field.type == "map" then
      elements = field.values
    end
    if elements then
      for k, v in pairs(value) do
        value[k] = adjust(elements, v, context, nulls)
      end
    end
  end
  if value == nil and context ~= "update" then
    return missing(field)
  end
  return value
end


--- Kong's process_auto_fields: returns a new table (in place for "select").
function Schema:process_auto_fields(data, context, nulls)
  local is_select = context == "select"
  if not is_select then
    data = deep_copy(data)
  end
  local creating = context == "insert" or context == "upsert"
  for name, field in self:each_field(data) do
    local value = data[name]
    if not is_select and field.auto then
      if field.uuid then
        if creating and value == nil then
          value = uuid.uuid()
        end
      elseif field.type == "string" then
        if creating and value == nil then
          value = uuid.uuid():gsub("-", "")
        end
      elseif (name == "created_at" and creating and (value == nil or value == null))
          or (name == "updated_at" and (creating or context == "update")) then
        ngx.update_time()
        value = field.type == "integer" and ngx.time() or ngx.now()
      end
    end
    value = adjust(field, value, context, nulls)
    if is_select then
      if value == null and not nulls then
        value = nil
      elseif field.type == "integer" and type(value) == "number" then
        value = floor(value)
      end
    end
    data[name] = value
  end
  if is_select then
    local sub_schema = get_subschema(self, data)
    for key, v in pairs(data) do
      local field = type(key) == "string" and (sub_schema and sub_schema.fields[key] or self.fields[key])
      if not field then
        data[key] = nil
      elseif field.type == "string" and (field.len_min or 1) > 0 and v == "" then
        data[key] = nulls and null or nil
      end
    end
  end
  return data
end


-- validation ------------------------------------------------------------------


local validate_field


local VALIDATORS = {
  { "eq", function(v, wanted)
      if v == wanted then
        return true
      end
      return nil, "value must be " .. (wanted == null and "null" or tostring(wanted))
    end },
  { "ne", function(v, unwanted)
      if v ~= unwanted then
        return true
      end
      return nil, "value must not be " .. tostring(unwanted)
    end },
  { "not_one_of", function(v, list)
      for _, x in ipairs(list) do
        if v == x then
          return nil, "must not be one of: " .. concat(list, ", ")
        end
      end
      return true
    end },
  { "one_of", function(v, list)
      for _, x in ipairs(list) do
        if v == x then
          return true
        end
      end
      return nil, "expected one of: " .. concat(list, ", ")
    end },
  { "gt", function(v, n)
      if v > n then
        return true
      end
      return nil, "value must be greater than " .. tostring(n)
    end },
  { "between", function(v, lim)
      if v < lim[1] or v > lim[2] then
        return nil, fmt("value should be between %d and %d", lim[1], lim[2])
      end
      return true
    end },
  { "len_eq", function(v, n)
      if #v == n then
        return true
      end
      return nil, fmt("length must be %d", n)
    end },
  { "len_min", function(v, n)
      if #v >= n then
        return true
      end
      return nil, fmt("length must be at least %d", n)
    end },
  { "len_max", function(v, n)
      if #v <= n then
        return true
      end
      return nil, fmt("length must be at most %d", n)
    end },
  { "starts_with", function(v, s)
      if sub(v, 1, #s) == s then
        return true
      end
      return nil, "should start with: " .. s
    end },
  { "not_match", function(v, p)
      if v:match(p) then
        return nil, "invalid value: " .. v
      end
      return true
    end },
  { "match", function(v, p)
      if v:match(p) then
        return true
      end
      return nil, "invalid value: " .. v
    end },
  { "custom_validator", function(v, fn)
      return fn(v)
    end },
}


local function type_error(field, value)
  local t = field.type
  local vt = type(value)
  if t == "string" then
    if vt ~= "string" then
      return ERR.STRING
    end
    if (field.len_min or 1) > 0 and value == "" then
      return "length must be at least " .. (field.len_min or 1)
    end
    if field.uuid and not uuid.is_valid_uuid(value) then
      return ERR.UUID
    end
  elseif t == "number" then
    if vt ~= "number" then
      return ERR.NUMBER
    end
  elseif t == "integer" then
    if vt ~= "number" or floor(value) ~= value then
      return ERR.INTEGER
    end
  elseif t == "boolean" then
    if vt ~= "boolean" then
      return ERR.BOOLEAN
    end
  elseif t == "array" or t == "set" then
    if vt ~= "table" or not is_array_like(value) then
      return t == "array" and ERR.ARRAY or ERR.SET
    end
  elseif t == "map" or t == "json" then
    if t == "map" and vt ~= "table" then
      return ERR.MAP
    end
  elseif t == "record" then
    if vt ~= "table" then
      return ERR.RECORD
    end
  end
end


validate_field = function(field, value)
  if value == null then
    return true -- required-ness is checked by the caller
  end
  if field.type == "foreign" then
    if field.eq == null then
      return nil, "value must be null"
    end
    if type(value) ~= "table" then
      return nil, ERR.RECORD
    end
    local ref = field.schema
    local pk = ref and ref.primary_key or { "id" }
    local errs
    for _, name in ipairs(pk) do
      local v = value[name]
      if v == nil or v == null then
        errs = errs or {}
        errs[name] = "missing primary key"
      elseif name == "id" and not uuid.is_valid_uuid(v) then
        errs = errs or {}
        errs[name] = ERR.UUID
      end
    end
    if errs then
      return nil, errs
    end
    return true
  end
  local err = type_error(field, value)
  if err then
    return nil, err
  end
  if field.type == "record" then
    if field.abstract then
      return true
    end
    return field_schema(field):validate(value, true)
  elseif field.type == "array" or field.type == "set" then
    local errs
    for i, v in ipairs(value) do
      local ok, e = validate_field(field.elements or {}, v)
      if not ok then
        errs = errs or {}
        errs[i] = e
      end
    end
    if errs then
      return nil, errs
    end
  elseif field.type == "map" then
    local errs
    for k, v in pairs(value) do
      local ok, e = validate_field(field.values or {}, v)
      if not ok then
        errs = errs or {}
        errs[k] = e
      end
    end
    if errs then
      return nil, errs
    end
  end
  for _, pair in ipairs(VALIDATORS) do
    local name, fn = pair[1], pair[2]
    local arg = field[name]
    if arg ~= nil and not (name == "eq" and arg == null) then
      local ok, e = fn(value, arg)
      if not ok then
        return nil, e or ("failed validating: " .. name)
      end
    end
  end
  return true
end
Schema.validate_field = function(_, field, value)
  return validate_field(field, value)
end


local function quoted(names)
  local out = {}
  for i, n in ipairs(names) do
    out[i] = "'" .. n .. "'"
  end
  return concat(out, ", ")
end


local ENTITY_CHECKS = {
  at_least_one_of = function(input, names)
    for _, n in ipairs(names) do
      if is_nonempty(get_field(input, n)) then
        return true
      end
    end
    return nil, "at least one of these fields must be non-empty: " .. quoted(names)
  end,
  only_one_of = function(input, names)
    local c = 0
    for _, n in ipairs(names) do
      if is_nonempty(get_field(input, n)) then
        c = c + 1
      end
    end
    if c == 1 then
      return true
    end
    return nil, "exactly one of these fields must be non-empty: " .. quoted(names)
  end,
  mutually_required = function(input, names)
    local c = 0
    for _, n in ipairs(names) do
      if is_nonempty(get_field(input, n)) then
        c = c + 1
      end
    end
    if c == 0 or c == #names then
      return true
    end
    return nil, "all or none of these fields must be set: " .. quoted(names)
  end,
  custom_entity_check = function(input, arg)
    for _, n in ipairs(arg.field_sources or {}) do
      if get_field(input, n) == nil then
        return true -- not enough data to run it (partial update)
      end
    end
    local ok, err = arg.fn(input)
    if ok then
      return true
    end
    return nil, err or "entity check failed"
  end,
}


local function run_entity_checks(self, input, errors)
  for _, check in ipairs(self.entity_checks or {}) do
    local name, arg = next(check)
    local fn = ENTITY_CHECKS[name]
    if fn then
      local ok, err = fn(input, arg)
      if not ok then
        errors["@entity"] = errors["@entity"] or {}
        local list = errors["@entity"]
        list[#list + 1] = err
      end
    end
  end
end


--- true, or nil and a table of errors by field name ("@entity" for checks).
function Schema:validate(input, full_check)
  if full_check == nil then
    full_check = true
  end
  if type(input) ~= "table" then
    return nil, { ["@entity"] = { "expected an input table" } }
  end
  local errors = {}
  if self.subschema_key then
    local key = input[self.subschema_key]
    if key == nil or key == null then
      return nil, { [self.subschema_key] = ERR.REQUIRED }
    end
    if not get_subschema(self, input) then
      return nil, { [self.subschema_key] = fmt(self.subschema_error or "unknown type: %s", tostring(key)) }
    end
  end
  local sub_schema = get_subschema(self, input)
  for name, field in self:each_field(input) do
    local value = input[name]
    if field.required and (value == null or (full_check and value == nil)) then
      errors[name] = ERR.REQUIRED
    elseif value ~= nil then
      local ok, err = validate_field(field, value)
      if not ok then
        errors[name] = err
      end
    end
  end
  for key in pairs(input) do
    if type(key) ~= "string" or not (self.fields[key] or (sub_schema and sub_schema.fields[key])) then
      errors[key] = ERR.UNKNOWN
    end
  end
  run_entity_checks(self, input, errors)
  if sub_schema then
    run_entity_checks(sub_schema, input, errors)
  end
  if next(errors) then
    return nil, errors
  end
  return true
end


function Schema:validate_insert(input)
  return self:validate(input, true)
end


function Schema:validate_update(input)
  return self:validate(input, false)
end


function Schema:validate_upsert(input)
  return self:validate(input, true)
end


function Schema:validate_primary_key(pk)
  if type(pk) ~= "table" then
    return nil, { ["@entity"] = { "primary key must be a table" } }
  end
  local errors
  for _, name in ipairs(self.primary_key) do
    local field = self.fields[name]
    local v = pk[name]
    if v == nil or v == null then
      errors = errors or {}
      errors[name] = "missing primary key"
    else
      local ok, err = validate_field(field, v)
      if not ok then
        errors = errors or {}
        errors[name] = err
      end
    end
  end
  if errors then
    return nil, errors
  end
  return true
end


return Schema
