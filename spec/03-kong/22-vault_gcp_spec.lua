-- The `gcp` vault strategy in real Kong (2 workers) against the local GCP
-- stand-in of spec/fixtures/standins/standin.py (no real Secret Manager runs
-- here): the service account's RS256 JWT checked with openssl against its
-- public key at the OAuth token endpoint, the metadata server token,
-- Secret Manager `versions/<v>:access` with Google's error bodies. JSON
-- keys, versions, TLS checked against lua_ssl_trusted_certificate, tokens
-- kept per worker and renewed when refused, `kong vault get`, named vaults
-- through /vaults, wrong credentials, a server that is down, not found.
-- Then a node without a key file that finds the metadata server by its
-- default name, metadata.google.internal, in the node and in `kong vault get`.
-- Last, a node outside Google Cloud with workload identity federation: an
-- external account whose subject token the STS exchanges, then impersonating
-- the service account.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local cjson = require "cjson"


local GCP_PORT = 18220
local OTHER_KEY_PORT = 18221   -- a token endpoint that knows another key
local TLS_PORT = 18222
local UNTRUSTED_PORT = 18223   -- TLS with a certificate of an unknown CA
local WIF_PORT = 18224         -- STS, IAM and Secret Manager for federation
local DOWN_PORT = 18229        -- nothing listens there

local PROJECT = "kong-proj"
local EMAIL = "kong-vault@kong-proj.iam.gserviceaccount.com"

local S = vh.remember_secrets({
  first = "gcp-pw-first-3c1d",
  second = "gcp-pw-second-a07e",
  plain = "gcp-plain-secret-5b92",
  -- OIDC tokens of the workload's identity provider (e.g. a Kubernetes
  -- service account): the current one, the next, one the pool does not trust
  subject_one = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.d2lmLW9uZS0z",
  subject_two = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a29uZzprb25nIn0.d2lmLXR3by05",
  subject_bad = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3RoZXI6eCJ9.d2lmLWJhZC0x",
})

local fmt = string.format


