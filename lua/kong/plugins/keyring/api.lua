-- The /keyring Admin API (docs/admin-api.md), Kong's plain route style: handlers get
-- `self.params` (query string, then a JSON, form or multipart body) and end
-- in `kong.response.exit`.
--
-- * Every error body is `{ "error": ... }`.
-- * Each route takes a fixed set of parameters, all strings: any other
--   parameter (query string included) is refused with 400
--   `unknown parameter '<name>'`, a non-string value with 400
--   `'<name>' must be a string`. JSON null and "" count as absent.
-- * Bodies of import, import/raw and recover requests are never logged, and
--   no message carries a key byte: an unknown parameter's name is echoed
--   only when it is short and looks like a name (a body sent without
--   `name=` would otherwise come back, e.g. a base64 key as a form body).

local cjson = require "cjson.safe"
local keyring = require "kong.keyring"
local db = require "kong.keyring.strategies.db"
local state = require "kong.plugins.keyring.state"
local errors = require "kong.plugins.keyring.errors"
local stored = require "kong.plugins.keyring.stored"
local rewrap = require "kong.plugins.keyring.rewrap"


local kong = kong
local ngx = ngx
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local sort = table.sort
local concat = table.concat
local fmt = string.format
local null = ngx.null


local JSON = { ["Content-Type"] = "application/json; charset=utf-8" }

-- longest unknown parameter name echoed back: shorter than any text form of
-- a 32-byte key (base64 43-44 chars, hex 64)
local MAX_ECHOED_NAME = 32


local function log(...)
  ngx.log(ngx.NOTICE, "[keyring] ", ...)
end


-- Kong's cjson has array_mt; Debian's does not: encode id lists ourselves so
-- that `ids` is always a JSON array, even when empty.
local function json_array(list)
  local quoted = {}
  for i, v in ipairs(list) do
    quoted[i] = cjson.encode(v)
  end
  return "[" .. concat(quoted, ",") .. "]"
end


-- `extra` (GET /keyring, cluster strategy): `missing`, ids the cluster
-- lists that this node lacks, and `warnings` (shown when any);
-- `encryptions`, each key's cluster-wide count
local function ring_json(ids, active, extra)
  local body = '{"ids":' .. json_array(ids)
  if active then
    body = body .. ',"active":' .. cjson.encode(active)
  end
  extra = extra or {}
  if extra.missing and #extra.missing > 0 then
    body = body .. ',"missing":' .. json_array(extra.missing)
  end
  if extra.encryptions then
    body = body .. ',"encryptions":' .. cjson.encode(extra.encryptions)
  end
  if extra.warnings and #extra.warnings > 0 then
    body = body .. ',"warnings":' .. json_array(extra.warnings)
  end
  return body .. "}"
end


local function fail(status, message)
  return kong.response.exit(status, { error = message })
end


local function unknown_parameter(name)
  if type(name) == "string" and #name <= MAX_ECHOED_NAME and name:find("^[%w_]+$") then
    return "unknown parameter '" .. name .. "'"
  end
  return "unknown parameter (name not shown)"
end


