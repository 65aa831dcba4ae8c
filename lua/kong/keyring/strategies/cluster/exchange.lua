-- Keys shared between the nodes of a cluster (docs/design.md, "Cluster
-- strategy"), through Kong's `cluster_events` only:
--
-- * `keyring_register` `{"host":<sender>,"pkey":PEM,"key_ids":[...]|"*","mac":...}`:
--   a node asks for keys; any node holding them answers.
-- * `keyring_broadcast` `{"host":<recipient>,"keys":[{"id":..,"data":..}],"mac":...}`:
--   keys wrapped for the recipient's ephemeral public key (RSA-OAEP-SHA256).
-- * `keyring_activate`, `keyring_remove`: the id as text (then a space and
--   its MAC under a cluster secret).
--
-- Kong polls `cluster_events` every `db_update_frequency` in one worker per
-- node and never delivers a node its own events; a key added by that worker
-- is in the shared region, so every worker of the node has it at once.
-- Worker 0 of each node also runs `tick` every `db_update_frequency`: its
-- heartbeat in `keyring_nodes`, requests for ids `keyring_meta` lists that
-- the node lacks, and following the active id `keyring_meta` marks.

local keyring = require "kong.keyring"
local cjson = require "cjson.safe"
local nodes = require "kong.keyring.strategies.cluster.nodes"


local ngx = ngx
local type = type
local next = next
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local min = math.min
local concat = table.concat
local setmetatable = setmetatable
local now = ngx.now
local update_time = ngx.update_time


local CHANNEL = {
  register = "keyring_register",
  broadcast = "keyring_broadcast",
  activate = "keyring_activate",
  remove = "keyring_remove",
}

-- a recovery value (`keyring.recovery_row`) is this prefix and the same
-- base64 of RSA-OAEP-SHA256(public key, key) that a broadcast carries
local WRAPPED = "$ker$2$"


local _M = {}
local mt = { __index = _M }


local function log(level, ...)
  ngx.log(level, "[keyring] ", ...)
end


--- `cluster`: the cluster strategy; `opts`: `events` (kong.cluster_events),
-- `node_id`, `hostname`, `instance` (names the node across restarts),
-- `frequency` (db_update_frequency, seconds).
function _M.new(cluster, opts)
  return setmetatable({
    cluster = cluster,
    events = opts.events,
    node_id = opts.node_id,
    frequency = opts.frequency,
    nodes = nodes.new(cluster, opts.node_id, opts.hostname, opts.instance),
    missing_since = {},
    reported = {},
  }, mt)
end


-- A node is live while its heartbeat is younger than three polls.
function _M:live_nodes()
  return self.nodes:live(3 * self.frequency)
end


local function set_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do
    set[v] = true
  end
  return set
end


local function held_ids()
  local ring = keyring.keys()
  return ring and ring.ids or {}
end


local function is_string_list(list)
  if type(list) ~= "table" then
    return false
  end
  for _, v in ipairs(list) do
    if type(v) ~= "string" then
      return false
    end
  end
  return true
end


-- The text a MAC covers: a broadcast's keys, a register's ids.
local function keys_text(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k.id
    parts[#parts + 1] = k.data
  end
  return concat(parts, "\n")
end


local function ids_text(key_ids)
  return key_ids == "*" and "*" or concat(key_ids, " ")
end


local function publish(self, channel, data)
  local ok, err = self.events:broadcast(channel, data)
  if not ok then
    log(ngx.ERR, "cannot publish on ", channel, ": ", err)
  end
  return ok, err
end


--- Sends the keys `ids` (those this node holds) to node `host`, wrapped for
-- its public key `pkey`.
function _M:send(host, pkey, ids)
  local keys = {}
  for _, id in ipairs(ids) do
    local row, err = keyring.recovery_row(id, pkey)
    if row and row:sub(1, #WRAPPED) == WRAPPED then
      keys[#keys + 1] = { id = id, data = row:sub(#WRAPPED + 1) }
    else
      log(ngx.ERR, "cannot wrap key '", id, "' for node ", host, ": ", err)
    end
  end
  if #keys == 0 then
    return true
  end
  local msg = { host = host, keys = keys, mac = self.cluster.mac:sign(CHANNEL.broadcast, host, keys_text(keys)) }
  return publish(self, CHANNEL.broadcast, cjson.encode(msg))
end


--- Asks the other nodes for `ids` ("*": every key).
function _M:request(ids)
  local pkey = nodes.public_key()
  local msg = { host = self.node_id, pkey = pkey, key_ids = ids,
                mac = self.cluster.mac:sign(CHANNEL.register, self.node_id, pkey, ids_text(ids)) }
  return publish(self, CHANNEL.register, cjson.encode(msg))
end


--- Sends the keys `ids` at once to every live node that lacks one of them.
function _M:push(ids)
  local live, err = self:live_nodes()
  if not live then
    log(ngx.ERR, "cannot send keys to the other nodes: ", err)
    return
  end
  for _, node in ipairs(live) do
    local lacking = {}
    for _, id in ipairs(ids) do
      if not node.holds[id] then
        lacking[#lacking + 1] = id
      end
    end
    if #lacking > 0 then
      self:send(node.node_id, node.public_key, lacking)
    end
  end
end


--- `activate` / `remove` of `id` for the other nodes.
function _M:announce(what, id)
  local m = self.cluster.mac:sign(CHANNEL[what], id)
  return publish(self, CHANNEL[what], m and (id .. " " .. m) or id)
end


--- Staged activation: waits until every node live at the start holds `id`
-- (sending it to those that lack it), up to 2 × db_update_frequency + 1 s;
-- a node that stops meanwhile still counts, so a dead node that was live
-- gives the 409 rather than a race. `force`: sends and does not wait.
-- @return true, or nil, an error, its kind and the lacking nodes' ids
function _M:stage(id, force)
  local deadline = now() + 2 * self.frequency + 1
  local nodes_now, err = self:live_nodes()
  local watched
  while nodes_now do
    local lacking = {}
    for _, node in ipairs(nodes_now) do
      if not node.holds[id] then
        lacking[#lacking + 1] = node
      end
    end
    if #lacking == 0 then
      return true
    end
    local names = {}
    for i, node in ipairs(lacking) do
      names[i] = node.node_id
    end
    if not watched then
      for _, node in ipairs(lacking) do
        self:send(node.node_id, node.public_key, { id })
      end
      watched = names
    end
    if force then
      log(ngx.WARN, "activating key '", id, "' although nodes ", concat(names, ", "), " do not hold it yet")
      return true
    end
    update_time()
    if now() >= deadline then
      return nil, "key '" .. id .. "' is not yet held by every live node (" .. concat(names, ", ")
                  .. "); retry, or activate with force=true", "conflict", names
    end
    ngx.sleep(0.1)
    nodes_now, err = self.nodes:live(nil, watched)
  end
  return nil, err
end


-- Makes this node use the id `keyring_meta` marks active, if it holds it.
local function follow(listing)
  local active = listing.active
  if active and keyring.active_id() ~= active and keyring.check_value(active) then
    local ok, err = keyring.activate(active)
    if ok then
      log(ngx.NOTICE, "key '", active, "' activated, as keyring_meta marks it")
    else
      log(ngx.ERR, "cannot activate key '", active, "': ", err)
    end
  end
end


-- After keys arrived or went: the heartbeat (so that staged activations on
-- other nodes see it at once), the active id, recovery rows, the blob file,
-- configuration built with placeholders.
function _M:changed(listing, arrived)
  follow(listing)
  local ok, err = self.nodes:heartbeat(held_ids())
  if not ok then
    log(ngx.ERR, "cannot record this node in keyring_nodes: ", err)
  end
  if arrived then
    self.cluster:backfill(listing)
    self.cluster.keys_arrived()
  end
  self.cluster:ring_changed()
end


-- keyring_register: answer with the requested keys this node holds
function _M:on_register(data)
  local msg = cjson.decode(data)
  if type(msg) ~= "table" or type(msg.host) ~= "string" or type(msg.pkey) ~= "string"
     or not (msg.key_ids == "*" or is_string_list(msg.key_ids)) then
    return log(ngx.WARN, "ignoring a malformed ", CHANNEL.register, " message")
  end
  if not self.cluster.mac:verify(msg.mac, CHANNEL.register, msg.host, msg.pkey, ids_text(msg.key_ids)) then
    return self.cluster:distrust(CHANNEL.register .. " message from node", msg.host)
  end
  local listing, err = self.cluster:listing()
  if not listing then
    return log(ngx.ERR, "cannot answer node ", msg.host, ": ", err)
  end
  local wanted = msg.key_ids == "*" and set_of(listing.ids) or set_of(msg.key_ids)
  local held = set_of(held_ids())
  local ids = {}
  for _, id in ipairs(listing.ids) do
    if wanted[id] and held[id] then
      ids[#ids + 1] = id
    end
  end
  if #ids > 0 then
    self:send(msg.host, msg.pkey, ids)
  end
end


-- keyring_broadcast: keys for this node, each checked against keyring_meta
function _M:on_broadcast(data)
  local msg = cjson.decode(data)
  if type(msg) ~= "table" or msg.host ~= self.node_id then
    return
  end
  if type(msg.keys) ~= "table" then
    return log(ngx.WARN, "ignoring a malformed ", CHANNEL.broadcast, " message")
  end
  for _, k in ipairs(msg.keys) do
    if type(k) ~= "table" or type(k.id) ~= "string" or type(k.data) ~= "string" then
      return log(ngx.WARN, "ignoring a malformed ", CHANNEL.broadcast, " message")
    end
  end
  if not self.cluster.mac:verify(msg.mac, CHANNEL.broadcast, msg.host, keys_text(msg.keys)) then
    return self.cluster:distrust(CHANNEL.broadcast .. " message for node", msg.host)
  end
  local listing, err = self.cluster:listing()
  if not listing then
    return log(ngx.ERR, "cannot check received keys: ", err)
  end
  local listed = set_of(listing.ids)
  local got = {}
  for _, k in ipairs(msg.keys) do
    local held = keyring.check_value(k.id)
    if not listed[k.id] then
      log(ngx.WARN, "ignoring received key '", k.id, "': keyring_meta does not list it")
    elseif held and held == listing.kcv[k.id] then
      -- held already: an answer to an earlier register of this node, or of
      -- another of its workers; adding it again would flush configuration
      -- for nothing
      log(ngx.DEBUG, "received key '", k.id, "' is held already")
    else
      local added, aerr = keyring.receive(k.id, WRAPPED .. k.data, listing.kcv[k.id])
      if added then
        got[#got + 1] = k.id
      elseif not held then
        -- a key wrapped for an earlier start of this node is expected; anything else is logged
        log(ngx.WARN, "received key '", k.id, "' not added: ", aerr)
      end
    end
  end
  if #got > 0 then
    log(ngx.NOTICE, "received keys ", concat(got, ", "))
    self:changed(listing, true)
  end
end


-- keyring_activate: follow the database (never the message alone)
function _M:on_activate(data)
  local listing, err = self.cluster:listing()
  if not listing then
    return log(ngx.ERR, "cannot follow an activation: ", err)
  end
  if listing.active and not keyring.check_value(listing.active) then
    self:request({ listing.active })
  end
  self:changed(listing, false)
end


-- keyring_remove: drop the id unless keyring_meta still lists it
function _M:on_remove(data)
  local id = data:match("^(%S+)")
  local listing, err = self.cluster:listing()
  if not (id and listing) then
    return log(ngx.ERR, "cannot follow a removal: ", err or "malformed message")
  end
  if set_of(listing.ids)[id] or keyring.active_id() == id or not keyring.check_value(id) then
    return
  end
  keyring.remove(id)
  log(ngx.NOTICE, "key '", id, "' removed, as another node removed it")
  self:changed(listing, false)
end


-- Text messages carry "id" or "id mac"; returns the data when it authenticates.
local function authentic(self, channel, handler)
  return function(data)
    if type(data) ~= "string" then
      return
    end
    if channel == CHANNEL.activate or channel == CHANNEL.remove then
      local id, m = data:match("^(%S+) ?(%S*)$")
      if not id or not self.cluster.mac:verify(m ~= "" and m or nil, channel, id) then
        return self.cluster:distrust(channel .. " message", id or "?")
      end
    end
    local ok, err = pcall(handler, self, data)
    if not ok then
      log(ngx.ERR, "error handling a ", channel, " message: ", err)
    end
  end
end


--- Subscribes this worker to the keyring channels (every worker: Kong runs
-- the callbacks in whichever worker polls).
function _M:subscribe()
  for name, handler in pairs({ register = _M.on_register, broadcast = _M.on_broadcast,
                               activate = _M.on_activate, remove = _M.on_remove }) do
    local ok, err = self.events:subscribe(CHANNEL[name], authentic(self, CHANNEL[name], handler))
    if not ok then
      log(ngx.ERR, "cannot subscribe to ", CHANNEL[name], ": ", err)
    end
  end
end


-- Ids `keyring_meta` lists that this node lacks: requested again every
-- tick, logged once each when still missing after two polls.
function _M:track_missing(listing)
  local held = set_of(held_ids())
  local missing = {}
  for _, id in ipairs(listing.ids) do
    if not held[id] then
      missing[#missing + 1] = id
    end
  end
  local t = now()
  local still = set_of(missing)
  for id in pairs(self.missing_since) do
    if not still[id] then
      self.missing_since[id] = nil
      self.reported[id] = nil
    end
  end
  for _, id in ipairs(missing) do
    local since = self.missing_since[id] or t
    self.missing_since[id] = since
    if t - since >= 2 * self.frequency and not self.reported[id] then
      self.reported[id] = true
      log(ngx.ERR, "key '", id, "' is listed in keyring_meta but no node sent it to this one; ",
          "values written with it cannot be read here until it is imported or recovered")
    end
  end
  if #missing > 0 then
    self:request(next(held) == nil and "*" or missing)
  end
end


--- Workers other than 0, once at start: ask at once for the listed ids this
-- node lacks. Kong runs init_worker in each worker on its own (with a large
-- configuration, seconds apart) and a worker serves traffic as soon as its
-- own is done, so a restarted node should not wait for worker 0's first
-- round to get its keys. Answers land in the shared region for every worker.
function _M:ask_early()
  return ngx.timer.at(0, function(premature)
    if premature then
      return
    end
    local listing, err = self.cluster:listing()
    if not listing then
      return log(ngx.ERR, "cannot read keyring_meta: ", err)
    end
    self:track_missing(listing)
  end)
end


--- One round of worker 0: heartbeat, missing ids, the active id.
function _M:tick()
  if self.ticking then
    return
  end
  self.ticking = true
  local ok, err = pcall(function()
    local listing, lerr = self.cluster:listing()
    if not listing then
      return log(ngx.ERR, "cannot read keyring_meta: ", lerr)
    end
    self:track_missing(listing)
    self:changed(listing, false)
    self.cluster:backfill(listing)
    local ok, rerr = self.cluster:report_encryptions()
    if not ok then
      log(ngx.ERR, "cannot count encryptions in keyring_meta: ", rerr)
    end
  end)
  self.ticking = false
  if not ok then
    log(ngx.ERR, "keyring cluster round failed: ", err)
  end
end


--- Worker 0: `startup()` (blob file, first key) retried until it succeeds,
-- waiting 1 s, then twice as long each time up to 30 s; then a tick every
-- db_update_frequency.
function _M:start(startup)
  local function every(premature)
    if not premature then
      self:tick()
    end
  end
  local function run(premature, delay)
    if premature then
      return
    end
    local ok, err = startup()
    if not ok then
      log(ngx.ERR, "start-up failed, retrying in ", delay, " s: ", err)
      ngx.timer.at(delay, run, min(delay * 2, 30))
      return
    end
    self:tick()
    local tok, terr = ngx.timer.every(self.frequency, every)
    if not tok then
      log(ngx.ERR, "cannot start the keyring cluster timer: ", terr)
    end
  end
  return ngx.timer.at(0, run, 1)
end


return _M
