-- DAOs with the order of operations of Kong's kong/db/dao/init.lua
-- (KONG-INTEGRATION §1.2, §1.4; behaviour reproduced, code written anew).
--
-- insert:  process_auto_fields("insert") -> validate -> transform(entity_to_insert,
--          entity, "insert") unless options.transform == false ->
--          run_hook("dao:insert:pre", <original input>, ...) -> strategy ->
--          row_to_entity (on_read) -> "dao:insert:post" -> crud event
-- update:  process_auto_fields("update") -> read-before-write self:select (on_read)
--          -> merge_values(partial, rbw) -> validate -> transform(merged,
--          partial, "update") -> "dao:update:pre"(entity_to_update) -> full-row
--          UPDATE -> row_to_entity -> "dao:update:post"
-- upsert:  read of the current row (on_read; keeps created_at) ->
--          process_auto_fields("upsert") -> validate -> transform(...,
--          "upsert") unless options.transform == false ->
--          "dao:upsert:pre"(entity_to_upsert) -> INSERT .. ON CONFLICT ->
--          row_to_entity -> "dao:upsert:post"(row, .., rbw)
-- reads:   strategy -> row_to_entity: transform(row, nil, "select") unless
--          options.transform == false, then process_auto_fields("select")
-- Every method returns `entity, err, err_t` (page: `rows, err, err_t, offset`).

local hooks = require "kong.hooks"


local type = type
local error = error
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local floor = math.floor
local fmt = string.format
local setmetatable = setmetatable


local run_hook = hooks.run_hook
local null = ngx.null


local DEFAULT_PAGE_SIZE = 100
local MAX_PAGE_SIZE = 1000


local DAO = {}
DAO.__index = DAO


local _M = {}


local function fail(err_t)
  return nil, tostring(err_t), err_t
end


local function check_options(options)
  if options ~= nil and type(options) ~= "table" then
    error("options must be a table when specified", 3)
  end
end


local function check_size(self, size)
  if size == nil then
    return DEFAULT_PAGE_SIZE
  end
  if type(size) ~= "number" then
    error("size must be a number", 3)
  end
  if floor(size) ~= size or size < 1 or size > MAX_PAGE_SIZE then
    return nil, self.errors:invalid_size(fmt("size must be an integer between 1 and %d", MAX_PAGE_SIZE))
  end
  return size
end


function DAO:row_to_entity(row, options)
  local entity = row
  if not (options and options.transform == false) then
    local err
    entity, err = self.schema:transform(row, nil, "select")
    if not entity then
      return fail(self.errors:transformation_error(err))
    end
  end
  return self.schema:process_auto_fields(entity, "select", options and options.nulls)
end


function DAO:rows_to_entities(rows, options)
  local out = {}
  for i, row in ipairs(rows) do
    local entity, err, err_t = self:row_to_entity(row, options)
    if not entity then
      return nil, err, err_t
    end
    out[i] = entity
  end
  return setmetatable(out, require("harness.json").array_mt)
end


function DAO:post_crud_event(operation, entity, old_entity, options)
  if options and options.no_broadcast_crud_event then
    return
  end
  local events = self.db.events
  if not events then
    return -- init phase: worker events are not running yet (as in Kong)
  end
  events.post_local("dao:crud", operation, {
    operation = operation,
    schema = self.schema,
    entity = entity,
    old_entity = old_entity,
  })
end


--- Kong's cache key: "<name>:<k1>:<k2>:<k3>:<k4>:<k5>:<ws_id>" (no
-- workspaces in the harness: ws_id is empty).
function DAO:cache_key(key, arg2, arg3, arg4, arg5, ws_id)
  if type(key) == "table" then
    local source = key
    local names = self.schema.cache_key or self.schema.primary_key
    local values = {}
    for i, name in ipairs(names) do
      local v = source[name]
      if type(v) == "table" then
        v = v.id
      end
      values[i] = (v == nil or v == null) and "" or tostring(v)
    end
    key, arg2, arg3, arg4, arg5 = values[1], values[2], values[3], values[4], values[5]
  end
  return fmt("%s:%s:%s:%s:%s:%s:%s", self.schema.name, tostring(key == nil and "" or key),
             tostring(arg2 == nil and "" or arg2), tostring(arg3 == nil and "" or arg3),
             tostring(arg4 == nil and "" or arg4), tostring(arg5 == nil and "" or arg5),
             tostring(ws_id == nil and "" or ws_id))
