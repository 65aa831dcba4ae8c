-- Kong's spec helpers (spec/internal/client.lua) load lua-reqwest, a Rust
-- HTTP/2 client from Kong's development dependencies, at require time, and
-- use it only for HTTP/2 test clients. It is not part of Kong's runtime and
-- is not built from ../shared/kong-oss. This module takes its place on the
-- path only when no real reqwest is installed (it comes last), and fails
-- loudly if a spec ever makes an HTTP/2 request; none of ours do.

local function unavailable()
  error("lua-reqwest (HTTP/2 test client) is not installed: HTTP/2 clients of Kong's spec helpers are unavailable", 2)
end

return setmetatable({}, { __index = function() return unavailable end })
