-- Cluster strategy, node-local half (docs/design.md, "Cluster strategy"):
-- what this node records in the database when its ring changes, and the
-- first-key bootstrap.
--
-- `keyring_meta` lists every id of the cluster with its state and key check
-- value; `keyring_keys` holds recovery rows when a recovery public key is set.
-- Key delivery between nodes (cluster_events, keyring_nodes) is in
-- cluster/exchange.lua; with `keyring_cluster_secret` set, `keyring_meta`
-- rows carry a MAC (cluster/mac.lua) and rows without a valid one are ignored.

local keyring = require "kong.keyring"
local resty_lock = require "resty.lock"
local db = require "kong.keyring.strategies.db"
local mac = require "kong.keyring.strategies.cluster.mac"
local exchange = require "kong.keyring.strategies.cluster.exchange"
local blob_file = require "kong.keyring.strategies.cluster.blob_file"


local fmt = string.format
local pairs = pairs
local ipairs = ipairs
local assert = assert
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable


local _M = {}
local mt = { __index = _M }


--- `keys_arrived` is called after keys were added from elsewhere (import,
-- recovery), so the node can rebuild what it built without them.
function _M.new(conf, db, keys_arrived)
  return setmetatable({
    conf = conf,
    db = db,
    keys_arrived = keys_arrived or function() end,
    mac = mac.new(conf.keyring_cluster_secret),
    blob_file = blob_file.new(conf),
    distrusted = {},
  }, mt)
end


--- Joins the key exchange between nodes (every worker, in init_worker);
-- `opts` as in exchange.new. Worker 0 then runs `startup` and the rounds;
-- the others ask once, at start, for the keys the node lacks.
function _M:join(opts)
  self.exchange = exchange.new(self, opts)
  self.exchange:subscribe()
  if ngx.worker.id() == 0 then
    return self.exchange:start(function()
      return self:startup()
    end)
  end
  return self.exchange:ask_early()
end


--- Worker 0 at start: the blob file, then the first key of a new cluster.
-- @return true, or nil and an error (retried by the caller)
function _M:startup()
  if self.blob_file then
    local ok, err = self.blob_file:load(self)
    if not ok then
      return nil, err
    end
  end
  local res, err = self:bootstrap()
  if not res then
    return nil, err
  end
  if res == "bootstrapped" then
    ngx.log(ngx.NOTICE, "[keyring] generated and activated the cluster's first key")
    self:ring_changed()
  end
  return true
end


--- Logs once per row that a keyring row or message does not authenticate
-- under the cluster secret (it is ignored).
function _M:distrust(what, id)
  local k = what .. ":" .. tostring(id)
  if not self.distrusted[k] then
    self.distrusted[k] = true
    ngx.log(ngx.ERR, "[keyring] ignoring ", what, " '", tostring(id),
            "': it does not authenticate under keyring_cluster_secret")
  end
end


-- SQL literal of the MAC of `keyring_meta` row (id, kcv), NULL without a secret
function _M:meta_mac(id, kcv)
  local m = self.mac:sign("keyring_meta", id, kcv)
  return m and self:lit(m) or "NULL"
end


function _M:query(sql)
  return db.query(self.db, sql)
end


function _M:lit(v)
  return self.db.connector:escape_literal(v)
end


-- A check value that differs from the one `keyring_meta` lists for `id`:
-- another key already holds that id in the cluster (a conflict, never merged).
local function conflict(id)
  return nil, "key '" .. id .. "' already exists in the cluster with different material", "conflict"
end


