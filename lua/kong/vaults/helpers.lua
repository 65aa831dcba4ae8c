-- What the vault strategies of kong-keyring (hcv, aws, gcp, azure, conjur)
-- share: HTTPS through resty.http with the certificate verified against
-- nginx's `lua_ssl_trusted_certificate` (Kong's setting of the same name),
-- resource checks, the defaults of a strategy's schema (so `get` works from
-- plain OpenResty with a partial conf), a per-worker cache of auth tokens,
-- and error messages that name references and statuses, never secrets.
--
-- Nothing here needs Kong: every strategy can be required from a plain
-- OpenResty app (docs/vaults.md).

local http = require "resty.http"
local lrucache = require "resty.lrucache"
local cjson = require "cjson.safe"
local digest = require "resty.openssl.digest"


local type = type
local pairs = pairs
local ipairs = ipairs
local fmt = string.format
local find = string.find
local sub = string.sub
local gsub = string.gsub
local escape_uri = ngx.escape_uri
local decode_base64 = ngx.decode_base64
local ngx_time = ngx.time
local to_hex = require("resty.string").to_hex
local os_getenv = os.getenv


local _M = {
  TIMEOUT = 10000,  -- ms, connect + send + read of one backend call
}


--- The default of each config field of a vault schema (`schema.lua`),
-- so a conf given by a plain OpenResty caller gets what Kong would fill in.
function _M.defaults(schema)
  local out = {}
  for _, field in ipairs(schema.fields) do
    local config = field.config
    if config then
      for _, f in ipairs(config.fields) do
        local name, def = next(f)
        if def.default ~= nil then
          out[name] = def.default
        end
      end
    end
  end
  return out
end


--- `conf` with the defaults of `defaults` where it has no value (or
-- ngx.null), as a new table.
function _M.with_defaults(conf, defaults)
  local out = {}
  for k, v in pairs(defaults) do
    out[k] = v
  end
  for k, v in pairs(conf or {}) do
    if v ~= ngx.null then
      out[k] = v
    end
  end
  return out
end


--- Checks a reference's resource: not empty, no `.` or `..` segment, no
-- control character, no leading or trailing slash. Returns it or nil, err.
function _M.check_resource(resource)
  if type(resource) ~= "string" or resource == "" then
    return nil, "empty resource"
  end
  if find(resource, "%c") then
    return nil, "resource contains a control character"
  end
  if sub(resource, 1, 1) == "/" or sub(resource, -1) == "/" then
    return nil, "resource must not start or end with '/'"
  end
  for segment in (resource .. "/"):gmatch("([^/]*)/") do
    if segment == ".." or segment == "." or segment == "" then
      return nil, "resource has an empty, '.' or '..' segment"
    end
  end
  return resource
end


--- The resource as an URL path: each segment percent-encoded, '/' kept.
function _M.escape_path(resource)
  return (gsub(resource, "[^/]+", function(segment)
    return escape_uri(segment)
  end))
end


--- SHA-256 of the parts, hex: a cache key that holds no secret.
function _M.hash(...)
  local d = digest.new("sha256")
  local parts = { ... }
  for i = 1, select("#", ...) do
    d:update(tostring(parts[i]), "\0")
  end
  return to_hex((d:final()))
end


-- One HTTP(S) request; may raise (see `send`).
local function request(url, opts)
  opts = opts or {}
  local httpc = http.new()
  httpc:set_timeout(opts.timeout or _M.TIMEOUT)
  local res, err = httpc:request_uri(url, {
    method = opts.method or "GET",
    headers = opts.headers,
    body = opts.body,
    query = opts.query,
    ssl_verify = opts.ssl_verify ~= false,
    -- a client certificate (cdata of ngx.ssl.parse_pem_*); lua-resty-http
    -- keeps such connections in a pool of their own
    ssl_client_cert = opts.client_cert,
    ssl_client_priv_key = opts.client_key,
  })
  if not res then
    return nil, err
  end
  return res
end


--- Whether `value` is a field the keyring stored encrypted and nobody
-- decrypted (docs/formats.md: `$ke$<version>$-<id>-...`), as `kong vault
-- get` sees the secret fields of a named vault: no use sending it anywhere.
function _M.still_encrypted(value)
  return type(value) == "string" and find(value, "^%$ke%$%d+%$%-") ~= nil
end


--- One HTTP(S) request. `opts`: method, headers, body, query, timeout,
-- ssl_verify (default true), client_cert and client_key (TLS client auth).
-- Returns the resty.http response (status, body, headers) or nil, err (a
-- connection or TLS failure; no request data).
-- Never raises: lua-resty-core's sslhandshake can raise an assertion instead
-- of returning an error when a handshake fails after yielding (a
-- certificate that does not verify); that becomes nil, err.
function _M.send(url, opts)
  local ok, res, err = pcall(request, url, opts)
  if not ok then
    return nil, "request aborted (" .. tostring(res):gsub("^.*/", "") .. ")"
  end
  return res, err
end


--- The JSON body of a response as a table, or nil.
function _M.json(res)
  local t = res and res.body and cjson.decode(res.body)
  return type(t) == "table" and t or nil
