-- kong.cache and kong.core_cache for the harness: the mlcache-backed
-- interface of Kong's kong/cache/init.lua, reduced to a per-worker table.
--
--   get(key, opts, cb, ...)  cached value, else cb(...) (nil results are
--                            cached too, as with Kong's default neg_ttl);
--                            opts.ttl / opts.neg_ttl in seconds, 0 = forever
--   invalidate_local(key)    this worker
--   invalidate(key)          every worker of this node (worker event) and
--                            every other node (cluster event on
--                            "invalidations" for kong.cache,
--                            "invalidations_kong_core_db_cache" for core_cache)
--   purge()                  every worker of this node
--
-- Like Kong, the plugins iterator is versioned in core_cache: invalidating
-- "plugins_iterator:version" or purging core_cache rebuilds it (in the
-- harness at once, in every worker of the node; Kong rebuilds lazily).

local type = type
local pairs = pairs
local log = ngx.log
local ERR = ngx.ERR


local NIL = {}
local SOURCE = "harness:cache"


local _M = {}
local mt = { __index = _M }


local caches = {} -- name -> cache (this worker)


function _M.new(name, channel, on_change)
  local self = setmetatable({
    name = name,
    channel = channel,
    store = {},
    on_change = on_change,
  }, mt)
  caches[name] = self
  return self
end


function _M:get(key, opts, cb, ...)
  if type(key) ~= "string" then
    error("key must be a string", 2)
  end
  local item = self.store[key]
  if item and (not item.exp or item.exp > ngx.now()) then
    if item.v == NIL then
      return nil, nil, 1
    end
    return item.v, nil, 1
  end
  if not cb then
    return nil
  end
  local v, err = cb(...)
  if err then
    return nil, err
  end
  local ttl = opts and (v == nil and opts.neg_ttl or opts.ttl)
  self.store[key] = { v = v == nil and NIL or v, exp = (ttl and ttl > 0) and ngx.now() + ttl or nil }
  return v, nil, 3
end


function _M:probe(key)
  local item = self.store[key]
  if not item then
    return nil
  end
  return 0, nil, item.v ~= NIL and item.v or nil
end


function _M:invalidate_local(key)
  self.store[key] = nil
  if self.on_change then
    self.on_change("invalidate", key)
  end
  return true
end


function _M:invalidate(key)
  local ok, err = kong.worker_events.post(SOURCE, "invalidate", { cache = self.name, key = key })
  if not ok then
    log(ERR, "[cache] could not post invalidation of ", key, ": ", err)
  end
  if kong.cluster_events then
    ok, err = kong.cluster_events:broadcast(self.channel, key)
    if not ok then
      log(ERR, "[cache] could not broadcast invalidation of ", key, ": ", err)
    end
  end
  return true
end


function _M:purge_local()
  self.store = {}
  if self.on_change then
    self.on_change("purge")
  end
  return true
end


function _M:purge()
  return kong.worker_events.post(SOURCE, "purge", { cache = self.name })
end


--- Registers the worker and cluster event handlers (init_worker).
function _M.init_worker()
  kong.worker_events.register(function(data, event)
    local cache = type(data) == "table" and caches[data.cache]
    if not cache then
      return
    end
    if event == "invalidate" then
      cache:invalidate_local(data.key)
    elseif event == "purge" then
      cache:purge_local()
    end
  end, SOURCE)
  for _, cache in pairs(caches) do
    local ok, err = kong.cluster_events:subscribe(cache.channel, function(key)
      -- another node changed it: every worker of this node forgets it
      kong.worker_events.post(SOURCE, "invalidate", { cache = cache.name, key = key })
    end)
    if not ok then
      return nil, err
    end
  end
  return true
end


return _M