--- Records a key added on this node: its meta row (alive) and recovery row.
-- @return true, or nil, an error and its kind ("conflict": the id is another key's)
function _M:added(id)
  local kcv, err = keyring.check_value(id)
  if not kcv then
    return nil, err
  end
  local rows
  rows, err = self:query(fmt([[
    INSERT INTO keyring_meta (id, state, kcv, mac) VALUES (%s, 'alive', %s, %s)
    ON CONFLICT (id) DO UPDATE SET kcv = EXCLUDED.kcv, mac = EXCLUDED.mac, updated_at = CURRENT_TIMESTAMP(0)
      WHERE keyring_meta.kcv IS NULL OR keyring_meta.kcv = EXCLUDED.kcv
    RETURNING id;
  ]], self:lit(id), self:lit(kcv), self:meta_mac(id, kcv)))
  if not rows then
    return nil, err
  end
  if #rows == 0 then
    return conflict(id)
  end
  return self:backup(id)
end


--- Backs up every key this node holds and `listing` (`listing()`) lists that
-- has no recovery row for the configured recovery key yet: keys that existed
-- before the option was set, or that arrived from another node.
function _M:backfill(listing)
  local public = self.conf.keyring_recovery_public_key
  if not public then
    return true
  end
  local key_id, err = keyring.public_key_id(public)
  if not key_id then
    return nil, err
  end
  local rows
  rows, err = self:query(fmt("SELECT id FROM keyring_keys WHERE recovery_key_id = %s;", self:lit(key_id)))
  if not rows then
    return nil, err
  end
  local backed = {}
  for _, row in ipairs(rows) do
    backed[row.id] = true
  end
  for _, id in ipairs(listing.ids) do
    if not backed[id] and keyring.check_value(id) then
      local ok, berr = self:backup(id)
      if not ok then
        return nil, berr
      end
    end
  end
  return true
end


--- Writes the recovery row of `id` when a recovery public key is configured.
function _M:backup(id)
  local public = self.conf.keyring_recovery_public_key
  if not public then
    return true
  end
  local row, recovery_key_id = keyring.recovery_row(id, public)
  if not row then
    return nil, recovery_key_id
  end
  return self:query(fmt([[
    INSERT INTO keyring_keys (id, key_encrypted, recovery_key_id) VALUES (%s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET key_encrypted = EXCLUDED.key_encrypted,
      recovery_key_id = EXCLUDED.recovery_key_id, updated_at = CURRENT_TIMESTAMP(0);
  ]], self:lit(id), self:lit(row), self:lit(recovery_key_id)))
end


-- Several statements sent in one simple query run as one implicit
-- transaction, rolled back as a whole on error. No explicit BEGIN/COMMIT: a
-- failed statement would leave a pooled connection in an aborted transaction.


-- Every activation in the cluster takes this transaction-level advisory
-- lock first, so activations are applied one after the other and each one
-- demotes the key the previous one made active (without it, two at once
-- both see the old active row and one fails on the unique index).
local ACTIVATION_LOCK = 0x6b6b6163


--- Marks `id` active and every other id alive, in one transaction,
-- serialised with every other activation of the cluster.
-- @return true, or nil, an error and its kind ("conflict": the id is another key's)
function _M:activated(id)
  local kcv, err = keyring.check_value(id)
  if not kcv then
    return nil, err
  end
  local res
  res, err = self:query(fmt([[
    SELECT pg_advisory_xact_lock(%d);
    UPDATE keyring_meta SET state = 'alive', updated_at = CURRENT_TIMESTAMP(0)
      WHERE state = 'active' AND id <> %s
        AND NOT EXISTS (SELECT 1 FROM keyring_meta WHERE id = %s AND kcv <> %s);
    INSERT INTO keyring_meta (id, state, kcv, mac) VALUES (%s, 'active', %s, %s)
      ON CONFLICT (id) DO UPDATE SET state = 'active', kcv = EXCLUDED.kcv, mac = EXCLUDED.mac,
          updated_at = CURRENT_TIMESTAMP(0)
        WHERE keyring_meta.kcv IS NULL OR keyring_meta.kcv = EXCLUDED.kcv
      RETURNING id;
  ]], ACTIVATION_LOCK, self:lit(id), self:lit(id), self:lit(kcv), self:lit(id), self:lit(kcv),
      self:meta_mac(id, kcv)))
  if not res then
    return nil, err
  end
  if #res[3] == 0 then
    return conflict(id)
  end
  return true
end


--- Whether `keyring_meta` lists `id` (nil and an error when the database
-- cannot tell).
function _M:lists(id)
  local rows, err = self:query(fmt("SELECT 1 FROM keyring_meta WHERE id = %s;", self:lit(id)))
  if not rows then
    return nil, err
  end
  return rows[1] ~= nil
end


local function present(v)
  if v ~= ngx.null then
    return v
  end
end


--- The cluster's keys as `keyring_meta` lists them, rows that do not
-- authenticate left out: `{ ids = { id, ... } (oldest first), kcv = { [id]
-- = check value }, active = id or nil }`, or nil and an error.
function _M:listing()
  local rows, err = self:query("SELECT id, state, kcv, mac FROM keyring_meta ORDER BY created_at, id;")
  if not rows then
    return nil, err
  end
  local listing = { ids = {}, kcv = {} }
  for _, row in ipairs(rows) do
    local kcv = present(row.kcv)
    if self.mac:verify(present(row.mac), "keyring_meta", row.id, kcv) then
      listing.ids[#listing.ids + 1] = row.id
      listing.kcv[row.id] = kcv
      if row.state == "active" then
        listing.active = row.id
      end
    else
      self:distrust("keyring_meta row", row.id)
    end
  end
  return listing
end


-- Encryptions of a key after which GET /keyring and the log warn: half of
-- 2^32, the NIST SP 800-38D limit for random 96-bit GCM nonces.
local NONCE_WARNING = 2 ^ 31


--- Adds this node's encryptions since the last round to each key's
-- cluster-wide count in `keyring_meta` (the region counts per node; what was
-- reported is kept in Kong's `kong` shm, which lives as long as the region).
-- Logs a warning once per key and process past NONCE_WARNING.
function _M:report_encryptions()
  local counts, err = keyring.usage()
  if not counts then
    return nil, err
  end
  local shm = ngx.shared.kong
  local statements, reported = {}, {}
  for id, n in pairs(counts) do
    local key = "keyring:encryptions:" .. id
    local before = shm and shm:get(key) or 0
    if n > before then
      statements[#statements + 1] = fmt("UPDATE keyring_meta SET encryptions = encryptions + %d WHERE id = %s;",
                                        n - before, self:lit(id))
      reported[key] = n
    end
  end
  if #statements > 0 then
    local ok
    ok, err = self:query(table.concat(statements, "\n"))
    if not ok then
      return nil, err
    end
    for key, n in pairs(reported) do
      if shm then
        shm:set(key, n)
      end
    end
  end
  local totals
  totals, err = self:encryptions()
  if not totals then
    return nil, err
  end
  self.warned = self.warned or {}
  for id, n in pairs(totals) do
    if n >= NONCE_WARNING and not self.warned[id] then
      self.warned[id] = true
      ngx.log(ngx.WARN, "[keyring] ", _M.nonce_warning(id, n))
    end
  end
  return true
end


function _M.nonce_warning(id, n)
  return fmt("key '%s' has been used for %.0f encryptions: activate a new key before 2^32 "
             .. "(the NIST limit for random 96-bit nonces)", id, n)
end


--- Each key's cluster-wide encryption count: `{ [id] = n }`, or nil and an error.
function _M:encryptions()
  local rows, err = self:query("SELECT id, encryptions FROM keyring_meta;")
  if not rows then
    return nil, err
  end
  local out = {}
  for _, row in ipairs(rows) do
    out[row.id] = tonumber(row.encryptions) or 0
  end
  return out
end


--- Warnings for keys near their nonce budget (GET /keyring).
function _M:warnings(totals)
  local out = {}
  for id, n in pairs(totals) do
    if n >= NONCE_WARNING then
      out[#out + 1] = _M.nonce_warning(id, n)
    end
  end
  table.sort(out)
  return out
end


--- Ids `keyring_meta` lists that this node does not hold (oldest first),
-- or nil and an error.
function _M:missing()
  local listing, err = self:listing()
  if not listing then
    return nil, err
  end
  local ring
  ring, err = keyring.keys()
  if not ring then
    return nil, err
  end
  local held = {}
  for _, id in ipairs(ring.ids) do
    held[id] = true
  end
  local missing = {}
  for _, id in ipairs(listing.ids) do
    if not held[id] then
      missing[#missing + 1] = id
    end
  end
  return missing
end


--- The id `keyring_meta` marks active, or false when none is.
function _M:active_in_database()
  local listing, err = self:listing()
  if not listing then
    return nil, err
  end
  return listing.active or false
end


--- Activates `id` in the cluster, once every live node holds it (staged
-- activation; `opts.force` does not wait), then makes this node use the key
-- the database marks active: another activation may have been applied after
-- ours. Activations of this node's workers are serialised by a lock so
-- that the last one to read the database is the last one to activate.
-- @return true, or nil, an error, its kind ("not_found"; "conflict": the
-- id is another key's, a concurrent activation was applied after ours, or
-- live nodes lack the key) and then the lacking nodes' ids
function _M:activate(id, opts)
  local held, herr, hkind = keyring.check_value(id)
  if not held then
    return nil, herr, hkind
  end
  if self.exchange then
    -- staged activation: every live node holds the key first
    local ok, err, kind, missing_on = self.exchange:stage(id, opts and opts.force)
    if not ok then
      return nil, err, kind, missing_on
    end
  end
  local lock, err = resty_lock:new("kong_locks", { exptime = 30, timeout = 30 })
  if not lock then
    return nil, "cannot create the activation lock: " .. tostring(err)
  end
  local elapsed
  elapsed, err = lock:lock("keyring:activate")
  if not elapsed then
    return nil, "cannot take the activation lock: " .. tostring(err)
  end

  local ok, kind
  ok, err, kind = self:activated(id)
  local active, rerr
  if ok then
    active, rerr = self:active_in_database()
    if active and keyring.check_value(active) then
      keyring.activate(active)
    end
  end
  lock:unlock()

  if not ok then
    return nil, err, kind
  end
  if not active then
    return nil, rerr or "no active key in keyring_meta after the activation"
  end
  if active ~= id then
    return nil, "key '" .. id .. "' was activated, then key '" .. active
                .. "' by a concurrent request: '" .. active .. "' is active", "conflict"
  end
  if self.exchange then
    self.exchange:announce("activate", id)
  end
  self:ring_changed()
  return true
end


--- Removes `id` from the cluster: from the database (its meta and recovery
-- rows), from this node, then from every other node.
-- @return true, or nil, an error and its kind ("conflict": the active key)
function _M:remove(id)
  local ok, err, kind = self:removable(id)
  if not ok then
    return nil, err, kind
  end
  ok, err, kind = self:removed(id)
  if not ok then
    return nil, err, kind
  end
  ok, err, kind = keyring.remove(id)
  if not ok then
    return nil, err, kind
  end
  if self.exchange then
    self.exchange:announce("remove", id)
  end
  self:ring_changed()
  return true
end


--- Whether `id` may be removed: not the key active here or in the database
-- (this node may not hold the cluster's active key after a restart).
-- @return true, or nil, an error and its kind ("conflict")
function _M:removable(id)
  if keyring.active_id() == id then
    return nil, "cannot remove active key", "conflict"
  end
  local rows, err = self:query(fmt("SELECT 1 FROM keyring_meta WHERE id = %s AND state = 'active';", self:lit(id)))
  if not rows then
    return nil, err
  end
  if rows[1] then
    return nil, "cannot remove active key", "conflict"
  end
  return true
end


--- Forgets `id` in the database (its meta and recovery rows); never the
-- row the database marks active (`removable` refuses it first).
function _M:removed(id)
  return self:query(fmt([[
    DELETE FROM keyring_meta WHERE id = %s AND state <> 'active';
    DELETE FROM keyring_keys WHERE id = %s AND NOT EXISTS (SELECT 1 FROM keyring_meta WHERE id = %s);
  ]], self:lit(id), self:lit(id), self:lit(id)))
end


--- Records an imported set of keys and its active id, and sends the keys
-- to the other nodes. The import activates its key even when some live
-- node does not hold it in time (logged): the operator asked for that key.
function _M:imported(ids, active)
  for _, id in ipairs(ids) do
    local ok, err, kind = self:added(id)
    if not ok then
      return nil, err, kind
    end
  end
  self:spread(ids)
  if active then
    local ok, err, kind = self:activate(active, { force = true })
    if not ok then
      return nil, err, kind
    end
  end
  self.keys_arrived()
  return true
end


--- After keys were added on this node: sends them to every live node
-- (cluster/exchange.lua) and rewrites the blob file.
function _M:spread(ids)
  if self.exchange then
    self.exchange:push(ids)
  end
  self:ring_changed()
end


--- Rewrites `keyring_blob_path` (when set) after the ring changed.
function _M:ring_changed()
  if self.blob_file then
    self.blob_file:write()
  end
end


--- Opens every recovery row it can with `private_pem` and adds those keys here
-- (docs/design.md, "Recovery"); each key is checked against its `keyring_meta`
-- check value when there is one. A node with no active key then activates the
-- id `keyring_meta` marks active.
-- @return recovered ids, not recovered ids; or nil and an error
function _M:recover(private_pem)
  local rows, err = self:query("SELECT id, key_encrypted FROM keyring_keys ORDER BY created_at, id;")
  if not rows then
    return nil, err
  end
  local listing
  listing, err = self:listing()
  if not listing then
    return nil, err
  end
  local kcv, active = listing.kcv, listing.active

  local recovered, not_recovered = {}, {}
  for _, row in ipairs(rows) do
    local ok, rerr
    if self.mac:enabled() and not kcv[row.id] then
      -- under a cluster secret only ids that keyring_meta lists, authenticated
      rerr = "no authenticated keyring_meta row lists it"
    else
      ok, rerr = keyring.recover(row.id, row.key_encrypted, private_pem, kcv[row.id])
    end
    if ok then
      recovered[#recovered + 1] = row.id
    else
      not_recovered[#not_recovered + 1] = row.id
      ngx.log(ngx.NOTICE, "[keyring] recovery row '", row.id, "' not recovered: ", rerr)
    end
  end

  if active and not keyring.active_id() then
    keyring.activate(active)
  end
  if #recovered > 0 then
    self.keys_arrived()
    self:spread(recovered)
  end
  return recovered, not_recovered
end


--- First start of a cluster: when `keyring_meta` is empty, one node generates
-- and activates the first key. The insert succeeds for one node only (the
-- unique index on the active row), so racing nodes never both win and never
-- fail: the loser drops its key and waits for the winner's.
-- @return "bootstrapped", "exists" or nil and an error
function _M:bootstrap()
  local ring, err = keyring.keys()
  if not ring then
    return nil, err
  end
  if #ring.ids > 0 then
    return "exists"
  end
  local rows
  rows, err = self:query("SELECT count(*) AS n FROM keyring_meta;")
  if not rows then
    return nil, err
  end
  if tonumber(rows[1] and rows[1].n or 0) > 0 then
    return "exists"
  end

  local id
  id, err = keyring.generate()
  if not id then
    return nil, err
  end
  local kcv = assert(keyring.check_value(id))
  rows, err = self:query(fmt([[
    INSERT INTO keyring_meta (id, state, kcv, mac)
      SELECT %s, 'active', %s, %s WHERE NOT EXISTS (SELECT 1 FROM keyring_meta)
      ON CONFLICT DO NOTHING RETURNING id;
  ]], self:lit(id), self:lit(kcv), self:meta_mac(id, kcv)))
  if not rows or #rows == 0 then
    keyring.remove(id)
    return rows and "exists" or nil, err
  end
  assert(keyring.activate(id))
  local ok
  ok, err = self:backup(id)
  if not ok then
    return nil, err
  end
  return "bootstrapped"
end


return _M
