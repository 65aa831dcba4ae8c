-- kong.db.connector for the harness: PostgreSQL through luasql (blocking,
-- acceptable in tests only). Shapes results like Kong's Postgres connector
-- (pgmoon with convert_null): an array of rows, NULL as ngx.null, booleans,
-- numbers, decoded json/jsonb and text arrays; a command without a result set
-- gives { affected_rows = n }; errors give nil, err.
--
-- Connections are per process (the one opened in init_by_lua is closed
-- before the workers fork) and reconnect after a connection error. A
-- statement that opens a transaction (BEGIN / START TRANSACTION) reserves
-- its connection for the calling coroutine until COMMIT / ROLLBACK / END, so
-- a request holding a transaction across ngx.sleep does not share it with
-- other requests of the same worker (Kong gives each request its own
-- connection). Several statements in one string return the last result only.

local luasql = require "luasql.postgres"
local json = require "harness.json"


local type = type
local tonumber = tonumber
local tostring = tostring
local ipairs = ipairs
local concat = table.concat
local remove = table.remove
local find = string.find
local sub = string.sub
local gsub = string.gsub
local byte = string.byte
local char = string.char
local lower = string.lower
local match = string.match
local running = coroutine.running
local co_status = coroutine.status


local null = ngx.null
local MAX_CONNECTIONS = 8


local _M = {}
local mt = { __index = _M }


function _M.new(conf)
  return setmetatable({
    host = conf.pg_host or "127.0.0.1",
    port = tonumber(conf.pg_port) or 5432,
    database = conf.pg_database or "kong",
    user = conf.pg_user or "postgres",
    password = conf.pg_password,
    conns = {},
  }, mt)
end


-- pid of this process (the master before fork, then each worker)
local function current_pid()
  return ngx.worker.pid()
end


local function clean_error(err)
  err = tostring(err)
  err = gsub(err, "^LuaSQL: error executing statement%. PostgreSQL: ", "")
  err = gsub(err, "^LuaSQL: error connecting to database%. PostgreSQL: ", "could not connect: ")
  err = gsub(err, "%s+$", "")
  return err
end


local function is_connection_error(err)
  return find(err, "server closed the connection", 1, true)
      or find(err, "no connection to the server", 1, true)
      or find(err, "terminating connection", 1, true)
      or find(err, "connection not open", 1, true)
      or find(err, "could not send data", 1, true)
      or find(err, "SSL SYSCALL", 1, true)
end


local function open(self)
  if not self.env then
    self.env = luasql.postgres()
  end
  local con, err = self.env:connect(self.database, self.user, self.password, self.host, self.port)
  if not con then
    return nil, clean_error(err)
  end
  con:execute("SET TIME ZONE 'UTC'")
  con:execute("SET client_min_messages TO WARNING")
  return con
end


