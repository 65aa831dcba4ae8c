-- Config of the `azure` vault (Azure Key Vault secrets), with the field
-- names of Kong Enterprise's azure vault (`vault_uri`, `client_id`,
-- `tenant_id`, `location`, `type`, `credentials_prefix`), so existing
-- `vaults` entities and KONG_VAULT_AZURE_<FIELD> settings carry over. The
-- client secret is read from <credentials_prefix>_CLIENT_SECRET only, as
-- Kong Enterprise documents. `authority_host`, `identity_endpoint` and
-- `api_version` are kong-keyring's own (sovereign clouds, tests). Plain data
-- (no typedefs): kong.vaults.azure reads its defaults outside Kong too.

local helpers = require "kong.vaults.helpers"

return helpers.vault_schema("azure", {
  { vault_uri = helpers.url_field() },
  { client_id = { type = "string" } },
  { tenant_id = { type = "string", match = [[^[%w%-%.]+$]] } },
  -- the vault's region: accepted for compatibility; the vault_uri names the vault
  { location = { type = "string" } },
  -- Key Vault object type: secrets only (as Kong Enterprise)
  { type = { type = "string", one_of = { "secrets" }, default = "secrets" } },
  { credentials_prefix = { type = "string", default = "AZURE", match = [[^[%a_][%w_]*$]] } },
  -- Entra ID authority; default <prefix>_AUTHORITY_HOST, else login.microsoftonline.com
  { authority_host = helpers.url_field() },
  -- managed identity endpoint (IMDS); default http://169.254.169.254; when
  -- set, App Service's IDENTITY_ENDPOINT is not used
  { identity_endpoint = helpers.url_field() },
  { api_version = { type = "string", default = "7.4", match = [[^[%w%.%-]+$]] } },
})
