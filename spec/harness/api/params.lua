-- Request parameters the way Kong's Admin API builds `self.params`
-- (lapis + kong/api/init.lua parse_params + api_helpers
-- normalize_nested_params): query arguments, then the body (JSON,
-- application/x-www-form-urlencoded or multipart/form-data), then the
-- route captures; dotted keys ("config.a.b") become nested tables and
-- "k[]" / "k[1]" become arrays. A JSON content type with a body that does
-- not parse gives nil, "Cannot parse JSON body".

local json = require "harness.json"


local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local find = string.find
local sub = string.sub
local match = string.match
local lower = string.lower


local _M = {}


local NEEDS_BODY = { POST = true, PUT = true, PATCH = true, DELETE = true }


local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then
    return body
  end
  local file = ngx.req.get_body_file()
  if not file then
    return nil
  end
  local f = io.open(file, "rb")
  if not f then
    return nil
  end
  body = f:read("*a")
  f:close()
  return body
end


local function parse_multipart(body, content_type)
  local boundary = match(content_type, "boundary=\"([^\"]+)\"") or match(content_type, "boundary=([^;%s]+)")
  if not boundary then
    return {}
  end
  local out = {}
  local delim = "--" .. boundary
  local pos = find(body, delim, 1, true)
  while pos do
    local start = pos + #delim
    if sub(body, start, start + 1) == "--" then
      break
    end
    local next_pos = find(body, delim, start, true)
    if not next_pos then
      break
    end
    local part = sub(body, start, next_pos - 1)
    part = part:gsub("^\r?\n", ""):gsub("\r?\n$", "")
    local head_end, body_start = find(part, "\r?\n\r?\n")
    if head_end then
      local head = sub(part, 1, head_end - 1)
      local value = sub(part, body_start + 1)
      local name = match(head, '[Nn]ame="([^"]*)"')
      if name then
        local cur = out[name]
        if cur == nil then
          out[name] = value
        elseif type(cur) == "table" then
          cur[#cur + 1] = value
        else
          out[name] = { cur, value }
        end
      end
    end
    pos = next_pos
  end
  return out
end


local function attach(target, key, value)
  -- "a.b.c" and "a[]" / "a[1]"
  local head, rest = match(key, "^([^%.%[]+)(.*)$")
  if not head or rest == "" then
    target[key] = value
    return
  end
  local idx, after = match(rest, "^%[(%d*)%](.*)$")
  if idx then
    local arr = target[head]
    if type(arr) ~= "table" then
      arr = json.as_array({})
      target[head] = arr
    end
    if type(value) == "table" and idx == "" and after == "" then
      for _, v in ipairs(value) do
        arr[#arr + 1] = v
      end
      return
    end
    local i = idx == "" and (#arr + 1) or tonumber(idx)
    if after == "" then
      arr[i] = value
    else
      arr[i] = type(arr[i]) == "table" and arr[i] or {}
      attach(arr[i], sub(after, 2), value)
    end
    return
  end
  local nested = match(rest, "^%.(.+)$")
  if nested then
    local t = target[head]
    if type(t) ~= "table" then
      t = {}
      target[head] = t
    end
    attach(t, nested, value)
    return
  end
  target[key] = value
end


local function merge_flat(params, flat)
  for k, v in pairs(flat) do
    if type(k) == "string" then
      if v == true then
        v = "" -- "?flag" without a value
      end
      attach(params, k, v)
    end
  end
end


--- `self` for a handler: { params, req = { headers, method, ... } }, or
-- nil, message for a body that cannot be parsed.
function _M.build(captures)
  local method = ngx.req.get_method()
  local headers = ngx.req.get_headers()
  local params = {}
  merge_flat(params, ngx.req.get_uri_args(0))
  local self = {
    params = params,
    req = { headers = headers, method = method, parsed_url = { path = ngx.var.uri } },
  }
  if NEEDS_BODY[method] then
    local content_type = lower(headers["content-type"] or "")
    local body = read_body()
    if find(content_type, "application/json", 1, true) then
      if body and body ~= "" then
        local decoded = json.decode(body)
        if decoded == nil then
          return nil, "Cannot parse JSON body"
        end
        if type(decoded) == "table" then
          self.json = decoded
          for k, v in pairs(decoded) do
            params[k] = v
          end
        end
      end
    elseif find(content_type, "multipart/form-data", 1, true) then
      if body then
        merge_flat(params, parse_multipart(body, headers["content-type"]))
      end
    elseif body and body ~= "" then
      merge_flat(params, ngx.decode_args(body, 0))
    end
    self.body = body
  end
  for k, v in pairs(captures or {}) do
    params[k] = v
  end
  return self
end


return _M