end


-- reads -------------------------------------------------------------------------


local function finish_read(self, row, options, hook)
  local entity, err, err_t = self:row_to_entity(row, options)
  if not entity then
    return nil, err, err_t
  end
  entity, err_t = run_hook(hook, entity, self.schema.name, options)
  if not entity then
    return fail(err_t)
  end
  return entity
end


function DAO:select(primary_key, options)
  if type(primary_key) ~= "table" then
    error("primary_key must be a table", 2)
  end
  check_options(options)
  local ok, errors = self.schema:validate_primary_key(primary_key)
  if not ok then
    return fail(self.errors:invalid_primary_key(errors))
  end
  local err_t
  ok, err_t = run_hook("dao:select:pre", primary_key, self.schema.name, options)
  if not ok then
    return fail(err_t)
  end
  local row
  row, err_t = self.strategy:select(primary_key, options)
  if err_t then
    return fail(err_t)
  end
  if not row then
    return nil
  end
  return finish_read(self, row, options, "dao:select:post")
end


function DAO:page(size, offset, options)
  check_options(options)
  local err_t
  size, err_t = check_size(self, size)
  if not size then
    return fail(err_t)
  end
  local ok
  ok, err_t = run_hook("dao:page:pre", size, self.schema.name, options)
  if not ok then
    return fail(err_t)
  end
  local rows, _, next_offset
  rows, err_t, next_offset = self.strategy:page(size, offset, options)
  if not rows then
    return fail(err_t)
  end
  local entities, err
  entities, err, err_t = self:rows_to_entities(rows, options)
  if not entities then
    return nil, err, err_t
  end
  entities, err_t = run_hook("dao:page:post", entities, self.schema.name, options)
  if not entities then
    return fail(err_t)
  end
  return entities, nil, nil, next_offset
end


-- rows one by one; `pager(size, offset)` gives raw rows, nil, next_offset
local function iterate(self, pager, size, options)
  local rows, i, offset, done = nil, 0, nil, false
  local page = 0
  return function()
    while true do
      if rows and i < #rows then
        i = i + 1
        local raw = rows[i]
        local keep = run_hook("dao:iterator:post", raw, self.schema.name, options)
        if keep ~= false then
          local entity, err, err_t = self:row_to_entity(raw, options)
          if not entity then
            done = true
            return nil, err, err_t
          end
          return entity, nil, page
        end
      else
        if done or (rows and not offset) then
          return nil
        end
        local err_t
        rows, err_t, offset = pager(size, offset)
        if not rows then
          done = true
          return nil, tostring(err_t), err_t
        end
        i = 0
        page = page + 1
        if #rows == 0 then
          return nil
        end
      end
    end
  end
end


function DAO:each(size, options)
  check_options(options)
  local err_t
  size, err_t = check_size(self, size)
  if not size then
    local done = false
    return function()
      if done then
        return nil
      end
      done = true
      return nil, tostring(err_t), err_t
    end
  end
  local strategy = self.strategy
  return iterate(self, function(s, o) return strategy:page(s, o, options) end, size, options)
end


-- writes ------------------------------------------------------------------------


local function check_insert(self, entity, options)
  local entity_to_insert = self.schema:process_auto_fields(entity, "insert")
  local ok, errors = self.schema:validate_insert(entity_to_insert)
  if not ok then
    return fail(self.errors:schema_violation(errors))
  end
  if not (options and options.transform == false) then
    local err
    entity_to_insert, err = self.schema:transform(entity_to_insert, entity, "insert")
    if not entity_to_insert then
      return fail(self.errors:transformation_error(err))
    end
  end
  return entity_to_insert
end


function DAO:insert(entity, options)
  if type(entity) ~= "table" then
    error("entity must be a table", 2)
  end
  check_options(options)
  local name = self.schema.name
  local entity_to_insert, err, err_t = check_insert(self, entity, options)
  if not entity_to_insert then
    return nil, err, err_t
  end
  local ok
  ok, err_t = run_hook("dao:insert:pre", entity, name, options)
  if not ok then
    return fail(err_t)
  end
  local row
  row, err_t = self.strategy:insert(entity_to_insert, options)
  if not row then
    run_hook("dao:insert:fail", err_t, entity, name, options)
    return fail(err_t or self.errors:database_error("insert returned no row"))
  end
  row, err, err_t = self:row_to_entity(row, options)
  if not row then
    run_hook("dao:insert:fail", err_t, entity, name, options)
    return nil, err, err_t
  end
  row, err_t = run_hook("dao:insert:post", row, name, options, nil)
  if not row then
    return fail(err_t)
  end
  self:post_crud_event("create", row, nil, options)
  return row
