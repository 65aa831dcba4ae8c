-- The `hcv` vault strategy in real Kong (2 workers) against a real OpenBao
-- dev server: KV v1 and v2, versions, token / AppRole (plain and
-- response-wrapped secret id) / Kubernetes auth (OpenBao's auth/kubernetes
-- asking a local TokenReview stand-in) / TLS certificate auth (OpenBao's TLS
-- listener), namespaces, base64_decode, `kong vault get`, named vaults
-- through /vaults, and the errors of bad references and configs.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"


local fmt = string.format


local BAO_PORT = 18200        -- and 18201, OpenBao's cluster port
local REVIEW_PORT = 18202
local TLS_PORT = 18203        -- OpenBao's TLS listener (and 18204)
local DOWN_PORT = 18209       -- nothing listens there

-- bytes no text secret store holds as they are: stored base64-encoded
local BINARY = "\0\1\2\255\254 binary key material \128\r\n\0"

local SECRETS = vh.remember_secrets({ "hcv-pw-first-7f3a", "hcv-pw-second-91c2", "hcv-v1-user-5d0e",
                                      "hcv-ns-value-c4b8" })


-- a Kubernetes service account JWT as the API server would issue it (the
-- stand-in reviews it; OpenBao only parses it)
local function service_account_jwt()
  local function b64url(s)
    return (ngx.encode_base64(s):gsub("+", "-"):gsub("/", "_"):gsub("=", ""))
  end
  local claims = {
    iss = "kubernetes/serviceaccount",
    sub = "system:serviceaccount:kong:kong",
    ["kubernetes.io/serviceaccount/namespace"] = "kong",
    ["kubernetes.io/serviceaccount/service-account.name"] = "kong",
    ["kubernetes.io/serviceaccount/service-account.uid"] = "6b1d8c1e-0000-4000-8000-000000000001",
    ["kubernetes.io/serviceaccount/secret.name"] = "kong-token",
  }
  return b64url('{"alg":"RS256","kid":"k1"}') .. "." .. b64url(require("cjson").encode(claims)) .. "."
         .. b64url(string.rep("s", 256))
end


