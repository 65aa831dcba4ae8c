-- basic-auth in the harness exists for its entity (credentials, hashing);
-- the harness proxy runs no plugin phases.

local kong_meta = require "kong.meta"


return {
  VERSION = kong_meta.version,
  PRIORITY = 1100,
}
