-- The /keyring Admin API (SPEC §3), Kong's plain route style: handlers get
-- `self.params` (JSON, form and multipart bodies merged) and end in
-- `kong.response.exit`. Every error body is `{ "error": ... }`. Bodies of
-- import, import/raw and recover requests are never logged.

local cjson = require "cjson.safe"
local keyring = require "kong.keyring"
local state = require "kong.plugins.keyring.state"


local kong = kong
local type = type
local ipairs = ipairs
local concat = table.concat
local fmt = string.format


local JSON = { ["Content-Type"] = "application/json; charset=utf-8" }


-- Kong's cjson has array_mt; Debian's does not: encode id lists ourselves so
-- that `ids` is always a JSON array, even when empty.
local function json_array(list)
  local quoted = {}
  for i, v in ipairs(list) do
    quoted[i] = cjson.encode(v)
  end
  return "[" .. concat(quoted, ",") .. "]"
end


local function ring_json(ids, active)
  local body = '{"ids":' .. json_array(ids)
  if active then
    body = body .. ',"active":' .. cjson.encode(active)
  end
  return body .. "}"
end


local function fail(status, message)
  return kong.response.exit(status, { error = message })
end


-- status for an error string from kong.keyring
local function status_of(err)
  if err:find("^key '.*' not found$") then
    return 404
  end
  if err:find("already exists with different material", 1, true) or err == "cannot remove active key" then
    return 409
  end
  if err:find("^keyring not initialized") then
    return 500
  end
  return 400
end


-- A string parameter: the value, nil when absent, or false and an error.
local function string_param(self, name)
  local v = self.params[name]
  if v == nil or v == "" then
    return nil
  end
  if type(v) ~= "string" then
    return false, "'" .. name .. "' must be a string"
  end
  return v
end


-- Wraps a handler of a route that only the cluster strategy offers.
local function cluster_only(handler)
  return function(self, db, helpers)
    if state.conf.keyring_strategy ~= "cluster" then
      return fail(400, "endpoint only supported for 'cluster' strategy")
    end
    return handler(self, db, helpers)
  end
end


return {
  ["/keyring"] = {
    GET = function()
      local ring, err = keyring.keys()
      if not ring then
        return fail(500, err)
      end
      return kong.response.exit(200, ring_json(ring.ids, ring.active), JSON)
    end,
  },

  ["/keyring/active"] = {
    GET = function()
      local id = keyring.active_id()
      if not id then
        return fail(503, "active key id not found")
      end
      return kong.response.exit(200, { id = id })
    end,
  },

  ["/keyring/generate"] = {
    POST = cluster_only(function()
      local id, key_or_err = keyring.generate()
      if not id then
        return fail(500, key_or_err)
      end
      local ok, err = state.strategy:added(id)
      if not ok then
        keyring.remove(id)
        return fail(500, err)
      end
      return kong.response.exit(201, { id = id, key = key_or_err })
    end),
  },

  ["/keyring/activate"] = {
    POST = cluster_only(function(self)
      local id, bad = string_param(self, "key")
      if not id then
        return fail(400, bad or "missing 'key' param")
      end
      local ok, err = keyring.activate(id)
      if not ok then
        return fail(status_of(err), status_of(err) == 404 and "not found" or err)
      end
      ok, err = state.strategy:activated(id)
      if not ok then
        return fail(500, err)
      end
      return kong.response.exit(204)
    end),
  },

  ["/keyring/remove"] = {
    POST = cluster_only(function(self)
      local id, bad = string_param(self, "key")
      if not id then
        return fail(400, bad or "missing 'key' param")
      end
      local ok, err = keyring.remove(id)
      if not ok then
        return fail(status_of(err), err)
      end
      ok, err = state.strategy:removed(id)
      if not ok then
        return fail(500, err)
      end
      return kong.response.exit(204)
    end),
  },

  ["/keyring/export"] = {
    POST = cluster_only(function()
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
    POST = cluster_only(function(self)
      local blob, bad = string_param(self, "data")
      if not blob then
        return fail(400, bad or "missing 'data' param")
      end
      local private = state.conf.keyring_private_key
      if not private then
        return fail(500, "missing backup private key")
      end
      local ring, err = keyring.import(blob, private)
      if not ring then
        return fail(status_of(err), err)
      end
      local ok
      ok, err = state.strategy:imported(ring.ids, ring.active)
      if not ok then
        return fail(500, err)
      end
      return kong.response.exit(200, ring_json(ring.ids, ring.active), JSON)
    end),
  },

  ["/keyring/import/raw"] = {
    POST = cluster_only(function(self)
      local id, bad_id = string_param(self, "id")
      local key, bad_key = string_param(self, "data")
      if not id or not key then
        return fail(400, bad_id or bad_key or "missing 'id' or 'data' params")
      end
      local ok, err = keyring.add(id, key)
      if not ok then
        return fail(status_of(err), err)
      end
      ok, err = state.strategy:added(id)
      if not ok then
        return fail(500, err)
      end
      return kong.response.exit(201)
    end),
  },

  ["/keyring/recover"] = {
    POST = cluster_only(function(self)
      local pem, bad = string_param(self, "recovery_private_key")
      if not pem then
        return fail(400, bad or "missing 'recovery_private_key' param")
      end
      local _, err = keyring.private_key_id(pem)
      if err then
        return fail(400, err:find("got a public key", 1, true) and "recovery needs a private key" or err)
      end
      local recovered, not_recovered = state.strategy:recover(pem)
      if not recovered then
        return fail(500, not_recovered)
      end
      return kong.response.exit(200, fmt('{"message":"successfully recovered %d keys","recovered":%s,"not_recovered":%s}',
                                         #recovered, json_array(recovered), json_array(not_recovered)), JSON)
    end),
  },
}
