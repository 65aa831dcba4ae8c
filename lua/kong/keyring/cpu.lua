-- Refuses a native library compiled for CPU features this machine lacks
-- (scripts/cargo-build.sh), before any of its code runs: it would otherwise
-- kill nginx with SIGILL on its first AES call. The library lists the
-- features in the data symbol `kk_required_cpu`; reading it runs nothing.

local ffi = require "ffi"


local io_open = io.open
local ffi_string = ffi.string
local concat = table.concat


ffi.cdef [[
extern const char kk_required_cpu[64];
]]


local _M = {}


--- Features `required` (space-separated) that are not in `flags` (a set).
function _M.missing(required, flags)
  local out = {}
  for name in required:gmatch("%S+") do
    if not flags[name] then
      out[#out + 1] = name
    end
  end
  return out
end


--- The flags of the first processor in `cpuinfo` (a /proc/cpuinfo path), as
-- a set; nil when the file cannot be read (not Linux).
function _M.flags(cpuinfo)
  local f = io_open(cpuinfo or "/proc/cpuinfo", "r")
  if not f then
    return nil
  end
  local set = {}
  for line in f:lines() do
    local list = line:match("^flags%s*:(.*)$")
    if list then
      for name in list:gmatch("%S+") do
        set[name] = true
      end
      break
    end
  end
  f:close()
  return set
end


--- What the library at `path` was compiled to require.
function _M.required(path)
  return ffi_string(ffi.load(path).kk_required_cpu)
end


--- true, or nil and an error naming what is missing.
-- @tparam string path the native library
-- @tparam[opt] string cpuinfo /proc/cpuinfo, or another file (tests)
function _M.check(path, cpuinfo)
  local flags = _M.flags(cpuinfo)
  if not flags then
    return true
  end
  local missing = _M.missing(_M.required(path), flags)
  if #missing > 0 then
    return nil, path .. " was built for CPU features this machine lacks (" .. concat(missing, ", ")
                .. "); rebuild it here, or with KONG_KEYRING_PORTABLE=1"
  end
  return true
end


return _M
