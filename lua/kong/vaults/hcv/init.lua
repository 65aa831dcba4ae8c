-- Vault strategy `hcv`: HashiCorp Vault and OpenBao, KV v1 and v2, with
-- token, AppRole, Kubernetes or TLS certificate auth and an optional
-- namespace.
--
--   {vault://hcv/<path>[/<key>][#<version>]}
--
-- The value is the secret's key/value map as JSON (Kong picks `<key>` from
-- it); `#<version>` reads that version of a KV v2 secret.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.hcv.schema"
local ssl = require "ngx.ssl"


local fmt = string.format
local type = type
local request = helpers.send
local status_error = helpers.status_error


local TOKENS = helpers.token_cache()


local function base_url(conf)
  return fmt("%s://%s:%d/v1/", conf.protocol, conf.host, conf.port)
end


local function headers_for(conf, token)
  return {
    ["X-Vault-Token"] = token,
    ["X-Vault-Namespace"] = conf.namespace,
    ["Content-Type"] = "application/json",
  }
end


-- POST auth/<path>/login with `body` (and the TLS client certificate of
-- `client`, if any): the client token and its lease
local function login(conf, path, body, what, client)
  local res, err = request(base_url(conf) .. "auth/" .. helpers.escape_path(path) .. "/login", {
    method = "POST",
    headers = headers_for(conf),
    body = helpers.encode(body),
    client_cert = client and client.cert,
    client_key = client and client.key,
  })
  if not res then
    return nil, fmt("%s login failed: %s", what, err)
  end
  local auth = res.status == 200 and (helpers.json(res) or {}).auth
  if type(auth) ~= "table" or type(auth.client_token) ~= "string" then
    return nil, status_error(what .. " login", res.status, res.body)
  end
  return auth.client_token, auth.lease_duration
end


-- the AppRole secret id: given, read from a file, and unwrapped when it is
-- a response-wrapping token
local function approle_secret_id(conf)
  local secret_id = conf.approle_secret_id
  if not secret_id and conf.approle_secret_id_file then
    local err
    secret_id, err = helpers.read_token_file(conf.approle_secret_id_file, "approle_secret_id_file")
    if not secret_id then
      return nil, err
    end
  end
  if not secret_id or secret_id == "" then
    return nil, "approle auth needs approle_secret_id or approle_secret_id_file"
  end
  if not conf.approle_response_wrapping then
    return secret_id
  end
  local res, err = request(base_url(conf) .. "sys/wrapping/unwrap", {
    method = "POST",
    headers = headers_for(conf, secret_id),
  })
  if not res then
    return nil, "unwrapping the approle secret id failed: " .. err
  end
  local data = res.status == 200 and (helpers.json(res) or {}).data
  if type(data) ~= "table" or type(data.secret_id) ~= "string" then
    return nil, status_error("unwrapping the approle secret id", res.status, res.body)
  end
  return data.secret_id
end


-- the client certificate and key of cert auth, parsed for the TLS handshake
local function client_certificate(conf)
  if not conf.cert_auth_cert or not conf.cert_auth_cert_key then
    return nil, "cert auth needs cert_auth_cert and cert_auth_cert_key"
  end
  if conf.protocol ~= "https" then
    return nil, "cert auth needs protocol https (the certificate is presented in the TLS handshake)"
  end
  if helpers.still_encrypted(conf.cert_auth_cert_key) then
    return nil, "cert_auth_cert_key is encrypted by the keyring and cannot be decrypted here (the CLI: docs/vaults.md)"
  end
  -- errors name the field, never its content
  local cert = ssl.parse_pem_cert(conf.cert_auth_cert)
  if not cert then
    return nil, "cert_auth_cert is not a PEM certificate"
  end
  local key = ssl.parse_pem_priv_key(conf.cert_auth_cert_key)
  if not key then
    return nil, "cert_auth_cert_key is not a PEM private key"
  end
  return { cert = cert, key = key }
end


-- The login of each auth method: the cache key of its token (a hash of the
-- credentials, so new ones log in again), and a function giving the mount
-- path, the body and the TLS client certificate of the login, or nil, err;
-- called only when no token is cached.
local LOGINS = {}

