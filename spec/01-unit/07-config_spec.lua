local helpers = require "helpers"
local config = require "kong.keyring.config"


describe("keyring (configuration from KONG_KEYRING_*)", function()
  local priv, pub, dir

  local function load(env)
    return config.load(function(name) return env[name] end)
  end

  lazy_setup(function()
    assert(require("kong.keyring").init())
    priv, pub = helpers.rsa_pair(2048)
    dir = helpers.tmp .. "/config-spec"
    os.execute("mkdir -p " .. dir)
    helpers.write_file(dir .. "/key.pem", priv)
    helpers.write_file(dir .. "/cert.pem", pub)
  end)

  it("gives the documented defaults when nothing is set", function()
    local conf = assert(load({}))
    assert.is_false(conf.keyring_enabled)
    assert.equals("cluster", conf.keyring_strategy)
    assert.equals("v2", conf.keyring_write_format)
    assert.equals(100, conf.keyring_wait_ms)
    assert.is_true(conf.keyring_accept_legacy)
    assert.equals(5, conf.db_update_frequency)
    assert.equals("token", conf.keyring_vault_auth_method)
    assert.equals("default", conf.keyring_vault_kube_role)
    assert.is_nil(conf.keyring_public_key)
    assert.same({}, conf.explicit)
  end)

  it("reads on/off/true/false in any case", function()
    assert.is_true(assert(load({ KONG_KEYRING_ENABLED = "ON" })).keyring_enabled)
    assert.is_true(assert(load({ KONG_KEYRING_ENABLED = "true" })).keyring_enabled)
    assert.is_false(assert(load({ KONG_KEYRING_ACCEPT_LEGACY = "off" })).keyring_accept_legacy)
  end)

  it("accepts RSA keys as a path, inline PEM and base64 of the PEM", function()
    for _, value in ipairs({ dir .. "/cert.pem", pub, helpers.b64_encode(pub) }) do
      local conf = assert(load({ KONG_KEYRING_PUBLIC_KEY = value, KONG_KEYRING_PRIVATE_KEY = dir .. "/key.pem" }))
      assert.equals(require("kong.keyring").public_key_id(pub),
                    require("kong.keyring").public_key_id(conf.keyring_public_key))
      assert.equals(priv, conf.keyring_private_key)
    end
  end)

  local BAD = {
    { "KONG_KEYRING_ENABLED", "maybe", "invalid keyring_enabled (KONG_KEYRING_ENABLED): expected on or off" },
    { "KONG_KEYRING_STRATEGY", "local", "invalid keyring_strategy (KONG_KEYRING_STRATEGY): expected one of cluster, vault" },
    { "KONG_KEYRING_WRITE_FORMAT", "v3", "invalid keyring_write_format (KONG_KEYRING_WRITE_FORMAT): expected one of v1, v2" },
    { "KONG_KEYRING_WAIT_MS", "-1", "invalid keyring_wait_ms (KONG_KEYRING_WAIT_MS): expected an integer number of milliseconds between 0 and 60000" },
    { "KONG_KEYRING_WAIT_MS", "1.5", "invalid keyring_wait_ms (KONG_KEYRING_WAIT_MS): expected an integer number of milliseconds between 0 and 60000" },
    { "KONG_DB_UPDATE_FREQUENCY", "0", "invalid db_update_frequency (KONG_DB_UPDATE_FREQUENCY): expected a number of seconds above 0" },
    { "KONG_KEYRING_VAULT_HOST", "vault:8200", "invalid keyring_vault_host (KONG_KEYRING_VAULT_HOST): expected scheme://host:port" },
    { "KONG_KEYRING_BLOB_PATH", "relative/blob", "invalid keyring_blob_path (KONG_KEYRING_BLOB_PATH): expected an absolute path" },
    { "KONG_KEYRING_PRIVATE_KEY", "/does/not/exist.pem", "invalid keyring_private_key (KONG_KEYRING_PRIVATE_KEY): cannot read key file: /does/not/exist.pem: No such file or directory" },
  }

  for _, case in ipairs(BAD) do
    it("stops with a message naming the option for " .. case[1] .. "=" .. case[2], function()
      local conf, err = load({ [case[1]] = case[2] })
      assert.is_nil(conf)
      assert.equals(case[3], err)
    end)
  end

  it("refuses a public key given as the private key, naming the option", function()
    local conf, err = load({ KONG_KEYRING_PRIVATE_KEY = dir .. "/cert.pem" })
    assert.is_nil(conf)
    assert.equals("invalid keyring_private_key (KONG_KEYRING_PRIVATE_KEY): expected an RSA private key, got a public key", err)
  end)

  it("refuses a private key given as the recovery public key", function()
    local conf, err = load({ KONG_KEYRING_RECOVERY_PUBLIC_KEY = priv })
    assert.is_nil(conf)
    assert.equals("invalid keyring_recovery_public_key (KONG_KEYRING_RECOVERY_PUBLIC_KEY): expected an RSA public key, got a private key", err)
  end)

  it("refuses a 1024-bit key", function()
    local _, small = helpers.rsa_pair(1024)
    local conf, err = load({ KONG_KEYRING_PUBLIC_KEY = small })
    assert.is_nil(conf)
    assert.equals("invalid keyring_public_key (KONG_KEYRING_PUBLIC_KEY): RSA key too small (1024 bits, at least 2048 required)", err)
  end)

  it("requires the Vault location with keyring_strategy = vault", function()
    local conf, err = load({ KONG_KEYRING_ENABLED = "on", KONG_KEYRING_STRATEGY = "vault",
                             KONG_KEYRING_VAULT_MOUNT = "secret", KONG_KEYRING_VAULT_PATH = "kong" })
    assert.is_nil(conf)
    assert.equals("invalid keyring_vault_host (KONG_KEYRING_VAULT_HOST): required with keyring_strategy = vault", err)
  end)

  it("never echoes a bad value in its error (it may be a secret)", function()
    local _, err = load({ KONG_KEYRING_PRIVATE_KEY = "not-a-key-s3cr3t" })
    assert.is_nil(err:find("s3cr3t", 1, true))
  end)

  it("redacts keys, the Vault token and the cluster secret for logs", function()
    local conf = assert(load({ KONG_KEYRING_PRIVATE_KEY = priv, KONG_KEYRING_VAULT_TOKEN = "hvs.tok",
                               KONG_KEYRING_CLUSTER_SECRET = "cs", KONG_KEYRING_WAIT_MS = "200" }))
    local shown = config.redacted(conf)
    assert.equals("<redacted>", shown.keyring_private_key)
    assert.equals("<redacted>", shown.keyring_vault_token)
    assert.equals("<redacted>", shown.keyring_cluster_secret)
    assert.equals("200", shown.keyring_wait_ms)
  end)
end)
