-- kong.configuration for the harness: a read-only proxy (writing raises
-- "cannot write to configuration", as Kong's kong/pdk/init.lua does) over
-- the node settings. As in Kong's conf_loader, KONG_* environment variables
-- override the defaults for the keys Kong knows (db_update_frequency,
-- db_update_propagation, pg_*); other KONG_* variables are not properties.

local tonumber = tonumber
local getenv = os.getenv


local _M = {}


local DEFAULTS = {
  role = "traditional",
  database = "postgres",
  db_update_frequency = 5,
  db_update_propagation = 0,
  db_cache_ttl = 0,
  pg_host = "127.0.0.1",
  pg_port = 5432,
  pg_user = "postgres",
  pg_password = nil,
  pg_database = "kong",
}


local NUMBERS = { db_update_frequency = true, db_update_propagation = true, db_cache_ttl = true,
                  pg_port = true }


--- The conf table (plain) from the harness options and the environment.
function _M.load(opts)
  local conf = {}
  for k, v in pairs(DEFAULTS) do
    conf[k] = v
  end
  for k, v in pairs(opts or {}) do
    conf[k] = v
  end
  for k in pairs(DEFAULTS) do
    local env = getenv("KONG_" .. k:upper())
    if env and env ~= "" then
      conf[k] = NUMBERS[k] and tonumber(env) or env
    end
  end
  local names = {}
  local set = {}
  for i, name in ipairs(conf.plugins or {}) do
    names[i] = name
    set[name] = true
  end
  conf.plugins = names
  conf.loaded_plugins = set
  local vault_names, vault_set = {}, {}
  for i, name in ipairs(conf.vaults or {}) do
    vault_names[i] = name
    vault_set[name] = true
  end
  conf.vaults = vault_names
  conf.loaded_vaults = vault_set
  conf.prefix = conf.prefix or ngx.config.prefix()
  return conf
end


--- A read-only view of `conf`.
function _M.proxy(conf)
  return setmetatable({
    remove_sensitive = function()
      local copy = {}
      for k, v in pairs(conf) do
        copy[k] = v
      end
      if copy.pg_password then
        copy.pg_password = "******"
      end
      return copy
    end,
  }, {
    __index = conf,
    __newindex = function()
      error("cannot write to configuration", 2)
    end,
  })
end


return _M
