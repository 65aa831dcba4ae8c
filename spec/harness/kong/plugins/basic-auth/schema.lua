-- basic-auth plugin config (Kong: kong/plugins/basic-auth/schema.lua).

local typedefs = require "kong.db.schema.typedefs"


return {
  name = "basic-auth",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols },
    { config = {
        type = "record",
        fields = {
          { anonymous = { type = "string" } },
          { hide_credentials = { type = "boolean", required = true, default = false } },
          { realm = { type = "string", required = true, default = "service" } },
        },
    } },
  },
}