describe("vault gcp (stand-in) [#postgres]", function()
  local gcp, dir, sa_json, private_pem

  local function url(port, tls)
    return fmt("%s://127.0.0.1:%d", tls and "https" or "http", port)
  end

  local function cli(reference, vars)
    return vh.kong_vault_get(reference, vh.cli_env(vars))
  end

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-22_gcp"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    local priv, pub = vh.rsa_files(dir, "sa")
    local _, other_pub = vh.rsa_files(dir, "other")
    private_pem = kr.project.read_file(priv)
    sa_json = cjson.encode({
      type = "service_account", project_id = PROJECT, private_key_id = "0123abcd",
      private_key = private_pem, client_email = EMAIL, token_uri = url(GCP_PORT) .. "/token",
    })
    vh.remember_secrets({ private_pem })

    local ca, cert, key = vh.tls_files(dir .. "/tls")
    local _, bad_cert, bad_key = vh.tls_files(dir .. "/untrusted")
    gcp = vh.start_standin("gcp", GCP_PORT, { sa_email = EMAIL, project = PROJECT, sa_public_key = pub })
    vh.start_standin("gcp", OTHER_KEY_PORT, { sa_email = EMAIL, project = PROJECT, sa_public_key = other_pub })
    vh.start_standin("gcp", TLS_PORT, { sa_email = EMAIL, project = PROJECT, sa_public_key = pub, tls = { cert, key } })
    vh.start_standin("gcp", UNTRUSTED_PORT, { sa_email = EMAIL, project = PROJECT, sa_public_key = pub,
                                              tls = { bad_cert, bad_key } })
    for _, base in ipairs({ gcp, url(TLS_PORT, true) }) do
      vh.standin_secret(base, "db-creds", cjson.encode({ user = "app", password = S.first }))
      vh.standin_secret(base, "db-creds", cjson.encode({ user = "app", password = S.second }))
      vh.standin_secret(base, "api-token", S.plain)
    end

    helpers.setenv("GCP_SERVICE_ACCOUNT", sa_json)
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_gcp_project_id = PROJECT,
      vault_gcp_api_url = gcp,
      -- token_url: the key file's token_uri
      lua_ssl_trusted_certificate = ca,
    }))
    helpers.unsetenv("GCP_SERVICE_ACCOUNT")

    vh.put_vaults("gcp", {
      ["my-gcp"] = { api_url = gcp, token_url = gcp .. "/token" },
      ["gcp-tls"] = { api_url = url(TLS_PORT, true), token_url = url(TLS_PORT, true) .. "/token" },
      ["gcp-untrusted"] = { api_url = url(UNTRUSTED_PORT, true), token_url = url(UNTRUSTED_PORT, true) .. "/token" },
      ["gcp-otherkey"] = { api_url = url(OTHER_KEY_PORT), token_url = url(OTHER_KEY_PORT) .. "/token" },
      ["gcp-otherproj"] = { api_url = gcp, token_url = gcp .. "/token", project_id = "not-ours" },
      ["gcp-down"] = { api_url = url(DOWN_PORT), token_url = url(DOWN_PORT) .. "/token" },
    }, { project_id = PROJECT })

    vh.probe_route("/gcp", {
      secret = "{vault://gcp/db-creds/password}",
      other = "{vault://my-gcp/api-token}",
      list = { "{vault://gcp/db-creds/password#1}", "{vault://gcp-tls/db-creds/password}" },
    })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  describe("a plugin field", function()
    it("resolves a JSON key through the KONG_VAULT_GCP_* settings and GCP_SERVICE_ACCOUNT, on both workers", function()
      kr.on_both_workers(function() return kr.proxy("GET", "/gcp") end, function(status, json)
        assert.equals(200, status)
        assert.equals(S.second, json.config.secret)
        assert.equals(S.plain, json.config.other)
      end)
    end)

    it("resolves #1 to the first version", function()
      assert.equals(S.first, vh.probe("/gcp").config.list[1])
    end)

    it("reads over TLS, the certificate checked against lua_ssl_trusted_certificate", function()
      assert.equals(S.second, vh.probe("/gcp").config.list[2])
      local value, err = vh.vault_get("/gcp", "{vault://gcp-untrusted/api-token}")
      assert.is_nil(value)
      assert.matches("gcp: token request for .* failed: ", err)
      -- refused in the handshake: the stand-in never saw an HTTP request
      assert.same({}, vh.hits(url(UNTRUSTED_PORT, true)))
    end)

    it("keeps the access token per worker and gets a new one when it is refused", function()
      vh.assert_token_kept_and_renewed("/gcp", gcp, "gcp-token", "{vault://my-gcp/api-token?ttl=%d}", S.plain)
    end)
  end)

  describe("kong vault get", function()
    it("prints a value through the node's gcp settings, a version and a named vault", function()
      vh.assert_cli_values({ GCP_SERVICE_ACCOUNT = sa_json }, {
        { "gcp/db-creds/password", S.second },
        { "{vault://gcp/db-creds/password#1}", S.first },
        { "{vault://my-gcp/api-token}", S.plain },
      })
    end)

    it("uses the metadata server's token without GCP_SERVICE_ACCOUNT", function()
      local before = vh.hits(gcp)["gcp-metadata"] or 0
      local ok, out, err = cli("gcp/api-token", { KONG_VAULT_GCP_METADATA_URL = gcp })
      assert(ok, err)
      assert.equals(S.plain, out)
      assert.equals(before + 1, vh.hits(gcp)["gcp-metadata"])
    end)

    it("fails clearly for a key file that is not JSON, and for no credentials at all", function()
      local ok, out, err = cli("gcp/api-token", { GCP_SERVICE_ACCOUNT = "not json" })
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("gcp: GCP_SERVICE_ACCOUNT is not a JSON object", err, 1, true)
      ok, out, err = cli("gcp/api-token", { KONG_VAULT_GCP_METADATA_URL = url(DOWN_PORT) })
      assert.is_false(ok)
      assert.matches("gcp: metadata server token request failed: connection refused", err, 1, true)
    end)
  end)

  describe("errors", function()
    local get_err = vh.get_err("/gcp")

    it("a missing secret, version and key, a name Secret Manager cannot hold, '..'", function()
      vh.assert_errors("/gcp", {
        { "{vault://gcp/nope}", "gcp: nope not found" },
        { "{vault://gcp/db-creds/password#7}", "gcp: db-creds#7 not found" },
        { "{vault://gcp/db-creds/nokey}", "subfield nokey not found in JSON secret" },
        { "{vault://gcp/app/db/}", "gcp: invalid secret name" },
        { "{vault://gcp/a/../b/}", "gcp: resource has an empty, '.' or '..' segment" },
      })
    end)

    it("wrong credentials: the token endpoint refuses the signature", function()
      assert.matches(fmt("gcp: token request for %s answered 400 (invalid_grant)", EMAIL),
                     get_err("{vault://gcp-otherkey/api-token}"), 1, true)
      assert.is_true((vh.hits(url(OTHER_KEY_PORT))["gcp-token-denied"] or 0) >= 1)
    end)

    it("a project the account may not read", function()
      assert.matches("gcp: reading api-token answered 403 (PERMISSION_DENIED)",
                     get_err("{vault://gcp-otherproj/api-token}"), 1, true)
    end)

    it("a server that is down", function()
      assert.matches(fmt("gcp: token request for %s failed: connection refused", EMAIL),
                     get_err("{vault://gcp-down/api-token}"), 1, true)
    end)

    it("bad configs through /vaults", function()
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "gcp-bad", name = "gcp",
                                                            config = { api_url = "ftp://x", ttl = -5 } })
      assert.equals(400, status)
      assert.is_string(json.fields.config.api_url)
      assert.matches("between", json.fields.config.ttl, 1, true)
    end)

    it("writes no secret to the error log", function()
      vh.assert_no_secret_in_log({ S.first, S.second, S.plain, private_pem:match("\n([^\n]+)\n") })
    end)
  end)
