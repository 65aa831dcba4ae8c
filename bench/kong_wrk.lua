-- wrk script of bench/kong_bench.lua: counts every answer that is not a 200 (each
-- wrk thread has its own Lua state; `done` adds up the threads' counts) and
-- prints one line the driver parses. The bench fails when `bad` or any socket
-- error is above 0.

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init()
  bad = 0
  good = 0
end

function response(status)
  if status == 200 then
    good = good + 1
  else
    bad = bad + 1
  end
end

function done(summary)
  local bad_total, good_total = 0, 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
    good_total = good_total + thread:get("good")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d good=%d bad=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, good_total, bad_total,
    e.connect, e.read, e.write, e.status, e.timeout))
end
