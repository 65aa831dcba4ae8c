-- kong.api.endpoints for the harness: the DAO error -> HTTP status maps of
-- Kong's kong/api/endpoints.lua (handle_error, used by the entity
-- endpoints) and of the Admin API's on_error (kong/api/api_helpers.lua,
-- reached through helpers.yield_error): schema / invalid primary key /
-- foreign key / offset / size / options errors 400, NOT_FOUND 404,
-- OPERATION_UNSUPPORTED 405, UNIQUE violation 409, PRIMARY_KEY violation 400
-- in handle_error but 409 in on_error (as in Kong). Anything else (database
-- errors, TRANSFORMATION_ERROR included) is logged and answered
-- 500 { message = "An unexpected error occurred" }. The body of a mapped
-- error is the error object without `strategy` ({ code, name, message,
-- fields }).

local Errors = require "harness.db.errors"


local type = type
local pairs = pairs
local tostring = tostring


local codes = Errors.codes


local ERRORS_HTTP_CODES = {
  [codes.INVALID_PRIMARY_KEY]     = 400,
  [codes.SCHEMA_VIOLATION]        = 400,
  [codes.PRIMARY_KEY_VIOLATION]   = 400,
  [codes.FOREIGN_KEY_VIOLATION]   = 400,
  [codes.UNIQUE_VIOLATION]        = 409,
  [codes.NOT_FOUND]               = 404,
  [codes.INVALID_OFFSET]          = 400,
  [codes.INVALID_SIZE]            = 400,
  [codes.INVALID_UNIQUE]          = 400,
  [codes.INVALID_OPTIONS]         = 400,
  [codes.OPERATION_UNSUPPORTED]   = 405,
  [codes.FOREIGN_KEYS_UNRESOLVED] = 400,
  [codes.INVALID_FOREIGN_KEY]     = 400,
}


local _M = { ERRORS_HTTP_CODES = ERRORS_HTTP_CODES }


local ON_ERROR_HTTP_CODES = {}
for code, status in pairs(ERRORS_HTTP_CODES) do
  ON_ERROR_HTTP_CODES[code] = status
end
ON_ERROR_HTTP_CODES[codes.PRIMARY_KEY_VIOLATION] = 409


local function send_error(map, err_t)
  if type(err_t) ~= "table" then
    kong.log.err(tostring(err_t))
    return kong.response.exit(500, { message = "An unexpected error occurred" })
  end
  local status = map[err_t.code]
  if not status then
    kong.log.err(tostring(err_t))
    return kong.response.exit(500, { message = "An unexpected error occurred" })
  end
  local body = {}
  for k, v in pairs(err_t) do
    if k ~= "strategy" then
      body[k] = v
    end
  end
  return kong.response.exit(status, body)
end


--- Ends the request with the status and body for a DAO error.
function _M.handle_error(err_t)
  return send_error(ERRORS_HTTP_CODES, err_t)
end


--- The Admin API's on_error (what helpers.yield_error leads to).
function _M.on_error(err_t)
  return send_error(ON_ERROR_HTTP_CODES, err_t)
end


return _M
