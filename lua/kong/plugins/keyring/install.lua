-- What loading the plugin does to Kong (docs/design.md, "Field encryption in
-- Kong"; docs/kong-integration.md, "Schema transformations", "Start-up order"):
-- read and validate KONG_KEYRING_*, create the keyring region, and append
-- whole-entity transformations to every schema with `encrypted = true`
-- fields, plus a `dao:upsert:pre` / `dao:upsert_by:pre` safety net for `transform = false` upserts
-- (`kong config db_import`). Runs in the handler's module body, i.e. in
-- Kong.init before the first plugins-iterator build.

local keyring = require "kong.keyring"
local config = require "kong.keyring.config"
local cluster = require "kong.keyring.strategies.cluster"
local vault = require "kong.keyring.strategies.vault"
local nodes = require "kong.keyring.strategies.cluster.nodes"
local fields = require "kong.plugins.keyring.fields"
local transform = require "kong.plugins.keyring.transform"
local state = require "kong.plugins.keyring.state"
local binding = require "kong.plugins.keyring.binding"
local errors = require "kong.plugins.keyring.errors"
local checks = require "kong.plugins.keyring.checks"
local stored = require "kong.plugins.keyring.stored"
local rewrap = require "kong.plugins.keyring.rewrap"
local ADMIN_API = require("kong.pdk.private.phases").phases.admin_api


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
-- caller cannot fail (docs/design.md, "Missing keys"): never the stored
-- ciphertext.
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


-- Where an unreadable value becomes the placeholder instead of an error.
-- Entities (credentials...): only where Kong cannot fail (init, init_worker)
-- — on the proxy a credential must never be compared with a placeholder, and
-- a 401 would lock a valid user out silently. Plugin and vault configs: also
-- in the proxy's iterator rebuilds (rewrite, access, timers), since Kong
-- keeps its stale plugins iterator when a rebuild fails and no plugin change
-- would reach the proxy any more; a placeholder secret fails closed. Never in
-- nginx's content phase (but for Kong's GET /): the Admin API answers, and
-- a control plane's export to data planes must fail rather than ship
-- placeholders.
local CANNOT_FAIL = { init = true, init_worker = true }

local function entity_may_hide(phase)
  return CANNOT_FAIL[phase]
end

local function config_may_hide(phase)
  if phase ~= "content" then
    return true
  end
  -- Kong's node information (GET /) reads every plugin row only to list
  -- their names: it must answer on a node that lacks a key
  return ngx.ctx.KONG_PHASE == ADMIN_API and ngx.var.uri == "/" and ngx.req.get_method() == "GET"
end


-- Whether some worker of this node (or the master, in init) built
-- configuration with placeholders: in Kong's `kong` shm, since the keys may
-- arrive through a request another worker serves.
local NEEDS_FLUSH = "keyring:needs_flush"

local function flag_placeholders()
  local shm = ngx.shared.kong
  if shm then
    shm:set(NEEDS_FLUSH, true)
  end
end


