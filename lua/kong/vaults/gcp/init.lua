-- Vault strategy `gcp`: Google Cloud Secret Manager,
-- `projects/<project_id>/secrets/<name>/versions/<version>:access`.
--
--   {vault://gcp/<secret name>[/<json key>][#<version>]}
--
-- `#N` reads version N, none the `latest`. The value is the payload's bytes.
--
-- Credentials: the service account key file (JSON) in GCP_SERVICE_ACCOUNT,
-- as Kong Enterprise reads it: a JWT signed with its private key (RS256,
-- lua-resty-openssl) is exchanged for an OAuth access token (RFC 7523
-- jwt-bearer grant) at config.token_url, the key file's token_uri or
-- Google's. Without GCP_SERVICE_ACCOUNT, the metadata server's token of the
-- instance's service account (GKE Workload Identity, GCE). Tokens are kept
-- per worker until shortly before they expire.
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
local GOOGLE_API_URL = "https://secretmanager.googleapis.com"
local SCOPE = "https://www.googleapis.com/auth/cloud-platform"
local JWT_LIFETIME = 3600   -- the longest Google accepts

local TOKENS = helpers.token_cache()


local function strip(url)
  return (url:gsub("/+$", ""))
end


-- the service account of GCP_SERVICE_ACCOUNT: a table, nil (not set) or
-- nil, err (set but unusable; the error names fields, never values)
local function service_account()
  local raw = helpers.getenv(ENV_SA)
  if not raw or raw == "" then
    return nil
  end
  local sa = helpers.json({ body = raw })
  if not sa then
    return nil, ENV_SA .. " is not a JSON object"
  end
  if type(sa.client_email) ~= "string" or type(sa.private_key) ~= "string" then
    return nil, ENV_SA .. " has no client_email or private_key"
  end
  return sa
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
  local sa, err = service_account()
  if sa then
    return sa_token(conf, sa)
  end
  if err then
    return nil, err
  end
  return metadata_token(conf)
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
