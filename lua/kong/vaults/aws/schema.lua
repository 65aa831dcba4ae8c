-- Config of the `aws` vault (AWS Secrets Manager), with the field names of
-- Kong Enterprise's aws vault, so existing `vaults` entities and
-- KONG_VAULT_AWS_<FIELD> settings carry over. Plain data (no typedefs).

-- each field gets its own table (Kong's schema code annotates fields)
local function ttl()
  return { type = "number", between = { 0, 100000000 } }
end

local function url()
  return { type = "string", match = [[^https?://[^/?#]+/?$]] }
end

return {
  name = "aws",
  fields = {
    { config = { type = "record", fields = {
      { region = { type = "string", match = [[^[a-z][a-z0-9%-]+$]] } },
      { endpoint_url = url() },
      { assume_role_arn = { type = "string", referenceable = true } },
      { role_session_name = { type = "string", default = "KongVault" } },
      { sts_endpoint_url = url() },
      { ttl = ttl() },
      { neg_ttl = ttl() },
      { resurrect_ttl = ttl() },
    } } },
  },
}
