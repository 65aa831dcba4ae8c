-- The Kong-shaped runtime of the harness (test support only). In the order
-- of Kong.init / Kong.init_worker (kong/init.lua, KONG-INTEGRATION §1.8):
--
-- init(opts), in init_by_lua (the master, before fork):
--   global `kong` (configuration, log, response, request, node), kong.db
--   connected, core schemas, migrations (core + every loaded plugin), then
--   per loaded vault strategy -> schema, then per loaded plugin
--   handler -> schema -> daos, then the plugins iterator
--   built from kong.db.plugins:each(), then the database is closed.
-- init_worker(), in init_worker_by_lua:
--   kong.worker_events, kong.cluster_events, kong.cache / kong.core_cache,
--   the runloop's crud handlers, then every loaded plugin's init_worker().
-- admin() / proxy(): content handlers of the two servers.
--
-- opts: plugins (array, load order; "bundled" = basic-auth, added first
-- unless listed), vaults (array of vault strategy names, default none),
-- pg_host, pg_port, pg_user, pg_password, pg_database,
-- db_update_frequency, db_update_propagation (KONG_* variables override).

local json = require "harness.json"
local conf_loader = require "harness.conf"
local pdk = require "harness.pdk"
local DB = require "harness.db"
local plugins = require "harness.plugins"
local vaults = require "harness.vaults"
local router = require "harness.api.router"
local entities = require "harness.api.entities"
local worker_events = require "harness.events.worker"
local cluster_events = require "harness.events.cluster"
local cache = require "harness.cache"


local ipairs = ipairs
local log = ngx.log
local DEBUG = ngx.DEBUG


local BUNDLED = { "basic-auth" }


local _M = {}


local function plugin_list(names)
  local list, seen = {}, {}
  local explicit = {}
  for _, n in ipairs(names or {}) do
    explicit[n] = true
  end
  local function add(n)
    if not seen[n] then
      seen[n] = true
      list[#list + 1] = n
    end
  end
  if not explicit.bundled then
    for _, n in ipairs(BUNDLED) do
      if not explicit[n] then
        add(n)
      end
    end
  end
  for _, n in ipairs(names or {}) do
    if n == "bundled" then
      for _, b in ipairs(BUNDLED) do
        add(b)
      end
    else
      add(n)
    end
  end
  return list
end


local function on_core_cache_change(event, key)
  if event == "purge" or key == "plugins_iterator:version" then
    plugins.rebuild_iterator(event == "purge" and "core_cache:purge" or "invalidation")
  end
end


--- init_by_lua. Raises on failure, so nginx does not start (as Kong).
function _M.init(opts)
  json.polyfill_cjson()
  opts = opts or {}
  local conf = conf_loader.load(opts)
  conf.plugins = plugin_list(conf.plugins)
  conf.loaded_plugins = {}
  for _, n in ipairs(conf.plugins) do
    conf.loaded_plugins[n] = true
  end

  local kong = {
    version = require("kong.meta").version,
    configuration = conf_loader.proxy(conf),
  }
  _G.kong = kong
  pdk.install(kong, conf.prefix)

  local db = DB.new(conf)
  kong.db = db
  assert(db:connect())
  assert(db:load_core())
  assert(db:run_migrations(conf.plugins))
  assert(vaults.load(db, conf.vaults))
  assert(plugins.load(db, conf.plugins))
  local ok, err = plugins.build_iterator("init")
  if not ok then
    error("error building initial plugins iterator: " .. tostring(err))
  end

  router.reset()
  entities.attach(router, db)
  assert(router.attach_plugin_routes(conf.plugins))
  _M.attach_debug_routes()

  db:close()
  _M.conf = conf
  return true
end


--- init_worker_by_lua.
function _M.init_worker()
  local kong = _G.kong
  local conf = _M.conf
  assert(worker_events.init_worker())
  kong.worker_events = worker_events
  kong.db.events = worker_events

  kong.cluster_events = assert(cluster_events.new({
    db = kong.db,
    node_id = kong.node.get_id(),
    poll_interval = conf.db_update_frequency,
    poll_offset = conf.db_update_propagation,
    poll_delay = conf.db_update_propagation,
  }))
  kong.cache = cache.new("cache", "invalidations")
  kong.core_cache = cache.new("core_cache", "invalidations_kong_core_db_cache", on_core_cache_change)
  assert(cache.init_worker())

  -- runloop (kong/runloop/events.lua): dao:crud -> crud events, invalidations
  worker_events.register(function(data, operation)
    local name = data.schema and data.schema.name
    if not name then
      return
    end
    local dao = kong.db.daos[name]
    if dao and data.entity then
      kong.cache:invalidate(dao:cache_key(data.entity))
      if data.old_entity then
        kong.cache:invalidate(dao:cache_key(data.old_entity))
      end
    end
    if name == "plugins" then
      kong.core_cache:invalidate("plugins_iterator:version")
    end
    worker_events.post_local("crud", name, data)
    worker_events.post_local("crud", name .. ":" .. operation, data)
  end, "dao:crud")

  plugins.init_worker()
  log(DEBUG, "[harness] worker ", ngx.worker.id(), " ready")
  return true
end


--- Harness-only routes (not Kong's): state for specs.
function _M.attach_debug_routes()
  router.add("/__harness/plugins_iterator", {
    GET = function()
      return kong.response.exit(200, {
        pid = ngx.worker.pid(),
        worker = ngx.worker.id(),
        iterator = plugins.iterator,
      })
    end,
  })
  router.add("/__harness/node", {
    GET = function()
      return kong.response.exit(200, {
        pid = ngx.worker.pid(),
        worker = ngx.worker.id(),
        node_id = kong.node.get_id(),
        plugins = json.as_array(kong.configuration.plugins),
        db_update_frequency = kong.configuration.db_update_frequency,
      })
    end,
  })
  router.add("/__harness/core_cache/purge", {
    POST = function()
      kong.core_cache:purge()
      return kong.response.exit(204)
    end,
  })
end


function _M.admin()
  return router.dispatch()
end


function _M.proxy()
  return kong.response.exit(404, { message = "no Route matched with those values" })
end


--- Rebuilds this worker's plugins iterator now (harness only; plugins use
-- kong.core_cache:invalidate("plugins_iterator:version") or :purge(), as in Kong).
function _M.rebuild_plugins_iterator()
  return plugins.rebuild_iterator("rebuild")
end


_M.plugins = plugins


return _M
