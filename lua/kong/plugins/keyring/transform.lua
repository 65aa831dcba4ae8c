-- The whole-entity transformations the plugin appends to Kong schemas
-- (docs/kong-integration.md, "Schema transformations"; docs/design.md,
-- "Transformations", "Contexts", "Missing keys").
--
-- No `input`/`needs`: Kong then passes the whole entity on every write, so a
-- PATCH that does not mention an encrypted field still re-encrypts it (the
-- read-before-write gave us its plaintext). on_write is idempotent (marked
-- values are kept, after checking they belong to this row); on_read decrypts
-- only marked values, so plaintext and data-plane rows pass through.

local keyring = require "kong.keyring"
local fields = require "kong.plugins.keyring.fields"


local type = type
local ipairs = ipairs
local tostring = tostring
local concat = table.concat
local fmt = string.format


local MARKER = "$ke$"


local _M = {}


--- The context of a row of `schema` whose primary key is `key` (text;
-- composite keys joined with ",").
local function key_context(schema, key)
  return schema.name .. ":" .. key
end
_M.key_context = key_context


--- `<table>:<primary key>` (docs/design.md, "Contexts"); composite keys
-- joined with ",".
function _M.context(schema, entity)
  local pk = schema.primary_key or { "id" }
  if #pk == 1 then
    return key_context(schema, tostring(entity[pk[1]]))
  end
  local parts = {}
  for i, name in ipairs(pk) do
    parts[i] = tostring(entity[name])
  end
  return key_context(schema, concat(parts, ","))
end


--- Whether `v` is a value the keyring wrote (it starts with `$ke$`).
local function marked(v)
  return type(v) == "string" and v:sub(1, #MARKER) == MARKER
end
_M.marked = marked


local OFFLINE = "keyring keys are only available in a running node"

-- Set in the Kong CLI (`kong config db_import` / `db_export`), where no key
-- region exists: marked values pass through both ways, plaintext is refused.
local offline = false


--- Switches this process to offline mode (docs/design.md, "Where there is
-- no key region").
function _M.go_offline()
  offline = true
end


function _M.is_offline()
  return offline
end


-- `cluster_lists(id)`: whether the cluster lists a key id (true / false;
-- nil when it cannot tell). A marked value under an id it does not list is
-- bad input (400); under an id it lists but this node lacks, a 503.
local cluster_lists


function _M.set_cluster_lookup(fn)
  cluster_lists = fn
end


local function encryptor(context)
  return function(v, path)
    if v == "" then
      return v
    end
    if offline then
      if marked(v) then
        return v
      end
      return nil, fmt("%s: %s", path, OFFLINE), "invalid"
    end
    if marked(v) then
      -- never store a value copied from another row, or under a key this
      -- node cannot check: it must open under this row's context
      local _, err, kind = keyring.decrypt(v, context)
      if err then
        local id = kind == "unavailable" and err:match("^keyring key '(.-)' is not available on this node$")
        if id and cluster_lists and cluster_lists(id) == false then
          return nil, fmt("%s: encrypted value under key '%s', which the cluster does not list", path, id), "invalid"
        end
        return nil, fmt("%s: encrypted value cannot be stored in this row (%s)", path, err),
               kind == "unavailable" and kind or "invalid"
      end
      return v
    end
    return keyring.encrypt(v, context)
  end
end


-- keyring_accept_legacy = off: an unmarked stored value is refused on read
-- (kong.keyring's decrypt says why), as the Lua API refuses it
local unmarked_ok = true


--- Whether reads pass unmarked (plaintext, pre-keyring) values through.
function _M.accept_unmarked(yes)
  unmarked_ok = yes ~= false
end


-- The context of the row being read: set just before a walk, which never
-- yields (decryption is one FFI call), so no closure is made per row.
local read_context


local function decrypt_value(v)
  if offline or (unmarked_ok and not marked(v)) then
    return v
  end
  return keyring.decrypt(v, read_context)
end


--- on_write for an entity schema with a non-empty plan.
-- @return the changed fields, or nil and an error
function _M.encrypt_entity(schema, plan, entity)
  if type(entity) ~= "table" then
    return entity
  end
  return fields.apply(plan, entity, encryptor(_M.context(schema, entity)))
end


--- For validators that Kong runs before the transformations (certificates
-- parse `key` as a PEM key): the entity with its marked values opened under
-- this row's context. In the CLI, where nothing can be opened, `false` when
-- a planned value is marked (the running node that wrote it validated it).
-- @return the entity, false, or nil, an error and its kind
function _M.open_entity(schema, plan, entity)
  local any_marked = false
  local out, err, kind = fields.apply(plan, entity, function(v, path)
    if not marked(v) then
      return v
    end
    any_marked = true
    if offline then
      return v
    end
    local plain, derr, kind = keyring.decrypt(v, _M.context(schema, entity))
    if not plain then
      return nil, fmt("%s: encrypted value cannot be stored in this row (%s)", path, derr),
             kind == "unavailable" and kind or "invalid"
    end
    return plain
  end)
  if not out then
    return nil, err, kind
  end
  if offline and any_marked then
    return false
  end
  return out
end


--- on_read for an entity schema with a non-empty plan: decrypts the row in
-- place. @return the row with plaintext, or nil and an error
function _M.decrypt_entity(schema, plan, entity)
  if type(entity) ~= "table" then
    return entity
  end
  read_context = _M.context(schema, entity)
  return fields.apply(plan, entity, decrypt_value, nil, true)
end


--- on_write for a plugin (or vault) row: walks `config` with the plan of the
-- row's subschema; `schema` is the entity's (its name is the context's).
-- @return `{ config = ... }`, or nil and an error
function _M.encrypt_config(schema, plan, entity)
  if type(entity) ~= "table" or type(entity.config) ~= "table" then
    return entity
  end
  local config, err, kind = fields.apply(plan, entity.config, encryptor(_M.context(schema, entity)), "config")
  if not config then
    return nil, err, kind
  end
  return { config = config }
end


--- on_read for a plugin (or vault) row: decrypts its `config` in place.
-- @return the row, or nil and an error
function _M.decrypt_config(schema, plan, entity)
  if type(entity) ~= "table" or type(entity.config) ~= "table" then
    return entity
  end
  read_context = _M.context(schema, entity)
  local _, err, kind = fields.apply(plan, entity.config, decrypt_value, nil, true)
  if err then
    return nil, err, kind
  end
  return entity
end


return _M
