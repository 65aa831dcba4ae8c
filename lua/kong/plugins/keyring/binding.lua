-- Every encrypted value is bound to its row's primary key (the context
-- `<table>:<primary key>` is the AEAD's associated data). Kong's DAO gives the
-- transformation the primary key of the entity *as it will be validated*,
-- which is not always the key the strategy stores the row under:
--
--   upsert(pk, entity)           process_auto_fields gives an entity without
--                                `id` a fresh uuid; the row is stored under `pk`
--   upsert_by_<field>(v, entity) the same uuid, but an existing row keeps its
--                                own id (INSERT ... ON CONFLICT (field) DO UPDATE)
--   update(pk, partial)          an `id` in the partial entity wins the merge
--   update_by_<field>(v, partial)  with the read-before-write row; the stored
--                                row keeps its id
--
-- (kong/db/dao/init.lua check_upsert / check_update, kong/db/schema/init.lua
-- process_auto_fields, kong/db/strategies/postgres/init.lua). This module
-- wraps those methods on the DAO instances of schemas with encrypted fields
-- so the entity handed to Kong carries the key the row is stored under.
-- Kong's files are not changed: instance fields shadow the DAO's methods.

local fields = require "kong.plugins.keyring.fields"
local TRANSFORMATION_ERROR = require("kong.db.errors").codes.TRANSFORMATION_ERROR


local type = type
local pairs = pairs
local ipairs = ipairs
local copy = fields.copy


local _M = {}


-- `entity` with its primary key fields set to `key` (a new table)
local function bound(entity, key)
  local out = copy(entity)
  for k, v in pairs(key) do
    out[k] = v
  end
  return out
end


-- `partial` without primary key fields: an update never changes them
local function without_key(schema, partial)
  local out
  for _, name in ipairs(schema.primary_key) do
    if partial[name] ~= nil then
      out = out or copy(partial)
      out[name] = nil
    end
  end
  return out or partial
end


-- The stored primary key of the row whose `field` is `value`, if any. Read
-- without transformations: only the key is needed, and the row may hold
-- values this node cannot decrypt.
local function stored_key(dao, field, value, options)
  local opts = options and copy(options) or {}
  opts.transform = false
  local row, err, err_t = dao["select_by_" .. field](dao, value, opts)
  if err then
    return nil, err, err_t
  end
  return row and dao.schema:extract_pk_values(row) or false
end


-- upsert_by_<field>: bind to the existing row's key, else to a key of our
-- own choosing that the insert will use. A row created by another request
-- between the read and the write (the write then lands on that row, bound
-- to the wrong key, and reading it back fails) is written again, bound to it.
local function wrap_upsert_by(dao, field)
  local name = "upsert_by_" .. field
  local original = dao[name]
  dao[name] = function(self, value, entity, options)
    if type(entity) ~= "table" then
      return original(self, value, entity, options)
    end
    local row, err, err_t
    for _ = 1, 3 do
      local key
      key, err, err_t = stored_key(self, field, value, options)
      if key == nil then
        return nil, err, err_t
      end
      local to_write = key and bound(entity, key) or entity
      row, err, err_t = original(self, value, to_write, options)
      if row or key or not err_t or err_t.code ~= TRANSFORMATION_ERROR then
        return row, err, err_t
      end
    end
    return row, err, err_t
  end
end


--- Wraps the write methods of `dao` (once).
function _M.wrap(dao)
  if dao.keyring_bound then
    return
  end
  dao.keyring_bound = true
  local schema = dao.schema

  local upsert, update = dao.upsert, dao.update
  dao.upsert = function(self, pk_or_entity, entity, options)
    if type(pk_or_entity) == "table" and type(entity) == "table" then
      entity = bound(entity, schema:extract_pk_values(pk_or_entity))
    end
    return upsert(self, pk_or_entity, entity, options)
  end
  dao.update = function(self, pk_or_entity, entity, options)
    if type(entity) == "table" then
      entity = without_key(schema, entity)
    end
    return update(self, pk_or_entity, entity, options)
  end

  for field, def in schema:each_field() do
    if def.unique and dao["upsert_by_" .. field] then
      wrap_upsert_by(dao, field)
      local update_by = dao["update_by_" .. field]
      dao["update_by_" .. field] = function(self, value, entity, options)
        if type(entity) == "table" then
          entity = without_key(schema, entity)
        end
        return update_by(self, value, entity, options)
      end
    end
  end
end


return _M
