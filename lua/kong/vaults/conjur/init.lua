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
-- Auth (`api_key`): POST /authn/<account>/<login>/authenticate with the API
-- key as the body gives a short-lived access token (8 minutes), asked for
-- base64-encoded and sent as `Authorization: Token token="<token>"` to
-- GET /secrets/<account>/variable/<id>. Tokens are kept per worker until
-- shortly before they expire; a 401 on a read logs in once more.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.conjur.schema"


local fmt = string.format
local escape_uri = ngx.escape_uri

local TOKEN_TTL = 480   -- Conjur's access token lifetime

local TOKENS = helpers.token_cache()


local function base_url(conf)
  return (conf.endpoint_url:gsub("/+$", ""))
end


local function authenticate(conf)
  local url = fmt("%s/authn/%s/%s/authenticate", base_url(conf), escape_uri(conf.account), escape_uri(conf.login))
  local key = helpers.hash("conjur", url, conf.api_key)
  local token = TOKENS.get(key)
  if token then
    return token, nil, key
  end
  local res, err = helpers.send(url, {
    method = "POST",
    headers = { ["Accept-Encoding"] = "base64", ["Content-Type"] = "text/plain" },
    body = conf.api_key,
  })
  if not res then
    return nil, "authentication failed: " .. tostring(err)
  end
  if res.status ~= 200 or not res.body or res.body == "" then
    return nil, helpers.status_error("authentication of " .. conf.login, res.status, res.body)
  end
  token = res.body:gsub("%s+", "")
  if not token:match("^[%w%+/=]+$") then
    -- an older server ignoring Accept-Encoding answers the token as JSON
    token = ngx.encode_base64(res.body)
  end
  TOKENS.set(key, token, TOKEN_TTL)
  return token, nil, key
end


local function fetch(conf, resource, version)
  for _, field in ipairs({ "endpoint_url", "account", "login", "api_key" }) do
    if not conf[field] or conf[field] == "" then
      return nil, "no " .. field
    end
  end
  if helpers.still_encrypted(conf.api_key) then
    return nil, "api_key is encrypted by the keyring and cannot be decrypted here (the CLI: docs/vaults.md)"
  end
  if conf.auth_method ~= "api_key" then
    return nil, "unknown auth_method " .. tostring(conf.auth_method)
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