-- One error-log line per key id and worker for reads that fail on the proxy
-- (the request itself gets Kong's 500).
local reported = {}

local function report_unreadable(err)
  local id = err:match("keyring key '([^']+)' is not available on this node")
  if not reported[id or err] then
    reported[id or err] = true
    log(ngx.ERR, "cannot read stored values: ", err, "; requests that need them fail until the key is imported ",
        "(POST /keyring/import) or recovered")
  end
end


local function failed(err, kind, writing)
  local ctx = get_phase() == "content" and ngx.ctx
  if ctx and ctx.KONG_PHASE == ADMIN_API and kong and kong.response then
    local status = errors.status(kind)
    if status == 503 then
      return kong.response.exit(503, { message = err })
    end
    if writing and status < 500 then
      return kong.response.exit(400, { message = "schema violation (" .. err .. ")",
                                       name = "schema violation", code = 2 })
    end
  end
  return nil, err
end


local function hide_ciphertext(v)
  return transform.marked(v) and placeholder or v
end


-- on_write / on_read around `encrypt` / `decrypt` of transform.lua, for
-- `plan`. on_read decrypts the row in place and returns nothing to merge:
-- Kong merges a transformation's answer into the row, a walk of the whole
-- config that cost more than the decryption. Where `may_hide(phase)`, an
-- unreadable value becomes the placeholder and the configuration is flushed
-- once keys arrive.
local function transformation(schema, plan, encrypt, decrypt, hide, may_hide)
  return {
    on_write = function(entity)
      local out, err, kind = encrypt(schema, plan, entity)
      if not out then
        return failed(err, kind, true)
      end
      return out
    end,
    on_read = function(entity)
      local out, err, kind = decrypt(schema, plan, entity)
      if out then
        return {}
      end
      local phase = get_phase()
      if may_hide(phase) then
        flag_placeholders()
        log(ngx.WARN, "stored ", schema.name, " value unreadable during ", phase, ": ", err)
        hide(entity)
        return {}
      end
      if phase ~= "content" then
        report_unreadable(err)
      end
      return failed(err, kind, false)
    end,
  }
end


-- on_write of entities: the validators Kong could not run on marked values
-- (checks.lua), then encryption
local function encrypt_checked(schema, plan, entity)
  local ok, err, kind = checks.run_deferred(schema, plan, entity)
  if not ok then
    return nil, err, kind
  end
  return transform.encrypt_entity(schema, plan, entity)
end


local function entity_transformation(schema, plan)
  return transformation(schema, plan, encrypt_checked, transform.decrypt_entity,
                        function(entity)
                          fields.apply(plan, entity, hide_ciphertext, nil, true)
                        end, entity_may_hide)
end


-- For a plugin's or vault's config subschema: the row's context is named
-- after the entity (`plugins:<id>`), not after the subschema.
local function config_transformation(entity_name, plan)
  return transformation({ name = entity_name, primary_key = { "id" } }, plan,
                        transform.encrypt_config, transform.decrypt_config,
                        function(entity)
                          fields.apply(plan, entity.config, hide_ciphertext, "config", true)
                        end, config_may_hide)
end


local installed = {} -- schemas and subschemas already handled
-- on_write functions of the transformations we appended: Kong's Schema.new
-- deep-copies a definition's transformation tables, but not the functions
local ours = {}


local function append(schema, transformation)
  schema.transformations = schema.transformations or {}
  schema.transformations[#schema.transformations + 1] = transformation
  ours[transformation.on_write] = true
end


local function has_ours(schema)
  for _, t in ipairs(schema and schema.transformations or {}) do
    if ours[t.on_write] then
      return true
    end
  end
  return false
end


-- Whether `schema` or one of its subschemas holds one of our
-- transformations (also a live schema that Kong built from a definition we
-- had patched).
local function encrypting(schema)
  if has_ours(schema) then
    return true
  end
  for _, sub in pairs(schema.subschemas or {}) do
    if has_ours(sub) then
      return true
    end
  end
  return false
end


-- A plugin's or vault's config subschema, live or still a definition (Kong
-- adds the subschemas of plugins that load after this one later, from their
-- schema modules: Schema.new copies the transformations list). The
-- transformation sits on the subschema, so rows of plugins without
-- encrypted fields never pay for it.
local function install_config(entity_name, sub_name, sub)
  if installed[sub] or type(sub) ~= "table" or type(sub.fields) ~= "table" or has_ours(sub) then
    return
  end
  installed[sub] = true
  local plan = fields.config_plan(sub, sub_name, warn)
  if #plan > 0 then
    append(sub, config_transformation(entity_name, plan))
    local dao = kong.db and kong.db[entity_name]
    stored.add_config(entity_name, dao and dao.schema.table_name or entity_name, sub_name, plan)
    log(ngx.INFO, "encrypting ", sub_name, " ", entity_name, " fields: ", fields.describe(plan, "config"))
  end
end


-- An entity schema (a live DAO schema or a daos.lua definition not yet
-- turned into one). For plugins and vaults, their subschemas as they are now.
local function install_entity(schema)
  if type(schema.fields) ~= "table" then
    return
  end
  if schema.subschema_key then
    for name, sub in pairs(schema.subschemas or {}) do
      install_config(schema.name, name, sub)
    end
    return
  end
  if installed[schema] or has_ours(schema) then
    return
  end
  installed[schema] = true
  local plan = fields.entity_plan(schema, warn)
  if #plan > 0 then
    append(schema, entity_transformation(schema, plan))
    stored.add_entity(schema, plan)
    log(ngx.INFO, "encrypting ", schema.name, " fields: ", fields.describe(plan))
  end
end


-- Our on_write functions for `entity` of `schema`: the entity's, or its
-- config subschema's.
local function our_writes(schema, entity)
  local list = {}
  local sub = schema.subschema_key and schema.subschemas and schema.subschemas[entity[schema.subschema_key]]
  for _, s in ipairs({ schema, sub }) do
    for _, t in ipairs(s.transformations or {}) do
      if ours[t.on_write] then
        list[#list + 1] = t.on_write
      end
    end
  end
  return list
end


-- Binds writes to the stored primary key (binding.lua) on every DAO whose
-- schema got one of our transformations.
local function bind_daos()
  for _, dao in pairs(kong.db and kong.db.daos or {}) do
    if encrypting(dao.schema) then
      binding.wrap(dao)
    end
  end
end


-- Writes our transformations did not see: upserts with transform = false
-- (`kong config db_import` of an export), and in Kong's CLI every write
-- (the CLI loads plugin handlers before it creates `kong.db`, so the
-- schemas get our transformations here, on first use; what ran before did
-- not include them). Our on_write is applied to the entity being written:
-- in place for upserts and updates; an insert's pre hook only sees the
-- caller's input, so there it can only refuse.
local function safety_net(entity, name, options, in_place)
  if type(entity) ~= "table" then
    return true
  end
  local skipped = type(options) == "table" and options.transform == false
  if not (skipped or transform.is_offline()) then
    return true
  end
  local dao = kong.db[name]
  local schema = dao and dao.schema
  if not schema then
    return true
  end
  install_entity(schema)
  for _, on_write in ipairs(our_writes(schema, entity)) do
    local out, err = on_write(entity)
    if not out then
      return nil, err
    end
    if in_place then
      for k, v in pairs(out) do
        entity[k] = v
      end
    end
  end
  return true
end


local function write_safety_net(entity, name, options)
  return safety_net(entity, name, options, true)
end


local function insert_safety_net(entity, name, options)
  return safety_net(entity, name, options, false)
end


--- Keys arrived after config was built with placeholders: flush the core
-- cache (every worker of the node) so the router and plugins iterator are
-- rebuilt with plaintext (docs/design.md, "Missing keys").
function _M.keys_arrived()
  local shm = ngx.shared.kong
  if shm and shm:get(NEEDS_FLUSH) and kong.core_cache then
    shm:delete(NEEDS_FLUSH)
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

  if ngx.IS_CLI then
    -- marked values in an export pass Kong's validators, keyring on or off
    checks.install()
  end

  local kconf = kong and kong.configuration or {}
  if not conf.keyring_enabled or kconf.role == "data_plane" or kconf.database == "off" then
    -- values pass through; marked values stay readable once enabled
    return
  end

  if kconf.cluster_rpc and kconf.cluster_incremental_sync then
    -- Kong would write decrypted rows into clustering_sync_delta
    error("keyring_enabled (KONG_KEYRING_ENABLED) cannot be on together with cluster_rpc and "
          .. "cluster_incremental_sync: Kong's incremental sync stores the rows it sends to data planes, "
          .. "decrypted, in clustering_sync_delta; turn cluster_incremental_sync off", 0)
  end

  if ngx.IS_CLI then
    -- `kong config db_import` / `db_export`: no key region here
    -- (docs/design.md, "Where there is no key region")
    transform.go_offline()
  else
    assert(keyring.init({ write_format = conf.keyring_write_format, accept_legacy = conf.keyring_accept_legacy }))
    transform.accept_unmarked(conf.keyring_accept_legacy)
    if conf.keyring_strategy == "vault" then
      -- keys read from Vault (docs/design.md, "Vault strategy")
      state.strategy = vault.new(conf, _M.keys_arrived)
    else
      -- before the workers fork: every worker can open keys sent to this node
      assert(nodes.make_pair())
      state.strategy = cluster.new(conf, kong.db, _M.keys_arrived)
    end
    transform.set_cluster_lookup(function(id)
      return (state.strategy:lists(id))
    end)
  end

  checks.install()

  -- `kong.db` is nil when Kong's CLI loads this handler (kong config ...)
  local daos = kong.db and kong.db.daos or {}
  for _, dao in pairs(daos) do
    install_entity(dao.schema)
  end
  bind_daos()

  -- plugins Kong has not loaded yet (pairs order): their entities and their
  -- config subschemas, through the definitions Kong will build them from
  local subschemas = daos.plugins and daos.plugins.schema.subschemas or {}
  for name in pairs(kconf.loaded_plugins or {}) do
    local ok, defs = pcall(require, "kong.plugins." .. name .. ".daos")
    if ok and type(defs) == "table" then
      for _, def in ipairs(defs) do
        if not daos[def.name] then
          install_entity(def)
        end
      end
    end
    if not subschemas[name] then
      local def
      ok, def = pcall(require, "kong.plugins." .. name .. ".schema")
      if ok and type(def) == "table" then
        install_config("plugins", name, def)
      end
    end
  end

  local hooks = require "kong.hooks"
  hooks.register_hook("dao:upsert:pre", write_safety_net)
  hooks.register_hook("dao:upsert_by:pre", write_safety_net)
  if ngx.IS_CLI then
    hooks.register_hook("dao:update:pre", write_safety_net)
    hooks.register_hook("dao:insert:pre", insert_safety_net)
  end
end


--- Per worker: lock the region, then join the cluster's key exchange
-- (worker 0 also makes the first key of a new cluster and runs the rounds).
function _M.init_worker()
  if not state.strategy then
    return
  end
  -- plugin DAOs created after this handler loaded
  bind_daos()
  local ok, err = keyring.init_worker()
  if not ok then
    log(ngx.ERR, "cannot lock the keyring region in memory: ", err)
  end
  local kconf = kong.configuration
  local frequency = kconf and kconf.db_update_frequency or state.conf.db_update_frequency
  local node_id = kong.node.get_id()
  ok, err = state.strategy:join({
    events = kong.cluster_events,
    node_id = node_id,
    hostname = kong.node.get_hostname(),
    instance = kong.node.get_hostname() .. ":" .. (kconf and kconf.prefix or ""),
    frequency = frequency,
  })
  if not ok then
    log(ngx.ERR, "cannot join the cluster's key exchange: ", err)
  end

  -- the rewrap job: started by the Admin API in any worker; worker 0 takes
  -- over a job whose node stopped renewing its lease
  state.rewrap = rewrap.new(kong.db, node_id, frequency, state.conf.keyring_write_format)
  if ngx.worker.id() == 0 then
    ok, err = ngx.timer.every(frequency, function(premature)
      if premature then
        return
      end
      local adopted, aerr = state.rewrap:adopt()
      if not adopted then
        log(ngx.ERR, "cannot check the rewrap job: ", aerr)
      end
    end)
    if not ok then
      log(ngx.ERR, "cannot start the rewrap timer: ", err)
    end
  end
end


return _M
