-- Vault strategy `conjur`: CyberArk Conjur (v5 REST API; CyberArk Secrets
-- Manager, Conjur Open Source).
--
--   {vault://conjur/<variable id>[/<json key>][#<version>]}
--
-- A variable id with '/' (`BotApp/secretVar`) is written with a trailing
-- slash, `{vault://conjur/BotApp/secretVar/}`, or encoded,
-- `{vault://conjur/BotApp%2FsecretVar}` (Kong reads the last segment of a
-- longer path as a JSON key). `#N` reads version N, none the latest.
--
-- Auth gives a short-lived access token (8 minutes), asked for
-- base64-encoded and sent as `Authorization: Token token="<token>"` to
-- GET /secrets/<account>/variable/<id>:
--   api_key  POST /authn/<account>/<login>/authenticate, the API key as the
--            body;
--   jwt      POST /authn-jwt/<service id>/<account>[/<login>]/authenticate
--            with `jwt=<the JWT of jwt_token_file>` (a Kubernetes service
--            account token; read at each login, as the kubelet rotates it);
--            without login, Conjur finds the host from a claim of the JWT.
-- Tokens are kept per worker until shortly before they expire; a 401 on a
-- read logs in once more.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.conjur.schema"


local fmt = string.format
local escape_uri = ngx.escape_uri
local encode_args = ngx.encode_args

local TOKEN_TTL = 480   -- Conjur's access token lifetime

local TOKENS = helpers.token_cache()


local function base_url(conf)
  return (conf.endpoint_url:gsub("/+$", ""))
end


-- the authn request of the auth method: URL, cache key, what it is called,
-- and a function giving the Content-Type and body (or nil, err)
local function authn_request(conf)
  local base, account = base_url(conf), escape_uri(conf.account)
  if conf.auth_method == "jwt" then
    local url = fmt("%s/authn-jwt/%s/%s", base, escape_uri(conf.authn_jwt_service_id), account)
    if conf.login then
      url = url .. "/" .. escape_uri(conf.login)
    end
    url = url .. "/authenticate"
    local file = conf.jwt_token_file
    -- keyed by the file, not the JWT: it is read only to log in
    return url, helpers.hash("conjur-jwt", url, file), "jwt authentication", function()
      local jwt, err = helpers.read_token_file(file, "jwt_token_file")
      if not jwt then
        return nil, err
      end
      return "application/x-www-form-urlencoded", encode_args({ jwt = jwt })
    end
  end
  local url = fmt("%s/authn/%s/%s/authenticate", base, account, escape_uri(conf.login))
  return url, helpers.hash("conjur", url, conf.api_key), "authentication of " .. conf.login, function()
    return "text/plain", conf.api_key
  end
end


local function authenticate(conf)
  local url, key, what, body_of = authn_request(conf)
  local token = TOKENS.get(key)
  if token then
    return token, nil, key
  end
  local content_type, body = body_of()
  if not content_type then
    return nil, body
  end
  local res, err = helpers.send(url, {
    method = "POST",
    headers = { ["Accept-Encoding"] = "base64", ["Content-Type"] = content_type },
    body = body,
  })
  if not res then
    return nil, what .. " failed: " .. tostring(err)
  end
  if res.status ~= 200 or not res.body or res.body == "" then
    return nil, helpers.status_error(what, res.status, res.body)
  end
  token = res.body:gsub("%s+", "")
  if not token:match("^[%w%+/=]+$") then
    -- an older server ignoring Accept-Encoding answers the token as JSON
    token = ngx.encode_base64(res.body)
  end
  TOKENS.set(key, token, TOKEN_TTL)
  return token, nil, key
end


-- the fields each auth method needs
local NEEDS = {
  api_key = { "endpoint_url", "account", "login", "api_key" },
  jwt = { "endpoint_url", "account", "authn_jwt_service_id", "jwt_token_file" },
}


local function fetch(conf, resource, version)
  local needs = NEEDS[conf.auth_method]
  if not needs then
    return nil, "unknown auth_method " .. tostring(conf.auth_method)
  end
  for _, field in ipairs(needs) do
    if not conf[field] or conf[field] == "" then
      return nil, "no " .. field
    end
  end
  if conf.auth_method == "api_key" and helpers.still_encrypted(conf.api_key) then
    return nil, "api_key is encrypted by the keyring and cannot be decrypted here (the CLI: docs/vaults.md)"
  end
  local url = fmt("%s/secrets/%s/variable/%s", base_url(conf), escape_uri(conf.account), escape_uri(resource))
  local res, err = helpers.read_with_token(TOKENS, function() return authenticate(conf) end, function(token)
    local r, e = helpers.send(url, {
      query = version and { version = version },
      headers = { Authorization = fmt('Token token="%s"', token) },
    })
    return r, r == nil and fmt("reading %s failed: %s", resource, e) or nil
  end, resource, version)
  if not res then
    return nil, err
  end
  return res.body or ""
end


return {
  VERSION = "0.1.0",
  get = helpers.strategy("conjur", schema, fetch),
}
