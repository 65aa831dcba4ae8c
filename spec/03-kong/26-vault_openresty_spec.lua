-- The five vault backends without Kong: a plain OpenResty app (the nginx
-- binary `kong start` would use, 2 workers, no Kong module loaded) calls
-- `require("kong.vaults.<name>").get(conf, resource, version)` as the README
-- shows, against the same servers as the Kong specs: OpenBao, moto and the
-- gcp, azure and conjur stand-ins. What the backends read from the
-- environment is read in init_by_lua, as documented.

local helpers = require "spec.helpers"
local kr = require "keyring_helpers"
local vh = require "fixtures.standins.helpers"
local cjson = require "cjson"


local BAO_PORT = 18270       -- and 18271, OpenBao's cluster port
local MOTO_PORT = 18272
local GCP_PORT = 18273
local AZ_PORT = 18274
local CONJUR_PORT = 18275
local APP_PORT = 18276

local PROJECT = "kong-proj"
local EMAIL = "kong-vault@kong-proj.iam.gserviceaccount.com"
local TENANT = "0f1e2d3c-0000-4000-8000-00000000abcd"
local CLIENT_ID = "kong-gateway-app"
local ACCOUNT = "kk"
local LOGIN = "host/kong/gateway"

local S = vh.remember_secrets({
  hcv_one = "or-hcv-one-5e21",
  hcv_two = "or-hcv-two-9c0d",
  aws = "or-aws-secret-7b3f",
  gcp = "or-gcp-secret-1a6e",
  azure = "or-az-secret-c84b",
  az_client = "or-az-client-secret-2d90",
  conjur = "or-conjur-secret-64fa",
  conjur_key = "or3x9conjurapikey1q7w",
})

local fmt = string.format

-- the app: every request names a backend, its conf, a resource and a
-- version; the answer is what get returned, the worker that ran it and the
-- Kong modules loaded in that worker (there must be none)
local NGINX_CONF = [[
worker_processes 2;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  lua_package_path "%s;;";
  lua_package_cpath "%s;;";
  init_by_lua_block {
    -- read their settings from the environment while it is visible
    for _, name in ipairs({ "hcv", "aws", "gcp", "azure", "conjur" }) do
      require("kong.vaults." .. name)
    end
  }
  server {
    listen 127.0.0.1:%d reuseport;
    location = /get {
      content_by_lua_block {
        local cjson = require "cjson.safe"
        ngx.req.read_body()
        local req = cjson.decode(ngx.req.get_body_data())
        local value, err = require("kong.vaults." .. req.backend).get(req.conf, req.resource, req.version)
        local kong_modules = {}
        for name in pairs(package.loaded) do
          if (name == "kong" or name:find("^kong%%.")) and not name:find("^kong%%.vaults") then
            kong_modules[#kong_modules + 1] = name
          end
        end
        ngx.say(cjson.encode({ value = value, err = err, worker = ngx.worker.id(),
                               kong_global = kong ~= nil, kong_modules = kong_modules }))
      }
    }
  }
}
]]


