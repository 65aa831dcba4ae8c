-- The Postgres strategy of one entity: SQL built from its schema, the shape
-- of Kong's kong/db/strategies/postgres/init.lua:
--
-- * a foreign field `consumer` is the column `consumer_id`;
-- * integer/number fields with `timestamp = true` are TIMESTAMPTZ columns,
--   written with to_timestamp() and read as epoch seconds;
-- * arrays/sets of strings are TEXT[]; records, maps and other arrays JSONB;
-- * update and upsert write every non-primary-key column (the whole merged
--   row), as Kong's Postgres update does;
-- * pages are ordered by primary key; the offset is opaque (base64 JSON of
--   the last primary key).
--
-- Methods return `row` (or `rows, nil, offset`) or `nil, err_t`.

local json = require "harness.json"


local type = type
local ipairs = ipairs
local concat = table.concat
local fmt = string.format
local match = string.match
local find = string.find
local tonumber = tonumber


local null = ngx.null


local _M = {}
local mt = { __index = _M }


local function column_kind(field)
  if field.type == "foreign" then
    return "foreign"
  elseif (field.type == "integer" or field.type == "number") and field.timestamp then
    return "timestamp"
  elseif field.type == "array" or field.type == "set" then
    local et = field.elements and field.elements.type
    if et == "string" then
      return "text_array"
    end
    return "json"
  elseif field.type == "record" or field.type == "map" or field.type == "json" then
    return "json"
  end
  return "scalar"
end


