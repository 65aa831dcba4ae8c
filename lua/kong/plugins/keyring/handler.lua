-- The keyring plugin is loaded, never attached: loading it installs field
-- encryption on every schema with `encrypted = true` fields (install.lua),
-- its Admin API (api.lua) and tables (daos.lua, migrations/).

local install = require "kong.plugins.keyring.install"


install.at_load()


local KeyringHandler = {
  VERSION = "0.1.0",
  PRIORITY = 0,
}


function KeyringHandler:init_worker()
  install.init_worker()
end


return KeyringHandler