--- Opens a connection of this process now (Kong's db:connect()).
function _M:connect()
  local c, err = self:acquire()
  if not c then
    return nil, err
  end
  return true
end


--- Closes every connection of this process (Kong's db:close()).
function _M:close()
  if self.pid == current_pid() then
    for _, c in ipairs(self.conns) do
      pcall(c.con.close, c.con)
    end
  end
  self.conns = {}
  return true
end


local function owner_key()
  return running() or "main"
end


-- A connection for the calling coroutine: the one it holds a transaction
-- on, else a free one, else a new one.
function _M:acquire()
  if self.pid ~= current_pid() then
    -- inherited through fork: never touch (closing would end the parent's)
    self.conns = {}
    self.pid = current_pid()
  end
  local me = owner_key()
  local free
  for _, c in ipairs(self.conns) do
    if c.owner == me then
      return c
    end
    if c.owner and type(c.owner) == "thread" and co_status(c.owner) == "dead" then
      -- the coroutine ended inside a transaction: roll it back
      c.con:execute("ROLLBACK")
      c.owner = nil
    end
    if not c.owner and not free then
      free = c
    end
  end
  if free then
    return free
  end
  if #self.conns >= MAX_CONNECTIONS then
    return nil, "too many connections held by transactions in this process"
  end
  local con, err = open(self)
  if not con then
    return nil, err
  end
  local c = { con = con }
  self.conns[#self.conns + 1] = c
  return c
end


local function drop(self, c)
  for i, x in ipairs(self.conns) do
    if x == c then
      remove(self.conns, i)
      break
    end
  end
  pcall(c.con.close, c.con)
end


-- Postgres text array literal -> Lua array (one level, text elements)
local function parse_array(s)
  local out = json.as_array({})
  if s == "{}" then
    return out
  end
  local i, n = 2, #s
  while i < n do
    local c = sub(s, i, i)
    if c == '"' then
      local buf = {}
      i = i + 1
      while i <= n do
        local d = sub(s, i, i)
        if d == "\\" then
          buf[#buf + 1] = sub(s, i + 1, i + 1)
          i = i + 2
        elseif d == '"' then
          i = i + 1
          break
        else
          buf[#buf + 1] = d
          i = i + 1
        end
      end
      out[#out + 1] = concat(buf)
    else
      local j = find(s, "[,}]", i) or n
      local v = sub(s, i, j - 1)
      out[#out + 1] = v == "NULL" and null or v
      i = j
    end
    if sub(s, i, i) == "," then
      i = i + 1
    end
  end
  return out
end


local function unhex(s)
  return (gsub(sub(s, 3), "%x%x", function(h) return char(tonumber(h, 16)) end))
end


local NUMERIC = { int2 = true, int4 = true, int8 = true, float4 = true, float8 = true,
                  numeric = true, oid = true }
local NUMERIC_ARRAY = { _int2 = true, _int4 = true, _int8 = true, _float4 = true,
                        _float8 = true, _numeric = true }


local function convert(v, typ)
  if v == nil then
    return null
  end
  if NUMERIC[typ] then
    return tonumber(v)
  elseif typ == "bool" then
    return v == "t"
  elseif typ == "json" or typ == "jsonb" then
    local d = json.decode(v)
    if d == nil then
      return v
    end
    return d
  elseif typ == "bytea" then
    return unhex(v)
  elseif NUMERIC_ARRAY[typ] then
    local a = parse_array(v)
    for i, x in ipairs(a) do
      a[i] = x == null and null or tonumber(x)
    end
    return a
  elseif typ == "_bool" then
    local a = parse_array(v)
    for i, x in ipairs(a) do
      a[i] = x == null and null or x == "t"
    end
    return a
  elseif byte(typ, 1) == 95 then -- "_": other arrays as text
    return parse_array(v)
  end
  return v
end


local TX_BEGIN = { begin = true, start = true }
local TX_END = { commit = true, rollback = true, ["end"] = true, abort = true }


local function execute(c, sql)
  local cur, err = c.con:execute(sql)
  if not cur then
    return nil, clean_error(err)
  end
  if type(cur) == "number" then
    return { affected_rows = cur }
  end
  local names = cur:getcolnames()
  local types = cur:getcoltypes()
  local ncols = #names
  local rows = {}
  local raw = cur:fetch({}, "n")
  while raw do
    local row = {}
    for i = 1, ncols do
      row[names[i]] = convert(raw[i], types[i])
    end
    rows[#rows + 1] = row
    raw = cur:fetch({}, "n")
  end
  cur:close()
  return rows
end


--- Runs one SQL string; returns rows (or { affected_rows = n }) or nil, err.
-- `operation` ("read"/"write") is accepted for Kong compatibility and ignored.
function _M:query(sql, operation) -- luacheck: ignore operation
  local c, err = self:acquire()
  if not c then
    return nil, err
  end
  local res
  res, err = execute(c, sql)
  if not res and is_connection_error(err) then
    local in_tx = c.owner ~= nil
    drop(self, c)
    if in_tx then
      return nil, err
    end
    c, err = self:acquire()
    if not c then
      return nil, err
    end
    res, err = execute(c, sql)
  end
  local lsql = lower(sql)
  local verb = match(lsql, "^%s*(%a+)") or ""
  if TX_BEGIN[verb] and (verb == "begin" or find(lsql, "^%s*start%s+transaction")) then
    -- "BEGIN; ...; COMMIT" in one string leaves no transaction open
    local closed = find(lsql, "commit%s*;?%s*$") or find(lsql, "rollback%s*;?%s*$")
                   or find(lsql, "end%s*;?%s*$")
    if res and not closed then
      c.owner = owner_key()
    end
  elseif TX_END[verb] then
    c.owner = nil
  end
  if not res then
    return nil, err
  end
  return res
end


--- SQL literal for a Lua value, like Kong's connector:escape_literal:
-- nil/ngx.null -> NULL, booleans, numbers, strings quoted, arrays -> ARRAY[...],
-- other tables -> a JSON literal.
function _M:escape_literal(v, field)
  local t = type(v)
  if v == nil or v == null then
    return "NULL"
  elseif t == "boolean" then
    return v and "TRUE" or "FALSE"
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return "NULL"
    end
    if math.floor(v) == v and v > -1e15 and v < 1e15 then
      return string.format("%d", v)
    end
    return string.format("%.17g", v)
  elseif t == "string" then
    -- standard_conforming_strings is on: backslashes are literal
    return "'" .. gsub(v, "'", "''") .. "'"
  elseif t == "table" then
    local is_array = (field and (field.type == "array" or field.type == "set"))
                     or getmetatable(v) == json.array_mt or (#v > 0 and next(v, #v) == nil)
    if is_array then
      local parts = {}
      for i = 1, #v do
        parts[i] = self:escape_literal(v[i])
      end
      return "ARRAY[" .. concat(parts, ",") .. "]"
    end
    return self:escape_literal(assert(json.encode(v)))
  end
  error("cannot escape a value of type " .. t, 2)
end


--- Identifier quoting ("name").
function _M:escape_identifier(name)
  return '"' .. gsub(name, '"', '""') .. '"'
end


function _M:infos()
  return { strategy = "PostgreSQL", db_name = self.database, db_desc = "database",
           db_ver = "15", host = self.host, port = self.port, user = self.user }
end


return _M