function _M.new(connector, schema, errors)
  local self = setmetatable({
    connector = connector,
    schema = schema,
    errors = errors,
    table_name = schema.table_name or schema.name,
    columns = {},
    by_field = {},
    pk = schema.primary_key,
    pk_set = {},
  }, mt)
  for _, name in ipairs(schema.primary_key) do
    self.pk_set[name] = true
  end
  local select_list = {}
  for name, field in schema:each_field() do
    local kind = column_kind(field)
    local col = { name = name, field = field, kind = kind, column = name }
    if kind == "foreign" then
      local ref = field.schema
      col.fpk = ref and ref.primary_key[1] or "id"
      col.column = name .. "_" .. col.fpk
    end
    local q = connector:escape_identifier(col.column)
    col.quoted = q
    if kind == "timestamp" then
      select_list[#select_list + 1] = fmt("EXTRACT(EPOCH FROM %s) AS %s", q, q)
    else
      select_list[#select_list + 1] = q
    end
    self.columns[#self.columns + 1] = col
    self.by_field[name] = col
  end
  self.quoted_table = connector:escape_identifier(self.table_name)
  self.select_list = concat(select_list, ", ")
  local pk_cols = {}
  for i, name in ipairs(self.pk) do
    pk_cols[i] = self.by_field[name].quoted
  end
  self.pk_cols = concat(pk_cols, ", ")
  return self
end


function _M:literal(col, value)
  local c = self.connector
  if value == nil or value == null then
    return "NULL"
  end
  local kind = col.kind
  if kind == "foreign" then
    if type(value) ~= "table" then
      return "NULL"
    end
    return c:escape_literal(value[col.fpk])
  elseif kind == "timestamp" then
    return fmt("to_timestamp(%s)", c:escape_literal(tonumber(value)))
  elseif kind == "text_array" then
    if #value == 0 then
      return "'{}'::TEXT[]"
    end
    return c:escape_literal(value, col.field) .. "::TEXT[]"
  elseif kind == "json" then
    return c:escape_literal(assert(json.encode(value))) .. "::JSONB"
  end
  return c:escape_literal(value)
end


--- Entity-shaped row from a database row (foreign keys become { id = ... }).
function _M:to_entity(row)
  local out = {}
  for _, col in ipairs(self.columns) do
    local v = row[col.column]
    if v == nil then
      v = null
    end
    if col.kind == "foreign" and v ~= null then
      v = { [col.fpk] = v }
    end
    out[col.name] = v
  end
  return out
end


-- maps a Postgres error to an err_t
function _M:error(err, entity)
  local errors = self.errors
  if find(err, "duplicate key value violates unique constraint", 1, true) then
    local constraint = match(err, 'unique constraint "([^"]+)"') or ""
    local cols, vals = match(err, "Key %((.-)%)=%((.-)%) already exists")
    if constraint:match("_pkey$") then
      return errors:primary_key_violation(entity and self.schema:extract_pk_values(entity) or {})
    end
    local fields = {}
    if cols then
      local col = self.by_field[cols]
      local name = cols
      for _, c in ipairs(self.columns) do
        if c.column == cols then
          col, name = c, c.name
        end
      end
      fields[name] = entity and entity[name] or vals
      if col and col.kind == "foreign" and type(fields[name]) ~= "table" then
        fields[name] = { [col.fpk] = vals }
      end
    end
    return errors:unique_violation(fields)
  end
  if find(err, "violates foreign key constraint", 1, true) then
    local colname = match(err, "Key %((.-)%)=")
    for _, c in ipairs(self.columns) do
      if c.column == colname and c.kind == "foreign" then
        local fk = entity and entity[c.name] or {}
        return errors:foreign_key_violation(c.name, fk, c.field.reference)
      end
    end
    return errors:database_error(err)
  end
  return errors:database_error(err)
end


function _M:run(sql, entity)
  local res, err = self.connector:query(sql)
  if not res then
    return nil, self:error(err, entity)
  end
  return res
end


function _M:where_pk(pk)
  local parts = {}
  for i, name in ipairs(self.pk) do
    local col = self.by_field[name]
    parts[i] = col.quoted .. " = " .. self:literal(col, pk[name])
  end
  return concat(parts, " AND ")
end


local function first(self, sql, entity)
  local rows, err_t = self:run(sql, entity)
  if not rows then
    return nil, err_t
  end
  local row = rows[1]
  if not row then
    return nil
  end
  return self:to_entity(row)
end


function _M:insert(entity)
  local cols, vals = {}, {}
  for _, col in ipairs(self.columns) do
    local v = entity[col.name]
    if v ~= nil then
      cols[#cols + 1] = col.quoted
      vals[#vals + 1] = self:literal(col, v)
    end
  end
  local sql = fmt("INSERT INTO %s (%s) VALUES (%s) RETURNING %s", self.quoted_table,
                  concat(cols, ", "), concat(vals, ", "), self.select_list)
  return first(self, sql, entity)
end


function _M:select(pk)
  return first(self, fmt("SELECT %s FROM %s WHERE %s LIMIT 1", self.select_list,
                         self.quoted_table, self:where_pk(pk)))
end


function _M:select_by_field(name, value)
  local col = self.by_field[name]
  return first(self, fmt("SELECT %s FROM %s WHERE %s = %s LIMIT 1", self.select_list,
                         self.quoted_table, col.quoted, self:literal(col, value)))
end


local function set_list(self)
  local sets = {}
  for _, col in ipairs(self.columns) do
    if not self.pk_set[col.name] then
      sets[#sets + 1] = col
    end
  end
  return sets
end


--- Full-row UPDATE of every non-primary-key column.
function _M:update(pk, entity)
  local sets = {}
  for _, col in ipairs(set_list(self)) do
    sets[#sets + 1] = col.quoted .. " = " .. self:literal(col, entity[col.name])
  end
  local sql = fmt("UPDATE %s SET %s WHERE %s RETURNING %s", self.quoted_table,
                  concat(sets, ", "), self:where_pk(pk), self.select_list)
  return first(self, sql, entity)
end


function _M:update_by_field(name, value, entity)
  local col = self.by_field[name]
  local sets = {}
  for _, c in ipairs(set_list(self)) do
    sets[#sets + 1] = c.quoted .. " = " .. self:literal(c, entity[c.name])
  end
  local sql = fmt("UPDATE %s SET %s WHERE %s = %s RETURNING %s", self.quoted_table,
                  concat(sets, ", "), col.quoted, self:literal(col, value), self.select_list)
  return first(self, sql, entity)
end


local function upsert_sql(self, entity, conflict_cols, skip)
  local cols, vals, sets = {}, {}, {}
  for _, col in ipairs(self.columns) do
    local v = entity[col.name]
    cols[#cols + 1] = col.quoted
    vals[#vals + 1] = self:literal(col, v)
    if not self.pk_set[col.name] and col.name ~= skip then
      sets[#sets + 1] = fmt("%s = EXCLUDED.%s", col.quoted, col.quoted)
    end
  end
  return fmt("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO UPDATE SET %s RETURNING %s",
             self.quoted_table, concat(cols, ", "), concat(vals, ", "), conflict_cols,
             concat(sets, ", "), self.select_list)
end


function _M:upsert(pk, entity)
  for _, name in ipairs(self.pk) do
    entity[name] = pk[name]
  end
  return first(self, upsert_sql(self, entity, self.pk_cols), entity)
end


function _M:upsert_by_field(name, value, entity)
  entity[name] = value
  local col = self.by_field[name]
  return first(self, upsert_sql(self, entity, col.quoted, name), entity)
end


function _M:delete(pk)
  local _, err_t = self:run(fmt("DELETE FROM %s WHERE %s", self.quoted_table, self:where_pk(pk)))
  if err_t then
    return nil, err_t
  end
  return true
end


function _M:delete_by_field(name, value)
  local col = self.by_field[name]
  local _, err_t = self:run(fmt("DELETE FROM %s WHERE %s = %s", self.quoted_table, col.quoted,
                                self:literal(col, value)))
  if err_t then
    return nil, err_t
  end
  return true
end


function _M:truncate()
  local _, err_t = self:run(fmt("TRUNCATE %s CASCADE", self.quoted_table))
  if err_t then
    return nil, err_t
  end
  return true
end


local function encode_offset(self, row)
  local values = {}
  for i, name in ipairs(self.pk) do
    values[i] = row[self.by_field[name].column]
  end
  return ngx.encode_base64(assert(json.encode(values)))
end


local function decode_offset(self, offset)
  local raw = ngx.decode_base64(offset)
  local values = raw and json.decode(raw)
  if type(values) ~= "table" or #values ~= #self.pk then
    return nil
  end
  local pk = {}
  for i, name in ipairs(self.pk) do
    pk[name] = values[i]
  end
  return pk
end


--- rows, nil, next_offset (or nil, err_t). `where` is an extra SQL condition.
function _M:page(size, offset, options, where) -- luacheck: ignore options
  local conds = {}
  if where then
    conds[#conds + 1] = where
  end
  if offset ~= nil then
    local pk = type(offset) == "string" and decode_offset(self, offset)
    if not pk then
      return nil, self.errors:invalid_offset(offset, "bad base64 encoding")
    end
    local lits = {}
    for i, name in ipairs(self.pk) do
      lits[i] = self:literal(self.by_field[name], pk[name])
    end
    conds[#conds + 1] = fmt("(%s) > (%s)", self.pk_cols, concat(lits, ", "))
  end
  local sql = fmt("SELECT %s FROM %s%s ORDER BY %s LIMIT %d", self.select_list, self.quoted_table,
                  #conds > 0 and (" WHERE " .. concat(conds, " AND ")) or "", self.pk_cols, size + 1)
  local rows, err_t = self:run(sql)
  if not rows then
    return nil, err_t
  end
  local next_offset
  if #rows > size then
    rows[size + 1] = nil
    next_offset = encode_offset(self, rows[size])
  end
  local out = {}
  for i, row in ipairs(rows) do
    out[i] = self:to_entity(row)
  end
  return out, nil, next_offset
end


--- Page of the rows whose foreign field `name` points at `foreign_key`.
function _M:page_for(name, foreign_key, size, offset, options)
  local col = self.by_field[name]
  local where = fmt("%s = %s", col.quoted, self:literal(col, foreign_key))
  return self:page(size, offset, options, where)
end


return _M