end


_M.encode = cjson.encode


-- a short error code from a backend's error body: Vault's `errors` list,
-- AWS's `__type`, Azure's `error.code`, GCP's `error.status`, Conjur's
-- `error.code`. Never the whole body: it could quote what was sent.
local function error_code(body)
  local t = type(body) == "table" and body or cjson.decode(body or "")
  if type(t) ~= "table" then
    -- AWS query APIs (STS) answer XML
    t = { error = type(body) == "string" and body:match("<Code>([%w%.]+)</Code>") or nil }
  end
  local code
  if type(t.errors) == "table" and type(t.errors[1]) == "string" then
    code = t.errors[1]
  elseif type(t.__type) == "string" then
    code = t.__type:match("#?([%w_]+)$")
  elseif type(t.Message) == "string" or type(t.message) == "string" then
    code = t.Message or t.message
  elseif type(t.error) == "table" then
    code = t.error.status or t.error.code
  elseif type(t.error) == "string" then
    code = t.error
  end
  if type(code) ~= "string" then
    return nil
  end
  -- a code is a word or a short sentence; anything else is dropped
  code = sub(gsub(code, "[^%w%s%.,:;_%-/']", ""), 1, 120)
  return code ~= "" and code or nil
end
_M.error_code = error_code


--- "<what> answered <status> (<code>)": the status and the backend's error
-- code only.
function _M.status_error(what, status, body)
  local code = error_code(body)
  if code then
    return fmt("%s answered %d (%s)", what, status, code)
  end
  return fmt("%s answered %d", what, status)
end


