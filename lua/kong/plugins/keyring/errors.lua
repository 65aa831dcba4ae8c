-- The one place where the kind of a failure (kong.keyring returns
-- `nil, err, kind`; the strategy and the transformations pass it on) becomes
-- an HTTP status. A failure without a kind is the database's or Kong's: 500.

local STATUS = {
  invalid = 400,
  authentication = 400,
  not_found = 404,
  conflict = 409,
  unavailable = 503,
  full = 507,
  internal = 500,
}


return {
  status = function(kind)
    return STATUS[kind] or 500
  end,
}
