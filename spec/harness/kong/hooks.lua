-- kong.hooks for the harness (behaviour of Kong's kong/hooks.lua, written
-- anew; KONG-INTEGRATION §1.3).
--
-- Hooks run in registration order. Each normal hook receives the original
-- arguments of run_hook; once a hook returns a falsy first value the later
-- ones are skipped and that result is returned. run_hook returns the last
-- hook's return values, or its first argument when no hook is registered.
-- `opts.low_level`: fn(acc, ...) gets the previous results as a packed array
-- (nil for the first hook) and returns such an array; it runs even after a
-- failure and may replace it.
--
-- The registry is per Lua VM: hooks registered in init_by_lua (the master)
-- are inherited by the workers.

local type = type
local select = select
local unpack = unpack
local assert = assert


local _M = {}


local hooks = {}


local function pack(...)
  return { n = select("#", ...), ... }
end


local function wrap(fn)
  return function(acc, ...)
    if acc and not acc[1] then
      return acc
    end
    return pack(fn(...))
  end
end


function _M.register_hook(name, fn, opts)
  assert(type(fn) == "function", "hook must be a function")
  local list = hooks[name]
  if not list then
    list = {}
    hooks[name] = list
  end
  list[#list + 1] = (opts and opts.low_level) and fn or wrap(fn)
end


function _M.run_hook(name, ...)
  local list = hooks[name]
  if not list then
    return (...)
  end
  local acc
  for i = 1, #list do
    acc = list[i](acc, ...)
  end
  return unpack(acc, 1, acc.n)
end


function _M.clear_hooks()
  hooks = {}
end


return _M
