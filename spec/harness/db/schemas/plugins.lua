-- plugins (Kong: kong/db/schema/entities/plugins.lua): `config` is abstract
-- and specialised per plugin by `subschemas[name]` (the plugin's schema.lua).
-- There are no routes or services in the harness: `route` and `service` are
-- plain nullable references without existence checks.

local typedefs = require "kong.db.schema.typedefs"


local null = ngx.null


return {
  name = "plugins",
  primary_key = { "id" },
  cache_key = { "name", "route", "service", "consumer" },
  subschema_key = "name",
  subschema_error = "plugin '%s' not enabled; add it to the 'plugins' configuration property",
  workspaceable = true,
  fields = {
    { id = typedefs.uuid },
    { name = { type = "string", required = true } },
    { created_at = typedefs.auto_timestamp_s },
    { route = { type = "foreign", reference = "routes", default = null, on_delete = "cascade" } },
    { service = { type = "foreign", reference = "services", default = null, on_delete = "cascade" } },
    { consumer = { type = "foreign", reference = "consumers", default = null, on_delete = "cascade" } },
    { config = { type = "record", abstract = true } },
    { protocols = typedefs.protocols },
    { enabled = { type = "boolean", required = true, default = true } },
    { tags = typedefs.tags },
  },
}
