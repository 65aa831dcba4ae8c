-- The `azure` vault strategy in real Kong (2 workers) against the local
-- Azure stand-in of spec/fixtures/standins/standin.py (no real Key Vault
-- runs here): Entra ID client credentials (v2.0 token endpoint) with a
-- secret or a workload identity's federated token, the managed identity
-- endpoints (IMDS, App Service), Key Vault secrets with opaque version ids
-- and paged version lists, Azure's error bodies. JSON keys, `#N` versions,
-- credentials_prefix, tokens renewed when refused or expired, `kong vault
-- get`, named vaults through /vaults, wrong credentials, a server that is
-- down, not found.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local cjson = require "cjson"


local AZ_PORT = 18230
local FOREIGN_PORT = 18231     -- its nextLinks point at another host
local APP_SERVICE_PORT = 18232 -- a vault and App Service's identity endpoint
local DOWN_PORT = 18239        -- nothing listens there

local TENANT = "0f1e2d3c-0000-4000-8000-00000000abcd"
local CLIENT_ID = "kong-gateway-app"
local CLIENT_SECRET = "az-client-secret-9d41"
local APP_SERVICE_TTL = 6      -- s, lifetime of the App Service tokens

-- bytes Key Vault holds base64-encoded (its secrets are text)
local BINARY = "\0\255 az key bytes \1\128"

local S = vh.remember_secrets({
  v1 = "az-pw-one-71e0",
  v2 = "az-pw-two-c3a8",
  v3 = "az-pw-three-06bf",
  plain = "az-plain-secret-e5d4",
  wrong = "az-wrong-client-secret-1f2a",
  identity_header = "az-identity-header-5b7c",
  -- Kubernetes service account tokens (projected, as AKS workload identity
  -- mounts them): the first, the kubelet's next one, one Entra ID refuses
  sa_one = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.b25lLTNmOWE",
  sa_two = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.dHdvLTg4YzE",
  sa_bad = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3RoZXI6eCJ9.YmFkLTBkNDI",
})



