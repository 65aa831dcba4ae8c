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
  -- process (nginx's LuaJIT or the luajit binary) provides the lua_* symbols
  build_command = "cargo build --release --locked && install -m0755 target/release/libkong_keyring.so target/native.so",
  install = {
    lua = {
      ["kong.keyring"] = "lua/kong/keyring/init.lua",
    },
    lib = {
      ["kong.keyring.native"] = "target/native.so",
    },
  },
}
