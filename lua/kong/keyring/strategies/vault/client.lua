-- The Vault side of the Vault strategy (docs/design.md, "Vault strategy"):
-- reads of one KV v2 secret through resty.http (cosockets; TLS verified
-- against nginx's `lua_ssl_trusted_certificate`, which Kong sets from its
-- option of the same name), with a token or a Kubernetes login.
--
-- Only GET requests reach the secret: nothing here writes to Vault. Tokens
-- travel in the `X-Vault-Token` header only; no message names a token, a
-- JWT or anything read from a version.

local http = require "resty.http"
local cjson = require "cjson.safe"


local ngx = ngx
local type = type
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local fmt = string.format
local gsub = string.gsub
local escape_uri = ngx.escape_uri
local sort = table.sort


local TIMEOUT = 10000  -- ms: connect, send and read of one request


local _M = {}
local mt = { __index = _M }


-- `a/b c` -> `a/b%20c`: each segment escaped, the slashes kept, none at the ends
local function escape_path(s)
  s = gsub(gsub(s, "^/+", ""), "/+$", "")
  return (gsub(s, "[^/]+", escape_uri))
end


function _M.new(conf)
  local mount, path = escape_path(conf.keyring_vault_mount), escape_path(conf.keyring_vault_path)
  return setmetatable({
    host = conf.keyring_vault_host,
    secret = mount .. "/" .. path,          -- named in messages
    metadata_path = mount .. "/metadata/" .. path,
    data_path = mount .. "/data/" .. path,
    token = conf.keyring_vault_token,
    auth_method = conf.keyring_vault_auth_method,
    kube_role = conf.keyring_vault_kube_role,
    kube_token_file = conf.keyring_vault_kube_api_token_file,
    login_token = nil,   -- this worker's Kubernetes login, until login_expires
    login_expires = 0,
  }, mt)
end


-- Vault's first error text, reduced to a short phrase (it may quote the
-- path, never what was sent)
local function vault_reason(body)
  local t = cjson.decode(body or "")
  local first = type(t) == "table" and type(t.errors) == "table" and t.errors[1]
  if type(first) ~= "string" then
    return nil
  end
  -- "1 error occurred:\n\t* permission denied\n\n" -> "permission denied"
  first = gsub(gsub(first, "^%s*%d+ errors? occurred:", ""), "[%s%*]+", " ")
  first = gsub(first, "[^%w%s%.,:;_%-/'\"]", ""):match("^%s*(.-)%s*$"):sub(1, 160)
  return first ~= "" and first or nil
end


local function with_reason(msg, body)
  local reason = vault_reason(body)
  return reason and (msg .. ": " .. reason) or msg
end


-- One request; `nil, err` only when Vault could not be reached.
function _M:call(method, api_path, token, body)
  local httpc = http.new()
  httpc:set_timeout(TIMEOUT)
  local headers = { ["X-Vault-Token"] = token }
  if body then
    headers["Content-Type"] = "application/json"
  end
  local ok, res, err = pcall(httpc.request_uri, httpc, self.host .. "/v1/" .. api_path, {
    method = method,
    headers = headers,
    body = body and cjson.encode(body),
    ssl_verify = true,
  })
  if ok and res then
    return res
  end
  if not ok then
    -- resty.core's sslhandshake raises (a failed assertion) instead of
    -- returning an error when the certificate check fails: fail closed
    ngx.log(ngx.DEBUG, "[keyring] Vault request raised: ", tostring(res))
    err = self.host:find("^https:") and "TLS handshake failed" or "request failed"
  end
  err = tostring(err)
  local tls = ""
  if err:find("certificate", 1, true) or err:find("handshake", 1, true) then
    tls = " (its TLS certificate could not be verified against lua_ssl_trusted_certificate)"
  end
  return nil, fmt("Vault at %s is unreachable%s: %s", self.host, tls, err)
end


local function read_jwt(file)
  local f, err = io.open(file, "rb")
  if not f then
    return nil, err
  end
  local jwt = f:read("*a")
  f:close()
  jwt = jwt and jwt:match("^%s*(%S+)%s*$")
  if not jwt then
    return nil, "the file is empty"
  end
  return jwt
end


--- Logs in at auth/kubernetes/login with the service account JWT and the
-- role; the client token is kept in this worker until its lease ends (less
-- a margin), or until Vault refuses it.
function _M:login()
  if self.login_token and ngx.now() < self.login_expires then
    return self.login_token
  end
  self.login_token = nil
  local jwt, err = read_jwt(self.kube_token_file)
  if not jwt then
    return nil, fmt("cannot read the Kubernetes service account token %s (KONG_KEYRING_VAULT_KUBE_API_TOKEN_FILE): %s",
                    self.kube_token_file, err)
  end
  local res
  res, err = self:call("POST", "auth/kubernetes/login", nil, { role = self.kube_role, jwt = jwt })
  if not res then
    return nil, err
  end
  local json = cjson.decode(res.body or "")
  local auth = type(json) == "table" and type(json.auth) == "table" and json.auth
  if res.status ~= 200 or not auth or type(auth.client_token) ~= "string" then
    return nil, with_reason(fmt("Vault's Kubernetes login (POST /v1/auth/kubernetes/login, role '%s') answered %d",
                                self.kube_role, res.status), res.body)
  end
  local lease = tonumber(auth.lease_duration) or 0
  ngx.update_time()
  -- a lease of 0 never ends: kept until Vault refuses the token
  self.login_expires = lease > 0 and ngx.now() + lease - math.min(30, lease / 10) or math.huge
  self.login_token = auth.client_token
  return self.login_token
