-- Config of the `conjur` vault (CyberArk Conjur / Secrets Manager v5 REST
-- API), with the field names of Kong Enterprise's conjur vault
-- (`endpoint_url`, `auth_method`, `account`, `login`, `api_key`), so
-- existing `vaults` entities and KONG_VAULT_CONJUR_<FIELD> settings carry
-- over. Plain data (no typedefs): kong.vaults.conjur reads its defaults
-- outside Kong too. `auth_method = "jwt"` (Conjur's JWT authenticator, for
-- Kubernetes workloads) and its fields `authn_jwt_service_id` and
-- `jwt_token_file` are kong-keyring's own.

local helpers = require "kong.vaults.helpers"

return helpers.vault_schema("conjur", {
  { endpoint_url = { type = "string", match = [[^https?://[^?#]+$]] } },
  { auth_method = { type = "string", one_of = { "api_key", "jwt" }, default = "api_key" } },
  { account = { type = "string" } },
  { login = { type = "string" } },
  { api_key = { type = "string", referenceable = true, encrypted = true } },
  { authn_jwt_service_id = { type = "string", match = [[^[%w_%.%-]+$]] } },
  { jwt_token_file = { type = "string", default = "/var/run/secrets/kubernetes.io/serviceaccount/token" } },
})
