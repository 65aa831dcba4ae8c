-- Keyring settings from `KONG_KEYRING_*` environment variables
-- (docs/admin-api.md, "Configuration").
--
-- Kong OSS drops kong.conf keys it does not know, so the plugin reads its own
-- variables once, in `init` (the master still has its full environment), and
-- validates them: a bad value stops start-up with a message naming the option.
-- Secrets (private keys, the Vault token, the cluster secret, inline PEMs) are
-- kept only in the returned table and never logged.

local keyring = require "kong.keyring"


local type = type
local tonumber = tonumber
local tostring = tostring
local io_open = io.open
local os_getenv = os.getenv
local fmt = string.format


local _M = {}


-- option -> { default, kind[, allowed values] }
local OPTIONS = {
  keyring_enabled                   = { false, "boolean" },
  keyring_strategy                  = { "cluster", "enum", { cluster = true, vault = true } },
  keyring_public_key                = { nil, "public_key" },
  keyring_private_key               = { nil, "private_key" },
  keyring_recovery_public_key       = { nil, "public_key" },
  keyring_blob_path                 = { nil, "path" },
  keyring_vault_host                = { nil, "url" },
  keyring_vault_mount               = { nil, "string" },
  keyring_vault_path                = { nil, "string" },
  keyring_vault_token               = { nil, "string" },
  keyring_vault_auth_method         = { "token", "enum", { token = true, kubernetes = true } },
  keyring_vault_kube_role           = { "default", "string" },
  keyring_vault_kube_api_token_file = { "/run/secrets/kubernetes.io/serviceaccount/token", "path" },
  keyring_encrypt_license           = { false, "boolean" },
  keyring_write_format              = { "v2", "enum", { v1 = true, v2 = true } },
  keyring_wait_ms                   = { 100, "milliseconds" },
  keyring_accept_legacy             = { true, "boolean" },
  keyring_cluster_secret            = { nil, "string" },
  db_update_frequency               = { 5, "seconds" },
}

_M.OPTIONS = OPTIONS


local BOOLEANS = { on = true, ["true"] = true, off = false, ["false"] = false }


-- A path (absolute), inline PEM, or base64 of the PEM (docs/formats.md,
-- "RSA keys"): base64 of "-----BEGIN" starts with "LS0t", so a leading '/'
-- can only be a path.
local function read_key_text(value)
  if value:sub(1, 1) ~= "/" then
    return value
  end
  local f, err = io_open(value, "rb")
  if not f then
    return nil, "cannot read key file: " .. tostring(err)
  end
  local text = f:read("*a")
  f:close()
  return text
end


local function parse_key(check)
  return function(v)
    local text, err = read_key_text(v)
    if not text then
      return nil, err
    end
    local _, bad = check(text)
    if bad then
      return nil, bad
    end
    return text
  end
end


local parsers = {
  boolean = function(v)
    local b = BOOLEANS[v:lower()]
    if b == nil then
      return nil, "expected on or off"
    end
    return b
  end,

  enum = function(v, allowed)
    if not allowed[v] then
      local names = {}
      for name in pairs(allowed) do
        names[#names + 1] = name
      end
      table.sort(names)
      return nil, "expected one of " .. table.concat(names, ", ")
    end
    return v
  end,

  string = function(v)
    return v
  end,

  path = function(v)
    if v:sub(1, 1) ~= "/" then
      return nil, "expected an absolute path"
    end
    return v
  end,

  url = function(v)
    if not v:match("^https?://[%w%.%-]+:%d+/?$") and not v:match("^https?://[%w%.%-]+/?$") then
      return nil, "expected scheme://host:port"
    end
    return (v:gsub("/$", ""))
  end,

  milliseconds = function(v)
    local n = tonumber(v)
    if not n or n < 0 or n > 60000 or n % 1 ~= 0 then
      return nil, "expected an integer number of milliseconds between 0 and 60000"
    end
    return n
  end,

  seconds = function(v)
    local n = tonumber(v)
    if not n or n <= 0 or n > 3600 then
      return nil, "expected a number of seconds above 0"
    end
    return n
  end,

  public_key = parse_key(keyring.public_key_id),

  private_key = parse_key(keyring.private_key_id),
}


--- Reads and validates every option.
-- @tparam[opt] function getenv lookup used instead of os.getenv (tests)
-- @return the settings table, or nil and an error naming the option
function _M.load(getenv)
  getenv = getenv or os_getenv
  local conf = { explicit = {} }

  for name, spec in pairs(OPTIONS) do
    local raw = getenv("KONG_" .. name:upper())
    if raw == nil or raw == "" then
      conf[name] = spec[1]

    else
      local value, err = parsers[spec[2]](raw, spec[3])
      if err then
        -- never echo the value: it may be a key or a token
        return nil, fmt("invalid %s (KONG_%s): %s", name, name:upper(), err)
      end
      conf[name] = value
      conf.explicit[name] = true
    end
  end

  if conf.keyring_enabled and conf.keyring_strategy == "vault" then
    for _, name in ipairs({ "keyring_vault_host", "keyring_vault_mount", "keyring_vault_path" }) do
      if conf[name] == nil then
        return nil, fmt("invalid %s (KONG_%s): required with keyring_strategy = vault", name, name:upper())
      end
    end
  end

  return conf
end


--- A copy fit for logs: secrets and key material replaced by "<redacted>".
function _M.redacted(conf)
  local out = {}
  for name, value in pairs(conf) do
    if name ~= "explicit" then
      local kind = OPTIONS[name] and OPTIONS[name][2]
      local secret = kind == "private_key" or kind == "public_key"
                     or name == "keyring_vault_token" or name == "keyring_cluster_secret"
      out[name] = (secret and value ~= nil) and "<redacted>" or tostring(value)
    end
  end
  return out
end


return _M