end


-- The token of one request: the sync request's, else a Kubernetes login,
-- else KONG_KEYRING_VAULT_TOKEN. The second value tells a login apart.
function _M:token_for(given)
  if given then
    return given
  end
  if self.auth_method == "kubernetes" then
    local token, err = self:login()
    return token, err, true
  end
  if self.token then
    return self.token
  end
  return nil, "no Vault token: set KONG_KEYRING_VAULT_TOKEN, send 'token' to POST /keyring/vault/sync, "
              .. "or set KONG_KEYRING_VAULT_AUTH_METHOD=kubernetes"
end


--- GET /v1/<api_path> with the token of `given` (see token_for); a login
-- token Vault refuses (403: revoked or expired early) is renewed once.
-- @return status, decoded JSON (or nil), raw body; or nil and an error
function _M:get(api_path, given)
  local token, err, logged_in = self:token_for(given)
  if not token then
    return nil, err
  end
  local res
  res, err = self:call("GET", api_path, token)
  if res and res.status == 403 and logged_in then
    self.login_token = nil
    token, err = self:login()
    if not token then
      return nil, err
    end
    res, err = self:call("GET", api_path, token)
  end
  if not res then
    return nil, err
  end
  return res.status, cjson.decode(res.body or ""), res.body
end


-- The message for a status other than 200 from GET /v1/<api_path>
function _M:refused(status, api_path, body)
  local what = "GET /v1/" .. api_path
  if status == 403 then
    return with_reason(fmt("Vault answered 403 to %s: the token, or its policy, does not allow read and list "
                           .. "on this path", what), body)
  end
  if status == 404 then
    return with_reason(fmt("Vault answered 404 to %s: no KV v2 secret at %s (check keyring_vault_mount and "
                           .. "keyring_vault_path)", what, self.secret), body)
  end
  return with_reason(fmt("Vault answered %d to %s", status, what), body)
end


local function version_numbers(versions)
  local list = {}
  for n, v in pairs(versions) do
    if tonumber(n) and type(v) == "table" then
      list[#list + 1] = tonumber(n)
    end
  end
  sort(list)
  return list
end


--- Reads the secret: its metadata, then every version neither destroyed
-- nor deleted.
-- @return `{ versions = { { version = n, id = ..., key = ... }, ... }`
-- (oldest first), `current = n }`, or nil and an error
function _M:read(given)
  local status, meta, body = self:get(self.metadata_path, given)
  if not status then
    return nil, meta
  end
  if status ~= 200 then
    return nil, self:refused(status, self.metadata_path, body)
  end
  local data = type(meta) == "table" and type(meta.data) == "table" and meta.data
  if not data or type(data.versions) ~= "table" or not tonumber(data.current_version) then
    return nil, fmt("Vault's answer to GET /v1/%s is not KV v2 metadata (is %s a KV v2 mount?)",
                    self.metadata_path, self.secret)
  end

  local out = { versions = {}, current = tonumber(data.current_version) }
  for _, n in ipairs(version_numbers(data.versions)) do
    local v = data.versions[tostring(n)]
    if v.destroyed ~= true then
      local path = self.data_path .. "?version=" .. n
      local json
      status, json, body = self:get(path, given)
      if not status then
        return nil, json
      end
      local version = type(json) == "table" and type(json.data) == "table" and json.data
      local deleted = type(version) == "table" and type(version.metadata) == "table"
                      and type(version.metadata.deletion_time) == "string" and version.metadata.deletion_time ~= ""
      local destroyed = type(version) == "table" and type(version.metadata) == "table"
                        and version.metadata.destroyed == true
      if status == 404 and (deleted or destroyed) then
        -- deleted (reversible) or destroyed since the metadata was read: skipped
        version = nil
      elseif status ~= 200 then
        return nil, self:refused(status, path, body)
      elseif type(version.data) ~= "table" then
        return nil, fmt("version %d of %s has no data", n, self.secret)
      else
        for _, field in ipairs({ "id", "key" }) do
          local value = version.data[field]
          if type(value) ~= "string" or value == "" then
            return nil, fmt("version %d of %s has no '%s' (each version needs an 'id' and a 'key' text)",
                            n, self.secret, field)
          end
        end
        out.versions[#out.versions + 1] = { version = n, id = version.data.id, key = version.data.key }
      end
    end
  end
  return out
end


return _M
