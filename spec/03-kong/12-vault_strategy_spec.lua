-- The Vault keyring strategy (docs/design.md, "Vault strategy") in real
-- Kong: two nodes A and B (2 workers each, one PostgreSQL,
-- db_update_frequency = 1) read their keys from a real OpenBao dev server's
-- KV v2 secret `secret/kong/keyring`, written here through OpenBao's HTTP
-- API. A third node C is started in turn with a wrong mount, a wrong path,
-- Kubernetes auth (OpenBao's real auth/kubernetes asking a local TokenReview
-- stand-in) and an OpenBao behind TLS with its own CA.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local keyring = require "kong.keyring"


local admin = kr.admin
local proxy = kr.proxy
local psql = kr.psql
local project = kr.project
local fmt = string.format


local BAO_PORT = 18300        -- and 18301, its cluster port
local TLS_DEV_PORT = 18302    -- the TLS server's dev listener (and 18303)
local TLS_PORT = 18304        -- the TLS server's TLS listener (and 18305)
local REVIEW_PORT = 18306     -- Kubernetes TokenReview stand-in
local SECRET = "secret/data/kong/keyring"
local FREQUENCY = 1           -- db_update_frequency of spec/kong_tests.conf

local A, B, C = kr.node(0), kr.node(1), kr.node(2)

local CLUSTER_ONLY = {
  { "/keyring/generate" }, { "/keyring/activate", { key = "k1" } }, { "/keyring/remove", { key = "k1" } },
  { "/keyring/export" }, { "/keyring/import", { data = "eA==" } },
  { "/keyring/import/raw", { id = "x", data = ngx.encode_base64(string.rep("x", 32)) } },
  { "/keyring/recover", { recovery_private_key = "x" } },
}


local now = kr.now


-- a fresh key text per run; its key bytes (base64 of SHA-256, computed by
-- the sha256sum CLI) are remembered for the leak sweep (spec/99-leaks takes
-- 32-byte keys only: the texts and tokens are looked for by the last test)
local texts = {}

local function key_text(n)
  local ok, out = project.run("head -c 24 /dev/urandom | base64")
  assert(ok, out)
  texts[n] = fmt("vault key %d %s", n, out:gsub("%s", ""))
  return texts[n]
end

local function sha256sum_b64(text)
  local ok, out = project.run("printf %s " .. project.shell_quote(text) .. " | sha256sum")
  assert(ok, out)
  local hex = assert(out:match("^(%x+)"))
  return ngx.encode_base64((hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end)))
end


-- writes a version to `base` (root token); returns its number
local function write_version(base, data)
  local status, json = vh.bao(base, "POST", SECRET, { data = data })
  assert.equals(200, status)
  return json.data.version
end

local function write_key(base, n, id)
  local text = texts[n] or key_text(n)
  project.remember_key(sha256sum_b64(text))
  return write_version(base, { id = id or ("k" .. n), key = text })
end

local function versions_call(base, what, list)
  assert.equals(204, (vh.bao(base, "POST", "secret/" .. what .. "/kong/keyring", { versions = list })))
end


local function env_of(node, extra)
  local env = kr.node_env(node, {
    keyring_strategy = "vault",
    keyring_vault_host = "http://127.0.0.1:" .. BAO_PORT,
    keyring_vault_mount = "secret",
    keyring_vault_path = "kong/keyring",
  })
  for k, v in pairs(extra or {}) do
    env[k] = v or nil
  end
  return env
end


local ring = kr.ring

local function sorted(list)
  local copy = { unpack(list or {}) }
  table.sort(copy)
  return copy
end

local function has_keys(node, ids, active)
  return function()
    local r = ring(node)
    return r.active == active and table.concat(sorted(r.ids), " ") == table.concat(sorted(ids), " ")
  end
end

local function sync(node, token)
  return admin("POST", "/keyring/vault/sync", token and { token = token } or nil, nil, node.admin)
end

-- a 500 {"error": ...} from a sync that contains every one of `needles`
local function assert_sync_fails(node, token, needles)
  local status, body, json = sync(node, token)
  assert.equals(500, status, body)
  assert.is_string(json and json.error, body)
  for _, needle in ipairs(needles) do
    assert.matches(needle, json.error, 1, true)
  end
  return json.error