function LOGINS.approle(conf)
  if not conf.approle_role_id then
    return nil, "approle auth needs approle_role_id"
  end
  -- a wrapped secret id works once: the token it gave is kept by role
  local key = helpers.hash(base_url(conf), conf.namespace, "approle", conf.approle_auth_path, conf.approle_role_id,
                           conf.approle_secret_id, conf.approle_secret_id_file)
  return key, function()
    local secret_id, err = approle_secret_id(conf)
    if not secret_id then
      return nil, err
    end
    return conf.approle_auth_path, { role_id = conf.approle_role_id, secret_id = secret_id }
  end
end

function LOGINS.kubernetes(conf)
  if not conf.kube_role then
    return nil, "kubernetes auth needs kube_role"
  end
  local jwt, err = helpers.read_token_file(conf.kube_api_token_file, "kube_api_token_file")
  if not jwt then
    return nil, err
  end
  local key = helpers.hash(base_url(conf), conf.namespace, "kubernetes", conf.kube_auth_path, conf.kube_role, jwt)
  return key, function()
    return conf.kube_auth_path, { role = conf.kube_role, jwt = jwt }
  end
end

function LOGINS.cert(conf)
  local key = helpers.hash(base_url(conf), conf.namespace, "cert", conf.cert_auth_path, conf.cert_auth_role_name,
                           conf.cert_auth_cert, conf.cert_auth_cert_key)
  return key, function()
    local client, err = client_certificate(conf)
    if not client then
      return nil, err
    end
    -- no name: Vault tries every trusted certificate of the mount
    return conf.cert_auth_path, { name = conf.cert_auth_role_name }, client
  end
end


-- a token for the configured auth method, and the cache key it lives under
-- (nil for a static token)
local function get_token(conf)
  local method = conf.auth_method
  if method == "token" then
    if not conf.token or conf.token == "" then
      return nil, "token auth needs a token"
    end
    return conf.token
  end
  local login_of = LOGINS[method]
  if not login_of then
    return nil, fmt("unknown auth_method %q", tostring(method))
  end
  local key, prepare = login_of(conf)
  if not key then
    return nil, prepare
  end
  local token = TOKENS.get(key)
  if token then
    return token, nil, key
  end
  local path, body, client = prepare()
  if not path then
    return nil, body
  end
  local ttl
  token, ttl = login(conf, path, body, method, client)
  if not token then
    return nil, ttl
  end
  TOKENS.set(key, token, ttl)
  return token, nil, key
end


local function read(conf, resource, version, token)
  local mount = helpers.escape_path(conf.mount)
  local path = helpers.escape_path(resource)
  local url, query
  if conf.kv == "v2" then
    url = base_url(conf) .. mount .. "/data/" .. path
    query = version and { version = version }
  else
    url = base_url(conf) .. mount .. "/" .. path
  end
  return request(url, { headers = headers_for(conf, token), query = query })
end


local function fetch(conf, resource, version)
  if version and conf.kv ~= "v2" then
    return nil, "versions need kv v2"
  end
  local token, err, key = get_token(conf)
  if not token then
    return nil, err
  end
  local res
  res, err = read(conf, resource, version, token)
  if res and res.status == 403 and key then
    -- the cached login token expired or was revoked: log in again, once
    TOKENS.delete(key)
    token, err = get_token(conf)
    if not token then
      return nil, err
    end
    res, err = read(conf, resource, version, token)
  end
  if not res then
    return nil, fmt("reading %s failed: %s", resource, err)
  end
  if res.status == 404 then
    return nil, fmt("%s not found", resource)
  end
  if res.status ~= 200 then
    return nil, status_error("reading " .. resource, res.status, res.body)
  end
  local data = (helpers.json(res) or {}).data
  if conf.kv == "v2" then
    data = type(data) == "table" and data.data
  end
  if type(data) ~= "table" then
    -- a v2 version that was deleted answers 404; a destroyed one has no data
    return nil, fmt("%s has no data", resource)
  end
  return helpers.encode(data)
end


return {
  VERSION = "0.1.0",
  get = helpers.strategy("hcv", schema, fetch),
}
