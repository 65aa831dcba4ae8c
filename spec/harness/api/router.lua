-- Admin API routing, with the conventions of Kong's lapis app
-- (kong/api/init.lua, kong/api/api_helpers.lua):
--
-- * patterns "/a/:b/c"; literal segments win over captures; a trailing
--   slash is ignored; captures are URL-decoded into self.params;
-- * unknown path: 404 { message = "Not found" }; known path, other method:
--   405 { message = "Method not allowed" }; OPTIONS answers 204 with Allow;
--   HEAD runs GET (nginx drops the body);
-- * bad JSON body: 400 { message = "Cannot parse JSON body" };
-- * plain-style plugin routes (`kong.plugins.<name>.api` without `schema`):
--   handler(self, {}, helpers), helpers = { yield_error = fn(err_t) };
--   new-DB style routes (a `schema` key) get (self, kong.db, helpers, parent)
--   and `before`;
-- * a Lua error in a handler is logged and answered 500
--   { message = "An unexpected error occurred" }; so is a handler that
--   returns nil, err, or returns without sending a response;
-- * after the handler, kong.worker_events.poll() (a no-op, as in Kong).

local params = require "harness.api.params"
local endpoints = require "kong.api.endpoints"


local type = type
local pairs = pairs
local ipairs = ipairs
local xpcall = xpcall
local tostring = tostring
local traceback = debug.traceback
local concat = table.concat
local sort = table.sort
local sub = string.sub
local gmatch = string.gmatch
local unescape_uri = ngx.unescape_uri


local METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }


local _M = {}


local routes = {} -- { pattern, segments, methods, score }


local function split(path)
  local segs = {}
  for s in gmatch(path, "[^/]+") do
    segs[#segs + 1] = s
  end
  return segs
end


local function find_route(pattern)
  for _, r in ipairs(routes) do
    if r.pattern == pattern then
      return r
    end
  end
end


--- Adds (or extends) a route: `methods` maps HTTP methods to handlers
-- function(self, db, helpers[, parent]). opts.style = "core" | "plain" | "new_db".
function _M.add(pattern, methods, opts)
  local style = opts and opts.style or "core"
  local route = find_route(pattern)
  if not route then
    local segs = split(pattern)
    local score = 0
    for i, s in ipairs(segs) do
      if sub(s, 1, 1) ~= ":" then
        score = score + 2 ^ (32 - i)
      end
    end
    route = { pattern = pattern, segments = segs, methods = {}, score = score }
    routes[#routes + 1] = route
    sort(routes, function(a, b)
      if #a.segments ~= #b.segments then
        return #a.segments < #b.segments
      end
      return a.score > b.score
    end)
  end
  for method, fn in pairs(methods) do
    if type(fn) == "function" and method ~= "before" and method ~= "on_error" then
      local parent = route.methods[method]
      route.methods[method] = { fn = fn, style = style, parent = parent and parent.fn,
                                before = methods.before }
    end
  end
  return route
end


function _M.reset()
  routes = {}
end


local function match(path)
  local segs = split(path)
  for _, r in ipairs(routes) do
    if #r.segments == #segs then
      local captures = {}
      local ok = true
      for i, s in ipairs(r.segments) do
        if sub(s, 1, 1) == ":" then
          captures[sub(s, 2)] = unescape_uri(segs[i])
        elseif s ~= segs[i] then
          ok = false
          break
        end
      end
      if ok then
        return r, captures
      end
    end
  end
end


local YIELD = {}


local helpers = {
  yield_error = function(err_t)
    error({ [YIELD] = err_t }, 0)
  end,
}


local function unexpected(err)
  kong.log.err(tostring(err))
  return kong.response.exit(500, { message = "An unexpected error occurred" })
end


local function handler_error(err)
  if type(err) == "table" and err[YIELD] ~= nil then
    return err
  end
  return traceback(tostring(err), 2)
end


--- Content handler of the Admin API server.
function _M.dispatch()
  local path = ngx.var.uri
  if #path > 1 and sub(path, -1) == "/" then
    path = sub(path, 1, -2)
  end
  local route, captures = match(path)
  if not route then
    return kong.response.exit(404, { message = "Not found" })
  end
  local method = ngx.req.get_method()
  local entry = route.methods[method]
  if not entry and method == "HEAD" then
    entry = route.methods.GET
  end
  if not entry then
    if method == "OPTIONS" then
      local allowed = {}
      for _, m in ipairs(METHODS) do
        if route.methods[m] or m == "OPTIONS" or (m == "HEAD" and route.methods.GET) then
          allowed[#allowed + 1] = m
        end
      end
      return kong.response.exit(204, nil, { Allow = concat(allowed, ", ") })
    end
    return kong.response.exit(405, { message = "Method not allowed" })
  end
  local self, perr = params.build(captures)
  if not self then
    return kong.response.exit(400, { message = perr })
  end
  local ok, res, err
  if entry.style == "plain" then
    ok, res, err = xpcall(entry.fn, handler_error, self, {}, helpers)
  elseif entry.style == "new_db" then
    local parent = entry.parent and function(post_process)
      return entry.parent(self, kong.db, helpers, post_process)
    end
    ok, res, err = xpcall(function()
      if entry.before then
        entry.before(self, kong.db, helpers)
      end
      return entry.fn(self, kong.db, helpers, parent)
    end, handler_error)
  else
    ok, res, err = xpcall(entry.fn, handler_error, self, kong.db, helpers)
  end
  kong.worker_events.poll()
  if not ok then
    if type(res) == "table" and res[YIELD] ~= nil then
      return endpoints.on_error(res[YIELD])
    end
    return unexpected(res)
  end
  if type(res) == "table" and (res.status or res.json) then
    return kong.response.exit(res.status or 200, res.json)
  end
  if type(res) == "string" then
    return kong.response.exit(200, res)
  end
  if err then
    return unexpected(err)
  end
  return unexpected("handler for " .. method .. " " .. route.pattern .. " returned without a response")
end


--- Plugin routes (`kong.plugins.<name>.api`), after the core ones.
function _M.attach_plugin_routes(plugin_names)
  for _, name in ipairs(plugin_names) do
    local ok, api = pcall(require, "kong.plugins." .. name .. ".api")
    if ok then
      if type(api) ~= "table" then
        return nil, "api of plugin '" .. name .. "' is not a table"
      end
      local new_db = false
      for _, methods in pairs(api) do
        if type(methods) == "table" and methods.schema then
          new_db = true
        end
      end
      for pattern, methods in pairs(api) do
        _M.add(pattern, methods, { style = new_db and "new_db" or "plain" })
      end
    elseif not tostring(api):find("module 'kong.plugins." .. name .. ".api' not found", 1, true) then
      return nil, api
    end
  end
  return true
end


return _M
