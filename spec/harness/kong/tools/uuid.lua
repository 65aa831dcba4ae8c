-- kong.tools.uuid for the harness: random (v4) UUIDs from /dev/urandom.
-- The file is unbuffered so that forked workers never share read-ahead bytes.

local fmt = string.format
local byte = string.byte
local find = string.find


local _M = {}


local urandom


local function random_bytes(n)
  if not urandom then
    urandom = assert(io.open("/dev/urandom", "rb"))
    urandom:setvbuf("no")
  end
  return urandom:read(n)
end
_M.random_bytes = random_bytes


function _M.uuid()
  local b = { byte(random_bytes(16), 1, 16) }
  b[7] = 0x40 + b[7] % 16         -- version 4
  b[9] = 0x80 + b[9] % 64         -- RFC 4122 variant
  return fmt("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
             b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16])
end


local UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"


function _M.is_valid_uuid(s)
  return type(s) == "string" and find(s, UUID_PATTERN) ~= nil
end


return _M
