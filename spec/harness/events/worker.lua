-- kong.worker_events for the harness, with the interface Kong exposes
-- through lua-resty-events (KONG-INTEGRATION §2.5):
--
--   post(source, event, data, unique?)  every worker of the node, self
--                                       included (`unique`: one worker only)
--   post_local(source, event, data)     the current worker only
--   register(cb, source, event1, ...)   cb(data, event, source, wid); no
--                                       event name = every event of source
--   unregister(cb, source, ...), poll() (no-op, kept for compatibility)
--
-- Transport: a sequence number and the JSON payloads in the shared dict
-- `harness_worker_events`, read by a timer in every worker every 20 ms.
-- Delivery is asynchronous (also for post_local, as in lua-resty-events),
-- in memory, best effort: workers started after a post do not see it.

local json = require "harness.json"


local type = type
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local select = select
local tostring = tostring
local log = ngx.log
local ERR = ngx.ERR
local WARN = ngx.WARN


local DICT = "harness_worker_events"
local POLL_INTERVAL = 0.02
local EVENT_TTL = 60
local MISSING_GRACE = 1 -- seconds to wait for a payload whose number is taken


local _M = {}


local handlers = {} -- source -> { [event or true] = { cb, ... } }
local queue = {}    -- post_local events not yet delivered
local flush_scheduled = false
local dict
local last_seq = 0
local missing_since
local started = false


local function deliver(source, event, data, wid)
  local by_event = handlers[source]
  if not by_event then
    return
  end
  for _, key in ipairs({ event, true }) do
    local list = by_event[key]
    if list then
      for _, cb in ipairs(list) do
        local ok, err = pcall(cb, data, event, source, wid)
        if not ok then
          log(ERR, "[worker_events] handler of '", source, ":", tostring(event), "' failed: ", err)
        end
      end
    end
  end
end


local function flush_local()
  flush_scheduled = false
  local q = queue
  queue = {}
  for _, ev in ipairs(q) do
    deliver(ev[1], ev[2], ev[3], ngx.worker.id())
  end
end


local function poll_shared()
  local seq = dict:get("seq") or 0
  while last_seq < seq do
    local n = last_seq + 1
    local payload = dict:get("ev:" .. n)
    if not payload then
      -- the poster took the number but has not stored the payload yet
      local now = ngx.now()
      missing_since = missing_since or now
      if now - missing_since < MISSING_GRACE then
        return
      end
      log(WARN, "[worker_events] event ", n, " lost")
    else
      local ev = json.decode(payload)
      if type(ev) == "table" and (not ev.unique or dict:add("uq:" .. n, true, EVENT_TTL)) then
        deliver(ev.source, ev.event, ev.data, ev.wid)
      end
    end
    missing_since = nil
    last_seq = n
  end
end


local function tick(premature)
  if premature then
    return
  end
  if #queue > 0 then
    flush_local()
  end
  local ok, err = pcall(poll_shared)
  if not ok then
    log(ERR, "[worker_events] poll failed: ", err)
  end
end


--- Starts delivery in this worker (init_worker).
function _M.init_worker()
  if started then
    return true
  end
  dict = ngx.shared[DICT]
  if not dict then
    return nil, "missing shared dict '" .. DICT .. "'"
  end
  last_seq = dict:get("seq") or 0
  local ok, err = ngx.timer.every(POLL_INTERVAL, tick)
  if not ok then
    return nil, err
  end
  started = true
  return true
end


function _M.register(cb, source, ...)
  if type(cb) ~= "function" then
    error("callback must be a function", 2)
  end
  local by_event = handlers[source]
  if not by_event then
    by_event = {}
    handlers[source] = by_event
  end
  local n = select("#", ...)
  local events = n == 0 and { true } or { ... }
  for _, event in ipairs(events) do
    local list = by_event[event]
    if not list then
      list = {}
      by_event[event] = list
    end
    list[#list + 1] = cb
  end
  return true
end


function _M.unregister(cb, source, ...)
  local by_event = handlers[source]
  if not by_event then
    return true
  end
  local keys = select("#", ...) == 0 and nil or { ... }
  for key, list in pairs(by_event) do
    local wanted = not keys
    for _, k in ipairs(keys or {}) do
      if k == key then
        wanted = true
      end
    end
    if wanted then
      for i = #list, 1, -1 do
        if list[i] == cb then
          table.remove(list, i)
        end
      end
    end
  end
  return true
end


--- To every worker of this node, this one included.
function _M.post(source, event, data, unique)
  if not dict then
    return nil, "worker events not initialized"
  end
  local payload, err = json.encode({
    source = source, event = event, data = data, unique = unique, wid = ngx.worker.id(),
  })
  if not payload then
    return nil, "failed to encode event data: " .. tostring(err)
  end
  local seq
  seq, err = dict:incr("seq", 1, 0)
  if not seq then
    return nil, err
  end
  local ok
  ok, err = dict:set("ev:" .. seq, payload, EVENT_TTL)
  if not ok then
    return nil, err
  end
  return true
end


--- To this worker only (data is passed as is, not serialised).
function _M.post_local(source, event, data)
  queue[#queue + 1] = { source, event, data }
  if not flush_scheduled and started then
    flush_scheduled = ngx.timer.at(0, function(premature)
      if not premature then
        flush_local()
      end
    end) and true or false
  end
  return true
end


function _M.poll()
  return "done"
end


return _M
