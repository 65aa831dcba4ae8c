local helpers = require "helpers"
local keyring = require "kong.keyring"
local fields = require "kong.plugins.keyring.fields"
local transform = require "kong.plugins.keyring.transform"


local BASICAUTH = {
  name = "basicauth_credentials",
  primary_key = { "id" },
  fields = {
    { id = { type = "string" } },
    { username = { type = "string", unique = true } },
    { password = { type = "string", encrypted = true } },
  },
}

local PLUGINS = { name = "plugins", primary_key = { "id" } }

local SESSION = {
  fields = {
    { config = { type = "record", fields = {
      { secret = { type = "string", encrypted = true } },
      { redis = { type = "record", fields = { { password = { type = "string", encrypted = true } } } } },
    } } },
  },
}

local ROW = "fc46ce48-c1d6-4078-9f51-5a777350a8a2"
local OTHER = "0b5f5a53-6f5e-4b8e-9d0e-0f2a2bd3f7c1"


describe("Plugin: keyring (transformations)", function()
  local plan, config_plan, id

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    id = helpers.generate_key()
    plan = fields.entity_plan(BASICAUTH, error)
    config_plan = fields.config_plan(SESSION, "session", error)
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)

  it("binds values to <table>:<primary key>", function()
    assert.equals("basicauth_credentials:" .. ROW, transform.context(BASICAUTH, { id = ROW }))
    assert.equals("t:a,b", transform.context({ name = "t", primary_key = { "x", "y" } }, { x = "a", y = "b" }))
  end)

  it("encrypts the password with the active key and reads it back", function()
    local row = assert(transform.encrypt_entity(BASICAUTH, plan, { id = ROW, username = "bob", password = "hash" }))
    assert.equals("bob", row.username)
    assert.equals("$ke$2$-" .. id .. "-", row.password:sub(1, 8 + #id))
    local read = assert(transform.decrypt_entity(BASICAUTH, plan, row))
    assert.equals("hash", read.password)
  end)

  it("keeps a value already encrypted for the same row (a PATCH of another field)", function()
    local row = assert(transform.encrypt_entity(BASICAUTH, plan, { id = ROW, password = "hash" }))
    local again = assert(transform.encrypt_entity(BASICAUTH, plan, { id = ROW, password = row.password, username = "b2" }))
    assert.equals(row.password, again.password)
  end)

  it("refuses a value copied from another row", function()
    local row = assert(transform.encrypt_entity(BASICAUTH, plan, { id = OTHER, password = "hash" }))
    local out, err = transform.encrypt_entity(BASICAUTH, plan, { id = ROW, password = row.password })
    assert.is_nil(out)
    assert.equals("password: encrypted value cannot be stored in this row (authentication failed)", err)
  end)

  it("passes plaintext through on read (rows written before the keyring)", function()
    assert.equals("legacy", assert(transform.decrypt_entity(BASICAUTH, plan, { id = ROW, password = "legacy" })).password)
  end)

  it("names the missing key on read", function()
    local v = "$ke$2$-Missing1-" .. string.rep("A", 40)
    local out, err = transform.decrypt_entity(BASICAUTH, plan, { id = ROW, password = v })
    assert.is_nil(out)
    assert.equals("keyring key 'Missing1' is not available on this node", err)
  end)

  it("encrypts nested plugin config fields bound to plugins:<id>", function()
    local out = assert(transform.encrypt_config(PLUGINS, config_plan,
                       { id = ROW, name = "session", config = { secret = "s", redis = { password = "p" } } }))
    assert.truthy(out.config.secret:find("^%$ke%$2%$%-"))
    assert.truthy(out.config.redis.password:find("^%$ke%$2%$%-"))
    assert.equals("s", keyring.decrypt(out.config.secret, "plugins:" .. ROW))
    local read = assert(transform.decrypt_config(PLUGINS, config_plan, { id = ROW, config = out.config }))
    assert.same({ secret = "s", redis = { password = "p" } }, read.config)
  end)
end)
