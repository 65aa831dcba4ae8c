-- Generated entity routes, like Kong's kong/api/endpoints.lua does for
-- every DAO whose schema does not say `generate_admin_api = false`:
--
--   /<name>                    GET (page: { data, next, offset }), POST 201
--   /<name>/:<name>            GET 200, PATCH 200, PUT 200, DELETE 204
--   /<parent>/:<parent>/<name> GET, POST (foreign key set from the parent)
--   /<parent>/:<parent>/<name>/:<name>  GET, PATCH, PUT, DELETE
--
-- `<name>` is `admin_api_name` or the entity name; nested routes use
-- `admin_api_nested_name`. An entity is addressed by id, or by its
-- `endpoint_key` when the value is not a UUID. DAO calls use
-- { nulls = true }, so absent fields are shown as null. Form values are
-- converted to the schema's types (numbers, booleans, arrays).

local endpoints = require "kong.api.endpoints"
local uuid = require "kong.tools.uuid"
local json = require "harness.json"


local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local escape_uri = ngx.escape_uri
local fmt = string.format


local null = ngx.null
local handle_error = endpoints.handle_error
local is_uuid = uuid.is_valid_uuid
local OPTS = { nulls = true }


local _M = {}


local function not_found()
  return kong.response.exit(404, { message = "Not found" })
end


local infer


local function infer_value(value, field)
  if field == nil or value == nil or value == null then
    return value
  end
  local t = field.type
  if type(value) == "string" then
    if value == "" and t ~= "string" then
      return null
    end
    if t == "number" or t == "integer" then
      return tonumber(value) or value
    elseif t == "boolean" then
      if value == "true" then
        return true
      elseif value == "false" then
        return false
      end
      return value
    elseif t == "array" or t == "set" then
      return json.as_array({ infer_value(value, field.elements) })
    elseif t == "foreign" then
      return { id = value }
    end
    return value
  end
  if type(value) == "table" then
    if t == "array" or t == "set" then
      local out = json.as_array({})
      for i, v in ipairs(value) do
        out[i] = infer_value(v, field.elements)
      end
      return out
    elseif t == "record" and field.fields then
      return infer(value, field)
    elseif t == "map" and field.values then
      local out = {}
      for k, v in pairs(value) do
        out[k] = infer_value(v, field.values)
      end
      return out
    end
  end
  return value
end


-- `schema_like` has `fields` (by name); `parent` resolves plugin subschemas
infer = function(args, schema_like, sub_schema)
  local out = {}
  for k, v in pairs(args) do
    local field = (sub_schema and sub_schema.fields[k]) or schema_like.fields[k]
    out[k] = infer_value(v, field)
  end
  return out
end


local function args_for(schema, params, captures, rbw)
  local args = {}
  for k, v in pairs(params) do
    if not captures[k] then
      args[k] = v
    end
  end
  local sub_schema = schema.get_subschema and schema:get_subschema(args.name and args or (rbw or {}))
  return infer(args, schema, sub_schema)
end


-- select by id or endpoint key
local function select_entity(dao, id)
  local schema = dao.schema
  if is_uuid(id) then
    local entity, _, err_t = dao:select({ id = id }, OPTS)
    if entity or err_t then
      return entity, err_t
    end
  end
  local key = schema.endpoint_key
  if key and schema.fields[key] then
    local value = id
    if schema.fields[key].type == "integer" or schema.fields[key].type == "number" then
      value = tonumber(id)
      if not value then
        return nil
      end
    end
    local entity, _, err_t = dao["select_by_" .. key](dao, value, OPTS)
    return entity, err_t
  end
  return nil
end


local function belongs(entity, fk_name, parent)
  local ref = entity[fk_name]
  return type(ref) == "table" and ref.id == parent.id
end


local function collection_get(dao, self, path, filter)
  local size = self.params.size and tonumber(self.params.size) or nil
  if self.params.size and not size then
    return kong.response.exit(400, { message = "size must be a number" })
  end
  local offset = self.params.offset
  local data, err_t, next_offset, _
  if filter then
    data, _, err_t, next_offset = dao["page_for_" .. filter.name](dao, { id = filter.parent.id }, size, offset, OPTS)
  else
    data, _, err_t, next_offset = dao:page(size, offset, OPTS)
  end
  if err_t then
    return handle_error(err_t)
  end
  return kong.response.exit(200, {
    data = json.as_array(data),
    offset = next_offset,
    next = next_offset and fmt("%s?offset=%s", path, escape_uri(next_offset)) or null,
  })
end


