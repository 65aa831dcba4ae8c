-- Vault strategy (docs/design.md, "Vault strategy"): the ring is what one
-- HashiCorp Vault / OpenBao KV v2 secret holds. Each readable version
-- (neither destroyed nor deleted) gives a key: its `id`, and as key bytes
-- the SHA-256 of its `key` text; the id of `current_version` is active.
-- Ids no readable version holds any more (destroyed or deleted versions)
-- are dropped from the ring, the active one never. Nothing is written to
-- Vault or to the database.
--
-- A sync runs at start (worker 0, retried until it works), on
-- `POST /keyring/vault/sync`, and on every other node when one node synced:
-- the node announces it on the cluster_events channel `keyring_vault_sync`
-- and each node then reads Vault with its own token or login. The token of
-- a sync request is used for that request's reads only: never announced,
-- stored or logged. A failed sync changes nothing on the node.

local keyring = require "kong.keyring"
local client = require "kong.keyring.strategies.vault.client"
local resty_lock = require "resty.lock"
local resty_sha256 = require "resty.sha256"


local ngx = ngx
local type = type
local ipairs = ipairs
local concat = table.concat
local fmt = string.format
local min = math.min
local setmetatable = setmetatable


local CHANNEL = "keyring_vault_sync"
-- `kong` shm: the ids the last successful sync of this node read (lists())
local LISTED = "keyring:vault:listed"


local _M = {}
local mt = { __index = _M }


local function log(level, ...)
  ngx.log(level, "[keyring] ", ...)
end


--- `keys_arrived` is called after a sync added keys, so the node rebuilds
-- what it built without them.
function _M.new(conf, keys_arrived)
  return setmetatable({
    conf = conf,
    client = client.new(conf),
    keys_arrived = keys_arrived or function() end,
  }, mt)
end


-- docs/formats.md, "Key ids" (checked again by the core): 1 to 255 bytes,
-- printable ASCII but '-' and '$'
local function valid_id(id)
  return #id >= 1 and #id <= 255 and not id:find("[^\33-\126]") and not id:find("[%-%$]")
end


-- base64 of SHA-256 of the version's `key` text: the key bytes
local function key_of(text)
  local sha = resty_sha256:new()
  sha:update(text)
  return ngx.encode_base64(sha:final())
end


