-- `keyring_blob_path` (docs/admin-api.md, "Configuration"), meant for tests:
-- with `keyring_public_key` set, the node writes its export blob there
-- (mode 0600, replaced atomically) whenever its ring changed; at start, with
-- `keyring_private_key` set, it imports the blob found there (either blob
-- version) and activates its active key. An unreadable blob is logged and
-- start-up goes on.

local ffi = require "ffi"
local keyring = require "kong.keyring"


local ngx = ngx
local io_open = io.open
local os_rename = os.rename
local os_remove = os.remove
local concat = table.concat
local tonumber = tonumber
local setmetatable = setmetatable


ffi.cdef [[
unsigned int umask(unsigned int mask);
]]


local _M = {}
local mt = { __index = _M }


local function log(level, ...)
  ngx.log(level, "[keyring] ", ...)
end


--- nil when `keyring_blob_path` is not set.
function _M.new(conf)
  if not conf.keyring_blob_path then
    return nil
  end
  return setmetatable({ conf = conf, path = conf.keyring_blob_path }, mt)
end


-- `data` into `path`, created with mode 0600 (umask 077 while it is opened)
local function write_private(path, data)
  local old = ffi.C.umask(tonumber("077", 8))
  local f, err = io_open(path, "wb")
  ffi.C.umask(old)
  if not f then
    return nil, err
  end
  local ok, werr = f:write(data)
  f:close()
  if not ok then
    os_remove(path)
    return nil, werr
  end
  return true
end


--- Writes the blob when the ring differs from the one last written.
function _M:write()
  local public = self.conf.keyring_public_key
  if not public then
    return true
  end
  local ring, err = keyring.keys()
  if not ring then
    return nil, err
  end
  local fingerprint = concat(ring.ids, " ") .. "|" .. (ring.active or "")
  if fingerprint == self.written then
    return true
  end
  local blob
  blob, err = keyring.export(public)
  if not blob then
    log(ngx.ERR, "cannot write keyring_blob_path: ", err)
    return nil, err
  end
  local tmp = self.path .. ".tmp." .. ngx.worker.pid()
  local ok
  ok, err = write_private(tmp, blob)
  if ok then
    ok, err = os_rename(tmp, self.path)
  end
  if not ok then
    os_remove(tmp)
    log(ngx.ERR, "cannot write keyring_blob_path ", self.path, ": ", err)
    return nil, err
  end
  self.written = fingerprint
  return true
end


--- At start: imports the blob at the path (once), recorded in the cluster
-- through `cluster:imported`.
function _M:load(cluster)
  local private = self.conf.keyring_private_key
  if self.loaded or not private then
    return true
  end
  local f = io_open(self.path, "rb")
  if not f then
    self.loaded = true
    return true
  end
  local blob = f:read("*a")
  f:close()
  local ring, err = keyring.import(blob or "", private)
  if not ring then
    self.loaded = true
    log(ngx.ERR, "cannot load keyring_blob_path ", self.path, ": ", err)
    return true
  end
  local ok
  ok, err = cluster:imported(ring.ids, ring.active)
  if not ok then
    -- the database failed: try again with the next start-up attempt
    return nil, err
  end
  self.loaded = true
  log(ngx.NOTICE, "loaded keys ", concat(ring.ids, ", "), " from keyring_blob_path")
  return true
end


return _M
