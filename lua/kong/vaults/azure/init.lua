-- Vault strategy `azure`: Azure Key Vault secrets (`GET
-- <vault_uri>/secrets/<name>[/<version id>]?api-version=...`).
--
--   {vault://azure/<secret name>[/<json key>][#<version>]}
--
-- Key Vault version ids are opaque; `#N` is the N-th version of the secret
-- by creation time (1 = the oldest), found by listing the secret's versions
-- (`/secrets/<name>/versions`, following nextLink on the vault's own origin
-- only). No version: the current one.
--
-- Token (Entra ID, resource https://vault.azure.net), first that applies,
-- in the order of Azure's own DefaultAzureCredential:
--   1. client credentials: client_id (config or <prefix>_CLIENT_ID),
--      tenant_id (config or <prefix>_TENANT_ID) and <prefix>_CLIENT_SECRET,
--      posted to <authority>/<tenant>/oauth2/v2.0/token;
--   2. workload identity (AKS): the same request with the Kubernetes
--      service account token of <prefix>_FEDERATED_TOKEN_FILE as a client
--      assertion instead of a secret (the file is read at each login: the
--      kubelet rewrites it);
--   3. managed identity, App Service / Container Apps flavour: when the
--      platform sets IDENTITY_ENDPOINT and IDENTITY_HEADER and the config
--      names no identity_endpoint;
--   4. managed identity, instance metadata (IMDS) flavour:
--      <identity_endpoint>/metadata/identity/oauth2/token.
-- With a managed identity, client_id selects a user-assigned identity.
-- <prefix> is config.credentials_prefix ("AZURE"). Tokens are kept per
-- worker until shortly before they expire.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.azure.schema"


local fmt = string.format
local type = type
local find = string.find
local lower = string.lower
local tonumber = tonumber
local unpack = unpack
local escape_uri = ngx.escape_uri
local encode_args = ngx.encode_args


-- Kong's workers see no environment: what a credentials prefix may name is
-- remembered when the strategy loads (Kong's init, the CLI, init_by_lua)
helpers.remember_env_matching("_CLIENT_SECRET$")
helpers.remember_env_matching("_CLIENT_ID$")
helpers.remember_env_matching("_TENANT_ID$")
helpers.remember_env_matching("_AUTHORITY_HOST$")
helpers.remember_env_matching("_FEDERATED_TOKEN_FILE$")
helpers.remember_env_matching("^IDENTITY_ENDPOINT$")
helpers.remember_env_matching("^IDENTITY_HEADER$")

local RESOURCE = "https://vault.azure.net"
local DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
local DEFAULT_IDENTITY = "http://169.254.169.254"
local JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
local MAX_PAGES = 20

local TOKENS = helpers.token_cache()


local function strip(url)
  return (url:gsub("/+$", ""))
end


-- scheme, host and port of an URL, lower-cased, default ports filled in
local function origin(url)
  local scheme, host, port = (url or ""):match("^(%a+)://([^/:?#]+):?(%d*)")
  if not scheme then
    return nil
  end
  scheme = lower(scheme)
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  return scheme .. "://" .. lower(host) .. ":" .. port
end


-- an Entra ID token for the application `client_id`, which proves itself
-- with the form fields `proof()` gives (a secret or a client assertion; read
-- only when a request is needed), kept under a key made of `key_parts`
local function entra_token(conf, what, client_id, tenant_id, key_parts, proof)
  local authority = conf.authority_host or helpers.getenv(conf.credentials_prefix .. "_AUTHORITY_HOST")
                    or DEFAULT_AUTHORITY
  local url = fmt("%s/%s/oauth2/v2.0/token", strip(authority), escape_uri(tenant_id))
  local key = helpers.hash(url, client_id, unpack(key_parts))
  return helpers.token_request(TOKENS, key, what, url, function()
    local form, err = proof()
    if not form then
      return nil, err
    end
    form.grant_type = "client_credentials"
    form.client_id = client_id
    form.scope = RESOURCE .. "/.default"
    return {
      method = "POST",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
      body = encode_args(form),
    }
  end)
end


local function client_credentials_token(conf, client_id, tenant_id, secret)
  return entra_token(conf, "client credentials token request", client_id, tenant_id, { "azure-client", secret },
                     function() return { client_secret = secret } end)
end


-- the key names the file, not its token: a login with a newer token
-- gets the same access, and the file is read only to log in
local function workload_identity_token(conf, client_id, tenant_id, file)
  local function assertion()
    local token, err = helpers.read_token_file(file, "the federated token file")
    if not token then
      return nil, err
    end
    if token == "" then
      return nil, "the federated token file " .. file .. " is empty"
    end
    return { client_assertion_type = JWT_BEARER, client_assertion = token }
  end
  return entra_token(conf, "workload identity token request", client_id, tenant_id, { "azure-federated", file },
                     assertion)
end


-- App Service and Container Apps: a local endpoint guarded by a header
-- whose value the platform gives the app
local function app_service_token(client_id, endpoint, header)
  local query = { ["api-version"] = "2019-08-01", resource = RESOURCE, client_id = client_id }
  local key = helpers.hash("azure-app-service", endpoint, client_id, header)
  return helpers.token_request(TOKENS, key, "App Service managed identity token request", endpoint,
                               { query = query, headers = { ["X-IDENTITY-HEADER"] = header }, timeout = 3000 })
end


local function managed_identity_token(conf, client_id)
  local url = strip(conf.identity_endpoint or DEFAULT_IDENTITY) .. "/metadata/identity/oauth2/token"
  local query = { ["api-version"] = "2018-02-01", resource = RESOURCE, client_id = client_id }
  local key = helpers.hash("azure-msi", url, client_id)
  return helpers.token_request(TOKENS, key, "managed identity token request", url,
                               { query = query, headers = { Metadata = "true" }, timeout = 3000 })
end


local function non_empty(value)
  return value ~= nil and value ~= ""
end


local function get_token(conf)
  local prefix = conf.credentials_prefix
  local client_id = conf.client_id or helpers.getenv(prefix .. "_CLIENT_ID")
  local tenant_id = conf.tenant_id or helpers.getenv(prefix .. "_TENANT_ID")
  local secret = helpers.getenv(prefix .. "_CLIENT_SECRET")
  local token_file = helpers.getenv(prefix .. "_FEDERATED_TOKEN_FILE")
  if non_empty(secret) or non_empty(token_file) then
    if not client_id or not tenant_id then
      return nil, fmt("%s_%s is set but client_id or tenant_id is missing", prefix,
                      non_empty(secret) and "CLIENT_SECRET" or "FEDERATED_TOKEN_FILE")
    end
    if non_empty(secret) then
      return client_credentials_token(conf, client_id, tenant_id, secret)
    end
    return workload_identity_token(conf, client_id, tenant_id, token_file)
  end
  local endpoint, header = helpers.getenv("IDENTITY_ENDPOINT"), helpers.getenv("IDENTITY_HEADER")
  if not conf.identity_endpoint and non_empty(endpoint) and non_empty(header) then
    return app_service_token(client_id, endpoint, header)
  end
  return managed_identity_token(conf, client_id)
end


-- GET `url` (a Key Vault URL) with the token, once more with a new token
-- when the cached one is refused
local function vault_get(conf, url, query, what)
  return helpers.with_token(TOKENS, function() return get_token(conf) end, function(token)
    local res, err = helpers.send(url, { query = query, headers = { Authorization = "Bearer " .. token } })
    return res, res == nil and fmt("%s failed: %s", what, err) or nil
  end)
end


-- the id of the `version`-th version of secret `name` by creation time
local function version_id(conf, base, name, version)
  local url = fmt("%s/secrets/%s/versions", base, name)
  local query = { ["api-version"] = conf.api_version, maxresults = 25 }
  local own = origin(base)
  local list = {}
  for _ = 1, MAX_PAGES do
    local res, err = vault_get(conf, url, query, "listing the versions of " .. name)
    if not res then
      return nil, err
    end
    if res.status ~= 200 then
      return nil, res.status == 404 and fmt("%s not found", name)
                  or helpers.status_error("listing the versions of " .. name, res.status, res.body)
    end
    local body = helpers.json(res) or {}
    for _, item in ipairs(type(body.value) == "table" and body.value or {}) do
      local id = type(item.id) == "string" and item.id:match("/secrets/[^/]+/([^/?]+)$")
      local created = type(item.attributes) == "table" and tonumber(item.attributes.created)
      if id then
        list[#list + 1] = { id = id, created = created or 0, n = #list }
      end
    end
    local next_link = body.nextLink
    if type(next_link) ~= "string" or next_link == "" then
      break
    end
    -- the bearer token goes to the vault only
    if origin(next_link) ~= own then
      return nil, "the version list of " .. name .. " links to another host"
    end
    url, query = next_link, nil
  end
  table.sort(list, function(a, b)
    if a.created ~= b.created then
      return a.created < b.created
    end
    return a.n < b.n
  end)
  local item = list[version]
  if not item then
    return nil, fmt("%s#%d not found (%d versions)", name, version, #list)
  end
  return item.id
end


local function fetch(conf, resource, version)
  if not conf.vault_uri then
    return nil, "no vault_uri"
  end
  if conf.type ~= "secrets" then
    return nil, "only type secrets is supported"
  end
  -- Key Vault names: letters, digits and '-'
  if not find(resource, "^[%w%-]+$") then
    return nil, "invalid secret name (letters, digits and '-' only)"
  end
  local base = strip(conf.vault_uri)
  local url = fmt("%s/secrets/%s", base, resource)
  if version then
    local id, err = version_id(conf, base, resource, version)
    if not id then
      return nil, err
    end
    url = url .. "/" .. escape_uri(id)
  end
  local res, err = vault_get(conf, url, { ["api-version"] = conf.api_version }, "reading " .. resource)
  if res then
    -- a missing version is named by its number
    res, err = helpers.read_answer(res, resource, version)
  end
  if not res then
    return nil, err
  end
  local value = (helpers.json(res) or {}).value
  if type(value) ~= "string" then
    return nil, fmt("%s has no value", resource)
  end
  return value
end


return {
  VERSION = "0.1.0",
  get = helpers.strategy("azure", schema, fetch),
}
