-- make demo, steps 1-9 (scripts/demo.sh does the set-up and the clean-up):
-- the Kong "Keyring and Data Encryption" walkthrough, from "Start Kong" to
-- "Exploring Missing Keyring Material Behavior", against one Kong-shaped
-- node of spec/harness (real nginx, 2 workers, plugins keyring + basic-auth)
-- on the private PostgreSQL.
--
-- Every request is a real curl call and every database look a real psql
-- query; each is printed as typed, then its answer. The driver adds
-- `-m 30 -o <file> -w '%{http_code} %{time_total}'` to the curl commands it
-- prints, to check the status and report curl's own timing. Any unexpected
-- status or value stops the demo with exit code 1 (it doubles as a smoke
-- test). Key material is never printed: generate's `key` is redacted and the
-- export blobs are shortened.
--
-- Environment (set by scripts/demo.sh): DEMO_DIR (relative to the
-- repository root, holds cert.pem / key.pem and the exports), DEMO_DB,
-- DEMO_PG_PORT, DEMO_NODE (harness node name), DEMO_PROXY_PORT,
-- DEMO_ADMIN_PORT, DEMO_COLOR=1 for bold step titles.

local harness_server = require "harness.server"
local helpers = require "helpers"
local cjson = require "cjson.safe"


local fmt = string.format
local concat = table.concat
local shell_quote = helpers.shell_quote


local ROOT = helpers.root
local DIR = os.getenv("DEMO_DIR") or ".tmp/demo"
local DB = os.getenv("DEMO_DB") or "kong_demo"
local PG_PORT = tonumber(os.getenv("DEMO_PG_PORT") or "55432")
local NODE_NAME = os.getenv("DEMO_NODE") or "demo-kong"
local PROXY_PORT = tonumber(os.getenv("DEMO_PROXY_PORT") or "18400")
local ADMIN_PORT = tonumber(os.getenv("DEMO_ADMIN_PORT") or "18401")
local COLOR = os.getenv("DEMO_COLOR") == "1"
local ADMIN = "http://127.0.0.1:" .. ADMIN_PORT
local MAX_SHOWN = 48  -- characters of an export blob shown


-- Output ------------------------------------------------------------------

local function out(...)
  io.write(...)
  io.write("\n")
  io.flush()
end


local function step(n, title)
  local line = fmt("== %s. %s", tostring(n), title)
  out("\n", COLOR and ("\27[1m" .. line .. "\27[0m") or line)
end


local function say(text)
  out("   ", text)
end


-- An error raised by `check`: reported without a Lua traceback.
local failure_mt = {
  __tostring = function(self)
    return self.message
  end,
}


local function check(cond, message, ...)
  if not cond then
    error(setmetatable({ message = fmt(message, ...) }, failure_mt), 2)
  end
  return cond
end


