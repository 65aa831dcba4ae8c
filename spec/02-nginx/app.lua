-- The OpenResty test app driven by spec/02-nginx: one handler per route, every
-- JSON answer names the worker that served it (`pid`). Loaded in nginx as
-- `require "app"` (helpers.nginx{ lua_path = spec/02-nginx/?.lua }).
--
-- Key bytes leave only in the /generate answer (the spec records them for the
-- leak sweep); nothing here ever writes a key, a value or a body to a log.

local cjson = require "cjson.safe"
local keyring = require "kong.keyring"
local native = require "kong.keyring.native"


local _M = {}


local function reply(status, body)
  body.pid = ngx.worker.pid()
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end


local function text(status, s)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(s)
  return ngx.exit(status)
end


local function read_body()
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if not data then
    local file = ngx.req.get_body_file()
    if file then
      local f = assert(io.open(file, "rb"))
      data = f:read("*a")
      f:close()
    end
  end
  return data or ""
end


local routes = {}


routes["/pid"] = function()
  return reply(200, {})
end


routes["/generate"] = function()
  local id, key_or_err = keyring.generate()
  if not id then
    return reply(500, { error = key_or_err })
  end
  return reply(201, { id = id, key = key_or_err })
end


routes["/add"] = function()
  local ok, err = keyring.add(ngx.var.arg_id or "", read_body())
  if not ok then
    return reply(400, { error = err })
  end
  return reply(201, { id = ngx.var.arg_id })
end


routes["/activate"] = function()
  local ok, err = keyring.activate(ngx.var.arg_id or "")
  if not ok then
    return reply(400, { error = err })
  end
  return reply(200, { active = ngx.var.arg_id })
end


routes["/remove"] = function()
  local ok, err = keyring.remove(ngx.var.arg_id or "")
  if not ok then
    return reply(409, { error = err })
  end
  return reply(200, { removed = ngx.var.arg_id })
end


routes["/keys"] = function()
  local ring, err = keyring.keys()
  if not ring then
    return reply(500, { error = err })
  end
  -- Debian's lua-cjson has no array_mt: ids travel as one comma-joined string
  return reply(200, { ids = table.concat(ring.ids, ","), active = ring.active })
end


routes["/usage"] = function()
  local usage, err = keyring.usage()
  if not usage then
    return reply(500, { error = err })
  end
  return reply(200, { usage = usage })
end


routes["/encrypt"] = function()
  local value, err = keyring.encrypt(read_body(), ngx.var.arg_ctx)
  if not value then
    return reply(400, { error = err })
  end
  return reply(200, { value = value })
end


routes["/decrypt"] = function()
  local value, err = keyring.decrypt(read_body(), ngx.var.arg_ctx)
  if not value then
    return reply(400, { error = err })
  end
  return reply(200, { value = value })
end


-- Encrypts n values; answers "pid\n" then one 16-char nonce (the base64url of
-- the 12 nonce bytes that open every v2 payload) per line.
routes["/nonces"] = function()
  local n = tonumber(ngx.var.arg_n) or 0
  local out = { tostring(ngx.worker.pid()) }
  for i = 1, n do
    local value, err = keyring.encrypt("nonce probe " .. i, "nonces")
    if not value then
      return text(500, err)
    end
    local payload = value:match("^%$ke%$2%$%-[^-]+%-(.+)$")
    out[i + 1] = payload:sub(1, 16)
  end
  out[n + 2] = ""
  return text(200, table.concat(out, "\n"))
end


routes["/region"] = function()
  local region, err = native.region()
  if not region then
    return reply(500, { error = err })
  end
  return reply(200, { address = region.address, size = region.size })
end


-- Key mappings of this worker that mlock refused (04-core_dump_spec).
routes["/lock_failures"] = function()
  local region, err = native.region()
  if not region then
    return reply(500, { error = err })
  end
  return reply(200, { lock_failures = region.lock_failures })
end


-- Takes the write lock for ms milliseconds (KONG_KEYRING_TEST_HOOKS=1 only).
-- The notice lets the spec know which worker to kill.
routes["/hold"] = function()
  if not native.hold_write_lock then
    return reply(404, { error = "test hooks are off" })
  end
  ngx.log(ngx.NOTICE, "app: worker ", ngx.worker.pid(), " takes the write lock for ", ngx.var.arg_ms, " ms")
  local ok, err = native.hold_write_lock(tonumber(ngx.var.arg_ms) or 0)
  if not ok then
    return reply(500, { error = err })
  end
  return reply(200, { held = tonumber(ngx.var.arg_ms) })
end


-- Export blob of the whole ring for the public PEM in the body.
routes["/export"] = function()
  local blob, err = keyring.export(read_body())
  if not blob then
    return reply(400, { error = err })
  end
  return reply(200, { blob = blob })
end


-- Imports {"blob": ..., "private": PEM} from the body.
routes["/import"] = function()
  local args = cjson.decode(read_body()) or {}
  local ring, err = keyring.import(args.blob or "", args.private or "")
  if not ring then
    return reply(400, { error = err })
  end
  return reply(200, { ids = table.concat(ring.ids, ","), active = ring.active })
end


-- This process's transport key (public PEM) and key `id` wrapped for it.
routes["/transport_key"] = function()
  local pem, err = keyring.transport_key()
  if not pem then
    return reply(500, { error = err })
  end
  local row
  row, err = keyring.recovery_row(ngx.var.arg_id or "", pem)
  if not row then
    return reply(400, { error = err })
  end
  return reply(200, { pem = pem, row = row })
end


-- Adds {"id": ..., "row": ..., "check": ...} with the transport key.
routes["/receive"] = function()
  local args = cjson.decode(read_body()) or {}
  local ok, err = keyring.receive(args.id or "", args.row or "", args.check)
  if not ok then
    return reply(400, { error = err })
  end
  return reply(200, {})
end


-- Keeps the body in this worker's Lua heap: 04-core_dump_spec plants a
-- known, non-secret byte string to prove its memory search finds what is there.
local planted = {}
routes["/plant"] = function()
  planted[#planted + 1] = read_body()
  return reply(200, { planted = #planted })
end


function _M.handle()
  local route = routes[ngx.var.uri]
  if not route then
    return reply(404, { error = "not found" })
  end
  return route()
end


return _M
