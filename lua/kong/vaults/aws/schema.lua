-- Config of the `aws` vault (AWS Secrets Manager), with the field names of
-- Kong Enterprise's aws vault, so existing `vaults` entities and
-- KONG_VAULT_AWS_<FIELD> settings carry over. Plain data (no typedefs).

local helpers = require "kong.vaults.helpers"

return helpers.vault_schema("aws", {
  { region = { type = "string", match = [[^[a-z][a-z0-9%-]+$]] } },
  { endpoint_url = helpers.url_field() },
  { assume_role_arn = { type = "string", referenceable = true } },
  { role_session_name = { type = "string", default = "KongVault" } },
  { sts_endpoint_url = helpers.url_field() },
})
