-- The per-field hot path (kong.keyring encrypt/decrypt through FFI) must be
-- compiled by the JIT: a loop over it becomes a trace, and no trace started
-- in the loop or in kong.keyring aborts. (The mlua path is a Lua C API call,
-- which the JIT does not compile; it is not tested here.)

local helpers = require "helpers"
local keyring = require "kong.keyring"
local jit_util = require "jit.util"
local vmdef = require "jit.vmdef"


local CONTEXT = "basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2"
local FIELD = string.rep("5", 40) -- basic-auth stores a 40-char SHA-1 hex
local N = 300


-- The Lua functions of kong.keyring's hot path: encrypt, decrypt and the
-- local `field_call` they share (found as an upvalue, so JIT state can be reset).
local function hot_functions()
  local fns = { keyring.encrypt, keyring.decrypt }
  for i = 1, math.huge do
    local name, value = debug.getupvalue(keyring.encrypt, i)
    if not name then
      break
    end
    if name == "field_call" then
      fns[#fns + 1] = value
    end
  end
  return fns
end


-- Hot counters live in one small table hashed by bytecode address, so an
-- earlier spec's penalized counter can delay our loop past its last iteration.
-- Setting `hotloop` (to LuaJIT's default) reinitializes every counter.
local function reset_hotcounts()
  jit.opt.start("hotloop=56")
end


-- Flushes every trace, resets the hot counters and unpatches blacklisted loops
-- and functions of the hot path, so each `it` sees the JIT as a fresh process would.
local function reset_jit()
  jit.flush()
  reset_hotcounts()
  for _, fn in ipairs(hot_functions()) do
    jit.on(fn)
  end
end


local function is_ours(source, loop_source)
  return source == loop_source or source:find("kong/keyring/init.lua", 1, true) ~= nil
end


-- Runs `loop` with a trace recorder attached. Returns the aborts of traces
-- that started in `loop` or in kong.keyring ("file:line: reason"), and how
-- many traces started in `loop` itself were compiled.
local function record(loop)
  local loop_source = jit_util.funcinfo(loop).source
  local started = {}
  local aborts = {}
  local compiled = 0

  local function on_trace(what, tr, func, pc, otr, oex)
    if what == "start" then
      local info = jit_util.funcinfo(func, pc)
      started[tr] = is_ours(info.source or "", loop_source) and { func = func, loc = info.loc } or nil

    elseif what == "stop" then
      if started[tr] and started[tr].func == loop then
        compiled = compiled + 1
      end
      started[tr] = nil

    elseif what == "abort" then
      if started[tr] then
        local reason = vmdef.traceerr[otr]
        if type(reason) == "string" and oex then
          reason = reason:format(oex)
        end
        aborts[#aborts + 1] = started[tr].loc .. ": " .. tostring(reason)
      end
      started[tr] = nil
    end
  end

  jit.attach(on_trace, "trace")
  local ok, err = pcall(loop)
  jit.attach(on_trace)
  assert(ok, err)
  return aborts, compiled
end


local function hot_loop()
  local n = 0
  for _ = 1, N do
    local value = keyring.encrypt(FIELD, CONTEXT)
    local plain = keyring.decrypt(value, CONTEXT)
    n = n + #plain
  end
  return n
end


describe("keyring (hot path)", function()
  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    local id, key = assert(keyring.generate())
    helpers.remember_key(key)
    assert(keyring.activate(id))
  end)

  before_each(function()
    reset_jit()
  end)

  lazy_teardown(function()
    reset_jit()
  end)


  it("runs with the JIT on", function()
    assert.is_true(jit.status())
  end)

  it("compiles a loop of " .. N .. " encrypt + decrypt calls into a trace", function()
    local _, compiled = record(hot_loop)
    assert.is_true(compiled >= 1)
  end)

  it("records no trace abort in the loop or in kong.keyring", function()
    local aborts = record(hot_loop)
    assert.same({}, aborts)
  end)

  it("still compiles the loop after encrypt was called from many uncompiled call sites", function()
    -- an application calls encrypt from code the JIT does not compile (closure
    -- creation, FNEW, is NYI): the hot path must not end up blacklisted
    local busy = 0
    for i = 1, 200000 do
      local f = function() return i end
      busy = busy + #keyring.encrypt("x", CONTEXT) + f() * 0
    end
    assert.is_true(busy > 0)
    -- counters only: whatever was blacklisted stays blacklisted
    reset_hotcounts()
    local aborts, compiled = record(hot_loop)
    assert.same({}, aborts)
    assert.is_true(compiled >= 1)
  end)
end)
