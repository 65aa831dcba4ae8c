-- Vault strategies, in the order of Kong.init (KONG-INTEGRATION §1.8 step 4;
-- Kong's kong/db/dao/vaults.lua load_vault_schemas): before any plugin
-- handler loads, per name of `kong.configuration.loaded_vaults` (the order
-- of the `vaults` option; Kong uses pairs() order), require the strategy
-- `kong.vaults.<name>`, call its `init()` if it has one, then require
-- `kong.vaults.<name>.schema` (added as `kong.db.vaults.schema.subschemas[name]`).
-- `kong.vault` (reference resolution, `get`) is not reproduced.

local type = type
local pcall = pcall
local ipairs = ipairs
local tostring = tostring
local fmt = string.format
local log = ngx.log
local INFO = ngx.INFO


local _M = {
  strategies = {},    -- name -> strategy module
}


local function load_vault(vaults_schema, name)
  local ok, strategy = pcall(require, "kong.vaults." .. name)
  if not ok then
    return nil, fmt("%s vault is enabled but not installed;\n%s", name, tostring(strategy))
  end
  if type(strategy) == "table" and type(strategy.init) == "function" then
    strategy.init()
  end
  local schema_ok, schema = pcall(require, "kong.vaults." .. name .. ".schema")
  if not schema_ok then
    return nil, fmt("no configuration schema found for vault: %s (%s)", name, tostring(schema))
  end
  local sub_ok, err = vaults_schema:new_subschema(name, schema)
  if not sub_ok then
    return nil, fmt("error initializing schema for vault: %s", tostring(err))
  end
  _M.strategies[name] = strategy
  return true
end


--- Loads every vault strategy of `names` into `db.vaults`.
function _M.load(db, names)
  local vaults_schema = db.vaults.schema
  for _, name in ipairs(names) do
    local ok, err = load_vault(vaults_schema, name)
    if not ok then
      return nil, err
    end
    log(INFO, "[harness] loaded vault ", name)
  end
  return true
end


return _M
