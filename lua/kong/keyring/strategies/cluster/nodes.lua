-- The nodes of a cluster (docs/design.md, "Cluster strategy"): this node's
-- ephemeral RSA key pair, its heartbeat row in `keyring_nodes` (public key,
-- the ids it holds, last seen) and the other live nodes' rows.
--
-- The pair is made once per start of the node, in the master during `init`
-- (every worker inherits it), and is never stored: keys sent to this node
-- are wrapped for its public key (RSA-OAEP-SHA256) and can only be opened by
-- this start of this node. The private half is the keyring's transport key
-- (`keyring.transport_key`, `keyring.receive`): it never reaches Lua.

local keyring = require "kong.keyring"


local ngx = ngx
local fmt = string.format
local concat = table.concat
local ipairs = ipairs
local tostring = tostring
local setmetatable = setmetatable


local _M = {}
local mt = { __index = _M }


local public_pem -- of this start of the node


--- Makes this node's key pair (in `init`, before the workers fork).
-- @return true, or nil and an error
function _M.make_pair()
  local pem, err = keyring.transport_key()
  if not pem then
    return nil, "cannot make the node's RSA key pair: " .. tostring(err)
  end
  public_pem = pem
  return true
end


function _M.public_key()
  return public_pem
end


--- `cluster`: the cluster strategy (its `query`, `lit` and `mac`);
-- `instance`: names this node across restarts (host and prefix).
function _M.new(cluster, node_id, hostname, instance)
  return setmetatable({ cluster = cluster, node_id = node_id, hostname = hostname, instance = instance }, mt)
end


-- ids have no spaces (docs/formats.md, "Key ids")
local function join(ids)
  return concat(ids, " ")
end


local function split(text)
  local ids = {}
  for id in tostring(text or ""):gmatch("%S+") do
    ids[#ids + 1] = id
  end
  return ids
end


-- the MAC label of keyring_nodes rows
local LABEL = "keyring_nodes"


--- Records that this node is alive, with its public key and the ids it
-- holds. Forgets this node's rows of earlier starts (they would count as
-- live nodes lacking keys) and nodes not seen for a day.
function _M:heartbeat(held_ids)
  local c = self.cluster
  local key_ids = join(held_ids)
  local public = _M.public_key()
  local mac = c.mac:sign(LABEL, self.node_id, public, key_ids)
  local node_id = c:lit(self.node_id)
  return c:query(fmt([[
    DELETE FROM keyring_nodes WHERE (instance = %s AND node_id <> %s)
      OR last_seen < CURRENT_TIMESTAMP - INTERVAL '1 day';
    INSERT INTO keyring_nodes (node_id, instance, hostname, public_key, key_ids, mac, last_seen)
      VALUES (%s, %s, %s, %s, %s, %s, CURRENT_TIMESTAMP)
    ON CONFLICT (node_id) DO UPDATE SET instance = EXCLUDED.instance, hostname = EXCLUDED.hostname,
      public_key = EXCLUDED.public_key, key_ids = EXCLUDED.key_ids, mac = EXCLUDED.mac,
      last_seen = EXCLUDED.last_seen;
  ]], c:lit(self.instance), node_id, node_id, c:lit(self.instance), c:lit(self.hostname or ""), c:lit(public),
      c:lit(key_ids), mac and c:lit(mac) or "NULL"))
end


--- The other nodes seen within `window` seconds whose rows authenticate:
-- `{ { node_id =, public_key =, holds = { [id] = true } }, ... }`. With
-- `only` (a list of node ids): those nodes, however long ago they were seen.
function _M:live(window, only)
  local c = self.cluster
  local where
  if only then
    local ids = {}
    for i, id in ipairs(only) do
      ids[i] = c:lit(id)
    end
    where = #ids > 0 and ("node_id IN (" .. concat(ids, ",") .. ")") or "false"
  else
    where = fmt("last_seen > CURRENT_TIMESTAMP - make_interval(secs => %.3f)", window)
  end
  local rows, err = c:query(fmt([[
    SELECT node_id, public_key, key_ids, mac FROM keyring_nodes
      WHERE node_id <> %s AND %s ORDER BY node_id;
  ]], c:lit(self.node_id), where))
  if not rows then
    return nil, err
  end
  local live = {}
  for _, row in ipairs(rows) do
    local mac = row.mac ~= ngx.null and row.mac or nil
    if c.mac:verify(mac, LABEL, row.node_id, row.public_key, row.key_ids) then
      local holds = {}
      for _, id in ipairs(split(row.key_ids)) do
        holds[id] = true
      end
      live[#live + 1] = { node_id = row.node_id, public_key = row.public_key, holds = holds }
    else
      c:distrust("keyring_nodes row", row.node_id)
    end
  end
  return live
end


return _M
