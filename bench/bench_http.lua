-- JSON calls to a local Kong Admin API for the real-Kong bench drivers.
local http = require "resty.http"
local cjson = require "cjson.safe"

local _M = {}

--- `method` `path` on 127.0.0.1:`port` with `body` (a table, sent as JSON):
-- the status and the decoded JSON (or the raw body), or nil and an error.
function _M.call(port, method, path, body, timeout)
  local c = http.new()
  c:set_timeout(timeout or 30000)
  local res, err = c:request_uri("http://127.0.0.1:" .. port .. path, {
    method = method,
    body = body and cjson.encode(body) or nil,
    headers = body and { ["Content-Type"] = "application/json" } or nil,
  })
  if not res then
    return nil, err
  end
  return res.status, cjson.decode(res.body or "") or res.body
end

return _M
