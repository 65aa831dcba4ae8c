-- Config of the `hcv` vault (HashiCorp Vault / OpenBao KV v1 and v2), with
-- the field names of Kong Enterprise's hcv vault, so existing `vaults`
-- entities and KONG_VAULT_HCV_<FIELD> settings carry over. Plain data (no
-- typedefs): kong.vaults.hcv reads its defaults outside Kong too. The cert
-- auth fields are the ones Kong Enterprise 3.11 added; `cert_auth_path` is
-- kong-keyring's own (the mount of the cert auth method, as kube_auth_path
-- and approle_auth_path are for theirs).

local helpers = require "kong.vaults.helpers"

return helpers.vault_schema("hcv", {
  { protocol = { type = "string", one_of = { "http", "https" }, default = "http" } },
  { host = { type = "string", default = "127.0.0.1" } },
  { port = { type = "integer", between = { 1, 65535 }, default = 8200 } },
  { mount = { type = "string", default = "secret", match = [[^[%w_%-][%w_%-/]*$]] } },
  { kv = { type = "string", one_of = { "v1", "v2" }, default = "v1" } },
  { token = { type = "string", referenceable = true, encrypted = true } },
  { namespace = { type = "string" } },
  { auth_method = { type = "string", one_of = { "token", "kubernetes", "approle", "cert" }, default = "token" } },
  { kube_role = { type = "string" } },
  { kube_auth_path = { type = "string", default = "kubernetes" } },
  { kube_api_token_file = { type = "string",
                            default = "/var/run/secrets/kubernetes.io/serviceaccount/token" } },
  { approle_auth_path = { type = "string", default = "approle" } },
  { approle_role_id = { type = "string" } },
  { approle_secret_id = { type = "string", referenceable = true, encrypted = true } },
  { approle_secret_id_file = { type = "string" } },
  { approle_response_wrapping = { type = "boolean", default = false } },
  -- PEM: the client certificate (chain) and its private key
  { cert_auth_cert = { type = "string" } },
  { cert_auth_cert_key = { type = "string", referenceable = true, encrypted = true } },
  { cert_auth_role_name = { type = "string" } },
  { cert_auth_path = { type = "string", default = "cert" } },
})
