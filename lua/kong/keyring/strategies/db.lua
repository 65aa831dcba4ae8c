-- SQL through Kong's database connector (`kong.db.connector`, pgmoon) with
-- the error worded once for every keyring caller.

local tostring = tostring


local _M = {}


--- Runs `sql` on `db` (kong.db): the result, or nil and
-- "keyring database error: ..." (several statements in one call run as one
-- implicit transaction: the result is then a list of results).
function _M.query(db, sql)
  local res, err = db.connector:query(sql)
  if not res then
    return nil, "keyring database error: " .. tostring(err)
  end
  return res
end


return _M
