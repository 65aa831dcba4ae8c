-- The PDK pieces of the global `kong` the harness provides: kong.log,
-- kong.response.exit / error, kong.request (a few getters) and
-- kong.node.get_id. Behaviour of Kong's kong/pdk/{log,response,request,node}.lua
-- for the Admin API context.

local json = require "harness.json"
local uuid = require "kong.tools.uuid"


local type = type
local pairs = pairs
local select = select
local tostring = tostring
local concat = table.concat
local ngx_log = ngx.log


local _M = {}


local function new_log()
  local log = {}
  local levels = {
    debug = ngx.DEBUG, info = ngx.INFO, notice = ngx.NOTICE, warn = ngx.WARN,
    err = ngx.ERR, crit = ngx.CRIT, alert = ngx.ALERT, emerg = ngx.EMERG,
  }
  for name, level in pairs(levels) do
    log[name] = function(...)
      local n = select("#", ...)
      local parts = { ... }
      for i = 1, n do
        parts[i] = tostring(parts[i])
      end
      ngx_log(level, "[kong] ", concat(parts, "", 1, n))
    end
  end
  log.inspect = setmetatable({ on = function() end, off = function() end }, {
    __call = function() end,
  })
  return log
end


local DEFAULT_MESSAGES = {
  [400] = "Bad request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not found",
  [405] = "Method not allowed", [409] = "Conflict", [413] = "Request size limit exceeded",
  [500] = "An unexpected error occurred", [502] = "Bad Gateway", [503] = "Service unavailable",
}


local function new_response()
  local response = {}

  --- Ends the request: status, JSON-encoded table or raw string body, headers.
  function response.exit(status, body, headers)
    if type(status) ~= "number" or status < 100 or status > 599 then
      error("code must be a number between 100 and 599", 2)
    end
    if body ~= nil and type(body) ~= "table" and type(body) ~= "string" then
      error("body must be a nil, string or table", 2)
    end
    if ngx.headers_sent then
      error("headers have already been sent", 2)
    end
    ngx.status = status
    local has_content_type = false
    if headers then
      for k, v in pairs(headers) do
        ngx.header[k] = v
        if type(k) == "string" and k:lower() == "content-type" then
          has_content_type = true
        end
      end
    end
    local text
    if type(body) == "table" then
      local err
      text, err = json.encode(body)
      if not text then
        error("body encoding failed while flushing response: " .. tostring(err), 2)
      end
      if not has_content_type then
        ngx.header["Content-Type"] = "application/json; charset=utf-8"
      end
    elseif type(body) == "string" then
      text = body
    end
    if status == 204 or status == 304 then
      text = nil
    end
    if status ~= 204 and status ~= 304 then
      ngx.header["Content-Length"] = text and #text or 0
    end
    if text then
      ngx.print(text)
    end
    return ngx.exit(ngx.OK)
  end

  --- Kong's standard error body { message = ... }.
  function response.error(status, message, headers)
    return response.exit(status, { message = message or DEFAULT_MESSAGES[status] or "Error" }, headers)
  end

  function response.set_header(k, v)
    ngx.header[k] = v
  end

  return response
end


local function new_request()
  local request = {}

  function request.get_method()
    return ngx.req.get_method()
  end

  function request.get_path()
    return ngx.var.uri
  end

  function request.get_header(name)
    local v = ngx.req.get_headers()[name]
    if type(v) == "table" then
      return v[1]
    end
    return v
  end

  function request.get_headers(max)
    return ngx.req.get_headers(max)
  end

  function request.get_query()
    return ngx.req.get_uri_args()
  end

  function request.get_raw_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then
      return body
    end
    local file = ngx.req.get_body_file()
    if not file then
      return ""
    end
    local f = io.open(file, "rb")
    if not f then
      return nil, "could not read the request body file"
    end
    body = f:read("*a")
    f:close()
    return body
  end

  return request
end


-- node id in <prefix>/kong.id, as Kong keeps it: stable across restarts of
-- one prefix, distinct between prefixes (nodes)
local function load_node_id(prefix)
  local path = prefix .. "kong.id"
  local f = io.open(path, "rb")
  if f then
    local id = f:read("*l")
    f:close()
    if uuid.is_valid_uuid(id) then
      return id
    end
  end
  local id = uuid.uuid()
  f = assert(io.open(path, "wb"))
  f:write(id, "\n")
  f:close()
  return id
end


local function new_node(prefix)
  local id = load_node_id(prefix)
  return {
    get_id = function()
      return id
    end,
    get_hostname = function()
      return "harness"
    end,
  }
end


function _M.install(kong, prefix)
  kong.log = new_log()
  kong.response = new_response()
  kong.request = new_request()
  kong.node = new_node(prefix)
  return kong
end


return _M
