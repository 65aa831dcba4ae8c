-- vaults (Kong: kong/db/schema/entities/vaults.lua). `config` is abstract and
-- specialised per vault strategy by `subschemas[name]` (the strategy's
-- kong.vaults.<name>.schema, added by harness.vaults in init). An entity is
-- addressed by id or `prefix`. Kong keeps the rows in `sm_vaults`; the
-- harness table is `vaults`. Not reproduced: the custom DAO
-- (kong/db/dao/vaults.lua), `unique_across_ws`, reference resolution.

local typedefs = require "kong.db.schema.typedefs"


local pairs = pairs
local sort = table.sort


-- a prefix must not shadow a vault name: `{vault://<name>/...}` is looked up
-- by name first (Kong computes the list when the schema module loads)
local function loaded_vault_names()
  local names = {}
  local conf = kong and kong.configuration
  for name in pairs(conf and conf.loaded_vaults or {}) do
    names[#names + 1] = name
  end
  sort(names)
  return names
end


return {
  name = "vaults",
  primary_key = { "id" },
  cache_key = { "prefix" },
  endpoint_key = "prefix",
  subschema_key = "name",
  subschema_error = "vault '%s' is not installed",
  workspaceable = true,
  fields = {
    { id = typedefs.uuid },
    { prefix = { type = "string", required = true, unique = true,
                 match = [[^[a-z][a-z%d-]-[a-z%d]+$]], not_one_of = loaded_vault_names() } },
    { name = { type = "string", required = true } },
    { description = { type = "string" } },
    { config = { type = "record", abstract = true } },
    { created_at = typedefs.auto_timestamp_s },
    { updated_at = typedefs.auto_timestamp_s },
    { tags = typedefs.tags },
  },
}