--- The parameters of a request, checked against the route's `names` (an
-- array; `known` is the same as a set): `{ name = string }` with absent,
-- null and "" values left out, or nil and an error message.
local function read_params(self, names, known)
  local given = self.params or {}
  local unknown = {}
  for name in pairs(given) do
    if not known[name] then
      unknown[#unknown + 1] = tostring(name)
    end
  end
  if #unknown > 0 then
    sort(unknown)
    return nil, unknown_parameter(unknown[1])
  end

  -- Kong's Admin API framework (lapis) keeps the last of a repeated query or
  -- form argument and lets the body override the query string: look at the
  -- raw arguments, so that `key=A&key=B` is an error, not an activation of B
  -- (a repeated multipart field cannot be seen: lapis reads multipart
  -- bodies as a stream)
  local query = ngx.req.get_uri_args(0)
  local ctype = ngx.var.content_type or ""
  local form = ctype:find("application/x-www-form-urlencoded", 1, true) and ngx.req.get_post_args(0) or {}

  local params = {}
  for _, name in ipairs(names) do
    local q = query[name]
    if type(q) == "table" or type(form[name]) == "table" or (q ~= nil and given[name] ~= q) then
      return nil, "'" .. name .. "' must be a string"
    end
    local v = given[name]
    if v ~= nil and v ~= null and v ~= "" then
      if type(v) ~= "string" then
        return nil, "'" .. name .. "' must be a string"
      end
      params[name] = v
    end
  end
  return params
end


-- `true` / `false` parameter `name` (absent: false), or nil and an error
local function boolean_param(params, name)
  local v = params[name]
  if v == nil or v == "false" then
    return false
  end
  if v == "true" then
    return true
  end
  return nil, "'" .. name .. "' must be true or false"
end


-- the `key` and `force` params of /keyring/activate and /keyring/remove:
-- the key id and the boolean, or nil, nil and an error
local function key_and_force(params)
  if not params.key then
    return nil, nil, "missing 'key' param"
  end
  local force, err = boolean_param(params, "force")
  if err then
    return nil, nil, err
  end
  return params.key, force
end


local function query(sql)
  return db.query(kong.db, sql)
end


-- pause, resume or cancel the rewrap job
local function set_job_state(state_name)
  local job, err, kind = state.rewrap:set_state(state_name)
  if not job then
    return fail(errors.status(kind), err)
  end
  log("rewrap job ", job.id, " ", state_name)
  return kong.response.exit(200, rewrap.view(job))
end


--- After a database write failed: the ring as it was `before` an import of
-- `ids` (its active key again, the imported keys it did not hold dropped).
-- A node that had no active key keeps the blob's: the core has no way back
-- to "no active key"; its other new keys are still dropped.
local function restore(before, ids)
  if not before then
    return
  end
  if before.active then
    keyring.activate(before.active)
  end
  local held = {}
  for _, id in ipairs(before.ids) do
    held[id] = true
  end
  for _, id in ipairs(ids) do
    if not held[id] then
      keyring.remove(id)
    end
  end
end


--- A route handler: checks that the keyring runs here, the strategy the
-- route needs (if any) and the parameters, then calls `fn(params, self)`.
-- opts: `params` (array of names, default none), `strategy`.
local function endpoint(opts, fn)
  local names = opts.params or {}
  local known = {}
  for _, name in ipairs(names) do
    known[name] = true
  end
  local strategy = opts.strategy
  return function(self)
    if not state.strategy then
      return fail(400, "keyring is not enabled")
    end
    if strategy and state.conf.keyring_strategy ~= strategy then
      return fail(400, "endpoint only supported for '" .. strategy .. "' strategy")
    end
    local params, err = read_params(self, names, known)
    if not params then
      return fail(400, err)
    end
    return fn(params, self)
  end
end


return {
  ["/keyring"] = {
    GET = endpoint({}, function()
      local ring, err = keyring.keys()
      if not ring then
        return fail(500, err)
      end
      local extra = {}
      if state.strategy.missing then
        extra.missing, err = state.strategy:missing()
        if not extra.missing then
          return fail(500, err)
        end
      end
      if state.strategy.encryptions then
        extra.encryptions, err = state.strategy:encryptions()
        if not extra.encryptions then
          return fail(500, err)
        end
        extra.warnings = state.strategy:warnings(extra.encryptions)
      end
      return kong.response.exit(200, ring_json(ring.ids, ring.active, extra), JSON)
    end),
  },

  ["/keyring/active"] = {
    GET = endpoint({}, function()
      local id = keyring.active_id()
      if not id then
        return fail(503, "active key id not found")
      end
      return kong.response.exit(200, { id = id })
    end),
  },

  ["/keyring/generate"] = {
    POST = endpoint({ strategy = "cluster" }, function()
      local id, key_or_err = keyring.generate()
      if not id then
        return fail(500, key_or_err)
      end
      local ok, err = state.strategy:added(id)
      if not ok then
        keyring.remove(id)
        return fail(500, err)
      end
      state.strategy:spread({ id })
      log("key '", id, "' generated")
      return kong.response.exit(201, { id = id, key = key_or_err })
    end),
  },

  ["/keyring/activate"] = {
    POST = endpoint({ strategy = "cluster", params = { "key", "force" } }, function(params)
      local id, force, perr = key_and_force(params)
      if not id then
        return fail(400, perr)
      end
      local ok, err, kind, missing_on = state.strategy:activate(id, { force = force })
      if not ok then
        if missing_on then
          return kong.response.exit(409, { error = err, missing_on = missing_on })
        end
        return fail(errors.status(kind), kind == "not_found" and "not found" or err)
      end
      log("key '", id, "' activated")
      return kong.response.exit(204)
    end),
  },

  ["/keyring/remove"] = {
    POST = endpoint({ strategy = "cluster", params = { "key", "force" } }, function(params)
      local id, force, perr = key_and_force(params)
      if not id then
        return fail(400, perr)
      end
      local ok, err, kind = state.strategy:removable(id)
      if not ok then
        return fail(errors.status(kind), err)
      end
      -- stored values still under the key: 409 with the counts, unless forced
      local used, by = stored.count(query, id)
      if not used then
        return fail(500, by)
      end
      if used > 0 and not force then
        return kong.response.exit(409, {
          error = "key '" .. id .. "' is still used by " .. used .. " stored values: rewrap them "
                  .. "(POST /keyring/rewrap), or remove with force=true (they become unreadable)",
          usage = by,
        })
      end
      ok, err, kind = state.strategy:remove(id)
      if not ok then
        return fail(errors.status(kind), err)
      end
      if used > 0 then
        log("key '", id, "' removed by force: ", used, " stored values became unreadable")
        return kong.response.exit(200, { unreadable = used, usage = by })
      end
      log("key '", id, "' removed")
      return kong.response.exit(204)
    end),
  },

  ["/keyring/export"] = {
    POST = endpoint({ strategy = "cluster" }, function()
      local public = state.conf.keyring_public_key
      if not public then
        return fail(500, "missing backup public key")
      end
      local blob, err = keyring.export(public)
      if not blob then
        return fail(500, err)
      end
      return kong.response.exit(200, { data = blob })
    end),
  },

  ["/keyring/import"] = {
    POST = endpoint({ strategy = "cluster", params = { "data" } }, function(params)
      local blob = params.data
      if not blob then
        return fail(400, "missing 'data' param")
      end
      local private = state.conf.keyring_private_key
      if not private then
        return fail(500, "missing backup private key")
      end
      local before = keyring.keys()
      local ring, err, kind = keyring.import(blob, private)
      if not ring then
        return fail(errors.status(kind), err)
      end
      local ok
      ok, err, kind = state.strategy:imported(ring.ids, ring.active)
      if not ok then
        restore(before, ring.ids)
        return fail(errors.status(kind), err)
      end
      log("imported keys ", concat(ring.ids, ", "), ring.active and (", activated '" .. ring.active .. "'") or "")
      return kong.response.exit(200, ring_json(ring.ids, ring.active), JSON)
    end),
  },

  ["/keyring/import/raw"] = {
    POST = endpoint({ strategy = "cluster", params = { "id", "data" } }, function(params)
      local id, key = params.id, params.data
      if not id or not key then
        return fail(400, "missing 'id' or 'data' params")
      end
      local before = keyring.keys()
      local ok, err, kind = keyring.add(id, key)
      if not ok then
        return fail(errors.status(kind), err)
      end
      ok, err, kind = state.strategy:added(id)
      if not ok then
        -- all or nothing: the cluster does not list it, so this node drops it
        restore(before, { id })
        return fail(errors.status(kind), err)
      end
      state.strategy:spread({ id })
      log("key '", id, "' imported")
      return kong.response.exit(201)
    end),
  },

  ["/keyring/recover"] = {
    POST = endpoint({ strategy = "cluster", params = { "recovery_private_key" } }, function(params)
      local pem = params.recovery_private_key
      if not pem then
        return fail(400, "missing 'recovery_private_key' param")
      end
      local _, err = keyring.private_key_id(pem)
      if err then
        return fail(400, err:find("got a public key", 1, true) and "recovery needs a private key" or err)
      end
      local recovered, not_recovered = state.strategy:recover(pem)
      if not recovered then
        return fail(500, not_recovered)
      end
      log("recovered ", #recovered, " keys, ", #not_recovered, " not recovered")
      return kong.response.exit(200, fmt('{"message":"successfully recovered %d keys","recovered":%s,"not_recovered":%s}',
                                         #recovered, json_array(recovered), json_array(not_recovered)), JSON)
    end),
  },

  -- Stored values (docs/admin-api.md, "GET /keyring/usage"): counted in SQL
  ["/keyring/usage"] = {
    GET = endpoint({}, function()
      local usage, err = stored.usage(query)
      if not usage then
        return fail(500, err)
      end
      setmetatable(usage.tables, cjson.array_mt)
      return kong.response.exit(200, usage)
    end),
  },

  -- The rewrap job (docs/admin-api.md, "Rewrap")
  ["/keyring/rewrap"] = {
    GET = endpoint({}, function()
      local job, err = state.rewrap:latest()
      if job == nil then
        return fail(500, err)
      end
      if not job then
        return fail(404, "no rewrap job")
      end
      return kong.response.exit(200, rewrap.view(job))
    end),

    POST = endpoint({ params = { "from", "rate", "tables" } }, function(params)
      local rate = params.rate and tonumber(params.rate)
      if params.rate and not (rate and rate >= 1 and rate == math.floor(rate)) then
        return fail(400, "'rate' must be a whole number of rows per second, at least 1")
      end
      if params.tables then
        local known = stored.entities()
        for name in params.tables:gmatch("[^,%s]+") do
          if not known[name] then
            return fail(400, "'tables': no encrypted fields in '" .. name:sub(1, 64) .. "'")
          end
        end
      end
      local job, err, kind = state.rewrap:start({ from = params.from, rate = rate, tables = params.tables })
      if not job then
        if kind == "conflict" then
          local live = state.rewrap:latest()
          return kong.response.exit(409, { error = err, job = live and rewrap.view(live) or nil })
        end
        return fail(errors.status(kind), err)
      end
      log("rewrap job ", job.id, " started")
      return kong.response.exit(202, rewrap.view(job))
    end),

    DELETE = endpoint({}, function()
      return set_job_state("cancelled")
    end),
  },

  ["/keyring/rewrap/pause"] = {
    POST = endpoint({}, function()
      return set_job_state("paused")
    end),
  },

  ["/keyring/rewrap/resume"] = {
    POST = endpoint({}, function()
      return set_job_state("running")
    end),
  },

  -- Vault strategy (docs/admin-api.md, "POST /keyring/vault/sync"): the
  -- token is optional and never logged, stored or broadcast; in the URL it
  -- would be in every log line nginx writes for the request
  ["/keyring/vault/sync"] = {
    POST = endpoint({ strategy = "vault", params = { "token" } }, function(params)
      if ngx.req.get_uri_args(0).token ~= nil then
        return fail(400, "'token' must be sent in the request body, not in the URL")
      end
      local ok, err = state.strategy:sync(params.token)
      if not ok then
        return fail(500, err)
      end
      return kong.response.exit(204)
    end),
  },
}
