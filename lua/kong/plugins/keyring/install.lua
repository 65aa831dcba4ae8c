-- What loading the plugin does to Kong (KONG-INTEGRATION §1.5, §1.8, §7a):
-- read and validate KONG_KEYRING_*, create the keyring region, and append
-- whole-entity transformations to every schema with `encrypted = true`
-- fields, plus a `dao:upsert:pre` / `dao:upsert_by:pre` safety net for `transform = false` upserts
-- (`kong config db_import`). Runs in the handler's module body, i.e. in
-- Kong.init before the first plugins-iterator build.

local keyring = require "kong.keyring"
local config = require "kong.keyring.config"
local cluster = require "kong.keyring.strategies.cluster"
local fields = require "kong.plugins.keyring.fields"
local transform = require "kong.plugins.keyring.transform"
local state = require "kong.plugins.keyring.state"


local ngx = ngx
local type = type
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local require = require
local get_phase = ngx.get_phase
local fmt = string.format


local _M = {}


local function log(level, ...)
  ngx.log(level, "[keyring] ", ...)
end


local function warn(msg)
  log(ngx.WARN, msg)
end


-- Per-process random stand-in for a value that cannot be decrypted where the
-- caller cannot fail (SPEC §1.3): never the stored ciphertext.
local placeholder
do
  local bytes = {}
  local f = io.open("/dev/urandom", "rb")
  local raw = f and f:read(32) or tostring(math.random()) .. tostring(os.time())
  if f then
    f:close()
  end
  for i = 1, #raw do
    bytes[i] = fmt("%02x", raw:byte(i))
  end
  placeholder = "$ke$unavailable$" .. table.concat(bytes):sub(1, 64)
end
_M.placeholder = placeholder


local CANNOT_FAIL = { init = true, init_worker = true }


local function unavailable(err)
  return err == "no active keyring key on this node" or err:find("is not available on this node", 1, true)
end


-- An error from a transformation. In an Admin API request, answer as SPEC
-- §1.3 says (503 for a missing key, 400 for a refused value), not with Kong's
-- generic 500 for transformation errors.
local function failed(err, writing)
  if get_phase() == "content" and kong and kong.response then
    if unavailable(err) then
      return kong.response.exit(503, { message = err })
    end
    if writing then
      return kong.response.exit(400, { message = "schema violation (" .. err .. ")",
                                       name = "schema violation", code = 2 })
    end
  end
  return nil, err
end


local function hide_ciphertext(v)
  return v:sub(1, 4) == "$ke$" and placeholder or v
end


