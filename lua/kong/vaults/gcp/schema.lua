-- Config of the `gcp` vault (Google Cloud Secret Manager), with the field
-- name of Kong Enterprise's gcp vault (`project_id`), so existing `vaults`
-- entities and KONG_VAULT_GCP_<FIELD> settings carry over. The credentials
-- come from the GCP_SERVICE_ACCOUNT environment variable (a service account
-- key file, as Kong Enterprise reads it, or an external account) or else
-- the metadata server. The
-- endpoint fields are kong-keyring's own (private endpoints, tests). Plain
-- data (no typedefs): kong.vaults.gcp reads its defaults outside Kong too.

local helpers = require "kong.vaults.helpers"

return helpers.vault_schema("gcp", {
  { project_id = { type = "string", match = [[^[%w][%w%-%.:]*$]] } },
  -- OAuth token endpoint for the service account's signed JWT; default:
  -- the key file's token_uri, else Google's
  { token_url = { type = "string", match = [[^https?://[^?#]+$]] } },
  { api_url = helpers.url_field() },       -- Secret Manager; default Google's
  { metadata_url = helpers.url_field() },  -- default GCE_METADATA_HOST, else metadata.google.internal
})
