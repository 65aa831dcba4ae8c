-- The `aws` vault strategy in real Kong (2 workers) against moto (Secrets
-- Manager, STS, IAM) with its IAM checks on: moto recomputes every SigV4
-- signature and evaluates the IAM policies of the key that signed. JSON keys,
-- binary secrets, AWSCURRENT/AWSPREVIOUS, each credential source that can be
-- served locally (env, profile file, ECS endpoint and IMDS stand-ins, IMDS
-- also at EC2's own address, put on lo for lua-resty-aws's provider; EKS
-- web identity answered by moto's STS through a stand-in that checks the
-- token and forwards the call, see standin.py), assume-role, not-found and
-- throttling answers, `kong vault get`, named vaults through /vaults.
--
-- One limit of moto: it recomputes the signature of a POST from its body,
-- and lua-resty-aws sends STS parameters in the query string, so STS calls
-- are made before moto's checks are turned on (the node's assumed-role
-- credentials then sign the checked Secrets Manager calls).

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local cjson = require "cjson"


local MOTO_PORT = 18210
local THROTTLE_PORT = 18211
local IMDS_PORT = 18212
local ECS_PORT = 18213
local STS_WEB_PORT = 18214

local S = vh.remember_secrets({
  first = "aws-pw-first-0b9d",
  second = "aws-pw-second-e27a",
  binary = "aws-bin-secret-44c1",
  plain = "aws-plain-secret-8f3e",
  rotated = "aws-pw-third-19ab",
})

local fmt = string.format


