-- The `conjur` vault strategy in real Kong (2 workers) against the local
-- Conjur stand-in of spec/fixtures/standins/standin.py (no real Conjur runs
-- here): authn with the API key or a Kubernetes service account JWT
-- (authn-jwt; base64 access token), then
-- GET /secrets/<account>/variable/<id>[?version=N], Conjur's error answers.
-- Variable ids with '/', versions, JSON keys, tokens renewed when refused,
-- the api_key encrypted at rest and given as an env reference, `kong vault
-- get`, named vaults through /vaults, wrong credentials, a server that is
-- down, not found.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local cjson = require "cjson"


local CONJUR_PORT = 18260
local DOWN_PORT = 18269        -- nothing listens there

local ACCOUNT = "acme"
local LOGIN = "host/kong/gateway"
local JWT_SERVICE = "kong-k8s"   -- the JWT authenticator's service id

local S = vh.remember_secrets({
  api_key = "3x1q7w8v2k0conjurapikey5s9d",
  v1 = "cj-pw-one-48ad",
  v2 = "cj-pw-two-b1c7",
  nested = "cj-nested-secret-90fe",
  -- Kubernetes service account tokens: the pod's, the kubelet's next one,
  -- one the authenticator does not accept
  jwt_one = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.Y2otb25lLTVh",
  jwt_two = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.Y2otdHdvLTdi",
  jwt_bad = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3RoZXI6eCJ9.Y2otYmFkLTBj",
})



