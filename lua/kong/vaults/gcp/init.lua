-- Vault strategy `gcp`: Google Cloud Secret Manager,
-- `projects/<project_id>/secrets/<name>/versions/<version>:access`.
--
--   {vault://gcp/<secret name>[/<json key>][#<version>]}
--
-- `#N` reads version N, none the `latest`. The value is the payload's bytes.
--
-- Credentials, from the JSON in GCP_SERVICE_ACCOUNT (as Kong Enterprise
-- reads it), by its `type`:
--   service_account    a JWT signed with its private key (RS256,
--                      lua-resty-openssl) is exchanged for an OAuth access
--                      token (RFC 7523 jwt-bearer grant) at config.token_url,
--                      the key file's token_uri or Google's;
--   external_account   workload identity federation (Kong outside Google
--                      Cloud): the subject token of its credential_source
--                      (a file, or a URL answering text or JSON) is exchanged
--                      at its token_url (Google's STS, RFC 8693) for a
--                      federated token, then, with
--                      service_account_impersonation_url, for a service
--                      account's token (IAM generateAccessToken).
-- Without GCP_SERVICE_ACCOUNT, the metadata server's token of the instance's
-- service account (GKE Workload Identity, GCE). Tokens are kept per worker
-- until shortly before they expire.
--
-- lua-resty-gcp (which Kong ships) is not used for the token: it fixes the
-- token and metadata URLs, uses blocking sockets and logs. Its request
-- building is not needed for one GET.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.gcp.schema"
local pkey = require "resty.openssl.pkey"
local b64 = require "ngx.base64"


local fmt = string.format
local type = type
local find = string.find
local time = ngx.time
local encode_args = ngx.encode_args
local decode_base64 = ngx.decode_base64
local encode_base64url = b64.encode_base64url


local ENV_SA = "GCP_SERVICE_ACCOUNT"
local ENV_METADATA = "GCE_METADATA_HOST"
helpers.remember_env({ ENV_SA, ENV_METADATA })

local GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
local GOOGLE_STS_URL = "https://sts.googleapis.com/v1/token"
local GOOGLE_API_URL = "https://secretmanager.googleapis.com"
local SCOPE = "https://www.googleapis.com/auth/cloud-platform"
local JWT_LIFETIME = 3600   -- the longest Google accepts

local TOKENS = helpers.token_cache()


local function strip(url)
  return (url:gsub("/+$", ""))
end


-- the credentials of GCP_SERVICE_ACCOUNT: a table, nil (not set) or nil,
-- err (set but unusable; the error names fields, never values)
local function credentials()
  local raw = helpers.getenv(ENV_SA)
  if not raw or raw == "" then
    return nil
  end
  local creds = helpers.json({ body = raw })
  if not creds then
    return nil, ENV_SA .. " is not a JSON object"
  end
  if creds.type == "external_account" then
    if type(creds.audience) ~= "string" or type(creds.subject_token_type) ~= "string"
       or type(creds.credential_source) ~= "table" then
      return nil, ENV_SA .. " (external_account) has no audience, subject_token_type or credential_source"
    end
    return creds
  end
  if type(creds.client_email) ~= "string" or type(creds.private_key) ~= "string" then
    return nil, ENV_SA .. " has no client_email or private_key"
  end
  return creds
end


-- an OAuth access token for the service account: signed JWT -> token_url
local function sa_token(conf, sa)
  local token_url = conf.token_url or (type(sa.token_uri) == "string" and sa.token_uri) or GOOGLE_TOKEN_URL
  local key = helpers.hash("gcp-sa", token_url, sa.client_email, sa.private_key_id, sa.private_key)
  return helpers.token_request(TOKENS, key, "token request for " .. sa.client_email, token_url, function()
    local private = pkey.new(sa.private_key)
    if not private then
      -- lua-resty-openssl's message names the parser, not the key
      return nil, "the private_key of " .. ENV_SA .. " cannot be read"
    end
    local now = time()
    local header = { alg = "RS256", typ = "JWT", kid = type(sa.private_key_id) == "string" and sa.private_key_id or nil }
    local claims = { iss = sa.client_email, scope = SCOPE, aud = token_url, iat = now, exp = now + JWT_LIFETIME }
    local signing_input = encode_base64url(helpers.encode(header)) .. "." .. encode_base64url(helpers.encode(claims))
    local signature = private:sign(signing_input, "sha256")
    if not signature then
      return nil, "signing the token request failed"
    end
    return {
      method = "POST",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
      body = encode_args({
        grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer",
        assertion = signing_input .. "." .. encode_base64url(signature),
      }),
    }
  end)
end


-- the subject token of an external account's credential_source: the
-- content of `file`, or what `url` answers (with `headers`); `format`
-- {type = "json", subject_token_field_name = ...} picks a field of JSON
local function subject_token(source)
  local text, err
  if type(source.file) == "string" then
    text, err = helpers.read_token_file(source.file, "the credential_source file")
    if not text then
      return nil, err
    end
  elseif type(source.url) == "string" then
    local res
    res, err = helpers.send(source.url, { headers = source.headers, timeout = 3000 })
    if not res then
      return nil, "credential_source url request failed: " .. tostring(err)
    end
    if res.status ~= 200 then
      return nil, helpers.status_error("credential_source url request", res.status, res.body)
    end
    text = res.body or ""
  else
    return nil, "the credential_source has no file or url (other sources are not supported)"
  end
  local format = type(source.format) == "table" and source.format or {}
  if format.type == "json" then
    local name = format.subject_token_field_name
    if type(name) ~= "string" then
      return nil, "the credential_source format has no subject_token_field_name"
    end
    local field = (helpers.json({ body = text }) or {})[name]
    if type(field) ~= "string" then
      return nil, "the credential_source answer has no " .. name
    end
    return field
  end
  text = text:gsub("%s+$", "")
  if text == "" then
    return nil, "the credential_source gave an empty subject token"
  end
  return text
end


-- an external account's federated token: its subject token exchanged at
-- the STS; token, err, cache key
local function federated_token(creds)
  local sts_url = type(creds.token_url) == "string" and creds.token_url or GOOGLE_STS_URL
  local source = creds.credential_source
  local key = helpers.hash("gcp-external", sts_url, creds.audience, source.file, source.url)
  return helpers.token_request(TOKENS, key, "token exchange", sts_url, function()
    local subject, err = subject_token(source)
    if not subject then
      return nil, err
    end
    return {
      method = "POST",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
      body = encode_args({
        grant_type = "urn:ietf:params:oauth:grant-type:token-exchange",
        audience = creds.audience,
        scope = SCOPE,
        requested_token_type = "urn:ietf:params:oauth:token-type:access_token",
        subject_token = subject,
        subject_token_type = creds.subject_token_type,
      }),
    }
  end)
end


-- an external account's token: the federated token, or, with
-- service_account_impersonation_url, the service account's token it buys
local function external_account_token(creds)
  local url = creds.service_account_impersonation_url
  if type(url) ~= "string" then
    return federated_token(creds)
  end
  local federated, err, federated_key = federated_token(creds)
  if not federated then
    return nil, err
  end
  local key = helpers.hash("gcp-impersonate", url, federated_key)
  local token = TOKENS.get(key)
  if token then
    return token, nil, key
  end
  local res
  for attempt = 1, 2 do
    res, err = helpers.send(url, {
      method = "POST",
      headers = { Authorization = "Bearer " .. federated, ["Content-Type"] = "application/json" },
      body = helpers.encode({ scope = { SCOPE } }),
    })
    if not res then
      return nil, "service account impersonation failed: " .. tostring(err)
    end
    if res.status ~= 401 or attempt == 2 then
      break
    end
    -- the federated token was refused: exchange the subject token again
    TOKENS.delete(federated_key)
    federated, err = federated_token(creds)
    if not federated then
      return nil, err
    end
  end
  local body = res.status == 200 and helpers.json(res)
  if not body or type(body.accessToken) ~= "string" then
    return nil, helpers.status_error("service account impersonation", res.status, res.body)
  end
  local expires = helpers.parse_time(body.expireTime)
  TOKENS.set(key, body.accessToken, expires and expires - time())
  return body.accessToken, nil, key
end


-- the metadata server's token of the instance's service account
local function metadata_token(conf)
  local host = conf.metadata_url or helpers.getenv(ENV_METADATA) or "metadata.google.internal"
  if not find(host, "^https?://") then
    host = "http://" .. host
  end
  local url = strip(host) .. "/computeMetadata/v1/instance/service-accounts/default/token"
  return helpers.token_request(TOKENS, helpers.hash("gcp-metadata", url), "metadata server token request", url,
                               { headers = { ["Metadata-Flavor"] = "Google" }, timeout = 3000 })
end


local function get_token(conf)
  local creds, err = credentials()
  if not creds then
    if err then
      return nil, err
    end
    return metadata_token(conf)
  end
  if creds.type == "external_account" then
    return external_account_token(creds)
  end
  return sa_token(conf, creds)
end


local function fetch(conf, resource, version)
  if not conf.project_id or conf.project_id == "" then
    return nil, "no project_id"
  end
  -- Secret Manager ids: letters, digits, '-' and '_'
  if not find(resource, "^[%w_%-]+$") then
    return nil, "invalid secret name (letters, digits, '-' and '_' only)"
  end
  local url = fmt("%s/v1/projects/%s/secrets/%s/versions/%s:access", strip(conf.api_url or GOOGLE_API_URL),
                  ngx.escape_uri(conf.project_id), resource, version and tostring(version) or "latest")
  local res, err = helpers.read_with_token(TOKENS, function() return get_token(conf) end, function(token)
    local r, e = helpers.send(url, { headers = { Authorization = "Bearer " .. token } })
    return r, r == nil and fmt("reading %s failed: %s", resource, e) or nil
  end, resource, version)
  if not res then
    return nil, err
  end
  local payload = (helpers.json(res) or {}).payload
  local data = type(payload) == "table" and payload.data
  if type(data) ~= "string" then
    return nil, fmt("%s has no payload", resource)
  end
  local value = decode_base64(data)
  if not value then
    return nil, fmt("the payload of %s is not base64", resource)
  end
  return value
end


return {
  VERSION = "0.1.0",
  get = helpers.strategy("gcp", schema, fetch),
}