-- on_write / on_read around `encrypt` / `decrypt` of transform.lua, for the
-- plan `plan_of(entity)`. Where the caller cannot fail (init, init_worker:
-- Kong's plugins iterator and router builds), an unreadable value becomes
-- the placeholder and the configuration is flushed once keys arrive.
local function transformation(schema, plan_of, encrypt, decrypt, hidden)
  return {
    on_write = function(entity)
      local plan = plan_of(entity)
      if #plan == 0 then
        return entity
      end
      local out, err = encrypt(schema, plan, entity)
      if not out then
        return failed(err, true)
      end
      return out
    end,
    on_read = function(entity)
      local plan = plan_of(entity)
      if #plan == 0 then
        return entity
      end
      local out, err = decrypt(schema, plan, entity)
      if not out and CANNOT_FAIL[get_phase()] then
        state.needs_flush = true
        log(ngx.WARN, "stored ", schema.name, " value unreadable during ", get_phase(), ": ", err)
        return hidden(plan, entity)
      end
      if not out then
        return failed(err, false)
      end
      return out
    end,
  }
end


local function entity_transformation(schema, plan)
  return transformation(schema, function() return plan end,
                        transform.encrypt_entity, transform.decrypt_entity,
                        function(_, entity)
                          return fields.apply(plan, entity, hide_ciphertext)
                        end)
end


-- plans of config subschemas, per entity (plugins, vaults) and subschema name
local config_plans = {}


local function config_plan(schema, name)
  local plans = config_plans[schema.name]
  if not plans then
    plans = {}
    config_plans[schema.name] = plans
  end
  local plan = plans[name]
  if plan == nil then
    local sub = schema.subschemas and schema.subschemas[name]
    plan = sub and fields.config_plan(sub, name, warn) or {}
    plans[name] = plan
    if #plan > 0 then
      log(ngx.INFO, "encrypting ", name, " ", schema.name, " fields: ", fields.describe(plan, "config"))
    end
  end
  return plan
end


-- For entities whose `config` record is specialised per row by a subschema
-- (plugins and vaults, by `name`): the plan is looked up lazily, since
-- subschemas are registered after the handler loads.
local function config_transformation(schema)
  local key = schema.subschema_key
  return transformation(schema, function(entity) return config_plan(schema, entity[key]) end,
                        transform.encrypt_config, transform.decrypt_config,
                        function(plan, entity)
                          return { config = fields.apply(plan, entity.config, hide_ciphertext) }
                        end)
end


local installed = {} -- schemas already handled
-- on_write functions of the transformations we appended: Kong's Schema.new
-- deep-copies a definition's transformation tables, but not the functions
local ours = {}


local function append(schema, transformation)
  schema.transformations = schema.transformations or {}
  schema.transformations[#schema.transformations + 1] = transformation
  ours[transformation.on_write] = true
end


-- An entity schema (a live DAO schema or a daos.lua definition not yet
-- turned into one: Schema.new copies the transformations list).
local function install_entity(schema)
  if installed[schema] or type(schema.fields) ~= "table" then
    return
  end
  installed[schema] = true
  if schema.subschema_key then
    append(schema, config_transformation(schema))
    return
  end
  local plan = fields.entity_plan(schema, warn)
  if #plan > 0 then
    append(schema, entity_transformation(schema, plan))
    log(ngx.INFO, "encrypting ", schema.name, " fields: ", fields.describe(plan))
  end
end


-- `kong config db_import` upserts with transform = false: encrypt in place.
local function upsert_safety_net(entity, name, options)
  if type(options) ~= "table" or options.transform ~= false or type(entity) ~= "table" then
    return true
  end
  local dao = kong.db[name]
  local schema = dao and dao.schema
  if not schema or not schema.transformations then
    return true
  end
  for _, t in ipairs(schema.transformations) do
    if ours[t.on_write] then
      local out, err = t.on_write(entity)
      if not out then
        return nil, err
      end
      for k, v in pairs(out) do
        entity[k] = v
      end
    end
  end
  return true
end


--- Keys arrived after config was built with placeholders: flush the core
-- cache (every worker of the node) so the router and plugins iterator are
-- rebuilt with plaintext (SPEC §1.3).
function _M.keys_arrived()
  if state.needs_flush and kong.core_cache then
    state.needs_flush = false
    log(ngx.NOTICE, "keys arrived: flushing configuration built with placeholders")
    kong.core_cache:purge()
  end
end


--- Reads the settings and installs everything. Errors stop Kong's start-up.
function _M.at_load()
  local conf = assert(config.load())
  state.conf = conf

  if not conf.explicit.keyring_enabled then
    warn("KONG_KEYRING_ENABLED is not set: keyring_* lines in kong.conf are ignored by Kong OSS; "
         .. "set KONG_KEYRING_ENABLED, KONG_KEYRING_STRATEGY, KONG_KEYRING_PUBLIC_KEY, ... instead")
  end

  local kconf = kong and kong.configuration or {}
  if not conf.keyring_enabled or kconf.role == "data_plane" or kconf.database == "off" then
    -- values pass through; marked values stay readable once enabled
    return
  end

  if conf.keyring_strategy ~= "cluster" then
    error("keyring_strategy (KONG_KEYRING_STRATEGY): '" .. conf.keyring_strategy
          .. "' is not available in this version of kong-keyring, only 'cluster' is", 0)
  end

  if ngx.IS_CLI then
    -- `kong config db_import` / `db_export`: no key region here (SPEC §9a)
    transform.go_offline()
  else
    assert(keyring.init({ write_format = conf.keyring_write_format, accept_legacy = conf.keyring_accept_legacy }))
    state.strategy = cluster.new(conf, kong.db, _M.keys_arrived)
  end

  for _, dao in pairs(kong.db.daos or {}) do
    install_entity(dao.schema)
  end

  -- plugins whose entities Kong has not created yet (pairs order)
  for name in pairs(kconf.loaded_plugins or {}) do
    local ok, defs = pcall(require, "kong.plugins." .. name .. ".daos")
    if ok and type(defs) == "table" then
      for _, def in ipairs(defs) do
        if not (kong.db.daos or {})[def.name] then
          install_entity(def)
        end
      end
    end
  end

  local hooks = require "kong.hooks"
  hooks.register_hook("dao:upsert:pre", upsert_safety_net)
  hooks.register_hook("dao:upsert_by:pre", upsert_safety_net)
end


--- Per worker: lock the region, then run the strategy (worker 0 only).
function _M.init_worker()
  if not state.strategy then
    return
  end
  local ok, err = keyring.init_worker()
  if not ok then
    log(ngx.ERR, "cannot lock the keyring region in memory: ", err)
  end
  if ngx.worker.id() ~= 0 then
    return
  end
  ngx.timer.at(0, function(premature)
    if premature then
      return
    end
    local res, berr = state.strategy:bootstrap()
    if not res then
      log(ngx.ERR, "bootstrap failed: ", berr)
      return
    end
    if res == "bootstrapped" then
      log(ngx.NOTICE, "generated and activated the cluster's first key")
    end
  end)
end


return _M
