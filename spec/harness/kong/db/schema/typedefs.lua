-- kong.db.schema.typedefs for the harness: the few field types the harness
-- schemas and plugin schemas use, with Kong's attributes. Each one can be
-- called with overrides, as in Kong (`typedefs.key { encrypted = true }`).

local null = ngx and ngx.null


local function define(tbl)
  return setmetatable(tbl, {
    __call = function(t, arg)
      arg = arg or {}
      for k, v in pairs(t) do
        if arg[k] == nil then
          arg[k] = v
        end
      end
      return arg
    end,
  })
end


local PROTOCOLS = { "grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss" }


local typedefs = {}

typedefs.uuid = define { type = "string", uuid = true, auto = true }
typedefs.auto_timestamp_s = define { type = "integer", timestamp = true, auto = true }
typedefs.auto_timestamp_ms = define { type = "number", timestamp = true, auto = true }
typedefs.name = define { type = "string", unique = true }
typedefs.tags = define { type = "set", elements = { type = "string" } }
typedefs.certificate = define { type = "string" }
typedefs.key = define { type = "string" }
typedefs.ttl = define { type = "number", between = { 0, 100000000 } }
typedefs.port = define { type = "integer", between = { 0, 65535 } }
typedefs.host = define { type = "string" }
typedefs.path = define { type = "string", starts_with = "/" }

typedefs.consumer = define { type = "foreign", reference = "consumers" }
typedefs.no_consumer = define { type = "foreign", reference = "consumers", eq = null }
typedefs.no_route = define { type = "foreign", reference = "routes", eq = null }
typedefs.no_service = define { type = "foreign", reference = "services", eq = null }

typedefs.protocols = define {
  type = "set",
  required = true,
  default = { "grpc", "grpcs", "http", "https" },
  elements = { type = "string", one_of = PROTOCOLS },
}

typedefs.protocols_http = define {
  type = "set",
  required = true,
  default = { "http", "https" },
  elements = { type = "string", one_of = { "http", "https" } },
}


return typedefs