end

local function start_node(node, extra)
  kr.stop_kong(node.prefix)
  assert(helpers.start_kong(env_of(node, extra)))
  kr.wait_admin(node.admin)
end


-- a Kubernetes service account JWT (OpenBao only parses it; the stand-in reviews it)
local function service_account_jwt()
  local function b64url(s)
    return (ngx.encode_base64(s):gsub("+", "-"):gsub("/", "_"):gsub("=", ""))
  end
  local claims = require("cjson").encode({
    iss = "kubernetes/serviceaccount", sub = "system:serviceaccount:kong:kong",
    ["kubernetes.io/serviceaccount/namespace"] = "kong",
    ["kubernetes.io/serviceaccount/service-account.name"] = "kong",
    ["kubernetes.io/serviceaccount/service-account.uid"] = "0d9e3c2a-0000-4000-8000-000000000012",
    ["kubernetes.io/serviceaccount/secret.name"] = "kong-token",
  })
  return b64url('{"alg":"RS256","kid":"k12"}') .. "." .. b64url(claims) .. "." .. b64url(string.rep("z", 256))
end


describe("Plugin: keyring (vault strategy, OpenBao, two nodes) [#postgres]", function()
  local bao, tls_bao, dir, read_token, no_policy_token
  local secrets = {}

  lazy_setup(function()
    dir = project.tmp .. "/spec-12_vault_strategy"
    assert(project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    bao = vh.start_openbao(BAO_PORT)

    -- versions 1..3, ids k1..k3
    for n = 1, 3 do
      assert.equals(n, write_key(bao, n))
    end

    -- a token whose policy allows only read and list on the secret, one without it
    assert.equals(204, (vh.bao(bao, "PUT", "sys/policies/acl/kong-keyring", { policy = [[
      path "secret/data/kong/keyring" { capabilities = ["read", "list"] }
      path "secret/metadata/kong/keyring" { capabilities = ["read", "list"] }
    ]] })))
    local _, json = vh.bao(bao, "POST", "auth/token/create", { policies = { "kong-keyring" } })
    read_token = json.auth.client_token
    _, json = vh.bao(bao, "POST", "auth/token/create", { policies = { "default" } })
    no_policy_token = json.auth.client_token
    secrets = { read_token, no_policy_token }

    -- Kubernetes auth: OpenBao reviews the JWT at the stand-in API server
    local jwt = service_account_jwt()
    project.write_file(dir .. "/sa-token", jwt .. "\n")
    project.write_file(dir .. "/allowed-jwts", jwt .. "\n")
    vh.start_standin("tokenreview", REVIEW_PORT, { jwt_file = dir .. "/allowed-jwts" })
    assert.equals(204, (vh.bao(bao, "POST", "sys/auth/kubernetes", { type = "kubernetes" })))
    local ca, cert, key = vh.tls_files(dir .. "/tls")
    assert.equals(204, (vh.bao(bao, "POST", "auth/kubernetes/config", {
      kubernetes_host = "http://127.0.0.1:" .. REVIEW_PORT,
      kubernetes_ca_cert = project.read_file(ca),  -- required outside a pod, unused over http
      disable_local_ca_jwt = true,
    })))
    assert.equals(204, (vh.bao(bao, "POST", "auth/kubernetes/role/kong-keyring", {
      bound_service_account_names = { "kong" },
      bound_service_account_namespaces = { "kong" },
      token_policies = { "kong-keyring" },
      token_ttl = "6s",
    })))

    -- a second OpenBao behind TLS with this spec's CA (dev listener plus a
    -- TLS listener)
    tls_bao = vh.start_openbao(TLS_DEV_PORT, { port = TLS_PORT, cert = cert, key = key })
    for n = 1, 3 do
      write_key(tls_bao, n)
    end
    -- a CA that did not sign OpenBao's certificate
    assert(project.run(fmt("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/other-ca.key -out %s/other-ca.crt "
                           .. "-days 2 -subj /CN=kk-other-ca 2>&1", dir, dir)))

    helpers.get_db_utils("postgres", nil, kr.PLUGINS, kr.VAULTS)
    kr.start_kong_nowait(env_of(A, { keyring_vault_token = read_token }))
    kr.start_kong_nowait(env_of(B, { keyring_vault_token = read_token }))
    kr.wait_admin(A.admin)
    kr.wait_admin(B.admin)

    keyring.init()
  end)

  lazy_teardown(function()
    kr.stop_kong(C.prefix)
    kr.stop_kong(B.prefix)
    kr.stop_kong(A.prefix)
    vh.stop_servers()
  end)

  it("at start both nodes hold versions 1..3, version 3 active; keys are SHA-256 of the key text", function()
    helpers.wait_until(has_keys(A, { "k1", "k2", "k3" }, "k3"), 5, 0.05)
    helpers.wait_until(has_keys(B, { "k1", "k2", "k3" }, "k3"), 5, 0.05)
    assert.equals(1, #kr.log_lines("vault sync from secret/kong/keyring: 3 keys, active 'k3'", A.prefix))

    -- rows written on A with k3 decrypt on both nodes
    assert.equals(201, (admin("POST", "/consumers", { username = "alice" }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/services", { name = "up", url = "http://127.0.0.1:1" }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/services/up/routes", { name = "probe", paths = { "/probe" } }, nil, A.admin)))
    assert.equals(201, (admin("POST", "/routes/probe/plugins", { name = "basic-auth" }, nil, A.admin)))
    local status, body, plugin = admin("POST", "/routes/probe/plugins",
                                       { name = "secret-probe", config = { secret = "probe-plaintext-12" } },
                                       nil, A.admin)
    assert.equals(201, status, body)
    assert.equals(201, (admin("POST", "/consumers/alice/basic-auth", { username = "u0", password = "pw0" },
                              nil, A.admin)))
    local stored = psql("SELECT config->>'secret' FROM plugins WHERE id = '" .. plugin.id .. "'")
    assert.matches("^%$ke%$2%$%-k3%-", stored)
    for _, node in ipairs({ A, B }) do
      status, body, plugin = admin("GET", "/plugins/" .. plugin.id, nil, nil, node.admin)
      assert.equals(200, status, body)
      assert.equals("probe-plaintext-12", plugin.config.secret)
      helpers.wait_until(function()
        return (proxy("GET", "/probe", kr.basic_auth("u0", "pw0"), nil, node.proxy)) == 200
      end, 10)
    end

    -- the same value opens in this process under the key `sha256sum` derives
    -- from version 3's text (and under no other)
    assert(keyring.add("k3", sha256sum_b64(texts[3])))
    assert.equals("probe-plaintext-12", keyring.decrypt(stored, "plugins:" .. plugin.id))
    assert(keyring.remove("k3"))
    assert(keyring.add("k3", sha256sum_b64(texts[2])))
    assert.is_nil(keyring.decrypt(stored, "plugins:" .. plugin.id))
    assert(keyring.remove("k3"))
  end)

  it("every cluster-only route answers 400 under vault", function()
    for _, node in ipairs({ A, B }) do
      for _, route in ipairs(CLUSTER_ONLY) do
        local status, body, json = admin("POST", route[1], route[2], nil, node.admin)
        assert.equals(400, status, route[1] .. ": " .. tostring(body))
        assert.same({ error = "endpoint only supported for 'cluster' strategy" }, json)
      end
    end
    -- nothing changed
    assert.truthy(has_keys(A, { "k1", "k2", "k3" }, "k3")())
  end)

  it("a marked value under an id Vault does not list is refused with 400", function()
    local stored = psql("SELECT config->>'secret' FROM plugins WHERE name = 'secret-probe' LIMIT 1")
    local status, body, json = admin("POST", "/routes/probe/plugins", {
      name = "secret-probe", consumer = { username = "alice" }, config = { secret = stored:gsub("%-k3%-", "-zz-") },
    }, nil, B.admin)
    assert.equals(400, status, body)
    assert.matches("under key 'zz', which the cluster does not list", json.message, 1, true)
  end)

  it("a token allowed only read and list works; one without the policy gets a 500 naming the 403", function()
    local status, body = sync(A, read_token)
    assert.equals(204, status, body)
    -- never in the URL (nginx would write it into every log line of the request)
    status, body = admin("POST", "/keyring/vault/sync?token=" .. read_token, nil, nil, A.admin)
    assert.equals(400, status, body)
    assert.matches("must be sent in the request body", body, 1, true)
    local err = assert_sync_fails(A, no_policy_token, { "403", "/v1/secret/metadata/kong/keyring",
                                                        "does not allow read and list", ": permission denied" })
    assert.not_matches("\n", err)
    assert.not_matches(no_policy_token, err, 1, true)
    assert.truthy(has_keys(A, { "k1", "k2", "k3" }, "k3")())
    vh.assert_no_secret_in_log(secrets, A.prefix)
  end)

  it("version 4 and a sync on A: both nodes use it within db_update_frequency + 1 s", function()
    assert.equals(4, write_key(bao, 4))
    local start = now()
    local status, body = sync(A)
    assert.equals(204, status, body)
    assert.truthy(has_keys(A, { "k1", "k2", "k3", "k4" }, "k4")())
    helpers.wait_until(has_keys(B, { "k1", "k2", "k3", "k4" }, "k4"), FREQUENCY + 1, 0.05)
    local took = now() - start
    assert(took <= FREQUENCY + 1, "B followed after " .. took .. " s")
    print(("B used version 4 %.2f s after the sync request on A"):format(took))
    assert.equals(1, #kr.log_lines("added k4", B.prefix))
  end)

  it("proxy traffic flows on both nodes through a sync that adds and activates a version", function()
    local users = {}
    for i = 1, 4 do
      users[i] = { "flow-" .. i, "pw-flow-" .. i }
      assert.equals(201, (admin("POST", "/consumers/alice/basic-auth", { username = users[i][1], password = users[i][2] },
                                nil, A.admin)))
    end
    for _, node in ipairs({ A, B }) do
      helpers.wait_until(function()
        return (proxy("GET", "/probe", kr.basic_auth(users[4][1], users[4][2]), nil, node.proxy)) == 200
      end, 10)
    end
    local done, answers, bad = false, 0, {}
    local traffic = ngx.thread.spawn(function()
      local i = 0
      while not done do
        i = i + 1
        local u = users[i % #users + 1]
        local node = i % 2 == 0 and A or B
        local s, b = proxy("GET", "/probe", kr.basic_auth(u[1], u[2]), nil, node.proxy)
        answers = answers + 1
        if s ~= 200 then
          bad[#bad + 1] = node.name .. ": " .. tostring(s) .. " " .. tostring(b)
        end
      end
    end)
    ngx.sleep(0.3)
    assert.equals(5, write_key(bao, 5))
    local status, body = sync(A)
    assert.equals(204, status, body)
    helpers.wait_until(has_keys(B, { "k1", "k2", "k3", "k4", "k5" }, "k5"), FREQUENCY + 1, 0.05)
    ngx.sleep(0.3)
    done = true
    ngx.thread.wait(traffic)
    assert.same({}, bad)
    assert(answers >= 10, "only " .. answers .. " answers")
    -- a credential written with version 5 on B authenticates on A
    assert.equals(201, (admin("POST", "/consumers/alice/basic-auth", { username = "after-5", password = "pw5" },
                              nil, B.admin)))
    assert.matches("^%$ke%$2%$%-k5%-", psql("SELECT password FROM basicauth_credentials WHERE username = 'after-5'"))
    for _, node in ipairs({ A, B }) do
      helpers.wait_until(function()
        return (proxy("GET", "/probe", kr.basic_auth("after-5", "pw5"), nil, node.proxy)) == 200
      end, 10)
    end
  end)

  it("destroyed version 1 and a sync: k1 is gone from both nodes; deleted versions are skipped", function()
    versions_call(bao, "destroy", { 1 })
    assert.equals(204, (sync(B)))
    assert.truthy(has_keys(B, { "k2", "k3", "k4", "k5" }, "k5")())
    helpers.wait_until(has_keys(A, { "k2", "k3", "k4", "k5" }, "k5"), FREQUENCY + 1, 0.05)
    assert.equals(1, #kr.log_lines("dropped k1", A.prefix))

    -- soft-deleted version 2: dropped too; undeleted: back
    versions_call(bao, "delete", { 2 })
    assert.equals(204, (sync(A)))
    assert.truthy(has_keys(A, { "k3", "k4", "k5" }, "k5")())
    versions_call(bao, "undelete", { 2 })
    assert.equals(204, (sync(A)))
    assert.truthy(has_keys(A, { "k2", "k3", "k4", "k5" }, "k5")())
    helpers.wait_until(has_keys(B, { "k2", "k3", "k4", "k5" }, "k5"), FREQUENCY + 1, 0.05)
  end)

  it("a version without id or key, or with an invalid id: a clear 500, the ring unchanged", function()
    -- B has followed every sync announced so far
    ngx.sleep(2 * FREQUENCY + 0.5)
    local follow_failures = #kr.log_lines("vault sync (asked by another node) failed", B.prefix)
    local cases = {
      { { key = "no id here" }, "has no 'id'" },
      { { id = "k9" }, "has no 'key'" },
      { { id = "bad-id", key = "x" }, "invalid key id" },
      { { id = "k3", key = "another text for k3" }, "both hold id 'k3' with different keys" },
    }
    for _, case in ipairs(cases) do
      local n = write_version(bao, case[1])
      local err = assert_sync_fails(A, nil, { case[2], "secret/kong/keyring" })
      assert.matches("version", err, 1, true)
      assert.not_matches("another text", err, 1, true)
      assert.truthy(has_keys(A, { "k2", "k3", "k4", "k5" }, "k5")())
      versions_call(bao, "destroy", { n })
    end
    -- the current version is now destroyed: nothing to activate
    assert_sync_fails(A, nil, { "current version 9", "deleted or destroyed" })
    assert.truthy(has_keys(A, { "k2", "k3", "k4", "k5" }, "k5")())
    -- version 10 repeats version 5: everything as before
    assert.equals(10, write_key(bao, 5))
    assert.equals(204, (sync(A)))
    assert.truthy(has_keys(A, { "k2", "k3", "k4", "k5" }, "k5")())
    -- B was asked once, after the last sync: failed syncs are not announced
    ngx.sleep(FREQUENCY + 1)
    assert.equals(follow_failures, #kr.log_lines("vault sync (asked by another node) failed", B.prefix))
  end)

  it("wrong mount or path: clear errors at start and on sync, an empty ring", function()
    start_node(C, { keyring_vault_mount = "nosuch", keyring_vault_token = read_token })
    helpers.wait_until(function()
      return #kr.log_lines("vault sync (start) failed, retrying in", C.prefix) > 0
    end, 10)
    assert.equals(1, #kr.log_lines("Vault answered 403 to GET /v1/nosuch/metadata/kong/keyring", C.prefix))
    -- with a token that may read anything: no such mount
    assert_sync_fails(C, "root", { "Vault answered 404 to GET /v1/nosuch/metadata/kong/keyring",
                                   "no KV v2 secret at nosuch/kong/keyring", "keyring_vault_mount" })
    assert.same({}, ring(C).ids)

    start_node(C, { keyring_vault_path = "kong/nothing", keyring_vault_token = read_token })
    assert_sync_fails(C, "root", { "404", "no KV v2 secret at secret/kong/nothing" })
    assert.same({}, ring(C).ids)
    vh.assert_no_secret_in_log(secrets, C.prefix)
  end)

  it("Kubernetes auth: OpenBao's auth/kubernetes logs the node in, the token is cached and renewed", function()
    local review = "http://127.0.0.1:" .. REVIEW_PORT
    local function logins()
      return vh.hits(review)["tokenreview-ok"] or 0
    end
    start_node(C, { keyring_vault_auth_method = "kubernetes", keyring_vault_kube_role = "kong-keyring",
                    keyring_vault_kube_api_token_file = dir .. "/sa-token" })
    helpers.wait_until(has_keys(C, { "k2", "k3", "k4", "k5" }, "k5"), 5, 0.05)
    assert(logins() >= 1)

    -- revoke every token OpenBao issued to the role: each worker logs in again once
    local _, json = vh.bao(bao, "GET", "auth/token/accessors?list=true")
    local revoked = 0
    for _, accessor in ipairs(json.data.keys) do
      local _, info = vh.bao(bao, "POST", "auth/token/lookup-accessor", { accessor = accessor })
      if info.data.path == "auth/kubernetes/login" then
        assert.equals(204, (vh.bao(bao, "POST", "auth/token/revoke-accessor", { accessor = accessor })))
        revoked = revoked + 1
      end
    end
    assert(revoked >= 1)
    local before = logins()
    for _ = 1, 8 do
      local status, body = sync(C)
      assert.equals(204, status, body)
    end
    local after = logins()
    assert(after - before >= 1 and after - before <= 2, (after - before) .. " logins for 8 syncs")

    -- the role's tokens live 6 s: later syncs log in again
    ngx.sleep(6.5)
    for _ = 1, 4 do
      assert.equals(204, (sync(C)))
    end
    assert(logins() > after, "no new login after the token expired")

    -- a JWT the API server does not accept: the login's error, no token or JWT in it
    project.write_file(dir .. "/sa-token-bad", service_account_jwt():gsub("%.[^.]+$", ".bm90LXNpZ25lZA") .. "\n")
    start_node(C, { keyring_vault_auth_method = "kubernetes", keyring_vault_kube_role = "kong-keyring",
                    keyring_vault_kube_api_token_file = dir .. "/sa-token-bad" })
    local err = assert_sync_fails(C, nil, { "Kubernetes login", "role 'kong-keyring'", "403" })
    assert.not_matches("eyJ", err, 1, true)
    assert.same({}, ring(C).ids)
  end)

  it("OpenBao behind TLS: verified when Kong trusts its CA, a clear error when it does not", function()
    local ca = dir .. "/tls/ca.crt"
    start_node(C, { keyring_vault_host = "https://127.0.0.1:" .. TLS_PORT, keyring_vault_token = "root",
                    lua_ssl_trusted_certificate = ca })
    helpers.wait_until(has_keys(C, { "k1", "k2", "k3" }, "k3"), 5, 0.05)
    assert.equals(204, (sync(C)))

    -- the host name is checked too: the certificate names 127.0.0.1, not localhost
    start_node(C, { keyring_vault_host = "https://localhost:" .. TLS_PORT, keyring_vault_token = "root",
                    lua_ssl_trusted_certificate = ca })
    assert_sync_fails(C, nil, { "Vault at https://localhost:" .. TLS_PORT .. " is unreachable",
                                "could not be verified against lua_ssl_trusted_certificate" })
    assert.same({}, ring(C).ids)

    start_node(C, { keyring_vault_host = "https://127.0.0.1:" .. TLS_PORT, keyring_vault_token = "root",
                    lua_ssl_trusted_certificate = dir .. "/other-ca.crt" })
    assert_sync_fails(C, nil, { "Vault at https://127.0.0.1:" .. TLS_PORT .. " is unreachable",
                                "could not be verified against lua_ssl_trusted_certificate" })
    assert.same({}, ring(C).ids)
    assert(#kr.log_lines("vault sync (start) failed, retrying in", C.prefix) >= 1)
  end)

  it("the secret gone from Vault, then Vault stopped: clear errors, the ring unchanged, traffic flows", function()
    local keys = { "k2", "k3", "k4", "k5" }
    assert.equals(204, (vh.bao(bao, "DELETE", "secret/metadata/kong/keyring")))
    assert_sync_fails(A, nil, { "Vault answered 404 to GET /v1/secret/metadata/kong/keyring" })
    assert.truthy(has_keys(A, keys, "k5")())

    assert(project.run(fmt("BAO_PORT=%d BAO_DIR=%s/openbao-%d %s/scripts/openbao.sh stop", BAO_PORT, vh.DIR,
                           BAO_PORT, project.root)))
    assert_sync_fails(A, nil, { "Vault at http://127.0.0.1:" .. BAO_PORT .. " is unreachable", "connection refused" })
    assert.truthy(has_keys(A, keys, "k5")())
    assert.truthy(has_keys(B, keys, "k5")())
    for _, node in ipairs({ A, B }) do
      local s, b = proxy("GET", "/probe", kr.basic_auth("after-5", "pw5"), nil, node.proxy)
      assert.equals(200, s, b)
    end
  end)

  it("no key text, key or token in any node's log", function()
    local all = { unpack(secrets) }
    for _, text in pairs(texts) do
      all[#all + 1] = text
      all[#all + 1] = sha256sum_b64(text)
    end
    for _, node in ipairs({ A, B, C }) do
      vh.assert_no_secret_in_log(all, node.prefix)
    end
  end)
end)