end


-- entity_to_update, rbw_entity | nil, nil, err, err_t
local function check_update(self, key, entity, options, name)
  local entity_to_update = self.schema:process_auto_fields(entity, "update")
  local rbw, err, err_t
  if name then
    rbw, err, err_t = self["select_by_" .. name](self, key, options)
  else
    rbw, err, err_t = self:select(key, options)
  end
  if err then
    return nil, nil, err, err_t
  end
  if not rbw then
    err_t = name and self.errors:not_found_by_field({ [name] = key }) or self.errors:not_found(key)
    return nil, nil, tostring(err_t), err_t
  end
  entity_to_update = self.schema:merge_values(entity_to_update, rbw)
  local ok, errors = self.schema:validate_update(entity_to_update)
  if not ok then
    err_t = self.errors:schema_violation(errors)
    return nil, nil, tostring(err_t), err_t
  end
  if not (options and options.transform == false) then
    entity_to_update, err = self.schema:transform(entity_to_update, entity, "update")
    if not entity_to_update then
      err_t = self.errors:transformation_error(err)
      return nil, nil, tostring(err_t), err_t
    end
  end
  return entity_to_update, rbw
end


function DAO:update(primary_key, entity, options)
  if type(primary_key) ~= "table" then
    error("primary_key must be a table", 2)
  end
  if type(entity) ~= "table" then
    error("entity must be a table", 2)
  end
  check_options(options)
  local name = self.schema.name
  local ok, errors = self.schema:validate_primary_key(primary_key)
  if not ok then
    return fail(self.errors:invalid_primary_key(errors))
  end
  local entity_to_update, rbw, err, err_t = check_update(self, primary_key, entity, options)
  if not entity_to_update then
    return nil, err, err_t
  end
  ok, err_t = run_hook("dao:update:pre", entity_to_update, name, options)
  if not ok then
    return fail(err_t)
  end
  local row
  row, err_t = self.strategy:update(primary_key, entity_to_update, options)
  if not row then
    err_t = err_t or self.errors:not_found(primary_key)
    run_hook("dao:update:fail", err_t, entity_to_update, name, options)
    return fail(err_t)
  end
  row, err, err_t = self:row_to_entity(row, options)
  if not row then
    run_hook("dao:update:fail", err_t, entity_to_update, name, options)
    return nil, err, err_t
  end
  row, err_t = run_hook("dao:update:post", row, name, options, nil)
  if not row then
    return fail(err_t)
  end
  self:post_crud_event("update", row, rbw, options)
  return row
end


local function check_upsert(self, entity, options, rbw)
  local entity_to_upsert = self.schema:process_auto_fields(entity, "upsert")
  if rbw and rbw.created_at ~= nil and entity.created_at == nil then
    entity_to_upsert.created_at = rbw.created_at
  end
  return entity_to_upsert
end


local function finish_upsert(self, entity_to_upsert, entity, options, hook_prefix, write, rbw)
  local name = self.schema.name
  local ok, errors = self.schema:validate_upsert(entity_to_upsert)
  if not ok then
    return fail(self.errors:schema_violation(errors))
  end
  local err, err_t
  if not (options and options.transform == false) then
    entity_to_upsert, err = self.schema:transform(entity_to_upsert, entity, "upsert")
    if not entity_to_upsert then
      return fail(self.errors:transformation_error(err))
    end
  end
  ok, err_t = run_hook(hook_prefix .. ":pre", entity_to_upsert, name, options)
  if not ok then
    return fail(err_t)
  end
  local row
  row, err_t = write(entity_to_upsert)
  if not row then
    if hook_prefix ~= "dao:upsert" then -- Kong has no dao:upsert:fail
      run_hook(hook_prefix .. ":fail", err_t, entity_to_upsert, name, options)
    end
    return fail(err_t or self.errors:database_error("upsert returned no row"))
  end
  row, err, err_t = self:row_to_entity(row, options)
  if not row then
    return nil, err, err_t
  end
  row, err_t = run_hook(hook_prefix .. ":post", row, name, options, nil, rbw)
  if not row then
    return fail(err_t)
  end
  self:post_crud_event(rbw and "update" or "create", row, rbw, options)
  return row