do
  -- environment variables some strategies read (credentials). Kong's workers
  -- see no environment, so each strategy remembers what it needs when it is
  -- loaded, in Kong's init (master) or the CLI; a plain OpenResty app calls
  -- the same from init_by_lua or declares `env NAME;`.
  local ENV = {}

  function _M.remember_env(names)
    for _, name in ipairs(names) do
      local v = os_getenv(name)
      if v then
        ENV[name] = v
      end
    end
  end

  function _M.getenv(name)
    return os_getenv(name) or ENV[name]
  end

  --- Remembers every environment variable whose name matches the Lua
  -- `pattern` (names chosen by config, e.g. azure's credentials_prefix).
  function _M.remember_env_matching(pattern)
    local ffi = require "ffi"
    pcall(ffi.cdef, "extern char **environ;")
    local ok, environ = pcall(function() return ffi.C.environ end)
    if not ok or environ == nil then
      return
    end
    local i = 0
    while environ[i] ~= nil do
      local entry = ffi.string(environ[i])
      local name = entry:match("^([^=]+)=")
      if name and find(name, pattern) then
        ENV[name] = sub(entry, #name + 2)
      end
      i = i + 1
    end
  end
end


--- The content of a token or credential file (a service account token, a
-- secret id), trailing whitespace cut: files are written with a newline.
-- nil, "cannot read <what>: <reason>" when it cannot be read.
function _M.read_token_file(path, what)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, "cannot read " .. what .. ": " .. tostring(err)
  end
  local s = f:read("*a")
  f:close()
  return (gsub(s, "%s+$", ""))
end


--- A per-worker cache of auth tokens, keyed by a hash of the credentials
-- that obtained them (so a rotated credential logs in again).
function _M.token_cache(size)
  local lru = assert(lrucache.new(size or 100))
  local cache = {}

  function cache.get(key)
    return lru:get(key)
  end

  -- keeps the token for `ttl` seconds less a margin (at least 1 s), so it is
  -- renewed before the backend expires it
  function cache.set(key, token, ttl)
    ttl = tonumber(ttl)
    if not ttl or ttl <= 0 then
      ttl = 300
    end
    local margin = ttl > 60 and 30 or ttl / 10
    lru:set(key, token, ttl - margin)
  end

  function cache.delete(key)
    lru:delete(key)
  end

  return cache
end


--- The token of `get_token()` (token, err, cache key in `tokens`) given to
-- `call(token)` (a response, or nil and an error message); when the answer
-- is `refused` (401) and the token came from the cache, it is dropped and
-- the call made once more with a new one.
function _M.with_token(tokens, get_token, call, refused)
  local token, err, key = get_token()
  if not token then
    return nil, err
  end
  local res
  res, err = call(token)
  if res and res.status == (refused or 401) and key then
    tokens.delete(key)
    token, err = get_token()
    if not token then
      return nil, err
    end
    res, err = call(token)
  end
  return res, err
end


--- The token kept in `tokens` under `key`, else a token endpoint's answer
-- (OAuth 2: `access_token`, `expires_in` or `expires_on`), then kept: token,
-- nil, key; or nil, err naming `what`. `opts` are request options, or a
-- function giving them (or nil, err) when a request is needed.
function _M.token_request(tokens, key, what, url, opts)
  local token = tokens.get(key)
  if token then
    return token, nil, key
  end
  local res, err
  if type(opts) == "function" then
    opts, err = opts()
    if not opts then
      return nil, err
    end
  end
  res, err = _M.send(url, opts)
  if not res then
    return nil, what .. " failed: " .. tostring(err)
  end
  local body = res.status == 200 and _M.json(res)
  if not body or type(body.access_token) ~= "string" then
    return nil, _M.status_error(what, res.status, res.body)
  end
  -- some endpoints (Azure IMDS) answer expires_in as a string, others
  -- (Azure App Service) only expires_on, the expiry in seconds since the epoch
  local ttl = tonumber(body.expires_in)
  if not ttl and tonumber(body.expires_on) then
    ttl = tonumber(body.expires_on) - ngx_time()
  end
  tokens.set(key, body.access_token, ttl)
  return body.access_token, nil, key
end


--- A read's answer: `res` for a 200, else nil and "<resource>[#<version>]
-- not found" (404) or the status and the backend's error code.
function _M.read_answer(res, resource, version)
  if res.status == 404 then
    return nil, fmt("%s not found", version and (resource .. "#" .. version) or resource)
  end
  if res.status ~= 200 then
    return nil, _M.status_error("reading " .. resource, res.status, res.body)
  end
  return res
end


--- `with_token`, then `read_answer` of the response.
function _M.read_with_token(tokens, get_token, call, resource, version)
  local res, err = _M.with_token(tokens, get_token, call)
  if not res then
    return nil, err
  end
  return _M.read_answer(res, resource, version)
end


--- The fields every strategy has after its own: Kong's `ttl`, `neg_ttl`
-- and `resurrect_ttl` (seconds), and `base64_decode` (as Kong Enterprise
-- 3.11 has it). New tables at each call: Kong's schema code annotates fields.
local function common_fields()
  local fields = {}
  for _, ttl in ipairs({ "ttl", "neg_ttl", "resurrect_ttl" }) do
    fields[#fields + 1] = { [ttl] = { type = "number", between = { 0, 100000000 } } }
  end
  fields[#fields + 1] = { base64_decode = { type = "boolean", default = false } }
  return fields
end


--- The schema of a vault strategy: `fields` of its config, then the common
-- fields. Plain data.
function _M.vault_schema(name, fields)
  local all = {}
  for i, f in ipairs(fields) do
    all[i] = f
  end
  for _, f in ipairs(common_fields()) do
    all[#all + 1] = f
  end
  return { name = name, fields = { { config = { type = "record", fields = all } } } }
end


--- A schema field for a base URL (scheme, host, port, nothing after).
function _M.url_field()
  return { type = "string", match = [[^https?://[^/?#]+/?$]] }
end


-- base64 text to bytes; whitespace is ignored (`base64` wraps its lines)
local function from_base64(text)
  return decode_base64((gsub(text, "%s+", "")))
end


-- With `base64_decode`, a secret's value is base64 text, or, when it is a
-- JSON object (Kong picks a key of it after `get`), each of its string
-- values is. Base64 text never starts with `{`, so the two cannot be mixed up.
local function base64_decoded(value, resource)
  local object = find(value, "^%s*{") and cjson.decode(value)
  if type(object) ~= "table" then
    local bytes = from_base64(value)
    if not bytes then
      return nil, fmt("%s is not base64 (base64_decode is on)", resource)
    end
    return bytes
  end
  for key, text in pairs(object) do
    if type(text) == "string" then
      local bytes = from_base64(text)
      if not bytes then
        return nil, fmt("the value of %s in %s is not base64 (base64_decode is on)", key, resource)
      end
      object[key] = bytes
    end
  end
  return cjson.encode(object)
end


--- A `get(conf, resource, version)` for Kong and for plain callers: checks
-- the resource, fills the defaults and calls `fetch(conf, resource,
-- version)`, then decodes the value when `base64_decode` is on; errors come
-- back prefixed with the strategy name.
function _M.strategy(name, schema, fetch)
  local defaults = _M.defaults(schema)
  return function(conf, resource, version)
    local ok, err = _M.check_resource(resource)
    if not ok then
      return nil, fmt("%s: %s", name, err)
    end
    if version ~= nil and (type(version) ~= "number" or version < 1 or version % 1 ~= 0) then
      return nil, fmt("%s: invalid version", name)
    end
    conf = _M.with_defaults(conf, defaults)
    local value, ttl
    value, err, ttl = fetch(conf, resource, version)
    if value ~= nil and conf.base64_decode then
      value, err = base64_decoded(value, resource)
    end
    if value == nil then
      return nil, fmt("%s: %s", name, err or "no value")
    end
    return value, nil, ttl
  end
end


--- ISO-8601 UTC ("2026-01-01T00:00:00Z" or with fractions/offset "+00:00")
-- to epoch seconds, or nil.
function _M.parse_time(s)
  if type(s) ~= "string" then
    return nil
  end
  local y, mo, d, h, mi, sec = s:match("^(%d+)%-(%d+)%-(%d+)[T ](%d+):(%d+):(%d+)")
  if not y then
    return nil
  end
  -- days from civil (proleptic Gregorian), no os.time (local time zone)
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end


return _M