-- An argv shown as one would type it (quoted only where the shell needs it).
local function display(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    a = tostring(a)
    parts[i] = a:find("^[%w%-%./:=@_,]+$") and a or shell_quote(a)
  end
  return concat(parts, " ")
end


local function shell(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    parts[i] = shell_quote(a)
  end
  return concat(parts, " ")
end


-- HTTP through curl -------------------------------------------------------

--- Runs curl against the Admin API and prints the command, status, time and
-- body (or `opts.show(body, json)` instead of the body). `args` are extra
-- curl arguments (e.g. { "-d", "username=bob" }). Fails the demo unless the
-- status is `want`. Returns body, decoded JSON, seconds.
local function admin(method, path, args, want, opts)
  opts = opts or {}
  local argv = { "curl", "-s" }
  if method ~= "GET" then
    argv[#argv + 1] = "-X"
    argv[#argv + 1] = method
  end
  argv[#argv + 1] = ADMIN .. path
  for _, a in ipairs(args or {}) do
    argv[#argv + 1] = a
  end
  out("$ ", display(argv))

  local body_file = DIR .. "/response.body"
  os.remove(body_file)
  local _, res = helpers.run(shell(argv) .. " -m 30 -o " .. shell_quote(body_file)
                             .. " -w '%{http_code} %{time_total}'")
  local body = helpers.read_file(body_file) or ""
  os.remove(body_file)  -- generate's answer holds key bytes: keep none on disk
  local status, seconds = res:match("^(%d+) ([%d%.]+)$")
  status, seconds = tonumber(status), tonumber(seconds)
  check(status and status ~= 0, "%s %s: no answer (%s)", method, path, res)

  local json = cjson.decode(body)
  out(fmt("HTTP %d (%.3f s)", status, seconds))
  local shown = opts.show and opts.show(body, json) or body
  if shown ~= "" then
    out(shown)
  end
  check(status == want, "%s %s answered %d, expected %d", method, path, status, want)
  return body, json, seconds
end


-- Polls quietly (no output) until `fn()` is truthy, up to `seconds`.
local function wait_for(seconds, fn)
  local deadline = helpers.now() + seconds
  repeat
    local v = fn()
    if v then
      return v
    end
    os.execute("sleep 0.05")
  until helpers.now() > deadline
end


-- psql --------------------------------------------------------------------

local function psql_argv(sql, extra)
  local argv = { "psql", "-h", "127.0.0.1", "-p", tostring(PG_PORT), "-U", "postgres", "-d", DB }
  for _, a in ipairs(extra or {}) do
    argv[#argv + 1] = a
  end
  argv[#argv + 1] = "-c"
  argv[#argv + 1] = sql
  return argv
end


--- Prints the psql command and its table; returns the rows as
-- { { col = value } } read by a second, unaligned run of the same query.
local function psql(sql, columns)
  local argv = psql_argv(sql)
  out("$ ", display(argv))
  local ok, text = helpers.run(shell(psql_argv(sql, { "-v", "ON_ERROR_STOP=1" })))
  io.write(text)
  check(ok, "psql failed")
  local _, raw = helpers.run(shell(psql_argv(sql, { "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t" })))
  local rows = {}
  for line in raw:gmatch("[^\n]+") do
    local row, i = {}, 0
    for value in (line .. "\t"):gmatch("([^\t]*)\t") do
      i = i + 1
      row[columns[i]] = value
    end
    rows[#rows + 1] = row
  end
  return rows
end


-- Pieces of the walkthrough -----------------------------------------------

local function shorten(s)
  if #s <= MAX_SHOWN then
    return s
  end
  return fmt("%s... (%d characters)", s:sub(1, MAX_SHOWN), #s)
end


--- The id inside a stored value `$ke$2$-<id>-...`, or nil.
local function key_id_of(stored)
  return stored and stored:match("^%$ke%$%d%$%-([^%-]+)%-")
end


local function not_available(id)
  return "keyring key '" .. id .. "' is not available on this node"
end


--- POST /keyring/export, the blob saved (without a newline) so that
-- `curl --data-urlencode data@<file>` sends it back as it came.
local function export_to(file)
  local _, json = admin("POST", "/keyring/export", nil, 200, {
    show = function(_, json)
      return json and type(json.data) == "string" and fmt('{"data":"%s"}', shorten(json.data))
    end,
  })
  check(json and type(json.data) == "string" and #json.data > 0, "export gave no data")
  helpers.write_file(file, json.data)
  os.execute("chmod 600 " .. shell_quote(file))
  say(fmt("saved to %s (%d bytes); the demo shows only its start", file, #json.data))
  return file
end


local function credentials_rows()
  return psql("SELECT c.username, b.id, b.password FROM basicauth_credentials b "
              .. "JOIN consumers c ON c.id = b.consumer_id ORDER BY c.username",
              { "username", "id", "password" })
end


local function by_username(rows)
  local map = {}
  for _, row in ipairs(rows) do
    map[row.username] = row
  end
  return map
end


local function create_user(name, password)
  local _, consumer = admin("POST", "/consumers", { "-d", "username=" .. name }, 201)
  local _, cred = admin("POST", "/consumers/" .. name .. "/basic-auth",
                        { "-d", "username=" .. name, "-d", "password=" .. password }, 201)
  check(consumer and consumer.id and cred and cred.id, "no id in the answers")
  return consumer, cred
end


local function cred_path(name, cred)
  return "/consumers/" .. name .. "/basic-auth/" .. cred.id
end


local function read_cred(name, cred, want_password)
  local _, json = admin("GET", cred_path(name, cred), nil, 200)
  check(json.password == want_password, "%s's password read back as %s, expected %s",
        name, tostring(json.password), want_password)
end


local function read_cred_unavailable(name, cred, key_id)
  local _, json, seconds = admin("GET", cred_path(name, cred), nil, 503)
  check(json and json.message == not_available(key_id), "503 does not name key %s", key_id)
  return seconds
end


-- The walkthrough ---------------------------------------------------------

local node
local state = {}


local function start_node()
  step(1, "Start Kong: one node, plugins keyring + basic-auth, keyring in cluster mode")
  local env = {
    KONG_KEYRING_ENABLED = "on",
    KONG_KEYRING_STRATEGY = "cluster",
    KONG_KEYRING_PUBLIC_KEY = ROOT .. "/" .. DIR .. "/cert.pem",
    KONG_KEYRING_PRIVATE_KEY = ROOT .. "/" .. DIR .. "/key.pem",
  }
  for _, k in ipairs({ "KONG_KEYRING_ENABLED", "KONG_KEYRING_STRATEGY",
                       "KONG_KEYRING_PUBLIC_KEY", "KONG_KEYRING_PRIVATE_KEY" }) do
    out("export ", k, "=", env[k])
  end
  node = harness_server.new {
    name = NODE_NAME,
    proxy_port = PROXY_PORT,
    admin_port = ADMIN_PORT,
    plugins = { "keyring", "basic-auth" },
    env = env,
    db = { port = PG_PORT, database = DB },
  }
  node:start()
  say(fmt("nginx -p %s: master %s, workers %s; Admin API %s (Kong's 8001), database %s",
          node.prefix:sub(#ROOT + 2), node.nginx:master_pid(), concat(node:worker_pids(), " "),
          ADMIN, DB))
end


local function verify_keyring()
  step(2, "Verify the cluster keyring")
  say("No key in the database yet, so the node generated one at start-up. Only its id is shown.")
  local waited = wait_for(5, function()
    local _, res = helpers.run("curl -s -m 2 " .. ADMIN .. "/keyring")
    local json = cjson.decode(res)
    return json and json.active
  end)
  check(waited, "no key was bootstrapped within 5 s")
  local _, json = admin("GET", "/keyring", nil, 200)
  check(json.active and #json.ids == 1 and json.ids[1] == json.active, "expected one active key")
  state.k1 = json.active
  say("key id " .. state.k1 .. " is the id, not the key material")
end


local function export_first()
  step(3, "Export the keyring (encrypted to KONG_KEYRING_PUBLIC_KEY)")
  state.blob1 = export_to(DIR .. "/keyring-export-1.txt")
end


local function exercise_encryption()
  step(4, "Exercise the encryption routines: consumer bob with a basic-auth credential")
  state.bob, state.bob_cred = create_user("bob", "hunter2")
  say("A second consumer, alice, whose row will stay on the first key (it is never rewritten):")
  state.alice, state.alice_cred = create_user("alice", "opensesame")
end


local function show_at_rest()
  step(5, "What is stored: ciphertext in PostgreSQL, plaintext in the Admin API")
  local rows = by_username(credentials_rows())
  for _, name in ipairs({ "alice", "bob" }) do
    check(rows[name] and key_id_of(rows[name].password) == state.k1,
          "%s's stored password is not a $ke$2$ value of key %s", name, state.k1)
  end
  say("Each password is $ke$2$-<key id>-<nonce, ciphertext, tag>, written with key " .. state.k1 .. ".")
  read_cred("bob", state.bob_cred, state.bob_cred.password)
  say("The Admin API shows the plaintext of the column. basic-auth hashes before the keyring")
  say("encrypts, so that plaintext is sha1(password .. consumer id), not 'hunter2':")
  local argv = { "printf", "%s%s", "hunter2", state.bob.id }
  out("$ ", display(argv), " | openssl sha1")
  local _, sha = helpers.run(shell(argv) .. " | openssl sha1")
  io.write(sha)
  check(sha:match("(%x+)%s*$") == state.bob_cred.password, "sha1 differs from the Admin API's password")
end


local function rotate_key()
  step(6, "Rotate key material: generate a key, activate it, export again")
  local _, json = admin("POST", "/keyring/generate", nil, 201, {
    show = function(_, json)
      return json and fmt('{"id":"%s","key":"<redacted by the demo>"}', tostring(json.id))
    end,
  })
  check(json and type(json.id) == "string" and json.id ~= state.k1, "generate gave no new id")
  state.k2 = json.id
  say("The API returns the raw key as a convenience; this demo does not print it.")
  admin("POST", "/keyring/activate", { "-d", "key=" .. state.k2 }, 204)
  local _, ring = admin("GET", "/keyring", nil, 200)
  check(ring.active == state.k2 and #ring.ids == 2, "expected two keys, %s active", state.k2)
  say("As the walkthrough advises, take another backup now: it holds both keys.")
  state.blob2 = export_to(DIR .. "/keyring-export-2.txt")
end


local function rotate_field()
  step(7, "Rotate an encrypted field: PATCH bob's password")
  local _, patched = admin("PATCH", cred_path("bob", state.bob_cred), { "-d", "password=correct-horse" }, 200)
  check(patched.password ~= state.bob_cred.password, "PATCH did not change the password")
  state.bob_password = patched.password
  local rows = by_username(credentials_rows())
  check(key_id_of(rows.bob.password) == state.k2, "bob's row is not under the new key %s", state.k2)
  check(key_id_of(rows.alice.password) == state.k1, "alice's row left the old key %s", state.k1)
  say(fmt("bob's row now carries key id %s; alice's, untouched, still %s and still reads back:",
          state.k2, state.k1))
  read_cred("alice", state.alice_cred, state.alice_cred.password)
end


local function missing_keys()
  step(8, "Missing keyring material: restart the node without importing")
  say("Kong's `kong restart`; here node:restart() of spec/harness: nginx quits and starts again")
  say("with the same prefix and database. Keys live only in memory, so none is left.")
  node:restart()
  say(fmt("master %s, workers %s", node.nginx:master_pid(), concat(node:worker_pids(), " ")))
  local _, ring = admin("GET", "/keyring", nil, 200)
  check(#(ring.ids or {}) == 0, "keys survived the restart")
  say("Reading bob's credential now fails fast, with a 503 naming the missing key")
  say("(the walkthrough's Kong EE waited 24.8 s and answered 500):")
  local seconds = read_cred_unavailable("bob", state.bob_cred, state.k2)
  say(fmt("curl measured %%{time_total} = %.3f s", seconds))
end


local function import_back()
  step(9, "Import the keyring back")
  say("The walkthrough's `curl .../keyring/import -d data=<exported data>`; --data-urlencode reads")
  say("the saved blob from its file and escapes its '+', '/' and '='.")
  say("First the export of step 3, made before the rotation: it holds only " .. state.k1 .. ".")
  local _, ring = admin("POST", "/keyring/import", { "--data-urlencode", "data@" .. state.blob1 }, 200)
  check(#ring.ids == 1 and ring.ids[1] == state.k1, "the first export should hold %s only", state.k1)
  read_cred("alice", state.alice_cred, state.alice_cred.password)
  say("alice's row (key " .. state.k1 .. ") is readable again; bob's was rewritten with " .. state.k2
      .. ", which that export lacks:")
  read_cred_unavailable("bob", state.bob_cred, state.k2)
  say("Then the export of step 6, made after the rotation: it holds both keys.")
  _, ring = admin("POST", "/keyring/import", { "--data-urlencode", "data@" .. state.blob2 }, 200)
  local ids = {}
  for _, id in ipairs(ring.ids or {}) do
    ids[id] = true
  end
  check(ids[state.k1] and ids[state.k2] and ring.active == state.k2,
        "the second export should hold %s and %s, %s active", state.k1, state.k2, state.k2)
  read_cred("bob", state.bob_cred, state.bob_password)
  say("bob's credential reads back with the password set in step 7.")
end


local function stop_node()
  step(10, "Stop")
  node:stop()
  node = nil
  out("nginx stopped (", NODE_NAME, ")")
end


local function main()
  out("Every curl below also runs with -m 30 -o <file> -w '%{http_code} %{time_total}':")
  out("its 'HTTP' line is the status and time curl measured.")
  start_node()
  verify_keyring()
  export_first()
  exercise_encryption()
  show_at_rest()
  rotate_key()
  rotate_field()
  missing_keys()
  import_back()
  stop_node()
end


local function error_log_tail(lines)
  local text = node and node:error_log() or ""
  local all = {}
  for line in text:gmatch("[^\n]+") do
    if not line:find(" [info] ", 1, true) and not line:find(" [debug] ", 1, true) then
      all[#all + 1] = line
    end
  end
  return concat(all, "\n", math.max(1, #all - lines + 1), #all)
end


local ok, err = xpcall(main, function(e)
  return getmetatable(e) == failure_mt and e or debug.traceback(tostring(e), 2)
end)
if not ok then
  io.stderr:write("\nDEMO FAILED: ", tostring(err), "\n")
  if node then
    io.stderr:write("last lines of ", node.prefix, "/logs/error.log (info lines left out):\n", error_log_tail(20), "\n")
    pcall(node.stop, node)
  end
  os.exit(1)
end
