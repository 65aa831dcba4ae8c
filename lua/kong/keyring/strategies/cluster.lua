-- Cluster strategy, node-local half (docs/design.md, "Cluster strategy"):
-- what this node records in the database when its ring changes, and the
-- first-key bootstrap.
--
-- `keyring_meta` lists every id of the cluster with its state and key check
-- value; `keyring_keys` holds recovery rows when a recovery public key is set.
-- Key delivery between nodes (cluster_events, keyring_nodes) builds on this.

local keyring = require "kong.keyring"
local resty_lock = require "resty.lock"


local fmt = string.format
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
  return setmetatable({ conf = conf, db = db, keys_arrived = keys_arrived or function() end }, mt)
end


function _M:query(sql)
  local res, err = self.db.connector:query(sql)
  if not res then
    return nil, "keyring database error: " .. tostring(err)
  end
  return res
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
    INSERT INTO keyring_meta (id, state, kcv) VALUES (%s, 'alive', %s)
    ON CONFLICT (id) DO UPDATE SET kcv = EXCLUDED.kcv, updated_at = CURRENT_TIMESTAMP(0)
      WHERE keyring_meta.kcv IS NULL OR keyring_meta.kcv = EXCLUDED.kcv
    RETURNING id;
  ]], self:lit(id), self:lit(kcv)))
  if not rows then
    return nil, err
  end
  if #rows == 0 then
    return conflict(id)
  end
  return self:backup(id)
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
    INSERT INTO keyring_meta (id, state, kcv) VALUES (%s, 'active', %s)
      ON CONFLICT (id) DO UPDATE SET state = 'active', kcv = EXCLUDED.kcv, updated_at = CURRENT_TIMESTAMP(0)
        WHERE keyring_meta.kcv IS NULL OR keyring_meta.kcv = EXCLUDED.kcv
      RETURNING id;
  ]], ACTIVATION_LOCK, self:lit(id), self:lit(id), self:lit(kcv), self:lit(id), self:lit(kcv)))
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


--- The id `keyring_meta` marks active, or false when none is.
function _M:active_in_database()
  local rows, err = self:query("SELECT id FROM keyring_meta WHERE state = 'active';")
  if not rows then
    return nil, err
  end
  return rows[1] and rows[1].id or false
end


--- Activates `id` in the cluster, then makes this node use the key the
-- database marks active: another activation may have been applied after
-- ours. Activations of this node's workers are serialised by a lock so
-- that the last one to read the database is the last one to activate.
-- @return true, or nil, an error and its kind ("not_found"; "conflict": the
-- id is another key's, or a concurrent activation was applied after ours)
function _M:activate(id)
  local held, herr, hkind = keyring.check_value(id)
  if not held then
    return nil, herr, hkind
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
  return true
end


--- Forgets `id` in the database (its meta and recovery rows), unless the
-- database marks it active: this node may simply not hold the cluster's
-- active key (after a restart), while other nodes still write with it.
function _M:removed(id)
  local rows, err = self:query(fmt("SELECT 1 FROM keyring_meta WHERE id = %s AND state = 'active';", self:lit(id)))
  if not rows then
    return nil, err
  end
  if rows[1] then
    return nil, "cannot remove active key", "conflict"
  end
  return self:query(fmt([[
    DELETE FROM keyring_meta WHERE id = %s AND state <> 'active';
    DELETE FROM keyring_keys WHERE id = %s AND NOT EXISTS (SELECT 1 FROM keyring_meta WHERE id = %s);
  ]], self:lit(id), self:lit(id), self:lit(id)))
end


--- Records an imported set of keys and its active id.
function _M:imported(ids, active)
  for _, id in ipairs(ids) do
    local ok, err, kind = self:added(id)
    if not ok then
      return nil, err, kind
    end
  end
  if active then
    local ok, err, kind = self:activate(active)
    if not ok then
      return nil, err, kind
    end
  end
  self.keys_arrived()
  return true
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
  local meta
  meta, err = self:query("SELECT id, state, kcv FROM keyring_meta;")
  if not meta then
    return nil, err
  end
  local kcv, active = {}, nil
  for _, m in ipairs(meta) do
    kcv[m.id] = m.kcv ~= ngx.null and m.kcv or nil
    if m.state == "active" then
      active = m.id
    end
  end

  local recovered, not_recovered = {}, {}
  for _, row in ipairs(rows) do
    local ok, rerr = keyring.recover(row.id, row.key_encrypted, private_pem, kcv[row.id])
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
    INSERT INTO keyring_meta (id, state, kcv)
      SELECT %s, 'active', %s WHERE NOT EXISTS (SELECT 1 FROM keyring_meta)
      ON CONFLICT DO NOTHING RETURNING id;
  ]], self:lit(id), self:lit(kcv)))
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