describe("vault conjur (stand-in) [#postgres]", function()
  local conjur, dir

  local function cli(reference, vars)
    return vh.kong_vault_get(reference, vh.cli_env(vars))
  end

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-24_conjur"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    kr.project.write_file(dir .. "/sa-token", S.jwt_one .. "\n")
    kr.project.write_file(dir .. "/other-token", S.jwt_bad .. "\n")
    kr.project.write_file(dir .. "/accepted", S.jwt_one .. "\n")
    conjur = vh.start_standin("conjur", CONJUR_PORT, { account = ACCOUNT, conjur_login = LOGIN,
                                                       conjur_api_key = S.api_key, conjur_jwt_service = JWT_SERVICE,
                                                       jwt_file = dir .. "/accepted" })
    vh.standin_secret(conjur, "db-creds", cjson.encode({ user = "app", password = S.v1 }))
    vh.standin_secret(conjur, "db-creds", cjson.encode({ user = "app", password = S.v2 }))
    vh.standin_secret(conjur, "BotApp/secretVar", S.nested)

    helpers.setenv("KK_CONJUR_API_KEY", S.api_key)
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_conjur_endpoint_url = conjur,
      vault_conjur_account = ACCOUNT,
      vault_conjur_login = LOGIN,
      vault_conjur_api_key = S.api_key,
    }))
    helpers.unsetenv("KK_CONJUR_API_KEY")
    -- the keyring encrypts the api_key of vaults rows with the node's key
    kr.wait_active_key()

    vh.put_vaults("conjur", {
      ["my-conjur"] = { api_key = S.api_key },
      ["cj-envref"] = { api_key = "{vault://env/kk-conjur-api-key}" },
      ["cj-wrongkey"] = { api_key = "not-the-api-key" },
      ["cj-otheraccount"] = { api_key = S.api_key, account = "other" },
      ["cj-down"] = { api_key = S.api_key, endpoint_url = "http://127.0.0.1:" .. DOWN_PORT },
    }, { endpoint_url = conjur, account = ACCOUNT, login = LOGIN })
    vh.put_vaults("conjur", {
      -- the host named by a claim of the JWT, or in the URL
      ["cj-jwt"] = {},
      ["cj-jwt-host"] = { login = LOGIN },
      ["cj-jwt-other"] = { jwt_token_file = dir .. "/other-token" },
      ["cj-jwt-nofile"] = { jwt_token_file = dir .. "/none" },
    }, { endpoint_url = conjur, account = ACCOUNT, auth_method = "jwt", authn_jwt_service_id = JWT_SERVICE,
         jwt_token_file = dir .. "/sa-token" })

    vh.probe_route("/cj", {
      secret = "{vault://conjur/db-creds/password}",
      other = "{vault://my-conjur/BotApp/secretVar/}",
      list = { "{vault://conjur/db-creds/password#1}", "{vault://my-conjur/BotApp%2FsecretVar}",
               "{vault://cj-envref/db-creds/password}" },
    })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  describe("a plugin field", function()
    it("resolves a JSON key through the KONG_VAULT_CONJUR_* settings, on both workers", function()
      kr.on_both_workers(function() return kr.proxy("GET", "/cj") end, function(status, json)
        assert.equals(200, status)
        assert.equals(S.v2, json.config.secret)
      end)
    end)

    it("resolves a variable id with '/' (trailing slash or %2F) through a named vault", function()
      local json = vh.probe("/cj")
      assert.equals(S.nested, json.config.other)
      assert.equals(S.nested, json.config.list[2])
    end)

    it("resolves #1 to the first version", function()
      assert.equals(S.v1, vh.probe("/cj").config.list[1])
    end)

    it("takes the api_key from an env reference in the vault's config", function()
      assert.equals(S.v2, vh.probe("/cj").config.list[3])
    end)

    it("stores the api_key of a named vault encrypted", function()
      local out = kr.psql("SELECT config->>'api_key' FROM sm_vaults WHERE prefix = 'my-conjur'")
      assert.is_nil(out:find(S.api_key, 1, true))
      assert.matches("$ke$", out, 1, true)
    end)

    it("authenticates with a Kubernetes service account JWT (authn-jwt), the host in a claim or in the URL",
       function()
      assert.equals(S.nested, (vh.vault_get("/cj", "{vault://cj-jwt/BotApp/secretVar/}")))
      assert.equals(S.nested, (vh.vault_get("/cj", "{vault://cj-jwt-host/BotApp/secretVar/}")))
      assert.is_true((vh.hits(conjur)["conjur-authn-jwt"] or 0) >= 2)
    end)

    it("reads the JWT file again at each authn-jwt login, as the kubelet rotates it", function()
      -- from now on only the next JWT is accepted: a login must read it
      kr.project.write_file(dir .. "/sa-token", S.jwt_two .. "\n")
      kr.project.write_file(dir .. "/accepted", S.jwt_two .. "\n")
      vh.assert_token_kept_and_renewed("/cj", conjur, "conjur-authn-jwt", "{vault://cj-jwt/BotApp/secretVar/?ttl=%d}",
                                       S.nested)
    end)

    it("keeps the access token per worker and authenticates again when it is refused", function()
      vh.assert_token_kept_and_renewed("/cj", conjur, "conjur-authn", "{vault://conjur/BotApp/secretVar/?ttl=%d}",
                                       S.nested)
    end)
  end)

  describe("kong vault get", function()
    it("prints a value through the node's conjur settings and a version", function()
      vh.assert_cli_values({}, {
        { "conjur/db-creds/password", S.v2 },
        { "{vault://conjur/db-creds/password#1}", S.v1 },
        { "{vault://conjur/BotApp/secretVar/}", S.nested },
      })
    end)

    it("cannot use a named vault's stored api_key: the CLI holds no keyring key (docs/vaults.md)", function()
      -- the node resolves it (above); the CLI says why it cannot
      local before = vh.hits(conjur)["conjur-authn-denied"] or 0
      local ok, out, err = cli("{vault://my-conjur/BotApp/secretVar/}")
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("conjur: api_key is encrypted by the keyring and cannot be decrypted here", err, 1, true)
      assert.equals(before, vh.hits(conjur)["conjur-authn-denied"] or 0)
    end)

    it("fails clearly with a wrong api key", function()
      local ok, out, err = cli("conjur/db-creds/password", { KONG_VAULT_CONJUR_API_KEY = "wrong" })
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("conjur: authentication of host/kong/gateway answered 401", err, 1, true)
    end)
  end)

  describe("errors", function()
    local get_err = vh.get_err("/cj")

    it("a missing variable, version and key, '..' in a variable id", function()
      vh.assert_errors("/cj", {
        { "{vault://conjur/nope}", "conjur: nope not found" },
        { "{vault://conjur/db-creds/password#9}", "conjur: db-creds#9 not found" },
        { "{vault://conjur/db-creds/nokey}", "subfield nokey not found in JSON secret" },
        { "{vault://conjur/BotApp/../db-creds/}", "conjur: resource has an empty, '.' or '..' segment" },
      })
    end)

    it("wrong credentials: a wrong api key and another account", function()
      assert.matches("conjur: authentication of host/kong/gateway answered 401",
                     get_err("{vault://cj-wrongkey/db-creds/password}"), 1, true)
      assert.matches("conjur: authentication of host/kong/gateway answered 401",
                     get_err("{vault://cj-otheraccount/db-creds/password}"), 1, true)
      assert.is_true((vh.hits(conjur)["conjur-authn-denied"] or 0) >= 2)
    end)

    it("a JWT the authenticator refuses, a JWT file that cannot be read", function()
      vh.assert_errors("/cj", {
        { "{vault://cj-jwt-other/db-creds/password}", "conjur: jwt authentication answered 401" },
        { "{vault://cj-jwt-nofile/db-creds/password}", "conjur: cannot read jwt_token_file: " .. dir .. "/none" },
      })
      assert.is_true((vh.hits(conjur)["conjur-authn-jwt-denied"] or 0) >= 1)
    end)

    it("a server that is down", function()
      assert.matches("conjur: authentication of host/kong/gateway failed: connection refused",
                     get_err("{vault://cj-down/db-creds/password}"), 1, true)
    end)

    it("bad configs through /vaults", function()
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "cj-bad", name = "conjur",
                                                            config = { auth_method = "oidc", endpoint_url = "conjur",
                                                                       authn_jwt_service_id = "a/b" } })
      assert.equals(400, status)
      assert.matches("expected one of: api_key, jwt", json.fields.config.auth_method, 1, true)
      assert.is_string(json.fields.config.endpoint_url)
      assert.is_string(json.fields.config.authn_jwt_service_id)
    end)

    it("writes no secret to the error log", function()
      vh.assert_no_secret_in_log({ S.api_key, S.v1, S.v2, S.nested, S.jwt_one, S.jwt_two, S.jwt_bad })
    end)
  end)
end)