describe("vault hcv (OpenBao) [#postgres]", function()
  local bao, dir, token, role_id, secret_id, wrapped_secret_id, client_key

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-20_hcv"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    -- OpenBao with a TLS listener too (this spec's CA), for cert auth
    local ca, server_cert, server_key = vh.tls_files(dir .. "/tls")
    bao = vh.start_openbao(BAO_PORT, { port = TLS_PORT, cert = server_cert, key = server_key })

    -- KV v2 at secret/ (dev mode): two versions; KV v1 at kv1/
    assert.equals(200, (vh.bao(bao, "POST", "secret/data/app/db",
                               { data = { user = "app", password = SECRETS[1] } })))
    assert.equals(200, (vh.bao(bao, "POST", "secret/data/app/db",
                               { data = { user = "app", password = SECRETS[2] } })))
    -- base64 values, line-wrapped as `base64` writes them, and one that is not
    local wrapped = ngx.encode_base64(BINARY):gsub("(" .. ("."):rep(16) .. ")", "%1\n")
    assert.equals(200, (vh.bao(bao, "POST", "secret/data/app/blob",
                               { data = { key = wrapped, note = ngx.encode_base64("hello") } })))
    assert.equals(200, (vh.bao(bao, "POST", "secret/data/app/mixed", { data = { name = "not base64!" } })))
    assert.equals(204, (vh.bao(bao, "POST", "sys/mounts/kv1", { type = "kv", options = { version = "1" } })))
    -- a new mount answers 400 until it is set up
    helpers.wait_until(function()
      return vh.bao(bao, "POST", "kv1/app/db", { user = SECRETS[3] }) == 204
    end, 10)

    -- a policy that reads both, and a token with only that policy
    assert.equals(204, (vh.bao(bao, "PUT", "sys/policies/acl/kong-read", { policy = [[
      path "secret/data/*" { capabilities = ["read"] }
      path "kv1/*" { capabilities = ["read"] }
    ]] })))
    local _, json = vh.bao(bao, "POST", "auth/token/create", { policies = { "kong-read" } })
    token = json.auth.client_token

    -- AppRole
    assert.equals(204, (vh.bao(bao, "POST", "sys/auth/approle", { type = "approle" })))
    assert.equals(204, (vh.bao(bao, "POST", "auth/approle/role/kong", { token_policies = { "kong-read" } })))
    _, json = vh.bao(bao, "GET", "auth/approle/role/kong/role-id")
    role_id = json.data.role_id
    _, json = vh.bao(bao, "POST", "auth/approle/role/kong/secret-id")
    secret_id = json.data.secret_id
    _, json = vh.bao(bao, "POST", "auth/approle/role/kong/secret-id", nil, { ["X-Vault-Wrap-TTL"] = "300" })
    wrapped_secret_id = json.wrap_info.token
    vh.remember_secrets({ token, secret_id, wrapped_secret_id })

    -- Kubernetes: OpenBao reviews the pod's JWT at the stand-in API server
    local jwt = service_account_jwt()
    kr.project.write_file(dir .. "/sa-token", jwt .. "\n")
    kr.project.write_file(dir .. "/allowed-jwts", jwt .. "\n")
    vh.start_standin("tokenreview", REVIEW_PORT, { jwt_file = dir .. "/allowed-jwts" })
    assert.equals(204, (vh.bao(bao, "POST", "sys/auth/kubernetes", { type = "kubernetes" })))
    -- outside a pod OpenBao needs the API server's CA given (unused over http)
    assert.equals(204, (vh.bao(bao, "POST", "auth/kubernetes/config", {
      kubernetes_host = "http://127.0.0.1:" .. REVIEW_PORT,
      kubernetes_ca_cert = kr.project.read_file(ca),
      disable_local_ca_jwt = true,
    })))
    assert.equals(204, (vh.bao(bao, "POST", "auth/kubernetes/role/kong", {
      bound_service_account_names = { "kong" },
      bound_service_account_namespaces = { "kong" },
      token_policies = { "kong-read" },
    })))

    -- a namespace with its own KV v2 mount (OpenBao has namespaces since
    -- 2.3; scripts/openbao.sh installs a release that has them)
    local ns = { ["X-Vault-Namespace"] = "team-a" }
    assert.equals(200, (vh.bao(bao, "POST", "sys/namespaces/team-a", {})))
    assert.equals(204, (vh.bao(bao, "POST", "sys/mounts/secret", { type = "kv", options = { version = "2" } }, ns)))
    helpers.wait_until(function()
      return vh.bao(bao, "POST", "secret/data/app/db", { data = { password = SECRETS[4] } }, ns) == 200
    end, 10)

    -- TLS certificate auth: Kong's client certificate is trusted for the
    -- role kong; another one is not
    local function client_cert(name)
      assert(kr.project.run(fmt("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/%s.key -out %s/%s.crt "
                                .. "-days 2 -subj /CN=%s 2>&1", dir, name, dir, name, name)))
      return kr.project.read_file(dir .. "/" .. name .. ".crt"), kr.project.read_file(dir .. "/" .. name .. ".key")
    end
    local cert, stranger_cert, stranger_key
    cert, client_key = client_cert("kong-gateway")
    stranger_cert, stranger_key = client_cert("stranger")
    vh.remember_secrets({ client_key, stranger_key })
    assert.equals(204, (vh.bao(bao, "POST", "sys/auth/cert", { type = "cert" })))
    assert.equals(204, (vh.bao(bao, "POST", "auth/cert/certs/kong", { certificate = cert,
                                                                      token_policies = { "kong-read" } })))

    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      lua_ssl_trusted_certificate = ca,
      vault_hcv_protocol = "http",
      vault_hcv_host = "127.0.0.1",
      vault_hcv_port = BAO_PORT,
      vault_hcv_mount = "secret",
      vault_hcv_kv = "v2",
      vault_hcv_token = token,
    }))
    -- the keyring encrypts the token fields of vaults rows with the node's key
    kr.wait_active_key()

    local vaults = {
      ["hcv-v1"] = { mount = "kv1", kv = "v1", token = token },
      ["hcv-approle"] = { kv = "v2", auth_method = "approle", approle_role_id = role_id,
                          approle_secret_id = secret_id },
      ["hcv-wrapped"] = { kv = "v2", auth_method = "approle", approle_role_id = role_id,
                          approle_secret_id = wrapped_secret_id, approle_response_wrapping = true },
      ["hcv-kube"] = { kv = "v2", auth_method = "kubernetes", kube_role = "kong",
                       kube_api_token_file = dir .. "/sa-token" },
      ["hcv-ns"] = { kv = "v2", namespace = "team-a", token = "root" },
      ["hcv-b64"] = { kv = "v2", token = token, base64_decode = true },
      ["hcv-badtoken"] = { kv = "v2", token = "not-a-token" },
      ["hcv-badapprole"] = { kv = "v2", auth_method = "approle", approle_role_id = role_id,
                             approle_secret_id = "00000000-0000-0000-0000-000000000000" },
      ["hcv-down"] = { kv = "v2", token = token, port = DOWN_PORT },
      ["hcv-cert"] = { protocol = "https", port = TLS_PORT, kv = "v2", auth_method = "cert",
                       cert_auth_cert = cert, cert_auth_cert_key = client_key, cert_auth_role_name = "kong" },
      -- no role name: OpenBao tries every certificate it trusts
      ["hcv-cert-any"] = { protocol = "https", port = TLS_PORT, kv = "v2", auth_method = "cert",
                           cert_auth_cert = cert, cert_auth_cert_key = client_key },
      ["hcv-cert-stranger"] = { protocol = "https", port = TLS_PORT, kv = "v2", auth_method = "cert",
                                cert_auth_cert = stranger_cert, cert_auth_cert_key = stranger_key },
      ["hcv-cert-http"] = { kv = "v2", auth_method = "cert", cert_auth_cert = cert, cert_auth_cert_key = client_key },
      ["hcv-cert-nokey"] = { protocol = "https", port = TLS_PORT, kv = "v2", auth_method = "cert",
                             cert_auth_cert = cert, cert_auth_cert_key = "-----BEGIN PRIVATE KEY-----\nnope\n" },
    }
    for prefix, config in pairs(vaults) do
      config.port = config.port or BAO_PORT
      local st, body = kr.admin("PUT", "/vaults/" .. prefix, { name = "hcv", config = config })
      assert(st == 200, prefix .. ": " .. tostring(body))
    end

    vh.probe_route("/hcv", {
      secret = "{vault://hcv/app/db/password}",
      other = "{vault://hcv-v1/app/db/user}",
      list = {
        "{vault://hcv/app/db/password#1}",
        "{vault://hcv-approle/app/db/password}",
        "{vault://hcv-wrapped/app/db/password}",
        "{vault://hcv-kube/app/db/user}",
      },
    })
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  describe("a plugin field", function()
    it("resolves a KV v2 reference through the KONG_VAULT_HCV_* settings, on both workers", function()
      kr.on_both_workers(function() return kr.proxy("GET", "/hcv") end, function(status, json)
        assert.equals(200, status)
        assert.equals(SECRETS[2], json.config.secret)
      end)
    end)

    it("resolves #1 to the first version of a KV v2 secret", function()
      assert.equals(SECRETS[1], vh.probe("/hcv").config.list[1])
    end)

    it("resolves a KV v1 reference through a named vault with its own mount", function()
      assert.equals(SECRETS[3], vh.probe("/hcv").config.other)
    end)

    it("logs in with AppRole", function()
      assert.equals(SECRETS[2], vh.probe("/hcv").config.list[2])
    end)

    it("logs in with a response-wrapped AppRole secret id (unwrapped once)", function()
      assert.equals(SECRETS[2], vh.probe("/hcv").config.list[3])
      -- the wrapping token is spent: OpenBao refuses to unwrap it again
      local status = vh.bao(bao, "POST", "sys/wrapping/unwrap", nil, { ["X-Vault-Token"] = wrapped_secret_id })
      assert.equals(400, status)
    end)

    it("logs in with Kubernetes auth, OpenBao reviewing the JWT at the API server", function()
      assert.equals("app", vh.probe("/hcv").config.list[4])
      assert.is_true((vh.hits("http://127.0.0.1:" .. REVIEW_PORT)["tokenreview-ok"] or 0) >= 1)
    end)

    it("decodes base64 values with base64_decode, key by key in a JSON secret", function()
      local value, err = vh.vault_get("/hcv", "{vault://hcv-b64/app/blob/key}")
      assert.is_nil(err)
      assert.equals(ngx.encode_base64(BINARY), ngx.encode_base64(value))
      assert.equals("hello", (vh.vault_get("/hcv", "{vault://hcv-b64/app/blob/note}")))
      -- without it, the text as stored; per reference, as a query option
      assert.equals(ngx.encode_base64("hello"), (vh.vault_get("/hcv", "{vault://hcv/app/blob/note}")))
      assert.equals("hello", (vh.vault_get("/hcv", "{vault://hcv/app/blob/note?base64_decode=true}")))
    end)

    it("logs in with a TLS client certificate (cert auth), with and without a role name", function()
      assert.equals(SECRETS[2], (vh.vault_get("/hcv", "{vault://hcv-cert/app/db/password}")))
      assert.equals(SECRETS[2], (vh.vault_get("/hcv", "{vault://hcv-cert-any/app/db/password}")))
      -- the private key is stored encrypted by the keyring
      local stored = kr.psql("SELECT config ->> 'cert_auth_cert_key' FROM sm_vaults WHERE prefix = 'hcv-cert'")
      assert.matches(kr.MARKED, stored)
      assert.is_nil(stored:find("PRIVATE KEY", 1, true))
    end)

    it("reads from a namespace", function()
      local value, err = vh.vault_get("/hcv", "{vault://hcv-ns/app/db/password}")
      assert.is_nil(err)
      assert.equals(SECRETS[4], value)
      -- the same path outside the namespace is the root namespace's secret
      assert.equals(SECRETS[2], (vh.vault_get("/hcv", "{vault://hcv/app/db/password?namespace=}")))
    end)
  end)

  describe("kong vault get", function()
    it("prints a value through the hcv settings of the node", function()
      local ok, out, err = vh.kong_vault_get("hcv/app/db/password")
      assert(ok, err)
      assert.equals(SECRETS[2], out)
    end)

    it("prints a value through a named vault and a version", function()
      -- (a named vault whose config has no encrypted field: the CLI process
      -- holds no keyring keys to decrypt one, see docs/vaults.md)
      local ok, out, err = vh.kong_vault_get("{vault://hcv-kube/app/db/user}")
      assert(ok, err)
      assert.equals("app", out)
      ok, out, err = vh.kong_vault_get("{vault://hcv/app/db/password#1}")
      assert(ok, err)
      assert.equals(SECRETS[1], out)
    end)

    it("takes base64_decode from KONG_VAULT_HCV_BASE64_DECODE", function()
      vh.assert_cli_values({ KONG_VAULT_HCV_BASE64_DECODE = "true" }, { { "hcv/app/blob/note", "hello" } })
    end)

    it("fails with the reason and no secret for a missing secret", function()
      local ok, out, err = vh.kong_vault_get("hcv/app/nope/password")
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("hcv: app/nope not found", err, 1, true)
    end)

    it("says the CLI cannot decrypt a cert_auth_cert_key, and sends nothing", function()
      local ok, out, err = vh.kong_vault_get("{vault://hcv-cert/app/db/password}")
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("hcv: cert_auth_cert_key is encrypted by the keyring and cannot be decrypted here", err, 1, true)
    end)
  end)

  describe("errors", function()
    local function get_err(reference)
      local value, err = vh.vault_get("/hcv", reference)
      assert.is_nil(value)
      return err
    end

    it("names an unknown vault", function()
      assert.matches("could not find vault (nope)", get_err("{vault://nope/app/db}"), 1, true)
    end)

    it("refuses an empty resource", function()
      assert.matches("reference url has empty path", get_err("{vault://hcv/}"), 1, true)
    end)

    it("refuses '..' in a path", function()
      assert.matches("hcv: resource has an empty, '.' or '..' segment",
                     get_err("{vault://hcv/app/../../sys/policies/acl/kong-read/policy}"), 1, true)
    end)

    it("answers not found for a missing secret and a missing key", function()
      assert.matches("hcv: app/nope not found", get_err("{vault://hcv/app/nope/password}"), 1, true)
      assert.matches("subfield nokey not found in JSON secret", get_err("{vault://hcv/app/db/nokey}"), 1, true)
    end)

    it("refuses a version of a KV v1 secret", function()
      assert.matches("hcv: versions need kv v2", get_err("{vault://hcv-v1/app/db/user#1}"), 1, true)
    end)

    it("names the status of a wrong token and of a wrong AppRole secret id", function()
      assert.matches("hcv: reading app/db answered 403 (permission denied)",
                     get_err("{vault://hcv-badtoken/app/db/password}"), 1, true)
      assert.matches("hcv: approle login answered 400",
                     get_err("{vault://hcv-badapprole/app/db/password}"), 1, true)
    end)

    it("names the value that is not base64 when base64_decode is on", function()
      assert.matches("hcv: the value of name in app/mixed is not base64 (base64_decode is on)",
                     get_err("{vault://hcv-b64/app/mixed/name}"), 1, true)
    end)

    it("names what is wrong with cert auth: an untrusted certificate, http, a key that is not PEM", function()
      vh.assert_errors("/hcv", {
        { "{vault://hcv-cert-stranger/app/db/password}",
          "hcv: cert login answered 400 (invalid certificate or no client certificate supplied)" },
        { "{vault://hcv-cert-http/app/db/password}", "hcv: cert auth needs protocol https" },
        { "{vault://hcv-cert-nokey/app/db/password}", "hcv: cert_auth_cert_key is not a PEM private key" },
      })
    end)

    it("names a server that is down", function()
      assert.matches("hcv: reading app/db failed: connection refused",
                     get_err("{vault://hcv-down/app/db/password}"), 1, true)
    end)

    it("refuses bad configs through /vaults", function()
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "hcv-bad", name = "hcv",
                                                            config = { ttl = -1, kv = "v3", protocol = "ftp" } })
      assert.equals(400, status)
      assert.matches("between", json.fields.config.ttl, 1, true)
      assert.matches("expected one of: v1, v2", json.fields.config.kv, 1, true)
      assert.matches("expected one of: http, https", json.fields.config.protocol, 1, true)
      assert.equals(404, (kr.admin("GET", "/vaults/hcv-bad")))
    end)

    it("accepts base64_decode in the config of every backend, as a boolean only", function()
      for _, name in ipairs(vh.VAULTS) do
        local status, body = kr.admin("PUT", "/vaults/b64-" .. name, { name = name, config = { base64_decode = true } })
        assert(status == 200, name .. ": " .. tostring(body))
        assert.equals(204, (kr.admin("DELETE", "/vaults/b64-" .. name)))
      end
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "b64-bad", name = "hcv",
                                                            config = { base64_decode = "yes" } })
      assert.equals(400, status)
      assert.matches("expected a boolean", json.fields.config.base64_decode, 1, true)
    end)

    it("writes no secret to the error log", function()
      vh.assert_no_secret_in_log(SECRETS)
      vh.assert_no_secret_in_log({ token, secret_id, wrapped_secret_id, client_key })
    end)
  end)
end)
