-- basic-auth password hashing, as Kong's kong/plugins/basic-auth/crypto.lua
-- does it: hex SHA-1 of password .. consumer id.

local sha1_bin = ngx.sha1_bin
local byte = string.byte
local fmt = string.format
local gsub = string.gsub


local _M = {}


local function to_hex(s)
  return (gsub(s, ".", function(c) return fmt("%02x", byte(c)) end))
end


function _M.hash(consumer_id, password)
  if password == nil or password == ngx.null then
    password = ""
  end
  return to_hex(sha1_bin(password .. consumer_id))
end


return _M
