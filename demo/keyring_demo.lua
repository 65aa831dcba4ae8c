-- A minimal OpenResty application using kong.keyring (no Kong): the HTTP
-- endpoints `make demo` calls. Every answer names the worker that served it.

local cjson = require "cjson.safe"
local keyring = require "kong.keyring"


local _M = {}


local function reply(status, body)
  body.worker = ngx.worker.pid()
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end


local function body()
  ngx.req.read_body()
  return ngx.req.get_body_data() or ""
end


local routes = {
  ["/keys"] = function()
    local ring, err = keyring.keys()
    if not ring then
      return reply(500, { error = err })
    end
    if #ring.ids == 0 then
      -- Debian's lua-cjson has no array_mt: an empty table would print as {}
      ngx.say('{"ids":[],"worker":', ngx.worker.pid(), '}')
      return ngx.exit(200)
    end
    return reply(200, { ids = ring.ids, active = ring.active })
  end,

  ["/generate"] = function()
    local id, key_or_err = keyring.generate()
    if not id then
      return reply(500, { error = key_or_err })
    end
    -- the key itself stays inside: the demo never prints key bytes
    return reply(201, { id = id })
  end,

  ["/activate"] = function()
    local ok, err = keyring.activate(ngx.var.arg_id or "")
    if not ok then
      return reply(404, { error = err })
    end
    return reply(200, { active = ngx.var.arg_id })
  end,

  ["/remove"] = function()
    local ok, err = keyring.remove(ngx.var.arg_id or "")
    if not ok then
      return reply(409, { error = err })
    end
    return reply(200, { removed = ngx.var.arg_id })
  end,

  ["/encrypt"] = function()
    local value, err = keyring.encrypt(body(), ngx.var.arg_ctx)
    if not value then
      return reply(503, { error = err })
    end
    return reply(200, { value = value })
  end,

  ["/decrypt"] = function()
    local value, err = keyring.decrypt(body(), ngx.var.arg_ctx)
    if not value then
      return reply(400, { error = err })
    end
    return reply(200, { value = value })
  end,
}


function _M.handle()
  local route = routes[ngx.var.uri]
  if not route then
    return reply(404, { error = "not found" })
  end
  return route()
end


return _M
