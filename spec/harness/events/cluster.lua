-- kong.cluster_events for the harness, on the real `cluster_events` table
-- (behaviour of Kong's kong/cluster_events/init.lua and its Postgres
-- strategy, KONG-INTEGRATION §2.4; code written anew):
--
-- * broadcast(channel, data, delay?): strings only; one row with this node's
--   id, at = now, nbf = now + delay (or db_update_propagation), expire_at =
--   now + max(db_update_propagation * 10, 3600 s).
-- * subscribe(channel, cb, start_polling = true): a timer in every worker
--   every db_update_frequency seconds; shm mutexes in `kong_locks` let one
--   worker per node poll per interval and run the callbacks, cb(data) under
--   pcall. The node's own events are skipped; each id is handled once per
--   node (dedup in `kong_cluster_events`); `nbf` delays delivery; the last
--   poll time is kept in `kong` under "cluster_events:at", starting at the
--   node's start (older events are not delivered).
-- * Difference: each poll re-reads one extra second before the last poll
--   time (dedup makes it harmless), so an insert that committed late is
--   not missed; Kong relies on db_update_propagation for that.

local uuid = require "kong.tools.uuid"


local type = type
local pcall = pcall
local ipairs = ipairs
local tostring = tostring
local max = math.max
local fmt = string.format
local concat = table.concat
local log = ngx.log
local ERR = ngx.ERR
local DEBUG = ngx.DEBUG


local AT_KEY = "cluster_events:at"
local POLL_INTERVAL_LOCK = "cluster_events:poll_interval"
local POLL_RUNNING_LOCK = "cluster_events:poll_running"
local OVERLAP = 1
local PAGE = 1000


local _M = {}
local mt = { __index = _M }


--- Kong's kong_global.init_cluster_events: call in init_worker.
function _M.new(opts)
  local shm = ngx.shared.kong
  local locks = ngx.shared.kong_locks
  local dedup = ngx.shared.kong_cluster_events
  if not (shm and locks and dedup) then
    return nil, "missing shared dicts kong, kong_locks or kong_cluster_events"
  end
  local self = setmetatable({
    connector = opts.db.connector,
    node_id = opts.node_id,
    poll_interval = opts.poll_interval or 5,
    poll_offset = opts.poll_offset or 0,
    poll_delay = opts.poll_delay or 0,
    shm = shm,
    locks = locks,
    dedup = dedup,
    callbacks = {},
    channels = {},
    polling = false,
  }, mt)
  ngx.update_time()
  shm:add(AT_KEY, ngx.now())
  return self
end


function _M:broadcast(channel, data, delay)
  if type(channel) ~= "string" then
    return nil, "channel must be a string"
  end
  if type(data) ~= "string" then
    return nil, "data must be a string"
  end
  if delay ~= nil and type(delay) ~= "number" then
    return nil, "delay must be a number"
  end
  if self.poll_delay > 0 then
    delay = self.poll_delay
  end
  local c = self.connector
  local ttl = max(self.poll_offset * 10, 3600)
  local nbf = (delay and delay > 0) and fmt("CURRENT_TIMESTAMP + make_interval(secs => %s)", c:escape_literal(delay))
              or "NULL"
  local sql = fmt([[
    INSERT INTO "cluster_events" ("id", "node_id", "at", "nbf", "expire_at", "channel", "data")
    VALUES (%s, %s, CURRENT_TIMESTAMP, %s, CURRENT_TIMESTAMP + make_interval(secs => %d), %s, %s)
  ]], c:escape_literal(uuid.uuid()), c:escape_literal(self.node_id), nbf, ttl,
      c:escape_literal(channel), c:escape_literal(data))
  local ok, err = c:query(sql)
  if not ok then
    return nil, "failed to broadcast on channel '" .. channel .. "': " .. tostring(err)
  end
  return true
end


local function run_callbacks(self, channel, data)
  for _, cb in ipairs(self.callbacks[channel] or {}) do
    local ok, err = pcall(cb, data)
    if not ok then
      log(ERR, "[cluster_events] callback threw an error on channel '", channel, "': ", err)
    end
  end
end


local function poll(self)
  local c = self.connector
  local now_rows, err = c:query("SELECT EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) AS now")
  if not now_rows then
    return nil, err
  end
  local now = now_rows[1].now
  local last = self.shm:get(AT_KEY) or now
  local min_at = last - self.poll_offset - OVERLAP
  local quoted = {}
  for i, ch in ipairs(self.channels) do
    quoted[i] = c:escape_literal(ch)
  end
  local dedup_ttl = self.poll_interval * 2 + self.poll_offset + OVERLAP + 1
  local offset = 0
  while true do
    local rows
    rows, err = c:query(fmt([[
      SELECT "id", "node_id", "channel", "data",
             EXTRACT(EPOCH FROM "at") AS "at", EXTRACT(EPOCH FROM "nbf") AS "nbf"
        FROM "cluster_events"
       WHERE "channel" IN (%s)
         AND "at" > to_timestamp(%s)
         AND "at" <= to_timestamp(%s)
       ORDER BY "at", "id"
       LIMIT %d OFFSET %d
    ]], concat(quoted, ", "), c:escape_literal(min_at), c:escape_literal(now), PAGE, offset))
    if not rows then
      return nil, err
    end
    for _, row in ipairs(rows) do
      if row.node_id ~= self.node_id and self.dedup:add(row.id, true, dedup_ttl) then
        local nbf = row.nbf
        if type(nbf) == "number" and nbf > now then
          ngx.timer.at(nbf - now, function(premature)
            if not premature then
              run_callbacks(self, row.channel, row.data)
            end
          end)
        else
          run_callbacks(self, row.channel, row.data)
        end
      end
    end
    if #rows < PAGE then
      break
    end
    offset = offset + PAGE
  end
  self.shm:set(AT_KEY, now)
  return true
end


local function poll_handler(premature, self)
  if premature then
    return
  end
  -- one worker per node and per interval
  if not self.locks:add(POLL_INTERVAL_LOCK, true, max(self.poll_interval - 0.001, 0.001)) then
    return
  end
  if not self.locks:add(POLL_RUNNING_LOCK, true, max(self.poll_interval * 5, 10)) then
    return
  end
  local ok, res, err = pcall(poll, self)
  self.locks:delete(POLL_RUNNING_LOCK)
  if not ok then
    log(ERR, "[cluster_events] poll failed: ", res)
  elseif not res then
    log(ERR, "[cluster_events] poll failed: ", err)
  else
    log(DEBUG, "[cluster_events] polled")
  end
end


function _M:subscribe(channel, cb, start_polling)
  if type(channel) ~= "string" then
    return nil, "channel must be a string"
  end
  if type(cb) ~= "function" then
    return nil, "callback must be a function"
  end
  if not self.callbacks[channel] then
    self.callbacks[channel] = {}
    self.channels[#self.channels + 1] = channel
  end
  local list = self.callbacks[channel]
  list[#list + 1] = cb
  if start_polling == nil then
    start_polling = true
  end
  if start_polling and not self.polling then
    local ok, err = ngx.timer.every(self.poll_interval, poll_handler, self)
    if not ok then
      return nil, "failed to start polling timer: " .. tostring(err)
    end
    self.polling = true
  end
  return true
end


return _M
