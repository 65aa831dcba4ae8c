-- kong.meta for the harness: the Kong version whose behaviour it reproduces.

local version = { major = 3, minor = 10, patch = 0 }
local str = version.major .. "." .. version.minor .. "." .. version.patch

return {
  _NAME = "kong",
  _VERSION = str,
  _VERSION_TABLE = version,
  _SERVER_TOKENS = "kong/" .. str,
  version = str,
}
