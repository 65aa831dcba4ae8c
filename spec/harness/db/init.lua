-- kong.db for the harness: `kong.db.<entity>` DAOs (also in `kong.db.daos`),
-- `kong.db.connector`, `kong.db.errors`, `kong.db.strategy = "postgres"`.

local Schema = require "harness.db.schema"
local DAO = require "harness.db.dao"
local Strategy = require "harness.db.strategy"
local Connector = require "harness.db.connector"
local Errors = require "harness.db.errors"
local migrations = require "harness.db.migrations"


local CORE = { "consumers", "certificates", "plugins", "vaults" }


local DB = {}


local _M = {}


function _M.new(conf)
  local daos = {}
  local self = {
    daos = daos,
    connector = Connector.new(conf),
    errors = Errors.new("postgres"),
    strategy = "postgres",
  }
  return setmetatable(self, {
    __index = function(_, k)
      return DB[k] or daos[k]
    end,
  })
end


function DB:connect()
  return self.connector:connect()
end


function DB:close()
  return self.connector:close()
end


--- Creates the schema and the DAO of one entity definition.
function DB:new_dao(definition)
  local schema, err = Schema.new(definition)
  if not schema then
    return nil, "schema of entity '" .. tostring(definition.name) .. "' is invalid: " .. tostring(err)
  end
  schema.table_name = schema.table_name or schema.name
  if type(schema.primary_key) ~= "table" then
    return nil, "schema of entity '" .. tostring(schema.name) .. "' has no primary_key"
  end
  local strategy = Strategy.new(self.connector, schema, self.errors)
  local dao = DAO.new(self, schema, strategy, self.errors)
  self.daos[schema.name] = dao
  return dao
end


function DB:load_core()
  for _, name in ipairs(CORE) do
    local dao, err = self:new_dao(require("harness.db.schemas." .. name))
    if not dao then
      return nil, err
    end
  end
  return true
end


function DB:run_migrations(plugin_names)
  return migrations.run(self.connector, plugin_names)
end


return _M
