-- Vault strategy `aws`: AWS Secrets Manager `GetSecretValue` through
-- lua-resty-aws (SigV4, STS, credential providers), the library Kong ships.
--
--   {vault://aws/<secret id>[/<json key>][#<version>]}
--
-- `#1` (or none) reads the AWSCURRENT stage, `#2` AWSPREVIOUS. A binary
-- secret comes back as its bytes.
--
-- Credentials, first that answers (seed 001's precedence):
--   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)
--   2. AWS_PROFILE in AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials)
--   3. the ECS container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
--      _FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE])
--   4. EKS web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), STS at
--      config.sts_endpoint_url when set
--   5. EC2 IMDS v2 then v1, unless AWS_EC2_METADATA_DISABLED=true; at
--      AWS_EC2_METADATA_SERVICE_ENDPOINT when set (lua-resty-aws's own
--      provider knows only 169.254.169.254)
-- then, with config.assume_role_arn, STS AssumeRole on top of them.
-- lua-resty-aws reads the environment when it is loaded: in Kong's init (the
-- workers see no environment) or, from plain OpenResty, in init_by_lua.

local helpers = require "kong.vaults.helpers"
local schema = require "kong.vaults.aws.schema"
local aws_config = require "resty.aws.config"
local AWS = require "resty.aws"
local Credentials = require "resty.aws.credentials.Credentials"
local lrucache = require "resty.lrucache"


local fmt = string.format
local type = type
local decode_base64 = ngx.decode_base64
local sleep = ngx.sleep


local IMDS_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
helpers.remember_env({ IMDS_ENV, "AWS_REGION", "AWS_DEFAULT_REGION" })

-- lua-resty-aws builds its global config on first use and, without a
-- region in the environment or ~/.aws/config, asks IMDS for one. The vault
-- takes its region from config.region or the environment only, so the
-- global config is built here, without that lookup.
local GLOBAL do
  GLOBAL = rawget(aws_config, "global")
  if not GLOBAL then
    GLOBAL = assert(aws_config.get_config())
    rawset(aws_config, "global", GLOBAL)
  end
end


-- EC2 IMDS (v2 token, falling back to v1) at an endpoint other than
-- lua-resty-aws's fixed 169.254.169.254 (the AWS SDKs' variable)
local ImdsCredentials = setmetatable({}, { __index = Credentials })
ImdsCredentials.__index = ImdsCredentials

function ImdsCredentials:new(endpoint)
  local self = Credentials.new(Credentials)
  self.endpoint = endpoint:gsub("/+$", "")
  return setmetatable(self, ImdsCredentials)
end

function ImdsCredentials:refresh()
  local base = self.endpoint
  local headers = {}
  local res = helpers.send(base .. "/latest/api/token", {
    method = "PUT",
    headers = { ["X-aws-ec2-metadata-token-ttl-seconds"] = "300" },
    timeout = 2000,
  })
  if res and res.status == 200 and res.body ~= "" then
    headers["X-aws-ec2-metadata-token"] = res.body
  end
  local err
  res, err = helpers.send(base .. "/latest/meta-data/iam/security-credentials/", { headers = headers })
  if not res or res.status ~= 200 then
    return nil, "IMDS role lookup failed: " .. (err or res.status)
  end
  local role = res.body:match("^%s*([^%s]+)")
  if not role then
    return nil, "IMDS has no role"
  end
  res, err = helpers.send(base .. "/latest/meta-data/iam/security-credentials/" .. ngx.escape_uri(role),
                             { headers = headers })
  local creds = res and res.status == 200 and helpers.json(res)
  if not creds or type(creds.AccessKeyId) ~= "string" then
    return nil, "IMDS credentials lookup failed: " .. (err or res.status)
  end
  self:set(creds.AccessKeyId, creds.SecretAccessKey, creds.Token, creds.Expiration)
  return true
end


-- host, port and scheme of an endpoint URL, as lua-resty-aws wants them
local function endpoint_opts(url, opts)
  if not url then
    return opts
  end
  local scheme, host, port = url:match("^(https?)://([^/:]+):?(%d*)")
  opts.endpoint = scheme .. "://" .. host
  opts.port = tonumber(port) or (scheme == "https" and 443 or 80)
  opts.tls = scheme == "https"
  return opts
end


local function sts_service(aws, region, conf, credentials)
  return aws:STS(endpoint_opts(conf.sts_endpoint_url, {
    region = region,
    signingRegion = region,
    credentials = credentials,
    -- "regional" rewrites the endpoint's host name, which would break a
    -- given sts_endpoint_url: that one is used as it is
    stsRegionalEndpoints = conf.sts_endpoint_url and "legacy" or GLOBAL.sts_regional_endpoints,
    ssl_verify = true,
  }))
