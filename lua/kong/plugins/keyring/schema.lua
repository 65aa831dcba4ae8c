-- The keyring plugin is never attached to a route, service or consumer: it
-- only needs loading (`plugins = bundled,keyring`). Its settings come from
-- KONG_KEYRING_* variables (see kong.keyring.config).

return {
  name = "keyring",
  fields = {
    { protocols = { type = "set", elements = { type = "string", one_of = { "http", "https" } },
                    default = { "http", "https" } } },
    { config = { type = "record", fields = {} } },
  },
  entity_checks = {
    { custom_entity_check = {
      field_sources = { "config" },
      fn = function()
        return nil, "the keyring plugin is not configured per route: load it and set KONG_KEYRING_* variables"
      end,
    } },
  },
}
