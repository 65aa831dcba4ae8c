-- CLOCK_MONOTONIC in microseconds: one clock shared by every process of the
-- machine, so two nginx workers can time one event between them.
local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]

local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local _M = {}

function _M.now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

return _M