end


function DAO:upsert(primary_key, entity, options)
  if type(primary_key) ~= "table" then
    error("primary_key must be a table", 2)
  end
  if type(entity) ~= "table" then
    error("entity must be a table", 2)
  end
  check_options(options)
  local ok, errors = self.schema:validate_primary_key(primary_key)
  if not ok then
    return fail(self.errors:invalid_primary_key(errors))
  end
  local rbw, err, err_t = self:select(primary_key, options)
  if err then
    return nil, err, err_t
  end
  local entity_to_upsert = check_upsert(self, entity, options, rbw)
  for _, name in ipairs(self.schema.primary_key) do
    entity_to_upsert[name] = primary_key[name]
  end
  local strategy = self.strategy
  return finish_upsert(self, entity_to_upsert, entity, options, "dao:upsert",
                       function(e) return strategy:upsert(primary_key, e, options) end, rbw)
end


function DAO:delete(primary_key, options)
  if type(primary_key) ~= "table" then
    error("primary_key must be a table", 2)
  end
  check_options(options)
  local name = self.schema.name
  local ok, errors = self.schema:validate_primary_key(primary_key)
  if not ok then
    return fail(self.errors:invalid_primary_key(errors))
  end
  local entity, err, err_t = self:select(primary_key)
  if err then
    return nil, err, err_t
  end
  if not entity then
    return true
  end
  local cascade_entries = {}
  ok, err_t = run_hook("dao:delete:pre", entity, name, cascade_entries, options, nil)
  if not ok then
    return fail(err_t)
  end
  ok, err_t = self.strategy:delete(primary_key, options)
  if not ok then
    run_hook("dao:delete:fail", err_t, entity, name, options)
    return fail(err_t)
  end
  entity, err_t = run_hook("dao:delete:post", entity, name, options, nil, cascade_entries)
  if not entity then
    return fail(err_t)
  end
  self:post_crud_event("delete", entity, nil, options)
  return true
end


function DAO:truncate()
  return self.strategy:truncate()
end


-- generated methods ---------------------------------------------------------------


local function unique_methods(schema, name, field)
  local m = {}

  local function check_value(self, value)
    if value == nil or value == null then
      error(fmt("%s must be a %s", name, field.type == "foreign" and "table" or field.type), 3)
    end
    local ok, err = schema:validate_field(field, value)
    if not ok then
      return nil, self.errors:invalid_unique(name, err)
    end
    return true
  end

  m["select_by_" .. name] = function(self, value, options)
    check_options(options)
    local ok, err_t = check_value(self, value)
    if not ok then
      return fail(err_t)
    end
    ok, err_t = run_hook("dao:select_by:pre", value, schema.name, options)
    if not ok then
      return fail(err_t)
    end
    local row
    row, err_t = self.strategy:select_by_field(name, value, options)
    if err_t then
      return fail(err_t)
    end
    if not row then
      return nil
    end
    return finish_read(self, row, options, "dao:select_by:post")
  end

  m["update_by_" .. name] = function(self, value, entity, options)
    check_options(options)
    local ok, err_t = check_value(self, value)
    if not ok then
      return fail(err_t)
    end
    ok, err_t = run_hook("dao:update_by:pre", value, schema.name, options)
    if not ok then
      return fail(err_t)
    end
    local entity_to_update, rbw, err
    entity_to_update, rbw, err, err_t = check_update(self, value, entity, options, name)
    if not entity_to_update then
      run_hook("dao:update_by:fail", err_t, entity_to_update, schema.name, options)
      return nil, err, err_t
    end
    local row
    row, err_t = self.strategy:update_by_field(name, value, entity_to_update, options)
    if not row then
      err_t = err_t or self.errors:not_found_by_field({ [name] = value })
      run_hook("dao:update_by:fail", err_t, entity_to_update, schema.name, options)
      return fail(err_t)
    end
    row, err, err_t = self:row_to_entity(row, options)
    if not row then
      return nil, err, err_t
    end
    row, err_t = run_hook("dao:update_by:post", row, schema.name, options, nil)
    if not row then
      return fail(err_t)
    end
    self:post_crud_event("update", row, rbw, options)
    return row
  end

  m["upsert_by_" .. name] = function(self, value, entity, options)
    check_options(options)
    local ok, err_t = check_value(self, value)
    if not ok then
      return fail(err_t)
    end
    local rbw, err
    rbw, err, err_t = self["select_by_" .. name](self, value, options)
    if err then
      return nil, err, err_t
    end
    local entity_to_upsert = check_upsert(self, entity, options, rbw)
    entity_to_upsert[name] = value
    if rbw then
      for _, pk in ipairs(schema.primary_key) do
        entity_to_upsert[pk] = rbw[pk]
      end
    end
    local strategy = self.strategy
    return finish_upsert(self, entity_to_upsert, entity, options, "dao:upsert_by",
                         function(e) return strategy:upsert_by_field(name, value, e, options) end, rbw)
  end

  m["delete_by_" .. name] = function(self, value, options)
    check_options(options)
    local ok, err_t = check_value(self, value)
    if not ok then
      return fail(err_t)
    end
    local entity, err
    entity, err, err_t = self["select_by_" .. name](self, value)
    if err then
      return nil, err, err_t
    end
    if not entity then
      return true
    end
    local cascade_entries = {}
    ok, err_t = run_hook("dao:delete_by:pre", entity, schema.name, cascade_entries, options)
    if not ok then
      return fail(err_t)
    end
    ok, err_t = self.strategy:delete_by_field(name, value, options)
    if not ok then
      run_hook("dao:delete_by:fail", err_t, entity, schema.name, options)
      return fail(err_t)
    end
    entity, err_t = run_hook("dao:delete_by:post", entity, schema.name, options, nil, cascade_entries)
    if not entity then
      return fail(err_t)
    end
    self:post_crud_event("delete", entity, nil, options)
    return true
  end

  return m
