-- Config of the `gcp` vault (Google Cloud Secret Manager), with the field
-- name of Kong Enterprise's gcp vault (`project_id`), so existing `vaults`
-- entities and KONG_VAULT_GCP_<FIELD> settings carry over. The service
-- account comes from the GCP_SERVICE_ACCOUNT environment variable (its JSON
-- key file, as Kong Enterprise reads it) or else the metadata server. The
-- endpoint fields are kong-keyring's own (private endpoints, tests). Plain
-- data (no typedefs): kong.vaults.gcp reads its defaults outside Kong too.

-- each field gets its own table (Kong's schema code annotates fields)
local function ttl()
  return { type = "number", between = { 0, 100000000 } }
end

local function url()
  return { type = "string", match = [[^https?://[^/?#]+/?$]] }
end

return {
  name = "gcp",
  fields = {
    { config = { type = "record", fields = {
      { project_id = { type = "string", match = [[^[%w][%w%-%.:]*$]] } },
      -- OAuth token endpoint for the service account's signed JWT; default:
      -- the key file's token_uri, else Google's
      { token_url = { type = "string", match = [[^https?://[^?#]+$]] } },
      { api_url = url() },       -- Secret Manager; default Google's
      { metadata_url = url() },  -- default GCE_METADATA_HOST, else metadata.google.internal
      { ttl = ttl() },
      { neg_ttl = ttl() },
      { resurrect_ttl = ttl() },
    } } },
  },
}
