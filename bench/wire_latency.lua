-- Paced HTTP/1.1 requests that time each answer twice: when the load
-- generator read it (user) and when the kernel received it (wire: the
-- socket's SO_TIMESTAMPNS receive timestamp, taken in the sender's write on
-- loopback). The wire time is the server's latency alone; the user time adds
-- however long this process waited for a CPU to read the answer, which on a
-- shared machine is the load generator's delay, not the server's.
--
--   luajit bench/wire_latency.lua port path seconds clients pause_ms
--
-- `clients` connections to 127.0.0.1:port, one request at a time each,
-- `pause_ms` between an answer and the next request. Prints one line per
-- request, "<user us> <wire us>"; exits non-zero on any answer but a 200
-- with a body. Plain LuaJIT (no nginx): the bench starts it in a pipe.
local ffi = require "ffi"
local bit = require "bit"

ffi.cdef [[
struct wl_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };
struct wl_iovec { void *base; size_t len; };
struct wl_msghdr {
  void *name; uint32_t namelen; struct wl_iovec *iov; size_t iovlen;
  void *control; size_t controllen; int flags;
};
struct wl_cmsghdr { size_t len; int level; int type; };
struct wl_timespec { long sec; long nsec; };
struct wl_pollfd { int fd; short events; short revents; };
int socket(int domain, int type, int protocol);
int connect(int fd, const void *addr, uint32_t len);
int setsockopt(int fd, int level, int name, const void *value, uint32_t len);
long send(int fd, const void *buf, size_t len, int flags);
long recvmsg(int fd, struct wl_msghdr *msg, int flags);
int poll(struct wl_pollfd *fds, unsigned long n, int timeout_ms);
int close(int fd);
int clock_gettime(int clock, struct wl_timespec *ts);
]]

local C = ffi.C
local AF_INET, SOCK_STREAM, IPPROTO_TCP, TCP_NODELAY = 2, 1, 6, 1
local SOL_SOCKET, SO_TIMESTAMPNS = 1, 35   -- SCM_TIMESTAMPNS has the same value
local POLLIN, CLOCK_REALTIME = 1, 0        -- the receive timestamps are realtime
local CMSG_DATA_OFFSET = ffi.sizeof("struct wl_cmsghdr")   -- 16: already aligned

local port, path, seconds, clients, pause_ms = tonumber(arg[1]), arg[2], tonumber(arg[3]), tonumber(arg[4]),
                                               tonumber(arg[5])
if not (port and path and seconds and clients and pause_ms) then
  io.stderr:write("usage: luajit wire_latency.lua port path seconds clients pause_ms\n")
  os.exit(2)
end

local function die(fmt, ...)
  io.stderr:write("wire_latency: ", string.format(fmt, ...), "\n")
  os.exit(1)
end

-- nanoseconds since this process started: exact in a double, unlike the
-- realtime clock's count since 1970
local now_ts = ffi.new("struct wl_timespec")
C.clock_gettime(CLOCK_REALTIME, now_ts)
local epoch = tonumber(now_ts.sec)
local function ns(ts)
  return (tonumber(ts.sec) - epoch) * 1e9 + tonumber(ts.nsec)
end
local function now_ns()
  C.clock_gettime(CLOCK_REALTIME, now_ts)
  return ns(now_ts)
end

local one = ffi.new("int[1]", 1)
local function connect()
  local fd = C.socket(AF_INET, SOCK_STREAM, 0)
  if fd < 0 then die("socket: errno %d", ffi.errno()) end
  local sa = ffi.new("struct wl_sockaddr_in")
  sa.family = AF_INET
  sa.port = bit.bor(bit.lshift(bit.band(port, 0xff), 8), bit.rshift(port, 8))
  sa.addr[0], sa.addr[3] = 127, 1
  if C.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) ~= 0
     or C.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, one, 4) ~= 0 then
    die("setsockopt: errno %d", ffi.errno())
  end
  if C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    die("connect to 127.0.0.1:%d: errno %d", port, ffi.errno())
  end
  return fd
end

local request = "GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
local BUF = 16384
local buf = ffi.new("uint8_t[?]", BUF)
local control = ffi.new("uint8_t[64]")
local iov = ffi.new("struct wl_iovec", { buf, BUF })
local msg = ffi.new("struct wl_msghdr")
msg.iov, msg.iovlen, msg.control = iov, 1, control

-- reads what the socket has: the bytes and the receive timestamp (ns) of
-- the last segment among them
local function receive(fd)
  msg.controllen = ffi.sizeof(control)
  local n = C.recvmsg(fd, msg, 0)
  if n <= 0 then
    die("recvmsg: %s", n == 0 and "connection closed" or "errno " .. ffi.errno())
  end
  local stamp
  if msg.controllen >= CMSG_DATA_OFFSET + ffi.sizeof("struct wl_timespec") then
    local cmsg = ffi.cast("struct wl_cmsghdr *", control)
    if cmsg.level == SOL_SOCKET and cmsg.type == SO_TIMESTAMPNS then
      stamp = ns(ffi.cast("struct wl_timespec *", control + CMSG_DATA_OFFSET))
    end
  end
  if not stamp then die("no receive timestamp: the kernel ignored SO_TIMESTAMPNS") end
  return ffi.string(buf, n), stamp
end

-- whether `data` holds a whole answer; dies on anything but a 200 with a body
local function complete(data)
  local head_end = data:find("\r\n\r\n", 1, true)
  if not head_end then return false end
  local head = data:sub(1, head_end)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local length = tonumber(head:lower():match("\r\ncontent%-length: *(%d+)"))
  if status ~= 200 then die("answer %s", tostring(status)) end
  if not length or length == 0 then die("an answer without a Content-Length or a body") end
  return #data >= head_end + 3 + length
end

local conns, pfds = {}, ffi.new("struct wl_pollfd[?]", clients)
local start = now_ns()
local deadline = start + seconds * 1e9
for i = 1, clients do
  conns[i] = { fd = connect(), next = start, sent = nil, data = "" }
end

local out = {}
while true do
  local t = now_ns()
  local waiting, wake = 0, math.huge
  for _, c in ipairs(conns) do
    if not c.sent and t < deadline and c.next <= t then
      c.sent, c.data = now_ns(), ""
      if C.send(c.fd, request, #request, 0) ~= #request then die("send: errno %d", ffi.errno()) end
    end
    if c.sent then
      pfds[waiting].fd, pfds[waiting].events, pfds[waiting].revents = c.fd, POLLIN, 0
      waiting = waiting + 1
    elseif t < deadline then
      wake = math.min(wake, c.next)
    end
  end
  if waiting == 0 and wake == math.huge then break end
  local timeout = wake == math.huge and 1000 or math.max(0, math.ceil((wake - now_ns()) / 1e6))
  if C.poll(pfds, waiting, timeout) < 0 then die("poll: errno %d", ffi.errno()) end
  for j = 0, waiting - 1 do
    if pfds[j].revents ~= 0 then
      for _, c in ipairs(conns) do
        if c.fd == pfds[j].fd then
          local data, stamp = receive(c.fd)
          c.data = c.data .. data
          if complete(c.data) then
            local read = now_ns()
            out[#out + 1] = string.format("%.1f %.1f", (read - c.sent) / 1e3, (stamp - c.sent) / 1e3)
            c.sent, c.next = nil, read + pause_ms * 1e6
          end
        end
      end
    end
  end
end
for _, c in ipairs(conns) do
  C.close(c.fd)
end
io.write(table.concat(out, "\n"), "\n")