describe("vault aws (moto) [#postgres]", function()
  -- an IMDS stand-in at EC2's own address, the only one lua-resty-aws's
  -- own IMDS provider asks
  local imds_default
  local moto, dir, keys, setup_py, python

  -- shell assignments for `kong vault get` (a fresh process: lua-resty-aws
  -- reads them when it loads); no IMDS unless asked, no ~/.aws files
  local function aws_env(vars)
    local env = {
      AWS_REGION = "us-east-1",
      AWS_EC2_METADATA_DISABLED = "true",
      AWS_SHARED_CREDENTIALS_FILE = dir .. "/none",
      AWS_CONFIG_FILE = dir .. "/none",
      KONG_VAULT_AWS_ENDPOINT_URL = moto,
      KONG_VAULT_AWS_STS_ENDPOINT_URL = moto,
    }
    for k, v in pairs(vars) do
      env[k] = v or nil
    end
    local out = {}
    for k, v in pairs(env) do
      out[#out + 1] = k .. "=" .. kr.project.shell_quote(v)
    end
    return table.concat(out, " ") .. " "
  end

  local function cli(reference, vars)
    return vh.kong_vault_get(reference, aws_env(vars))
  end

  local function reader_env()
    return { AWS_ACCESS_KEY_ID = keys.reader.id, AWS_SECRET_ACCESS_KEY = keys.reader.secret }
  end

  lazy_setup(function()
    dir = kr.project.tmp .. "/spec-21_aws"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))
    moto = vh.start_moto(MOTO_PORT)
    python = kr.project.root .. "/.tmp/venv-moto/bin/python"
    setup_py = kr.project.root .. "/spec/fixtures/standins/aws_setup.py"
    local secrets = {
      ["app/db"] = { cjson.encode({ user = "app", password = S.first }),
                     cjson.encode({ user = "app", password = S.second }) },
      ["app/bin"] = { binary = S.binary },
      ["app/plain"] = S.plain,
      ["throttled/once"] = S.plain,
      ["throttled/always"] = S.plain,
    }
    kr.project.write_file(dir .. "/secrets.json", cjson.encode(secrets))
    local ok, out = kr.project.run(fmt("%s %s %s setup %s/keys.json < %s/secrets.json", python, setup_py, moto, dir, dir))
    assert(ok, out)
    keys = cjson.decode(kr.project.read_file(dir .. "/keys.json"))
    vh.remember_secrets({ keys.reader.secret, keys.assumer.secret, keys.admin.secret, keys.temp.SecretAccessKey })
    -- moto's checks are on from here; the setup turned them on. STS calls
    -- below happen while they are briefly off again (see the file comment).
    local function checks(on)
      local status = vh.http("POST", moto .. "/moto-api/reset-auth", on and "0" or "inf",
                             { ["Content-Type"] = "text/plain" })
      assert(status == 200)
    end

    vh.start_standin("aws-throttle", THROTTLE_PORT, { upstream = moto, throttle_count = 1 })
    vh.start_standin("imds", IMDS_PORT, {})
    imds_default = vh.start_standin_at_imds_address("imds")
    vh.start_standin("ecs", ECS_PORT, { auth_token = "ecs-auth-token" })
    kr.project.write_file(dir .. "/web-identity-token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrb25nIn0.c2lnbmF0dXJl")
    vh.start_standin("sts-web", STS_WEB_PORT, { jwt_file = dir .. "/web-identity-token", upstream = moto })
    for _, url in ipairs({ "http://127.0.0.1:" .. IMDS_PORT, "http://127.0.0.1:" .. ECS_PORT, imds_default }) do
      assert.equals(200, (vh.http("PUT", url .. "/_admin/creds", keys.temp)))
    end

    -- the node signs with the `assumer` user: it may only assume the role
    helpers.setenv("AWS_ACCESS_KEY_ID", keys.assumer.id)
    helpers.setenv("AWS_SECRET_ACCESS_KEY", keys.assumer.secret)
    helpers.setenv("AWS_REGION", "us-east-1")
    helpers.setenv("AWS_EC2_METADATA_DISABLED", "true")
    vh.db()
    assert(helpers.start_kong(vh.kong_env {
      vault_aws_endpoint_url = moto,
      vault_aws_region = "us-east-1",
    }))
    for _, var in ipairs({ "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_EC2_METADATA_DISABLED" }) do
      helpers.unsetenv(var)
    end

    checks(false)
    for prefix, config in pairs({
      ["aws-role"] = { endpoint_url = moto, sts_endpoint_url = moto, assume_role_arn = keys.role_arn,
                       role_session_name = "kong-spec" },
      ["aws-throttle"] = { endpoint_url = "http://127.0.0.1:" .. THROTTLE_PORT, assume_role_arn = keys.role_arn,
                           sts_endpoint_url = moto },
      ["aws-down"] = { endpoint_url = "http://127.0.0.1:18219" },
    }) do
      config.region = "us-east-1"
      local status, body = kr.admin("PUT", "/vaults/" .. prefix, { name = "aws", config = config })
      assert(status == 200, prefix .. ": " .. tostring(body))
    end
    vh.probe_route("/aws", {
      secret = "{vault://aws-role/app/db/password}",
      other = "{vault://aws-role/app/bin/}",
      list = { "{vault://aws-role/app/db/password#2}", "{vault://aws-role/app/plain/}" },
    })

    -- each worker assumes the role (per vault) while moto takes STS calls
    -- unchecked: a new ttl each time makes a new lookup, not a cached one.
    -- Each vault on its own: one request reaches one worker.
    local n = 0
    for _, prefix in ipairs({ "aws-role", "aws-throttle" }) do
      kr.on_both_workers(function()
        n = n + 1
        local ref = fmt("{vault://%s/app/plain/?ttl=%d}", prefix, 1000 + n)
        return kr.proxy("GET", "/aws?get=" .. ngx.escape_uri(ref))
      end, function(status, json)
        assert.equals(200, status, prefix)
        assert.equals(S.plain, json.get.value, prefix)
      end)
    end
    checks(true)
  end)

  lazy_teardown(function()
    kr.stop_kong()
    vh.stop_servers()
  end)

  describe("a plugin field", function()
    it("resolves JSON keys, binary and plain secrets through an assumed role, on both workers", function()
      kr.on_both_workers(function() return kr.proxy("GET", "/aws") end, function(status, json)
        assert.equals(200, status)
        assert.equals(S.second, json.config.secret)
        assert.equals(S.binary, json.config.other)
        assert.equals(S.plain, json.config.list[2])
      end)
    end)

    it("resolves #2 to the AWSPREVIOUS version", function()
      assert.equals(S.first, vh.probe("/aws").config.list[1])
    end)

    it("signs a new lookup with the assumed role's credentials (moto checks the signature)", function()
      -- a reference not resolved before: a new GetSecretValue, checked by moto
      local value, err = vh.vault_get("/aws", "{vault://aws-role/app/db/user?ttl=7}")
      assert.is_nil(err)
      assert.equals("app", value)
    end)

    it("is refused for the node's own credentials, which may only assume the role", function()
      local value, err = vh.vault_get("/aws", "{vault://aws/app/plain/}")
      assert.is_nil(value)
      assert.matches("aws: GetSecretValue app/plain answered 403 (AccessDenied)", err, 1, true)
    end)
  end)

  describe("kong vault get, credentials from", function()
    it("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", function()
      local ok, out, err = cli("aws/app/db/password", reader_env())
      assert(ok, err)
      assert.equals(S.second, out)
    end)

    it("a profile of a shared credentials file", function()
      kr.project.write_file(dir .. "/credentials", fmt(
        "[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n" ..
        "[kong]\naws_access_key_id = %s\naws_secret_access_key = %s\n", keys.reader.id, keys.reader.secret))
      local ok, out, err = cli("aws/app/plain/", { AWS_PROFILE = "kong", AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials" })
      assert(ok, err)
      assert.equals(S.plain, out)
    end)

    it("the environment before the profile file", function()
      local env = reader_env()
      env.AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials"   -- [default] is wrong
      local ok, out, err = cli("aws/app/plain/", env)
      assert(ok, err)
      assert.equals(S.plain, out)
      ok, out = cli("aws/app/plain/", { AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials" })
      assert.is_false(ok)
      assert.equals("", out)
    end)

    it("the ECS container endpoint, with its authorization token", function()
      local ecs = "http://127.0.0.1:" .. ECS_PORT
      local before = vh.hits(ecs).ecs or 0
      local ok, out, err = cli("aws/app/plain/", { AWS_CONTAINER_CREDENTIALS_FULL_URI = ecs .. "/v2/credentials/kong",
                                                  AWS_CONTAINER_AUTHORIZATION_TOKEN = "ecs-auth-token" })
      assert(ok, err)
      assert.equals(S.plain, out)
      assert.equals(before + 1, vh.hits(ecs).ecs)
    end)

    -- one lookup through IMDS at `imds` with `vars`: v2 (a token, then the
    -- role and its credentials with it), or v1 (the same two without) when
    -- the stand-in refuses tokens
    local function imds_lookup(imds, vars, v1)
      assert.equals(200, (vh.http("PUT", imds .. "/_admin/imds-tokens", v1 and "off" or "on")))
      local before = vh.hits(imds)
      vars.AWS_EC2_METADATA_DISABLED = false
      local ok, out, err = cli("aws/app/plain/", vars)
      assert(ok, err)
      assert.equals(S.plain, out)
      local hits = vh.hits(imds)
      local function more(kind)
        return (hits[kind] or 0) - (before[kind] or 0)
      end
      assert.equals(1, more(v1 and "imds-token-refused" or "imds-token"))
      assert.is_true(more(v1 and "imds-v1" or "imds-v2") >= 2)
      assert.equals(0, more(v1 and "imds-v2" or "imds-v1"))
      return hits
    end

    it("EC2 IMDS at AWS_EC2_METADATA_SERVICE_ENDPOINT, v2 then v1, after the sources above", function()
      local imds = "http://127.0.0.1:" .. IMDS_PORT
      imds_lookup(imds, { AWS_EC2_METADATA_SERVICE_ENDPOINT = imds })
      local hits = imds_lookup(imds, { AWS_EC2_METADATA_SERVICE_ENDPOINT = imds }, true)
      -- env credentials come first: IMDS is not asked
      local env = reader_env()
      env.AWS_EC2_METADATA_DISABLED = false
      env.AWS_EC2_METADATA_SERVICE_ENDPOINT = imds
      assert(cli("aws/app/plain/", env))
      assert.same(hits, vh.hits(imds))
    end)

    it("EC2 IMDS at 169.254.169.254 through lua-resty-aws's own provider, v2 then v1", function()
      imds_lookup(imds_default, {})
      imds_lookup(imds_default, {}, true)
    end)

    it("EKS web identity through STS AssumeRoleWithWebIdentity, moto checking the lookup it signs", function()
      local sts = "http://127.0.0.1:" .. STS_WEB_PORT
      local ok, out, err = cli("aws/app/plain/", { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/web-identity-token",
                                                   AWS_ROLE_ARN = keys.role_arn, AWS_ROLE_SESSION_NAME = "eks",
                                                   KONG_VAULT_AWS_STS_ENDPOINT_URL = sts })
      assert(ok, err)
      assert.equals(S.plain, out)
      assert.equals(1, vh.hits(sts)["sts-web"])
    end)

    it("profile, ECS, EKS web identity, IMDS: each only when those before it are absent", function()
      local ecs, sts, imds = "http://127.0.0.1:" .. ECS_PORT, "http://127.0.0.1:" .. STS_WEB_PORT,
                             "http://127.0.0.1:" .. IMDS_PORT
      assert.equals(200, (vh.http("PUT", imds .. "/_admin/imds-tokens", "on")))
      -- each source, and the stand-in request that shows it was used
      local sources = {
        { vars = { AWS_PROFILE = "kong", AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials" } },
        { vars = { AWS_CONTAINER_CREDENTIALS_FULL_URI = ecs .. "/v2/credentials/kong",
                   AWS_CONTAINER_AUTHORIZATION_TOKEN = "ecs-auth-token" }, base = ecs, hit = "ecs" },
        { vars = { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/web-identity-token", AWS_ROLE_ARN = keys.role_arn,
                   AWS_ROLE_SESSION_NAME = "eks", KONG_VAULT_AWS_STS_ENDPOINT_URL = sts },
          base = sts, hit = "sts-web" },
        { vars = { AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = imds },
          base = imds, hit = "imds-token" },
      }
      local function counts()
        local n = {}
        for i, source in ipairs(sources) do
          n[i] = source.base and (vh.hits(source.base)[source.hit] or 0) or 0
        end
        return n
      end
      for first = 1, #sources do
        local vars = {}
        for i = first, #sources do
          for k, v in pairs(sources[i].vars) do
            vars[k] = v
          end
        end
        local before = counts()
        local ok, out, err = cli("aws/app/plain/", vars)
        assert(ok, err)
        assert.equals(S.plain, out)
        local after = counts()
        for i = 2, #sources do
          assert.equals(i == first and 1 or 0, after[i] - before[i],
                        fmt("%s requests with the sources from #%d on", sources[i].hit, first))
        end
      end
    end)

    it("none: a clear error", function()
      local ok, out, err = cli("aws/app/plain/", {})
      assert.is_false(ok)
      assert.equals("", out)
      assert.matches("no credentials available", err, 1, true)
    end)

    it("a wrong secret key: moto's signature check fails", function()
      local ok, _, err = cli("aws/app/plain/", { AWS_ACCESS_KEY_ID = keys.reader.id,
                                                AWS_SECRET_ACCESS_KEY = "not-the-key" })
      assert.is_false(ok)
      assert.matches("aws: GetSecretValue app/plain answered 403 (SignatureDoesNotMatch)", err, 1, true)
    end)
  end)

  describe("answers", function()
    it("a not-found secret and version", function()
      local ok, _, err = cli("aws/app/nope/", reader_env())
      assert.is_false(ok)
      assert.matches("aws: app/nope not found", err, 1, true)
      ok, _, err = cli("{vault://aws/app/plain/#2}", reader_env())
      assert.is_false(ok)
      assert.matches("aws: app/plain not found", err, 1, true)
      ok, _, err = cli("{vault://aws/app/plain/#3}", reader_env())
      assert.is_false(ok)
      assert.matches("aws: version must be 1 (AWSCURRENT) or 2 (AWSPREVIOUS)", err, 1, true)
    end)

    it("throttling: retried with a back-off, then a clear error", function()
      local value, err = vh.vault_get("/aws", "{vault://aws-throttle/throttled/once/}")
      assert.is_nil(err)
      assert.equals(S.plain, value)
      value, err = vh.vault_get("/aws", "{vault://aws-throttle/throttled/always/}")
      assert.is_nil(value)
      assert.matches("aws: GetSecretValue throttled/always answered 400 (ThrottlingException)", err, 1, true)
      assert.equals(4, vh.hits("http://127.0.0.1:" .. THROTTLE_PORT).throttled)
    end)

    it("a server that is down", function()
      local value, err = vh.vault_get("/aws", "{vault://aws-down/app/plain/}")
      assert.is_nil(value)
      assert.matches("aws: request failed: ", err, 1, true)
      assert.matches("connection refused", err, 1, true)
    end)

    it("bad configs through /vaults", function()
      local status, _, json = kr.admin("POST", "/vaults", { prefix = "aws-bad", name = "aws",
                                                            config = { endpoint_url = "ftp://x", neg_ttl = "soon" } })
      assert.equals(400, status)
      assert.is_string(json.fields.config.endpoint_url)
      assert.equals("expected a number", json.fields.config.neg_ttl)
    end)

    it("writes no secret to the error log", function()
      vh.assert_no_secret_in_log({ S.first, S.second, S.binary, S.plain, keys.reader.secret, keys.assumer.secret,
                                   keys.temp.SecretAccessKey, keys.temp.Token })
    end)
  end)
end)
