-- Runs after spec/02-nginx: no key the specs saw (recorded by
-- helpers.remember_key in .tmp/keys-seen.txt) appears in any nginx log, in
-- base64 or in hex, no secret they saw (helpers.remember_secret,
-- .tmp/secrets-seen.txt: vault secrets, tokens) as text or in hex, and the
-- logs hold no alert, crit, emerg or Rust panic beyond the one worker exit
-- the SIGKILL spec causes on purpose.

local helpers = require "helpers"


-- The only [alert] the nginx specs cause: spec/02-nginx/03-sigkill_spec.lua
-- kills one worker with SIGKILL, and the master reports it.
local EXPECTED_ALERT = "^%d%d%d%d/%d%d/%d%d %d%d:%d%d:%d%d %[alert%] %d+#%d+: worker process %d+ exited on signal 9$"

-- What Kong itself logs at crit/alert in the Kong specs' nodes: its cluster
-- events poller before its shm knows when the node started (first start,
-- `kong reload`), and nginx on an old worker that exits after `kong reload`
-- while Kong's own timers still hold cosockets.
local KONG_OWN = {
  "%[crit%] %d+#%d+: %*%d+ %[lua%] init%.lua:%d+: %[cluster_events%] no 'at' in shm, polling events from: [%d%.]+, context: ngx%.timer$",
  "%[alert%] %d+#%d+: %*%d+ open socket #%d+ left in connection %d+$",
  "%[alert%] %d+#%d+: aborting$",
}


local function kong_own(path, line)
  if not path:find("/nginx%-kong%-[^/]+/logs/") then
    return false
  end
  for _, pattern in ipairs(KONG_OWN) do
    if line:find(pattern) then
      return true
    end
  end
  return false
end


local function lines(s)
  local t = {}
  for line in (s or ""):gmatch("[^\n]+") do
    t[#t + 1] = line
  end
  return t
end


describe("keyring (no key bytes in logs)", function()
  local keys = {} -- { b64 = ..., raw = ... }
  local secrets = {} -- plain text
  local logs = {} -- { path = ..., text = ... }

  lazy_setup(function()
    for _, b64 in ipairs(lines(helpers.read_file(helpers.tmp .. "/keys-seen.txt"))) do
      keys[#keys + 1] = { b64 = b64, raw = helpers.b64_decode(b64) }
    end
    for _, b64 in ipairs(lines(helpers.read_file(helpers.tmp .. "/secrets-seen.txt"))) do
      secrets[#secrets + 1] = helpers.b64_decode(b64)
    end
    local p = assert(io.popen("ls -1 " .. helpers.tmp .. "/nginx-*/logs/error.log "
                              .. helpers.tmp .. "/nginx-*/logs/startup.stderr 2>/dev/null"))
    for path in p:lines() do
      logs[#logs + 1] = { path = path, text = helpers.read_file(path) or "" }
    end
    p:close()
  end)

  it("has recorded keys to look for", function()
    assert.is_true(#keys > 0, "no key recorded in .tmp/keys-seen.txt: run spec/02-nginx first")
  end)

  it("has recorded only 32-byte keys in base64", function()
    for _, key in ipairs(keys) do
      assert.equals(32, key.raw and #key.raw, key.b64)
    end
  end)

  it("has the error logs of the nginx specs to sweep", function()
    local names = {}
    for _, log in ipairs(logs) do
      names[log.path:match("/(nginx%-[^/]+)/logs/error%.log$") or ""] = true
    end
    for _, name in ipairs { "nginx-keyring-workers", "nginx-keyring-reload", "nginx-keyring-sigkill" } do
      assert.is_true(names[name], name .. "/logs/error.log is missing")
    end
  end)

  -- "path: key #n as form" for every recorded key found in the logs
  local function sweep(in_logs)
    local found = {}
    for _, log in ipairs(in_logs) do
      for n, key in ipairs(keys) do
        if key.raw then
          local hex = helpers.hex(key.raw)
          local forms = {
            base64 = key.b64,
            base64url = key.b64:gsub("=+$", ""):gsub("%+", "-"):gsub("/", "_"),
            hex = hex,
            HEX = hex:upper(),
          }
          for _, form in ipairs { "base64", "base64url", "hex", "HEX" } do
            if log.text:find(forms[form], 1, true) then
              found[#found + 1] = log.path .. ": key #" .. n .. " as " .. form
            end
          end
        end
      end
    end
    return found
  end

  -- "path: secret #n as form" for every recorded secret found in the logs
  local function sweep_secrets(in_logs)
    local found = {}
    for _, log in ipairs(in_logs) do
      for n, secret in ipairs(secrets) do
        for form, text in pairs({ text = secret, hex = helpers.hex(secret) }) do
          if #secret >= 8 and log.text:find(text, 1, true) then
            found[#found + 1] = log.path .. ": secret #" .. n .. " as " .. form
          end
        end
      end
    end
    return found
  end

  it("finds no recorded secret (vault secrets, tokens) as text or hex in any log", function()
    assert.same({}, sweep_secrets(logs))
  end)

  it("would find a recorded key planted in a log line (self-check)", function()
    local hex = helpers.hex(keys[1].raw)
    local planted = { { path = "planted.log", text = "2026/01/01 [error] 1#1: key=" .. hex:upper() .. " oops\n" } }
    assert.same({ "planted.log: key #1 as HEX" }, sweep(planted))
  end)

  it("finds no key in base64, base64url or hex in any log", function()
    assert.same({}, sweep(logs))
  end)

  it("logs no alert, crit, emerg or panic but the SIGKILL worker exit and Kong's own", function()
    local unexpected = {}
    for _, log in ipairs(logs) do
      for _, line in ipairs(lines(log.text)) do
        local serious = line:find("[alert]", 1, true) or line:find("[crit]", 1, true)
                        or line:find("[emerg]", 1, true) or line:find("panicked", 1, true)
        if serious and not line:find(EXPECTED_ALERT) and not kong_own(log.path, line) then
          unexpected[#unexpected + 1] = log.path .. ": " .. line
        end
      end
    end
    assert.same({}, unexpected)
  end)

  it("logs the SIGKILL worker exit once, in the SIGKILL spec's log only", function()
    local exits = {}
    for _, log in ipairs(logs) do
      for _, line in ipairs(lines(log.text)) do
        if line:find(EXPECTED_ALERT) then
          exits[#exits + 1] = log.path:match("/(nginx%-[^/]+)/logs/")
        end
      end
    end
    assert.same({ "nginx-keyring-sigkill" }, exits)
  end)
end)