local function entity_routes(dao, param, fk)
  local schema = dao.schema
  local routes = {}

  local function resolve(self)
    local parent
    if fk then
      local err_t
      parent, err_t = select_entity(fk.dao, self.params[fk.param])
      if err_t then
        return nil, nil, handle_error(err_t)
      end
      if not parent then
        return nil, nil, not_found()
      end
    end
    local entity, err_t = select_entity(dao, self.params[param])
    if err_t then
      return nil, nil, handle_error(err_t)
    end
    if not entity or (parent and not belongs(entity, fk.name, parent)) then
      return nil, parent, nil
    end
    return entity, parent
  end

  local captures = { [param] = true }
  if fk then
    captures[fk.param] = true
  end

  routes.GET = function(self)
    local entity = resolve(self)
    if not entity then
      return not_found()
    end
    return kong.response.exit(200, entity)
  end

  routes.PATCH = function(self)
    if not fk then
      -- Kong: update by id (falling back to the endpoint key), no prior read
      local id = self.params[param]
      local args = args_for(schema, self.params, captures)
      local key = schema.endpoint_key
      local updated, _, err_t
      if is_uuid(id) then
        updated, _, err_t = dao:update({ id = id }, args, OPTS)
        if err_t and err_t.code == kong.db.errors.codes.NOT_FOUND and key then
          updated, _, err_t = dao["update_by_" .. key](dao, id, args, OPTS)
        end
      elseif key then
        updated, _, err_t = dao["update_by_" .. key](dao, id, args, OPTS)
      end
      if err_t then
        return handle_error(err_t)
      end
      if not updated then
        return not_found()
      end
      return kong.response.exit(200, updated)
    end
    local entity, parent = resolve(self)
    if not entity then
      return not_found()
    end
    local args = args_for(schema, self.params, captures, entity)
    if parent then
      args[fk.name] = { id = parent.id }
    end
    local updated, _, err_t = dao:update(schema:extract_pk_values(entity), args, OPTS)
    if err_t then
      return handle_error(err_t)
    end
    if not updated then
      return not_found()
    end
    return kong.response.exit(200, updated)
  end

  routes.PUT = function(self)
    local id = self.params[param]
    local parent
    if fk then
      local err_t
      parent, err_t = select_entity(fk.dao, self.params[fk.param])
      if err_t then
        return handle_error(err_t)
      end
      if not parent then
        return not_found()
      end
    end
    local args = args_for(schema, self.params, captures)
    if parent then
      args[fk.name] = { id = parent.id }
    end
    local entity, _, err_t
    if is_uuid(id) then
      entity, _, err_t = dao:upsert({ id = id }, args, OPTS)
    elseif schema.endpoint_key then
      entity, _, err_t = dao["upsert_by_" .. schema.endpoint_key](dao, id, args, OPTS)
    else
      return not_found()
    end
    if err_t then
      return handle_error(err_t)
    end
    return kong.response.exit(200, entity)
  end

  routes.DELETE = function(self)
    if fk then
      local entity = resolve(self)
      if not entity then
        return not_found()
      end
      local _, _, err_t = dao:delete(schema:extract_pk_values(entity))
      if err_t then
        return handle_error(err_t)
      end
      return kong.response.exit(204)
    end
    local id = self.params[param]
    local _, err_t
    if is_uuid(id) then
      _, _, err_t = dao:delete({ id = id })
    elseif schema.endpoint_key then
      _, _, err_t = dao["delete_by_" .. schema.endpoint_key](dao, id)
    end
    if err_t then
      return handle_error(err_t)
    end
    return kong.response.exit(204)
  end

  return routes
end


local function collection_routes(dao, path_of, fk)
  local schema = dao.schema
  local routes = {}
  local captures = fk and { [fk.param] = true } or {}

  local function parent_of(self)
    local parent, err_t = select_entity(fk.dao, self.params[fk.param])
    if err_t then
      return nil, handle_error(err_t)
    end
    if not parent then
      return nil, not_found()
    end
    return parent
  end

  routes.GET = function(self)
    if fk then
      local parent = parent_of(self)
      return collection_get(dao, self, path_of(self), { name = fk.name, parent = parent })
    end
    return collection_get(dao, self, path_of(self))
  end

  routes.POST = function(self)
    local args = args_for(schema, self.params, captures)
    if fk then
      local parent = parent_of(self)
      args[fk.name] = { id = parent.id }
    end
    local entity, _, err_t = dao:insert(args, OPTS)
    if err_t then
      return handle_error(err_t)
    end
    return kong.response.exit(201, entity)
  end

  return routes
end


--- Adds the generated routes of every DAO to `router`.
function _M.attach(router, db)
  local names = {}
  for name in pairs(db.daos) do
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local dao = db.daos[name]
    local schema = dao.schema
    if schema.generate_admin_api ~= false then
      local api_name = schema.admin_api_name or name
      router.add("/" .. api_name, collection_routes(dao, function() return "/" .. api_name end))
      router.add("/" .. api_name .. "/:" .. name, entity_routes(dao, name))
      for fname, field in schema:each_field() do
        local parent = field.type == "foreign" and db.daos[field.reference]
        if parent and parent.schema.generate_admin_api ~= false then
          local pname = parent.schema.admin_api_name or parent.schema.name
          local pparam = parent.schema.name
          local nested = schema.admin_api_nested_name or api_name
          local fk = { name = fname, dao = parent, param = pparam }
          local base = "/" .. pname .. "/:" .. pparam .. "/" .. nested
          router.add(base, collection_routes(dao, function(self)
            return "/" .. pname .. "/" .. escape_uri(self.params[pparam]) .. "/" .. nested
          end, fk))
          router.add(base .. "/:" .. name, entity_routes(dao, name, fk))
        end
      end
    end
  end
end


_M.infer = infer


return _M