-- The keys of the versions read: `{ { id =, key = b64, version = n }, ... }`
-- (one per id, first version first) and the active id, or nil and an error.
function _M:keys_of(secret)
  local name = self.client.secret
  local keys, by_id, active = {}, {}, nil
  for _, v in ipairs(secret.versions) do
    if not valid_id(v.id) then
      return nil, fmt("version %d of %s: invalid key id (1 to 255 printable ASCII characters, no space, '-' or '$')",
                      v.version, name)
    end
    local key = key_of(v.key)
    local seen = by_id[v.id]
    if seen and seen.key ~= key then
      return nil, fmt("versions %d and %d of %s both hold id '%s' with different keys", seen.version, v.version,
                      name, v.id)
    end
    if not seen then
      by_id[v.id] = { id = v.id, key = key, version = v.version }
      keys[#keys + 1] = by_id[v.id]
    end
    if v.version == secret.current then
      active = v.id
    end
  end
  if not active then
    return nil, fmt("the current version %d of %s is deleted or destroyed: no key to activate", secret.current, name)
  end
  return keys, active
end


-- Makes the ring what Vault lists: adds `keys`, activates `active`, drops
-- the ids Vault no longer lists. All or nothing up to the activation: keys
-- added here are removed again when an add or the activation fails.
-- @return ids added, ids dropped; or nil and an error
local function apply(keys, active, name)
  local before, err = keyring.keys()
  if not before then
    return nil, err
  end
  local held, listed = {}, {}
  for _, id in ipairs(before.ids) do
    held[id] = true
  end
  local added = {}
  local function undo(msg)
    for _, id in ipairs(added) do
      keyring.remove(id)
    end
    return nil, msg
  end
  for _, k in ipairs(keys) do
    listed[k.id] = true
    local ok, aerr = keyring.add(k.id, k.key)
    if not ok then
      return undo(fmt("version %d of %s: %s", k.version, name, aerr))
    end
    if not held[k.id] then
      added[#added + 1] = k.id
    end
  end
  local ok, aerr = keyring.activate(active)
  if not ok then
    return undo(aerr)
  end
  local dropped = {}
  for _, id in ipairs(before.ids) do
    if not listed[id] and id ~= active then
      ok, aerr = keyring.remove(id)
      if ok then
        dropped[#dropped + 1] = id
      else
        log(ngx.ERR, "vault sync: cannot drop key '", id, "': ", aerr)
      end
    end
  end
  return added, dropped
end


local function list_text(ids)
  return #ids > 0 and concat(ids, ", ") or "none"
end


--- Reads Vault and applies it to this node, one sync of the node at a time.
-- `token`: the sync request's (optional). @return true, or nil and an error
function _M:pull(token)
  local lock, err = resty_lock:new("kong_locks", { exptime = 60, timeout = 60 })
  if not lock then
    return nil, "cannot create the vault sync lock: " .. tostring(err)
  end
  local elapsed
  elapsed, err = lock:lock("keyring:vault:sync")
  if not elapsed then
    return nil, "cannot take the vault sync lock: " .. tostring(err)
  end
  local ok, res, perr = pcall(function()
    local secret, rerr = self.client:read(token)
    if not secret then
      return nil, rerr
    end
    local keys, active = self:keys_of(secret)
    if not keys then
      return nil, active
    end
    local added, dropped = apply(keys, active, self.client.secret)
    if not added then
      return nil, dropped
    end
    local ids = {}
    for i, k in ipairs(keys) do
      ids[i] = k.id
    end
    local shm = ngx.shared.kong
    if shm then
      shm:set(LISTED, " " .. concat(ids, " ") .. " ")
    end
    log(ngx.NOTICE, "vault sync from ", self.client.secret, ": ", #keys, " keys, active '", active,
        "', added ", list_text(added), ", dropped ", list_text(dropped))
    if #added > 0 then
      self.keys_arrived()
    end
    return true
  end)
  lock:unlock()
  if not ok then
    return nil, "internal error: " .. tostring(res)
  end
  return res, perr
end


--- `POST /keyring/vault/sync`: syncs this node, then asks every other node
-- to sync (with their own token or login).
function _M:sync(token)
  local ok, err = self:pull(token)
  if not ok then
    log(ngx.ERR, "vault sync failed: ", err)
    return nil, err
  end
  if self.events then
    local sent, berr = self.events:broadcast(CHANNEL, self.node_id or "sync")
    if not sent then
      log(ngx.ERR, "vault sync: cannot ask the other nodes to sync: ", berr)
    end
  end
  return true
end


-- A sync in a timer of its own: `retry` (seconds) retries a failed one,
-- twice as long each time up to 30 s, until it works.
local function pull_later(self, why, retry)
  local function run(premature, delay)
    if premature then
      return
    end
    local ok, err = self:pull()
    if ok then
      return
    end
    if not delay then
      return log(ngx.ERR, "vault sync (", why, ") failed: ", err)
    end
    log(ngx.ERR, "vault sync (", why, ") failed, retrying in ", delay, " s: ", err)
    ngx.timer.at(delay, run, min(delay * 2, 30))
  end
  return ngx.timer.at(0, run, retry)
end


--- Every worker, in init_worker: follow the syncs of other nodes (Kong runs
-- cluster_events callbacks in one worker per node); worker 0 also syncs at
-- start, retrying until Vault answers.
function _M:join(opts)
  self.events = opts.events
  self.node_id = opts.node_id
  if self.events then
    local ok, err = self.events:subscribe(CHANNEL, function()
      pull_later(self, "asked by another node")
    end)
    if not ok then
      log(ngx.ERR, "cannot subscribe to ", CHANNEL, ": ", err)
    end
  end
  if ngx.worker.id() == 0 then
    return pull_later(self, "start", 1)
  end
  return true
end


--- Whether the last successful sync of this node read `id` from Vault (nil
-- and an error before any): a marked value under an id Vault does not list
-- is bad input, one it lists but this node lacks is a 503.
function _M:lists(id)
  local shm = ngx.shared.kong
  local listed = shm and shm:get(LISTED)
  if type(listed) ~= "string" then
    return nil, "no vault sync has succeeded on this node yet"
  end
  return listed:find(" " .. id .. " ", 1, true) ~= nil
end


return _M
