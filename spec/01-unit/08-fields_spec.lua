local fields = require "kong.plugins.keyring.fields"


-- Schemas shaped like Kong's: fields as arrays of one-entry tables.
local BASICAUTH = {
  name = "basicauth_credentials",
  endpoint_key = "username",
  cache_key = { "username" },
  fields = {
    { id = { type = "string", uuid = true } },
    { consumer = { type = "foreign" } },
    { username = { type = "string", required = true, unique = true } },
    { password = { type = "string", required = true, encrypted = true } },
  },
}

local KEYAUTH = {
  name = "keyauth_credentials",
  cache_key = { "key" },
  fields = {
    { key = { type = "string", unique = true, encrypted = true } },
    { tags = { type = "set", elements = { type = "string" }, encrypted = true } },
    { ttl = { type = "integer", encrypted = true } },
  },
}

-- Kong's `keys` entity: typedefs.pem is a record whose private_key is encrypted
local KEYS = {
  name = "keys",
  fields = {
    { id = { type = "string", uuid = true } },
    { kid = { type = "string", required = true } },
    { jwk = { type = "string", encrypted = true } },
    { pem = { type = "record", fields = {
      { private_key = { type = "string", encrypted = true } },
      { public_key = { type = "string" } },
    } } },
    { extra = { type = "array", elements = { type = "record", fields = {
      { secret = { type = "string", encrypted = true } },
    } } } },
  },
}

local PLUGIN = {
  name = "probe",
  fields = {
    { protocols = { type = "set", elements = { type = "string" } } },
    { config = { type = "record", fields = {
      { secret = { type = "string", encrypted = true } },
      { plain = { type = "string" } },
      { redis = { type = "record", fields = {
        { host = { type = "string" } },
        { password = { type = "string", encrypted = true } },
      } } },
      { headers = { type = "array", elements = { type = "record", fields = {
        { name = { type = "string" } },
        { value = { type = "string", encrypted = true } },
      } } } },
      { keys = { type = "array", elements = { type = "string" }, encrypted = true } },
    } } },
  },
}


local function upper(v)
  return v:upper()
end


describe("Plugin: keyring (encrypted fields)", function()
  local warnings

  before_each(function()
    warnings = {}
  end)

  local function warn(msg)
    warnings[#warnings + 1] = msg
  end

  it("plans the encrypted top-level string of an entity", function()
    assert.same({ { name = "password", kind = "string" } }, fields.entity_plan(BASICAUTH, warn))
    assert.same({}, warnings)
  end)

  it("plans encrypted fields inside an entity's records and arrays of records", function()
    local plan = fields.entity_plan(KEYS, warn)
    assert.equals("jwk, pem.private_key, extra[].secret", fields.describe(plan))
    local out = assert(fields.apply(plan, { kid = "k", jwk = "j", pem = { private_key = "p", public_key = "q" },
                                            extra = { { secret = "s" } } }, upper))
    assert.same({ kid = "k", jwk = "J", pem = { private_key = "P", public_key = "q" }, extra = { { secret = "S" } } }, out)
    assert.same({}, warnings)
  end)

  it("leaves unique fields alone with a warning naming them", function()
    local plan = fields.entity_plan(KEYAUTH, warn)
    assert.same({ { name = "tags", kind = "strings" } }, plan)
    assert.same({
      "keyauth_credentials.key is unique, the endpoint key or part of the cache key; not encrypted",
      "keyauth_credentials.ttl is marked encrypted but is not a string or an array of strings; left as is",
    }, warnings)
  end)

  it("plans plugin config fields in records and arrays of records at any depth", function()
    local plan = fields.config_plan(PLUGIN, "probe", warn)
    assert.equals("secret, redis.password, headers[].value, keys", fields.describe(plan))
  end)

  it("applies a function to every planned value and copies the rest", function()
    local plan = fields.config_plan(PLUGIN, "probe", warn)
    local config = {
      secret = "s", plain = "p",
      redis = { host = "h", password = "pw" },
      headers = { { name = "n1", value = "v1" }, { name = "n2", value = "v2" } },
      keys = { "k1", "k2" },
    }
    local out = assert(fields.apply(plan, config, upper))
    assert.same({
      secret = "S", plain = "p",
      redis = { host = "h", password = "PW" },
      headers = { { name = "n1", value = "V1" }, { name = "n2", value = "V2" } },
      keys = { "K1", "K2" },
    }, out)
    -- the input is untouched
    assert.equals("pw", config.redis.password)
    assert.equals("v1", config.headers[1].value)
  end)

  it("keeps absent, null and wrongly typed values as they are", function()
    local plan = fields.config_plan(PLUGIN, "probe", warn)
    local null = require("cjson").null -- lightuserdata, like ngx.null
    local out = assert(fields.apply(plan, { secret = null, redis = null, headers = 5 }, upper))
    assert.equals(null, out.secret)
    assert.equals(null, out.redis)
    assert.equals(5, out.headers)
  end)

  it("stops at the first error and names the field path", function()
    local plan = fields.config_plan(PLUGIN, "probe", warn)
    local out, err = fields.apply(plan, { headers = { { value = "ok" }, { value = "bad" } } }, function(v, path)
      if v == "bad" then
        return nil, "cannot encrypt " .. path
      end
      return v
    end)
    assert.is_nil(out)
    assert.equals("cannot encrypt headers[2].value", err)
  end)
end)
