package = "kong-keyring"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/kong-keyring.git",
  tag = "0.1.0",
}
description = {
  summary = "Field-level encryption keyring for Kong Gateway and OpenResty",
  detailed = [[
    A Rust keyring (AES-256-GCM, RSA-OAEP wrapping) kept in a locked memory
    region shared by every nginx worker, with the `kong.keyring` Lua API.
  ]],
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "command",
  -- needs a Rust toolchain (cargo); the module links no Lua library: the host
  -- process (nginx's LuaJIT or the luajit binary) provides the lua_* symbols.
  -- KONG_KEYRING_PORTABLE=1 builds for any x86-64 (scripts/cargo-build.sh).
  build_command = "scripts/cargo-build.sh target/native.so",
  install = {
    lua = {
      ["kong.keyring"] = "lua/kong/keyring/init.lua",
      ["kong.keyring.config"] = "lua/kong/keyring/config.lua",
      ["kong.keyring.cpu"] = "lua/kong/keyring/cpu.lua",
      ["kong.keyring.strategies.cluster"] = "lua/kong/keyring/strategies/cluster.lua",
      ["kong.keyring.strategies.cluster.exchange"] = "lua/kong/keyring/strategies/cluster/exchange.lua",
      ["kong.keyring.strategies.cluster.mac"] = "lua/kong/keyring/strategies/cluster/mac.lua",
      ["kong.keyring.strategies.cluster.nodes"] = "lua/kong/keyring/strategies/cluster/nodes.lua",
      ["kong.keyring.strategies.db"] = "lua/kong/keyring/strategies/db.lua",
      ["kong.keyring.strategies.cluster.blob_file"] = "lua/kong/keyring/strategies/cluster/blob_file.lua",
      ["kong.keyring.strategies.vault"] = "lua/kong/keyring/strategies/vault.lua",
      ["kong.keyring.strategies.vault.client"] = "lua/kong/keyring/strategies/vault/client.lua",
      ["kong.plugins.keyring.api"] = "lua/kong/plugins/keyring/api.lua",
      ["kong.plugins.keyring.binding"] = "lua/kong/plugins/keyring/binding.lua",
      ["kong.plugins.keyring.checks"] = "lua/kong/plugins/keyring/checks.lua",
      ["kong.plugins.keyring.daos"] = "lua/kong/plugins/keyring/daos.lua",
      ["kong.plugins.keyring.errors"] = "lua/kong/plugins/keyring/errors.lua",
      ["kong.plugins.keyring.fields"] = "lua/kong/plugins/keyring/fields.lua",
      ["kong.plugins.keyring.handler"] = "lua/kong/plugins/keyring/handler.lua",
      ["kong.plugins.keyring.install"] = "lua/kong/plugins/keyring/install.lua",
      ["kong.plugins.keyring.migrations.000_base_keyring"] = "lua/kong/plugins/keyring/migrations/000_base_keyring.lua",
      ["kong.plugins.keyring.migrations.001_cluster_nodes"] = "lua/kong/plugins/keyring/migrations/001_cluster_nodes.lua",
      ["kong.plugins.keyring.migrations.002_rewrap"] = "lua/kong/plugins/keyring/migrations/002_rewrap.lua",
      ["kong.plugins.keyring.migrations.init"] = "lua/kong/plugins/keyring/migrations/init.lua",
      ["kong.plugins.keyring.rewrap"] = "lua/kong/plugins/keyring/rewrap.lua",
      ["kong.plugins.keyring.schema"] = "lua/kong/plugins/keyring/schema.lua",
      ["kong.plugins.keyring.state"] = "lua/kong/plugins/keyring/state.lua",
      ["kong.plugins.keyring.stored"] = "lua/kong/plugins/keyring/stored.lua",
      ["kong.plugins.keyring.transform"] = "lua/kong/plugins/keyring/transform.lua",
      ["kong.vaults.aws"] = "lua/kong/vaults/aws/init.lua",
      ["kong.vaults.aws.schema"] = "lua/kong/vaults/aws/schema.lua",
      ["kong.vaults.azure"] = "lua/kong/vaults/azure/init.lua",
      ["kong.vaults.azure.schema"] = "lua/kong/vaults/azure/schema.lua",
      ["kong.vaults.conjur"] = "lua/kong/vaults/conjur/init.lua",
      ["kong.vaults.conjur.schema"] = "lua/kong/vaults/conjur/schema.lua",
      ["kong.vaults.gcp"] = "lua/kong/vaults/gcp/init.lua",
      ["kong.vaults.gcp.schema"] = "lua/kong/vaults/gcp/schema.lua",
      ["kong.vaults.hcv"] = "lua/kong/vaults/hcv/init.lua",
      ["kong.vaults.hcv.schema"] = "lua/kong/vaults/hcv/schema.lua",
      ["kong.vaults.helpers"] = "lua/kong/vaults/helpers.lua",
    },
    lib = {
      ["kong.keyring.native"] = "target/native.so",
    },
  },
}