end


local function foreign_methods(schema, name)
  local m = {}

  m["page_for_" .. name] = function(self, foreign_key, size, offset, options)
    if type(foreign_key) ~= "table" then
      error("foreign_key must be a table", 2)
    end
    check_options(options)
    local err_t
    size, err_t = check_size(self, size)
    if not size then
      return fail(err_t)
    end
    local ok
    ok, err_t = run_hook("dao:page_for:pre", foreign_key, schema.name, options)
    if not ok then
      return fail(err_t)
    end
    local rows, _, next_offset
    rows, err_t, next_offset = self.strategy:page_for(name, foreign_key, size, offset, options)
    if not rows then
      return fail(err_t)
    end
    local entities, err
    entities, err, err_t = self:rows_to_entities(rows, options)
    if not entities then
      return nil, err, err_t
    end
    entities, err_t = run_hook("dao:page_for:post", entities, schema.name, options)
    if not entities then
      return fail(err_t)
    end
    return entities, nil, nil, next_offset
  end

  m["each_for_" .. name] = function(self, foreign_key, size, options)
    if type(foreign_key) ~= "table" then
      error("foreign_key must be a table", 2)
    end
    check_options(options)
    size = check_size(self, size) or DEFAULT_PAGE_SIZE
    local strategy = self.strategy
    return iterate(self, function(s, o)
      return strategy:page_for(name, foreign_key, s, o, options)
    end, size, options)
  end

  return m
end


--- A DAO for `schema` (custom methods of `schema.dao` are copied onto it,
-- with the generated/base ones reachable through `self.super`).
function _M.new(db, schema, strategy, errors)
  local generated = {}
  for name, field in schema:each_field() do
    if field.type == "foreign" then
      for k, fn in pairs(foreign_methods(schema, name)) do
        generated[k] = fn
      end
    end
    if field.unique or schema.endpoint_key == name then
      for k, fn in pairs(unique_methods(schema, name, field)) do
        generated[k] = fn
      end
    end
  end
  local super = setmetatable(generated, DAO)
  local self = {
    db = db,
    schema = schema,
    strategy = strategy,
    errors = errors,
    pagination = { page_size = DEFAULT_PAGE_SIZE, max_page_size = MAX_PAGE_SIZE },
    super = super,
  }
  if schema.dao then
    for k, fn in pairs(require(schema.dao)) do
      self[k] = fn
    end
  end
  return setmetatable(self, { __index = super })
end


_M.DAO = DAO


return _M