describe("vault backends in a plain OpenResty app (no Kong)", function()
  local prefix = kr.project.tmp .. "/nginx-vault-openresty"
  local nginx, confs = nil, {}

  local function nginx_cmd(args)
    return fmt("%s -p %s -c conf/nginx.conf %s", nginx, prefix, args or "")
  end

  -- one call of the app, on a new connection (reuseport spreads them over
  -- the workers): its decoded answer
  local function get(backend, resource, version)
    local status, body, json = vh.http("POST", fmt("http://127.0.0.1:%d/get", APP_PORT),
                                       { backend = backend, conf = confs[backend], resource = resource,
                                         version = version }, { Connection = "close" })
    assert(status == 200, body)
    return json
  end

  lazy_setup(function()
    local dir = kr.project.tmp .. "/spec-26_openresty"
    assert(kr.project.run("rm -rf " .. dir .. " && mkdir -p " .. dir))

    local bao = vh.start_openbao(BAO_PORT)
    for _, pw in ipairs({ S.hcv_one, S.hcv_two }) do
      assert.equals(200, (vh.bao(bao, "POST", "secret/data/app/db", { data = { password = pw } })))
    end
    confs.hcv = { protocol = "http", host = "127.0.0.1", port = BAO_PORT, kv = "v2", token = "root" }

    -- moto as started answers unsigned calls; the one that stores the secret
    -- names its service in the credential scope, which moto routes by
    local moto = vh.start_moto(MOTO_PORT)
    local status, body = vh.http("POST", moto .. "/", cjson.encode({ Name = "app/plain", SecretString = S.aws }), {
      ["Content-Type"] = "application/x-amz-json-1.1",
      ["X-Amz-Target"] = "secretsmanager.CreateSecret",
      Authorization = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/secretsmanager/aws4_request, "
                      .. "SignedHeaders=host, Signature=0",
    })
    assert(status == 200, body)
    confs.aws = { region = "us-east-1", endpoint_url = moto }

    local priv, pub = vh.rsa_files(dir, "sa")
    local gcp = vh.start_standin("gcp", GCP_PORT, { sa_email = EMAIL, project = PROJECT, sa_public_key = pub })
    vh.standin_secret(gcp, "api-token", S.gcp)
    local private_pem = kr.project.read_file(priv)
    vh.remember_secrets({ private_pem })
    local sa_json = cjson.encode({ type = "service_account", project_id = PROJECT, private_key_id = "0123abcd",
                                   private_key = private_pem, client_email = EMAIL, token_uri = gcp .. "/token" })
    confs.gcp = { project_id = PROJECT, api_url = gcp }

    local az = vh.start_standin("azure", AZ_PORT, { tenant = TENANT, client_id = CLIENT_ID,
                                                    client_secret = S.az_client })
    vh.standin_secret(az, "api-token", S.azure)
    confs.azure = { vault_uri = az, tenant_id = TENANT, client_id = CLIENT_ID, authority_host = az }

    local conjur = vh.start_standin("conjur", CONJUR_PORT, { account = ACCOUNT, conjur_login = LOGIN,
                                                             conjur_api_key = S.conjur_key })
    vh.standin_secret(conjur, "BotApp/secretVar", S.conjur)
    confs.conjur = { endpoint_url = conjur, account = ACCOUNT, login = LOGIN, api_key = S.conjur_key }

    -- the nginx binary `kong start` would run, from Kong's own lookup
    nginx = assert(require("kong.cmd.utils.nginx_signals").find_nginx_bin(helpers.test_conf))
    local lua_path = kr.project.root .. "/lua/?.lua;" .. kr.project.root .. "/lua/?/init.lua;"
                     .. assert(os.getenv("LUA_PATH"))
    assert(kr.project.run(fmt("rm -rf %s && mkdir -p %s/conf %s/logs %s/tmp", prefix, prefix, prefix, prefix)))
    kr.project.write_file(prefix .. "/conf/nginx.conf",
                          fmt(NGINX_CONF, lua_path, assert(os.getenv("LUA_CPATH")), APP_PORT))
    local env = vh.cli_env({
      AWS_ACCESS_KEY_ID = "AKIDOPENRESTYAPP", AWS_SECRET_ACCESS_KEY = "openresty-app-secret-key",
      AWS_EC2_METADATA_DISABLED = "true", AWS_SHARED_CREDENTIALS_FILE = dir .. "/none",
      AWS_CONFIG_FILE = dir .. "/none", GCP_SERVICE_ACCOUNT = sa_json, AZURE_CLIENT_SECRET = S.az_client,
    })
    local ok, out = kr.project.run(env .. nginx_cmd())
    assert(ok, out)
    helpers.wait_until(function()
      return kr.project.port_in_use(APP_PORT)
    end, 10)
  end)

  lazy_teardown(function()
    if nginx then
      kr.project.run(nginx_cmd("-s stop"))
    end
    vh.stop_servers()
  end)

  it("hcv: a KV v2 secret and an older version", function()
    local json = get("hcv", "app/db")
    assert.is_nil(json.err)
    assert.same({ password = S.hcv_two }, cjson.decode(json.value))
    assert.same({ password = S.hcv_one }, cjson.decode(get("hcv", "app/db", 1).value))
  end)

  it("aws: a Secrets Manager secret, signed with the credentials of the environment", function()
    local json = get("aws", "app/plain")
    assert.is_nil(json.err)
    assert.equals(S.aws, json.value)
  end)

  it("gcp: a Secret Manager secret through the service account of GCP_SERVICE_ACCOUNT", function()
    local json = get("gcp", "api-token")
    assert.is_nil(json.err)
    assert.equals(S.gcp, json.value)
    assert.is_true(vh.hits("http://127.0.0.1:" .. GCP_PORT)["gcp-token"] >= 1)
  end)

  it("azure: a Key Vault secret with the client secret of AZURE_CLIENT_SECRET", function()
    local json = get("azure", "api-token")
    assert.is_nil(json.err)
    assert.equals(S.azure, json.value)
  end)

  it("conjur: a variable after authn with the API key", function()
    local json = get("conjur", "BotApp/secretVar")
    assert.is_nil(json.err)
    assert.equals(S.conjur, json.value)
  end)

  it("errors come back as nil, err with no secret in them", function()
    local json = get("hcv", "app/missing")
    assert.is_nil(json.value)
    assert.matches("app/missing not found", json.err, 1, true)
    confs.conjur.api_key = "not-the-api-key"
    json = get("conjur", "BotApp/secretVar")
    confs.conjur.api_key = S.conjur_key
    assert.is_nil(json.value)
    assert.is_string(json.err)
    for _, secret in pairs(S) do
      assert.is_nil(json.err:find(secret, 1, true))
    end
  end)

  it("runs on both workers with no Kong module loaded and no secret in error.log", function()
    local seen, answers = {}, {}
    kr.within(10, function()
      local json = get("aws", "app/plain")
      answers[#answers + 1] = json
      seen[json.worker] = true
      return seen[0] and seen[1]
    end, "an answer from each worker")
    for _, json in ipairs(answers) do
      assert.equals(S.aws, json.value)
      assert.is_false(json.kong_global)
      assert.same({}, json.kong_modules)
    end
    local log = assert(kr.project.read_file(prefix .. "/logs/error.log"))
    for _, secret in pairs(S) do
      assert(not log:find(secret, 1, true), "a secret is in error.log")
    end
  end)
end)
