-- Clocks of the benches: CLOCK_MONOTONIC in microseconds (one clock shared
-- by every process of the machine, so two nginx workers can time one event
-- between them), and nginx's clock with polling for the real-Kong drivers.
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

--- nginx's clock, updated (seconds, ms resolution).
function _M.now()
  ngx.update_time()
  return ngx.now()
end


--- Polls `check` every `interval` seconds (10 ms by default): the seconds
-- it took, or nil after `limit`.
function _M.wait_for(limit, check, interval)
  local start = _M.now()
  while _M.now() - start < limit do
    if check() then
      return _M.now() - start
    end
    ngx.sleep(interval or 0.01)
  end
end


return _M
