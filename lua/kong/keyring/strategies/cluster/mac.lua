-- Authentication of keyring messages and rows under `keyring_cluster_secret`
-- (docs/design.md, "Cluster strategy", "Trust"): HMAC-SHA256 over a label
-- and length-prefixed parts, so that no two different inputs share a MAC.
-- Without a secret nothing is signed and everything verifies: the database
-- is trusted, as in Kong Enterprise.

local hmac = require "resty.openssl.hmac"
local to_hex = require("resty.string").to_hex


local bxor = require("bit").bxor
local byte = string.byte
local concat = table.concat
local select = select
local type = type
local tostring = tostring
local setmetatable = setmetatable


local _M = {}
local mt = { __index = _M }


--- `secret`: the cluster secret, or nil for none.
function _M.new(secret)
  return setmetatable({ secret = secret }, mt)
end


function _M:enabled()
  return self.secret ~= nil
end


--- Hex HMAC of `label` and the parts, or nil when no secret is set.
function _M:sign(label, ...)
  if not self.secret then
    return nil
  end
  local input = { label }
  for i = 1, select("#", ...) do
    local part = tostring((select(i, ...)))
    input[#input + 1] = #part .. ":" .. part
  end
  local h = assert(hmac.new(self.secret, "sha256"))
  return to_hex(assert(h:final(concat(input, "\n"))))
end


-- constant time in the length of `expected`
local function same(given, expected)
  if #given ~= #expected then
    return false
  end
  local diff = 0
  for i = 1, #expected do
    diff = diff + bxor(byte(given, i), byte(expected, i))
  end
  return diff == 0
end


--- Whether `mac` authenticates `label` and the parts (always true without a secret).
function _M:verify(mac, label, ...)
  if not self.secret then
    return true
  end
  if type(mac) ~= "string" then
    return false
  end
  return same(mac, self:sign(label, ...))
end


return _M
