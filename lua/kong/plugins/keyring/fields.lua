-- Which fields of a Kong schema are encrypted, and walking them
-- (docs/design.md, "Which fields are encrypted").
--
-- A plan lists the `encrypted = true` fields of a schema: strings and
-- arrays/sets of strings, at any depth of records and arrays of records
-- (entities: `keys.pem.private_key`; plugin and vault `config` records).
-- Fields that are `unique`, the `endpoint_key` or part of `cache_key` are left
-- alone (random ciphertext would break lookups) and reported to `warn`.

local type = type
local next = next
local ipairs = ipairs
local concat = table.concat


local _M = {}


local STRING_LISTS = { array = true, set = true }


-- Kong keeps fields as an array of one-entry tables: { { name = def }, ... }
local function each_field(fields)
  local i = 0
  return function()
    i = i + 1
    local entry = fields[i]
    if entry then
      local name, def = next(entry)
      return name, def
    end
  end
end


local function is_lookup_field(schema, name, def)
  if def.unique or schema.endpoint_key == name then
    return true
  end
  for _, key in ipairs(schema.cache_key or {}) do
    if key == name then
      return true
    end
  end
  return false
end


local function leaf_kind(def)
  if def.type == "string" then
    return "string"
  end
  if STRING_LISTS[def.type] and def.elements and def.elements.type == "string" then
    return "strings"
  end
end


local function record_plan(fields, path, warn)
  local plan = {}
  for name, def in each_field(fields or {}) do
    local here = path .. "." .. name
    if def.encrypted then
      local kind = leaf_kind(def)
      if kind then
        plan[#plan + 1] = { name = name, kind = kind }
      else
        warn(here .. " is marked encrypted but is not a string or an array of strings; left as is")
      end

    elseif def.type == "record" then
      local sub = record_plan(def.fields, here, warn)
      if #sub > 0 then
        plan[#plan + 1] = { name = name, kind = "record", plan = sub }
      end

    elseif STRING_LISTS[def.type] and def.elements and def.elements.type == "record" then
      local sub = record_plan(def.elements.fields, here .. "[]", warn)
      if #sub > 0 then
        plan[#plan + 1] = { name = name, kind = "records", plan = sub }
      end
    end
  end
  return plan
end


--- Plan for an entity schema: its encrypted top-level fields, and those
-- inside its records and arrays of records (`keys.pem.private_key`).
-- @return the plan (possibly empty)
function _M.entity_plan(schema, warn)
  local plan = {}
  for name, def in each_field(schema.fields) do
    local where = schema.name .. "." .. name
    if def.encrypted then
      local kind = leaf_kind(def)
      if is_lookup_field(schema, name, def) then
        warn(where .. " is unique, the endpoint key or part of the cache key; not encrypted")
      elseif kind then
        plan[#plan + 1] = { name = name, kind = kind }
      else
        warn(where .. " is marked encrypted but is not a string or an array of strings; left as is")
      end

    elseif def.type == "record" or (STRING_LISTS[def.type] and def.elements and def.elements.type == "record") then
      local sub = record_plan({ { [name] = def } }, schema.name, warn)
      if #sub > 0 then
        plan[#plan + 1] = sub[1]
      end
    end
  end
  return plan
end


--- Plan for a plugin's or vault's `config` record, at any depth.
-- @return the plan (possibly empty)
function _M.config_plan(subschema, name, warn)
  for field, def in each_field(subschema.fields or {}) do
    if field == "config" and def.type == "record" then
      return record_plan(def.fields, name .. ".config", warn)
    end
  end
  return {}
end


--- A shallow copy of `t`.
local function copy(t)
  local c = {}
  for k, v in next, t do
    c[k] = v
  end
  return c
end
_M.copy = copy


local apply


local function apply_strings(list, fn, path, in_place)
  local out = in_place and list or copy(list)
  for i, v in ipairs(list) do
    if type(v) == "string" then
      local res, err, kind = fn(v, path)
      if err then
        return nil, err, kind
      end
      out[i] = res
    end
  end
  return out
end


--- Copies `tbl` with `fn(value, path)` applied to every planned string, or
-- with `in_place`, changes `tbl` itself (reads: the row is fresh from the
-- database, and a copy costs more than the decryption).
-- `fn` returns the new value, or nil, an error and its kind (the walk stops
-- there and returns them).
-- Values that are absent, null (ngx.null) or not of the planned type are kept.
-- @return the new (or changed) table, or nil, an error and its kind
function apply(plan, tbl, fn, path, in_place)
  local out = in_place and tbl or copy(tbl)
  for _, node in ipairs(plan) do
    local name = node.name
    local v = tbl[name]
    local here = path and (path .. "." .. name) or name
    local res, err, kind

    if node.kind == "string" and type(v) == "string" then
      res, err, kind = fn(v, here)
    elseif node.kind == "strings" and type(v) == "table" then
      res, err, kind = apply_strings(v, fn, here, in_place)
    elseif node.kind == "record" and type(v) == "table" then
      res, err, kind = apply(node.plan, v, fn, here, in_place)
    elseif node.kind == "records" and type(v) == "table" then
      res = in_place and v or copy(v)
      for i, item in ipairs(v) do
        if type(item) == "table" then
          res[i], err, kind = apply(node.plan, item, fn, here .. "[" .. i .. "]", in_place)
          if err then
            break
          end
        end
      end
    else
      res = v
    end

    if err then
      return nil, err, kind
    end
    out[name] = res
  end
  return out
end
_M.apply = apply


--- Field paths of a plan, for log lines ("password", "config.redis.password").
function _M.describe(plan, prefix)
  local names = {}
  for _, node in ipairs(plan) do
    local here = prefix and (prefix .. "." .. node.name) or node.name
    if node.plan then
      names[#names + 1] = _M.describe(node.plan, node.kind == "records" and here .. "[]" or here)
    else
      names[#names + 1] = here
    end
  end
  return concat(names, ", ")
end


return _M
