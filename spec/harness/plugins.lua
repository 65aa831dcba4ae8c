-- Plugin loading and the plugins iterator, in the order of Kong.init /
-- Kong.init_worker (KONG-INTEGRATION §1.8, §2.2; Kong's
-- kong/db/dao/plugins.lua load_plugin_schemas and kong/runloop/handler.lua):
--
-- * load(db, names): per plugin, in the given order (Kong uses pairs()
--   order: not deterministic), require `kong.plugins.<name>.handler` (its
--   module body runs here, in init_by_lua), then `.schema` (added as
--   `kong.db.plugins.schema.subschemas[name]`), then `.daos` if present (an
--   array of entity definitions; each becomes `kong.db.<entity>`).
-- * build_iterator(phase): every plugin row through kong.db.plugins:each()
--   (on_read runs), kept with the configs as built. In init a failure stops
--   start-up, as in Kong; later rebuilds log the error and keep the old one.
-- * init_worker(): each loaded handler's init_worker(), by PRIORITY, for
--   every loaded plugin, configured or not.

local uuid = require "kong.tools.uuid"


local type = type
local pcall = pcall
local ipairs = ipairs
local tostring = tostring
local sort = table.sort
local fmt = string.format
local log = ngx.log
local ERR = ngx.ERR
local INFO = ngx.INFO


local _M = {
  loaded = {},        -- array of { name, handler }
  iterator = nil,     -- { version, phase, builds, built_at, plugins = { rows } }
}


local builds = 0


local function load_module_if_exists(name)
  local ok, mod = pcall(require, name)
  if ok then
    return true, mod
  end
  if type(mod) == "string" and mod:find("module '" .. name .. "' not found", 1, true) then
    return false, nil
  end
  error(mod, 0)
end


function _M.load(db, names)
  local plugins_schema = db.plugins.schema
  for _, name in ipairs(names) do
    local ok, handler = pcall(require, "kong.plugins." .. name .. ".handler")
    if not ok then
      return nil, fmt("%s plugin is enabled but not installed;\n%s", name, tostring(handler))
    end
    local schema_ok, schema = pcall(require, "kong.plugins." .. name .. ".schema")
    if not schema_ok then
      return nil, fmt("no configuration schema found for plugin: %s (%s)", name, tostring(schema))
    end
    local sub_ok, err = plugins_schema:new_subschema(name, schema)
    if not sub_ok then
      return nil, fmt("error initializing schema for plugin %s: %s", name, tostring(err))
    end
    local has_daos, daos = load_module_if_exists("kong.plugins." .. name .. ".daos")
    if has_daos then
      if type(daos) ~= "table" or (next(daos) ~= nil and #daos == 0) then
        return nil, fmt("custom plugin '%s' returned non-array daos definition table", name)
      end
      for _, definition in ipairs(daos) do
        local dao, derr = db:new_dao(definition)
        if not dao then
          return nil, fmt("failed to load custom entities of plugin '%s': %s", name, derr)
        end
      end
    end
    _M.loaded[#_M.loaded + 1] = { name = name, handler = handler }
    log(INFO, "[harness] loaded plugin ", name)
  end
  return true
end


function _M.loaded_set()
  local set = {}
  for _, p in ipairs(_M.loaded) do
    set[p.name] = true
  end
  return set
end


--- Reads every plugin row (on_read runs) and keeps the result.
function _M.build_iterator(phase)
  local loaded = _M.loaded_set()
  local rows = {}
  for row, err in kong.db.plugins:each(1000) do
    if not row then
      return nil, "could not load plugins: " .. tostring(err)
    end
    if loaded[row.name] then
      rows[#rows + 1] = row
    end
  end
  builds = builds + 1
  ngx.update_time()
  _M.iterator = {
    version = uuid.uuid(),
    phase = phase,
    builds = builds,
    built_at = ngx.now(),
    plugins = rows,
  }
  return true
end


function _M.rebuild_iterator(reason)
  local ok, err = _M.build_iterator(reason or "rebuild")
  if not ok then
    log(ERR, "[harness] could not rebuild plugins iterator: ", err)
  end
  return ok, err
end


function _M.init_worker()
  local list = {}
  for i, p in ipairs(_M.loaded) do
    list[i] = p
  end
  sort(list, function(a, b)
    local pa, pb = a.handler.PRIORITY or 0, b.handler.PRIORITY or 0
    if pa == pb then
      return a.name < b.name
    end
    return pa > pb
  end)
  for _, p in ipairs(list) do
    local fn = type(p.handler) == "table" and p.handler.init_worker
    if fn then
      local ok, err = pcall(fn, p.handler)
      if not ok then
        log(ERR, "[harness] init_worker of plugin ", p.name, " failed: ", err)
      end
    end
  end
end


return _M