describe("vault azure (stand-in) [#postgres]", function()
  local az, foreign, at_imds, app_service, dir

  local function cli(reference, vars)
    return vh.kong_vault_get(reference, vh.cli_env(vars))
  end

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-23_azure"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    kr.project.write_file(dir .. "/sa-token", S.sa_one .. "\n")
    kr.project.write_file(dir .. "/sa-token-other", S.sa_bad .. "\n")
    -- the service account tokens the application's federated credential trusts
    kr.project.write_file(dir .. "/trusted", S.sa_one .. "\n")

    local opts = { tenant = TENANT, client_id = CLIENT_ID, client_secret = CLIENT_SECRET, page_size = 2,
                   jwt_file = dir .. "/trusted" }
    az = vh.start_standin("azure", AZ_PORT, opts)
    opts.next_link_base = "http://127.0.0.1:" .. DOWN_PORT
    foreign = vh.start_standin("azure", FOREIGN_PORT, opts)
    opts.next_link_base = nil
    app_service = vh.start_standin("azure", APP_SERVICE_PORT, { tenant = TENANT, client_id = CLIENT_ID,
                                                                identity_header = S.identity_header,
                                                                app_service_ttl = APP_SERVICE_TTL })
    vh.standin_secret(app_service, "api-token", S.plain)
    -- Key Vault and the managed identity endpoint at Azure's IMDS address:
    -- a vault without identity_endpoint asks there
    at_imds = vh.start_standin_at_imds_address("azure", opts)
    for _, base in ipairs({ az, foreign, at_imds }) do
      for _, pw in ipairs({ S.v1, S.v2, S.v3 }) do
        vh.standin_secret(base, "db-creds", cjson.encode({ user = "app", password = pw }))
      end
      vh.standin_secret(base, "api-token", S.plain)
    end
    vh.standin_secret(az, "tls-key", ngx.encode_base64(BINARY))

    -- the node runs where App Service (or Container Apps) gives it a
    -- managed identity, and in a pod with a workload identity
    local env = {
      AZURE_CLIENT_SECRET = CLIENT_SECRET,
      KONGAZ_CLIENT_SECRET = S.wrong,
      IDENTITY_ENDPOINT = app_service .. "/msi/token",
      IDENTITY_HEADER = S.identity_header,
      AKSWI_FEDERATED_TOKEN_FILE = dir .. "/sa-token",
      AKSOTHER_FEDERATED_TOKEN_FILE = dir .. "/sa-token-other",
    }
    for k, v in pairs(env) do
      helpers.setenv(k, v)
    end
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_azure_vault_uri = az,
      vault_azure_tenant_id = TENANT,
      vault_azure_client_id = CLIENT_ID,
      vault_azure_authority_host = az,
      vault_azure_location = "westeurope",
    }))
    for k in pairs(env) do
      helpers.unsetenv(k)
    end

    vh.put_vaults("azure", {
      -- its own prefix for the credentials: no NOPE_CLIENT_SECRET, so the
      -- managed identity
      -- an identity_endpoint in the config wins over App Service's
      ["az-msi"] = { vault_uri = az, credentials_prefix = "NOPE", identity_endpoint = az },
      ["az-imds"] = { vault_uri = at_imds, credentials_prefix = "NOPE" },
      ["az-app-service"] = { vault_uri = app_service, credentials_prefix = "NOPE" },
      ["az-wi"] = { vault_uri = az, credentials_prefix = "AKSWI", client_id = CLIENT_ID, tenant_id = TENANT,
                    authority_host = az },
      ["az-wi-other"] = { vault_uri = az, credentials_prefix = "AKSOTHER", client_id = CLIENT_ID,
                          tenant_id = TENANT, authority_host = az },
      ["az-wrongsecret"] = { vault_uri = az, credentials_prefix = "KONGAZ", client_id = CLIENT_ID,
                             tenant_id = TENANT, authority_host = az },
      ["az-b64"] = { vault_uri = az, tenant_id = TENANT, client_id = CLIENT_ID, authority_host = az,
                     base64_decode = true },
      ["az-foreign"] = { vault_uri = foreign, tenant_id = TENANT, client_id = CLIENT_ID, authority_host = foreign },
      ["az-down"] = { vault_uri = "http://127.0.0.1:" .. DOWN_PORT, tenant_id = TENANT, client_id = CLIENT_ID,
                      authority_host = az },
    })

    vh.probe_route("/az", {
      secret = "{vault://azure/db-creds/password}",
      other = "{vault://az-msi/api-token}",
      list = { "{vault://azure/db-creds/password#1}", "{vault://azure/db-creds/password#2}",
               "{vault://az-msi/db-creds/password#3}" },
    })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  describe("a plugin field", function()
    it("resolves a JSON key with client credentials from the KONG_VAULT_AZURE_* settings and AZURE_CLIENT_SECRET, on both workers", function()
      kr.on_both_workers(function() return kr.proxy("GET", "/az") end, function(status, json)
        assert.equals(200, status)
        assert.equals(S.v3, json.config.secret)
      end)
      assert.is_true((vh.hits(az)["azure-token"] or 0) >= 1)
    end)

    it("resolves through a named vault with a managed identity token from its identity_endpoint", function()
      assert.equals(S.plain, vh.probe("/az").config.other)
      assert.is_true((vh.hits(az)["azure-msi"] or 0) >= 1)
      -- not from App Service's endpoint, although the node has one
      assert.is_nil(vh.hits(app_service)["azure-app-service"])
    end)

    it("gets a managed identity token from App Service's IDENTITY_ENDPOINT with its IDENTITY_HEADER", function()
      assert.equals(S.plain, (vh.vault_get("/az", "{vault://az-app-service/api-token}")))
      assert.is_true((vh.hits(app_service)["azure-app-service"] or 0) >= 1)
      vh.assert_token_kept_and_renewed("/az", app_service, "azure-app-service",
                                       "{vault://az-app-service/api-token?ttl=%d}", S.plain)
    end)

    it("renews an App Service token before its expires_on (App Service gives no expires_in)", function()
      local n = 0
      local function lookup()
        n = n + 1
        return kr.proxy("GET", "/az?get=" .. ngx.escape_uri("{vault://az-app-service/api-token?ttl=" .. 500 + n .. "}"))
      end
      local function resolved(status, json)
        assert.equals(200, status)
        assert.equals(S.plain, json.get.value)
      end
      kr.on_both_workers(lookup, resolved)   -- each worker holds a token now
      ngx.sleep(APP_SERVICE_TTL + 1)          -- and the stand-in has expired them all
      local before = vh.hits(app_service)
      kr.on_both_workers(lookup, resolved)
      local after = vh.hits(app_service)
      -- each worker dropped its token in time and logged in again, without
      -- sending the expired one first
      assert.equals(before["azure-refused"], after["azure-refused"])
      assert.equals(before["azure-app-service"] + 2, after["azure-app-service"])
    end)

    it("logs in with a workload identity: the service account token of <prefix>_FEDERATED_TOKEN_FILE", function()
      assert.equals(S.plain, (vh.vault_get("/az", "{vault://az-wi/api-token}")))
      assert.is_true((vh.hits(az)["azure-token-wi"] or 0) >= 1)
    end)

    it("reads the federated token file again at each login, as the kubelet rotates it", function()
      -- from now on only the next token is trusted: a login must read it
      kr.project.write_file(dir .. "/sa-token", S.sa_two .. "\n")
      kr.project.write_file(dir .. "/trusted", S.sa_two .. "\n")
      vh.assert_token_kept_and_renewed("/az", az, "azure-token-wi", "{vault://az-wi/api-token?ttl=%d}", S.plain)
    end)

    it("decodes a base64 secret with base64_decode", function()
      local value, err = vh.vault_get("/az", "{vault://az-b64/tls-key}")
      assert.is_nil(err)
      assert.equals(ngx.encode_base64(BINARY), ngx.encode_base64(value))
    end)

    it("resolves #N to the N-th version by creation time, through the paged version list", function()
      local list = vh.probe("/az").config.list
      assert.same({ S.v1, S.v2, S.v3 }, list)
      -- three versions at two per page: every #N lookup read two pages
      assert.is_true(vh.hits(az)["azure-versions"] >= 6)
    end)

    it("keeps the access token per worker and gets a new one when the vault refuses it", function()
      vh.assert_token_kept_and_renewed("/az", az, "azure-token", "{vault://azure/api-token?ttl=%d}", S.plain)
    end)
  end)

  describe("kong vault get", function()
    it("prints a value through the node's azure settings, a version and a named vault", function()
      vh.assert_cli_values({ AZURE_CLIENT_SECRET = CLIENT_SECRET }, {
        { "azure/db-creds/password", S.v3 },
        { "{vault://azure/db-creds/password#2}", S.v2 },
      })
      vh.assert_cli_values({}, { { "{vault://az-msi/api-token}", S.plain } })
    end)

    it("gets a managed identity token from 169.254.169.254 when nothing else is set", function()
      -- the CLI runs without App Service's variables
      vh.assert_cli_values({}, { { "{vault://az-imds/api-token}", S.plain } })
      assert.equals(1, vh.hits(at_imds)["azure-msi"])
    end)

    it("logs in with AKS workload identity's AZURE_FEDERATED_TOKEN_FILE", function()
      local before = vh.hits(az)["azure-token-wi"] or 0
      vh.assert_cli_values({ AZURE_FEDERATED_TOKEN_FILE = dir .. "/sa-token" }, { { "azure/api-token", S.plain } })
      assert.equals(before + 1, vh.hits(az)["azure-token-wi"])
    end)

    it("fails clearly with a federated token file it cannot read, or a wrong App Service header", function()
      local ok, out, err = cli("{vault://az-wi/api-token}", { AKSWI_FEDERATED_TOKEN_FILE = dir .. "/none" })
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("azure: cannot read the federated token file: " .. dir .. "/none", err, 1, true)
      kr.project.write_file(dir .. "/empty", "\n")
      ok, out, err = cli("{vault://az-wi/api-token}", { AKSWI_FEDERATED_TOKEN_FILE = dir .. "/empty" })
      assert.is_false(ok)
      assert.matches("azure: the federated token file " .. dir .. "/empty is empty", err, 1, true)
      ok, out, err = cli("{vault://az-msi/api-token}", { NOPE_FEDERATED_TOKEN_FILE = dir .. "/sa-token" })
      assert.is_false(ok)
      assert.matches("azure: NOPE_FEDERATED_TOKEN_FILE is set but client_id or tenant_id is missing", err, 1, true)
      ok, out, err = cli("{vault://az-app-service/api-token}", { IDENTITY_ENDPOINT = app_service .. "/msi/token",
                                                                  IDENTITY_HEADER = "not-the-header" })
      assert.is_false(ok)
      assert.matches("azure: App Service managed identity token request answered 401", err, 1, true)
      assert.equals(1, vh.hits(app_service)["azure-app-service-denied"])
    end)

    it("fails clearly without client_id and without any credentials", function()
      -- az-msi's credentials_prefix is NOPE, its config has no client_id
      local ok, out, err = cli("{vault://az-msi/api-token}", { NOPE_CLIENT_SECRET = "x" })
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("azure: NOPE_CLIENT_SECRET is set but client_id or tenant_id is missing", err, 1, true)
      -- no secret: the managed identity endpoint, down here
      ok, out, err = cli("azure/api-token", { KONG_VAULT_AZURE_IDENTITY_ENDPOINT = "http://127.0.0.1:" .. DOWN_PORT })
      assert.is_false(ok)
      assert.matches("azure: managed identity token request failed: connection refused", err, 1, true)
    end)
  end)

  describe("errors", function()
    local get_err = vh.get_err("/az")

    it("a missing secret, version and key, a name Key Vault cannot hold", function()
      vh.assert_errors("/az", {
        { "{vault://azure/nope}", "azure: nope not found" },
        { "{vault://azure/nope#1}", "azure: nope not found" },
        { "{vault://azure/db-creds/password#4}", "azure: db-creds#4 not found (3 versions)" },
        { "{vault://azure/db-creds/nokey}", "subfield nokey not found in JSON secret" },
        { "{vault://azure/db_creds}", "azure: invalid secret name" },
        { "{vault://azure/app/db/}", "azure: invalid secret name" },
      })
    end)

    it("wrong credentials (the secret of credentials_prefix KONGAZ)", function()
      assert.matches("azure: client credentials token request answered 401 (invalid_client)",
                     get_err("{vault://az-wrongsecret/api-token}"), 1, true)
      assert.is_true((vh.hits(az)["azure-token-denied"] or 0) >= 1)
    end)

    it("a service account token the federated credential does not trust", function()
      assert.matches("azure: workload identity token request answered 400 (invalid_client)",
                     get_err("{vault://az-wi-other/api-token}"), 1, true)
      assert.is_true((vh.hits(az)["azure-token-wi-denied"] or 0) >= 1)
    end)

    it("a version list linking to another host: the token is not sent there", function()
      assert.matches("azure: the version list of db-creds links to another host",
                     get_err("{vault://az-foreign/db-creds/password#1}"), 1, true)
      -- the current version needs no list
      assert.equals(S.plain, (vh.vault_get("/az", "{vault://az-foreign/api-token}")))
    end)

    it("a secret that is not base64 in a vault with base64_decode", function()
      assert.matches("azure: api-token is not base64 (base64_decode is on)", get_err("{vault://az-b64/api-token}"),
                     1, true)
    end)

    it("a server that is down", function()
      assert.matches("azure: reading api-token failed: connection refused",
                     get_err("{vault://az-down/api-token}"), 1, true)
    end)

    it("bad configs through /vaults", function()
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "az-bad", name = "azure",
                                                            config = { type = "keys", vault_uri = "x" } })
      assert.equals(400, status)
      assert.matches("expected one of: secrets", json.fields.config.type, 1, true)
      assert.is_string(json.fields.config.vault_uri)
    end)

    it("writes no secret to the error log", function()
      vh.assert_no_secret_in_log({ S.v1, S.v2, S.v3, S.plain, CLIENT_SECRET, S.wrong, S.identity_header,
                                   S.sa_one, S.sa_two, S.sa_bad })
    end)
  end)
end)