end)


-- A node without GCP_SERVICE_ACCOUNT and with no metadata_url anywhere asks
-- the metadata server at its default name. Kong's DNS client reads that
-- name from the node's dns_hostsfile, here a copy of the test hosts file
-- that maps it to the metadata address, put on lo for the stand-in: the
-- request never leaves the machine, and without the entry the name would
-- not resolve at all (the resolver is on loopback).
describe("vault gcp (stand-in) at metadata.google.internal [#postgres]", function()
  local at_metadata

  lazy_setup(function()
    local dir = kr.project.tmp .. "/spec-22_gcp_metadata"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    local hosts = dir .. "/hosts"
    local fixture = assert(kr.project.read_file(helpers.test_conf.dns_hostsfile))
    kr.project.write_file(hosts, fixture .. "\n" .. vh.IMDS_ADDRESS .. " metadata.google.internal\n")

    at_metadata = vh.start_standin_at_imds_address("gcp", { project = PROJECT, sa_email = EMAIL })
    vh.standin_secret(at_metadata, "api-token", S.plain)

    helpers.unsetenv("GCP_SERVICE_ACCOUNT")
    helpers.unsetenv("GCE_METADATA_HOST")
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_gcp_project_id = PROJECT,
      vault_gcp_api_url = at_metadata,
      dns_hostsfile = hosts,
      resolver_hosts_file = hosts,   -- the same for Kong's new DNS client
    }))
    vh.probe_route("/gcp-metadata", { secret = "{vault://gcp/api-token}" })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  it("resolves with the metadata server's token, asked for by name", function()
    kr.on_both_workers(function() return kr.proxy("GET", "/gcp-metadata") end, function(status, json)
      assert.equals(200, status)
      assert.equals(S.plain, json.config.secret)
    end)
    local hits = vh.hits(at_metadata)
    assert.is_true((hits["gcp-metadata via metadata.google.internal"] or 0) >= 1)
    assert.equals(hits["gcp-metadata"], hits["gcp-metadata via metadata.google.internal"])
    assert.is_nil(hits["gcp-token"])
  end)

  it("kong vault get finds it by name through the node's hosts file", function()
    local before = vh.hits(at_metadata)["gcp-metadata via metadata.google.internal"] or 0
    local ok, out, err = vh.kong_vault_get("gcp/api-token")
    assert(ok, err)
    assert.equals(S.plain, out)
    assert.equals(before + 1, vh.hits(at_metadata)["gcp-metadata via metadata.google.internal"])

    -- a hosts file without the entry: the name does not resolve (the
    -- resolver is on loopback), and the error says which request failed
    local fixture = helpers.test_conf.dns_hostsfile
    ok, out, err = vh.kong_vault_get("gcp/api-token", vh.cli_env({
      KONG_DNS_HOSTSFILE = fixture, KONG_RESOLVER_HOSTS_FILE = fixture,
    }))
    assert.is_false(ok)
    assert.equals("", out)
    assert.matches("gcp: metadata server token request failed: ", err, 1, true)
    assert.matches("DNS resolution failed", err, 1, true)
    assert.matches("metadata.google.internal", err, 1, true)
    assert.equals(before + 1, vh.hits(at_metadata)["gcp-metadata via metadata.google.internal"])
  end)
end)


