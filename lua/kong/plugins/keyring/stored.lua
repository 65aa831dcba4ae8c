-- Where encrypted values are stored, as SQL (docs/design.md, "Stored
-- values"): one source per entity table with encrypted fields, and one per
-- plugin or vault name whose `config` has some. Each source knows its table,
-- the columns that hold encrypted values and how PostgreSQL stores them
-- (text, text[], jsonb), the row context of the DAO path, and SQL that
-- yields every non-empty value (usage counts) without decrypting anything.

local fmt = string.format
local concat = table.concat
local type = type
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber


local _M = {}


local sources = {}   -- in the order the plugin installed them
local by_key = {}


-- jsonpath expressions of a plan inside a JSON document (`$."a"."b"[*]`)
local function json_paths(plan, prefix, out)
  out = out or {}
  for _, node in ipairs(plan) do
    local here = prefix .. '."' .. node.name:gsub('"', '\\"') .. '"'
    if node.kind == "string" then
      out[#out + 1] = here
    elseif node.kind == "strings" then
      out[#out + 1] = here .. "[*]"
    elseif node.kind == "record" then
      json_paths(node.plan, here, out)
    elseif node.kind == "records" then
      json_paths(node.plan, here .. "[*]", out)
    end
  end
  return out
end


local function quote_ident(name)
  return '"' .. tostring(name):gsub('"', '""') .. '"'
end
_M.ident = quote_ident


local function quote_literal(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end
_M.literal = quote_literal


-- the columns of a source: { name, storage = "text" | "text[]" | "jsonb", plan = node or sub-plan }
local function entity_columns(plan)
  local columns = {}
  for _, node in ipairs(plan) do
    local storage = node.kind == "string" and "text" or node.kind == "strings" and "text[]" or "jsonb"
    columns[#columns + 1] = { name = node.name, storage = storage, node = node }
  end
  return columns
end


local function add(source)
  if by_key[source.key] then
    return
  end
  by_key[source.key] = source
  sources[#sources + 1] = source
end


--- Records an entity schema with a non-empty plan.
function _M.add_entity(schema, plan)
  local pk = schema.primary_key or { "id" }
  add({
    key = schema.name,
    label = schema.name,
    entity = schema.name,
    table = schema.table_name or schema.name,
    primary_key = pk,
    schema = { name = schema.name, primary_key = pk },
    columns = entity_columns(plan),
    plan = plan,
  })
end


--- Records the config plan of plugin or vault `name` (`entity_name` is
-- "plugins" or "vaults").
function _M.add_config(entity_name, table_name, name, plan)
  add({
    key = entity_name .. ":" .. name,
    label = entity_name .. ":" .. name,
    entity = entity_name,
    plugin = name,
    table = table_name,
    where = "name = " .. quote_literal(name),
    primary_key = { "id" },
    schema = { name = entity_name, primary_key = { "id" } },
    columns = { { name = "config", storage = "jsonb", config_plan = plan } },
    plan = plan,
  })
end


--- Every source, or those whose entity is in `entities` (a set).
function _M.list(entities)
  if not entities then
    return sources
  end
  local out = {}
  for _, s in ipairs(sources) do
    if entities[s.entity] then
      out[#out + 1] = s
    end
  end
  return out
end


--- The entity names that have sources (for validating `tables=`).
function _M.entities()
  local set = {}
  for _, s in ipairs(sources) do
    set[s.entity] = true
  end
  return set
end


function _M.table_sql(source)
  return quote_ident(source.table)
end


function _M.where_sql(source)
  return source.where or "TRUE"
end


--- The quoted name of a source's column.
function _M.column_sql(column)
  return quote_ident(column.name)
end


-- SQL yielding every value (column `v`) of the source's encrypted fields
local function values_sql(source)
  local parts = {}
  local t, where = _M.table_sql(source), _M.where_sql(source)
  for _, c in ipairs(source.columns) do
    local col = "t." .. _M.column_sql(c)
    if c.storage == "text" then
      parts[#parts + 1] = fmt("SELECT %s AS v FROM %s t WHERE %s", col, t, where)
    elseif c.storage == "text[]" then
      parts[#parts + 1] = fmt("SELECT unnest(%s) AS v FROM %s t WHERE %s", col, t, where)
    else
      local paths = c.config_plan and json_paths(c.config_plan, "$") or json_paths({ c.node }, "$")
      -- an entity's record column is the record itself: drop its own name
      if not c.config_plan then
        for i, p in ipairs(paths) do
          paths[i] = "$" .. p:sub(#('$."' .. c.name .. '"') + 1)
        end
      end
      for _, p in ipairs(paths) do
        parts[#parts + 1] = fmt("SELECT x #>> '{}' AS v FROM %s t, jsonb_path_query(%s, %s) x WHERE %s",
                                t, col, quote_literal(p), where)
      end
    end
  end
  return concat(parts, " UNION ALL ")
end


-- SQL counting the source's non-empty values by format ("1", "2" or NULL
-- for plaintext) and key id
local function usage_sql(source)
  return fmt([[
    SELECT substring(v from '^\$ke\$([0-9])\$-') AS f, substring(v from '^\$ke\$[0-9]\$-([^-]+)-') AS id,
           count(*) AS n
      FROM (%s) s WHERE v IS NOT NULL AND v <> '' GROUP BY 1, 2;
  ]], values_sql(source))
end


-- SQL counting the source's values under key `id` (either format)
local function count_sql(source, id)
  local like = id:gsub("[\\%%_]", "\\%0")
  return fmt([[
    SELECT count(*) AS n FROM (%s) s WHERE v LIKE '$ke$_$-' || %s || '-%%';
  ]], values_sql(source), quote_literal(like))
end


--- Counts every stored value of the encrypted fields by key id and format,
-- with `query(sql)` (rows, or nil and an error); nothing is decrypted.
-- @return `{ keys = { [id] = { v2 = n, v1 = n } }, plaintext = n, tables = { ... } }`, or nil and an error
function _M.usage(query)
  local out = { keys = {}, plaintext = 0, tables = {} }
  for _, source in ipairs(sources) do
    local rows, err = query(usage_sql(source))
    if not rows then
      return nil, err
    end
    local t = { table = source.entity, plugin = source.plugin, keys = {}, plaintext = 0 }
    for _, row in ipairs(rows) do
      local n = tonumber(row.n)
      if type(row.id) == "string" and type(row.f) == "string" then
        local format = "v" .. row.f
        for _, bucket in ipairs({ t.keys, out.keys }) do
          bucket[row.id] = bucket[row.id] or { v1 = 0, v2 = 0 }
          bucket[row.id][format] = (bucket[row.id][format] or 0) + n
        end
      else
        t.plaintext = t.plaintext + n
        out.plaintext = out.plaintext + n
      end
    end
    out.tables[#out.tables + 1] = t
  end
  return out
end


--- How many stored values use key `id`, per source label (only those > 0).
-- @return the total and `{ [label] = n }`, or nil and an error
function _M.count(query, id)
  local total, by = 0, {}
  for _, source in ipairs(sources) do
    local rows, err = query(count_sql(source, id))
    if not rows then
      return nil, err
    end
    local n = tonumber(rows[1].n)
    if n > 0 then
      by[source.label] = n
      total = total + n
    end
  end
  return total, by
end


return _M