end


local function provider(class, opts)
  return require("resty.aws.credentials." .. class):new(opts)
end


-- the credential chain of the module comment, for one region and STS endpoint
local function credential_chain(aws, region, conf)
  local providers = {
    provider("EnvironmentCredentials", { envPrefix = "AWS" }),
    provider("SharedFileCredentials"),
    provider("RemoteCredentials"),
  }
  if GLOBAL.AWS_WEB_IDENTITY_TOKEN_FILE and GLOBAL.AWS_ROLE_ARN then
    local web = provider("TokenFileWebIdentityCredentials")
    web.sts = assert(sts_service(aws, region, conf, Credentials:new()))
    providers[#providers + 1] = web
  end
  if not GLOBAL.AWS_EC2_METADATA_DISABLED then
    local endpoint = helpers.getenv(IMDS_ENV)
    providers[#providers + 1] = endpoint and ImdsCredentials:new(endpoint) or provider("EC2MetadataCredentials")
  end
  return provider("CredentialProviderChain", { providers = providers })
end


-- one Secrets Manager client per region, endpoints and role, per worker
local CLIENTS = assert(lrucache.new(100))

local function client_for(conf)
  local region = conf.region or helpers.getenv("AWS_REGION") or helpers.getenv("AWS_DEFAULT_REGION")
  if not region then
    return nil, "no region: set config.region or AWS_REGION"
  end
  local key = table.concat({ region, conf.endpoint_url or "", conf.sts_endpoint_url or "",
                             conf.assume_role_arn or "", conf.role_session_name or "" }, "|")
  local sm = CLIENTS:get(key)
  if sm then
    return sm
  end

  local aws = AWS({ region = region, credentials = Credentials:new() })
  local credentials = credential_chain(aws, region, conf)
  if conf.assume_role_arn then
    local sts, err = sts_service(aws, region, conf, credentials)
    if not sts then
      return nil, "cannot create the STS client: " .. tostring(err)
    end
    credentials = aws:ChainableTemporaryCredentials({
      params = { RoleArn = conf.assume_role_arn, RoleSessionName = conf.role_session_name },
      sts = sts,
    })
  end

  local err
  sm, err = aws:SecretsManager(endpoint_opts(conf.endpoint_url, {
    region = region,
    credentials = credentials,
    ssl_verify = true,
  }))
  if not sm then
    return nil, "cannot create the Secrets Manager client: " .. tostring(err)
  end
  CLIENTS:set(key, sm)
  return sm
end


local STAGES = { "AWSCURRENT", "AWSPREVIOUS" }

-- answers worth a second try (with a short back-off)
local function retryable(res)
  if res.status >= 500 or res.status == 429 then
    return true
  end
  local code = helpers.error_code(res.body)
  return code == "ThrottlingException" or code == "TooManyRequestsException"
end


local function fetch(conf, resource, version)
  local stage
  if version then
    stage = STAGES[version]
    if not stage then
      return nil, "version must be 1 (AWSCURRENT) or 2 (AWSPREVIOUS)"
    end
  end
  local sm, err = client_for(conf)
  if not sm then
    return nil, err
  end

  local res
  for attempt = 1, 3 do
    -- lua-resty-aws raises on some failures (credentials): keep it an error
    local ok, r, e = pcall(sm.getSecretValue, sm, { SecretId = resource, VersionStage = stage })
    if not ok then
      return nil, "request failed: " .. tostring(r)
    end
    res, err = r, e
    if not res then
      return nil, "request failed: " .. tostring(err)
    end
    if not retryable(res) or attempt == 3 then
      break
    end
    sleep(0.2 * attempt)
  end

  if res.status ~= 200 then
    if helpers.error_code(res.body) == "ResourceNotFoundException" then
      return nil, fmt("%s not found", resource)
    end
    return nil, helpers.status_error("GetSecretValue " .. resource, res.status, res.body)
  end
  local body = res.body
  if type(body) == "string" then
    -- lua-resty-aws decodes only what is labelled JSON
    body = helpers.json(res)
  end
  if type(body) ~= "table" then
    return nil, "GetSecretValue answered no JSON"
  end
  if type(body.SecretString) == "string" then
    return body.SecretString
  end
  if type(body.SecretBinary) == "string" then
    local bytes = decode_base64(body.SecretBinary)
    if not bytes then
      return nil, "SecretBinary is not base64"
    end
    return bytes
  end
  return nil, fmt("%s has no value", resource)
end


return {
  VERSION = "0.1.0",
  get = helpers.strategy("aws", schema, fetch),
}