-- A node outside Google Cloud reads Secret Manager with workload identity
-- federation: GCP_SERVICE_ACCOUNT holds an external account (no key), whose
-- subject token (a file the platform keeps fresh, or a local URL) Google's
-- STS exchanges for a federated token, which then buys the service
-- account's token from IAM.
describe("vault gcp (stand-in) with workload identity federation [#postgres]", function()
  local AUDIENCE = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/kong/providers/k8s"
  local wif, dir

  local function external_account(source, impersonate)
    return cjson.encode({
      type = "external_account",
      audience = AUDIENCE,
      subject_token_type = "urn:ietf:params:oauth:token-type:jwt",
      token_url = wif .. "/v1/token",
      credential_source = source,
      service_account_impersonation_url = impersonate
        and fmt("%s/v1/projects/-/serviceAccounts/%s:generateAccessToken", wif, impersonate),
    })
  end

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-22_gcp_wif"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    kr.project.write_file(dir .. "/subject-token", S.subject_one .. "\n")
    kr.project.write_file(dir .. "/other-token", S.subject_bad .. "\n")
    kr.project.write_file(dir .. "/trusted", S.subject_one .. "\n")
    wif = vh.start_standin("gcp", WIF_PORT, { sa_email = EMAIL, project = PROJECT, jwt_file = dir .. "/trusted",
                                              wif_audience = AUDIENCE })
    vh.standin_secret(wif, "api-token", S.plain)

    helpers.setenv("GCP_SERVICE_ACCOUNT", external_account({ file = dir .. "/subject-token" }, EMAIL))
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_gcp_project_id = PROJECT,
      vault_gcp_api_url = wif,
    }))
    helpers.unsetenv("GCP_SERVICE_ACCOUNT")
    vh.probe_route("/gcp-wif", { secret = "{vault://gcp/api-token}" })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  it("resolves with the service account's token bought by the federated one, on both workers", function()
    kr.on_both_workers(function() return kr.proxy("GET", "/gcp-wif") end, function(status, json)
      assert.equals(200, status)
      assert.equals(S.plain, json.config.secret)
    end)
    local hits = vh.hits(wif)
    assert.is_true(hits["gcp-sts"] >= 1)
    assert.is_true(hits["gcp-impersonate"] >= 1)
    assert.is_nil(hits["gcp-token"])
    assert.is_nil(hits["gcp-metadata"])
  end)

  it("reads the subject token file again at each exchange, and exchanges again when tokens are refused", function()
    -- from now on only the next subject token is trusted
    kr.project.write_file(dir .. "/subject-token", S.subject_two .. "\n")
    kr.project.write_file(dir .. "/trusted", S.subject_two .. "\n")
    local before = vh.hits(wif)["gcp-sts"]
    vh.assert_token_kept_and_renewed("/gcp-wif", wif, "gcp-impersonate", "{vault://gcp/api-token?ttl=%d}", S.plain)
    assert.is_true(vh.hits(wif)["gcp-sts"] > before)
  end)

  it("kong vault get: a subject token from a URL (JSON), the federated token used as it is", function()
    local before = vh.hits(wif)["gcp-impersonate"]
    vh.assert_cli_values({ GCP_SERVICE_ACCOUNT = external_account({
      url = wif .. "/subject-token",
      headers = { Metadata = "True" },
      format = { type = "json", subject_token_field_name = "access_token" },
    }) }, { { "gcp/api-token", S.plain } })
    assert.equals(before, vh.hits(wif)["gcp-impersonate"])
  end)

  it("kong vault get: clear errors for an untrusted subject token, a source it cannot use, a refused impersonation",
     function()
    for _, case in ipairs({
      { external_account({ file = dir .. "/other-token" }, EMAIL), "gcp: token exchange answered 400 (invalid_grant)" },
      { external_account({ environment_id = "aws1", region_url = "http://169.254.169.254/latest/meta-data" }),
        "gcp: the credential_source has no file or url" },
      { external_account({ file = dir .. "/subject-token" }, "someone-else@kong-proj.iam.gserviceaccount.com"),
        "gcp: service account impersonation answered 403 (PERMISSION_DENIED)" },
      { cjson.encode({ type = "external_account", audience = AUDIENCE }),
        "gcp: GCP_SERVICE_ACCOUNT (external_account) has no audience, subject_token_type or credential_source" },
    }) do
      local ok, out, err = vh.kong_vault_get("gcp/api-token", vh.cli_env({ GCP_SERVICE_ACCOUNT = case[1] }))
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches(case[2], err, 1, true)
    end
  end)

  it("writes no subject token to the error log", function()
    vh.assert_no_secret_in_log({ S.plain, S.subject_one, S.subject_two, S.subject_bad })
  end)
end)
