-- Data for the rewrap spec (spec/03-kong/13-rewrap_spec.lua) and benchmark
-- (bench/rewrap.sh): rows with encrypted fields written straight into a Kong
-- database with SQL, far faster than the Admin API, and the check of every
-- stored value afterwards.
--
-- Each generated row is a copy of a template row the Admin API made (one
-- per kind, so the stored shape is Kong's own), with its id, unique columns
-- and encrypted fields replaced: `jsonb_populate_record(NULL::t, to_jsonb(tpl)
-- || patch)`. The patches travel in one COPY (CSV) of a psql script, all in
-- one transaction. Encrypted values are made in this process with
-- `kong.keyring` under the key the caller activated there (v2, the row
-- context `<table>:<id>`, docs/design.md "Contexts"), or built by hand as
-- Kong Enterprise's v1 (docs/formats.md "Field value v1"), or left as
-- plaintext. The expected plaintext of every value is kept.
--
--   local rd = require "rewrap_data"
--   local gen = rd.new { psql = "psql -h ... -d db", dir = "/tmp/x", keyring = keyring,
--                        key_id = A, key_b64 = A_b64 }
--   gen:load_templates()
--   gen:generate { basicauth = 50000, certificates = 20000, session = 15000, secret_probe = 15000 }
--   local scan = gen:scan()              -- every stored value of the tables
--   local report = gen:check(scan)       -- decrypts and compares them all
--   local usage = rd.usage_of(scan)      -- counts as GET /keyring/usage gives them
--
-- Runs under Kong's busted and under Kong's `resty` (no spec helper needed).

local cjson = require "cjson.safe"
local cipher = require "resty.openssl.cipher"
local rand = require "resty.openssl.rand"
local sha1 = require "resty.sha1"
local to_hex = require("resty.string").to_hex


local fmt = string.format
local concat = table.concat


local _M = {}


-- the encrypted fields of the tables and plugins generated here
local FIELDS = {
  basicauth_credentials = { "password" },
  certificates = { "key", "key_alt" },
  session = { "config.secret" },
  ["secret-probe"] = { "config.secret", "config.redis.password", "config.headers[].value", "config.tokens[]" },
}
_M.FIELDS = FIELDS


local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


local function run(cmd)
  local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"~rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc
  out = out:gsub("~rc=(%d+)\n$", function(n) rc = tonumber(n); return "" end)
  return rc == 0, out
end
_M.run = run


-- plain-text replace (uuids hold `-`, a pattern character)
local function replace(s, old, new)
  local i, j = s:find(old, 1, true)
  if not i then
    return s
  end
  return s:sub(1, i - 1) .. new .. s:sub(j + 1)
end


-- the label of a table or plugin in usage counts: "basicauth_credentials",
-- "certificates", "plugins:session"
local function label_of(tbl, plugin)
  return plugin and ("plugins:" .. plugin) or tbl
end
_M.label_of = label_of


--- What a stored value is: "v2", "v1", "plaintext", "empty", or "other"
-- (a marked value of no known version), and its key id.
local function classify(v)
  if v == nil or v == cjson.null or v == "" then
    return "empty"
  end
  local id = v:match("^%$ke%$2%$%-([^-]+)%-")
  if id then
    return "v2", id
  end
  id = v:match("^%$ke%$1%$%-([^-]+)%-")
  if id then
    return "v1", id
  end
  if v:sub(1, 4) == "$ke$" then
    return "other"
  end
  return "plaintext"
end
_M.classify = classify


local mt = { __index = {} }
local G = mt.__index


--- opts: psql (command prefix reaching the database), dir (scratch
-- directory), keyring (kong.keyring, its active key used for v2 values),
-- key_id and key_b64 (that key, for v1 values), plaintext_every and
-- v1_every (one value in N of each kind; default 50 and 50).
function _M.new(opts)
  assert(opts.psql and opts.dir and opts.keyring and opts.key_id and opts.key_b64, "rewrap_data.new: missing option")
  local self = setmetatable({
    psql_cmd = opts.psql,
    dir = opts.dir,
    keyring = opts.keyring,
    key_id = opts.key_id,
    key = assert(ngx.decode_base64(opts.key_b64)),
    plaintext_every = opts.plaintext_every or 50,
    v1_every = opts.v1_every or 50,
    -- expected[label][id] = { [path] = plaintext }
    expected = {},
    -- ids[label] = { id, ... } in generation order
    ids = {},
    -- generated value counts: counts[label] = { plaintext = n, v1 = n, v2 = n }
    counts = {},
    -- consumer_of[basic-auth credential id] = its consumer's id
    consumer_of = {},
    serial = 0,
    run_id = to_hex(assert(rand.bytes(4))),
  }, mt)
  assert(run("mkdir -p " .. shell_quote(self.dir)))
  return self
end


--- psql -At -c `sql`: the output, last newline cut (raises on failure).
function G:psql(sql)
  local ok, out = run(self.psql_cmd .. " -v ON_ERROR_STOP=1 -At -c " .. shell_quote(sql))
  assert(ok, out)
  return (out:gsub("\n$", ""))
end


--- Runs `fn(line)` for each line psql prints for `sql` (big results).
function G:each_line(sql, fn)
  local file = self.dir .. "/out-" .. self.run_id .. ".txt"
  local ok, out = run(self.psql_cmd .. " -v ON_ERROR_STOP=1 -At -o " .. shell_quote(file) .. " -c " .. shell_quote(sql))
  assert(ok, out)
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    fn(line)
  end
  os.remove(file)
  return n
end


local function row_json(self, sql)
  local text = self:psql(sql)
  assert(text ~= "", "no row for: " .. sql)
  return assert(cjson.decode(text:match("^[^\n]+")))
end


--- Reads the template rows (the oldest row of each kind, made through the
-- Admin API before): a consumer, a service, a basic-auth credential, a
-- certificate, a session plugin on a service and a secret-probe plugin on a
-- consumer (the last two only when present).
function G:load_templates()
  local t = {}
  local oldest = " ORDER BY created_at, id LIMIT 1"
  t.consumer = row_json(self, "SELECT to_jsonb(t) FROM consumers t" .. oldest)
  t.service = row_json(self, "SELECT to_jsonb(t) FROM services t" .. oldest)
  t.basicauth = row_json(self, "SELECT to_jsonb(t) FROM basicauth_credentials t" .. oldest)
  t.certificate = row_json(self, "SELECT to_jsonb(t) FROM certificates t" .. oldest)
  local s = self:psql("SELECT to_jsonb(t) FROM plugins t WHERE name = 'session' AND service_id IS NOT NULL" .. oldest)
  t.session = s ~= "" and cjson.decode(s) or nil
  s = self:psql("SELECT to_jsonb(t) FROM plugins t WHERE name = 'secret-probe' AND consumer_id IS NOT NULL" .. oldest)
  t.secret_probe = s ~= "" and cjson.decode(s) or nil
  self.templates = t
  return t
end


function G:uuid()
  self.serial = self.serial + 1
  local n = self.serial
  return fmt("%s-%04x-4%03x-8%03x-%012x", self.run_id, math.random(0, 0xffff), math.random(0, 0xfff),
             math.random(0, 0xfff), n)
end


-- AES-256-CTR from nonce || 00000002 under the raw key (docs/formats.md "Field value v1")
function G:v1(plain)
  local nonce = assert(rand.bytes(12))
  local ct = assert(cipher.new("aes-256-ctr"):encrypt(self.key, nonce .. "\0\0\0\2", plain))
  return "$ke$1$-" .. self.key_id .. "-" .. to_hex(nonce) .. "-" .. to_hex(ct)
end


-- the stored form of `plain` for the n-th value: plaintext, v1 or v2
function G:seal(label, id, path, plain, n)
  local per = self.expected[label]
  per[id] = per[id] or {}
  per[id][path] = plain
  local counts = self.counts[label]
  local stored, kind
  if n % self.plaintext_every == 7 % self.plaintext_every then
    stored, kind = plain, "plaintext"
  elseif n % self.v1_every == 13 % self.v1_every then
    stored, kind = self:v1(plain), "v1"
  else
    local table_name = label:match("^plugins:") and "plugins" or label
    stored = assert(self.keyring.encrypt(plain, table_name .. ":" .. id))
    kind = "v2"
  end
  counts[kind] = counts[kind] + 1
  return stored
end


local function csv(s)
  return '"' .. s:gsub('"', '""') .. '"'
end


--- Writes `counts` rows (basicauth, certificates, session, secret_probe) and
-- the consumers and services the plugins hang on, with one psql script.
-- Returns the seconds it took (generation, then the load).
function G:generate(counts)
  local t = assert(self.templates, "load_templates first")
  local keyring = self.keyring
  -- the v1 construction, checked against the library once
  local probe = self:v1("v1 self-check")
  assert(keyring.decrypt(probe, "any") == "v1 self-check", "v1 value does not decrypt")

  ngx.update_time()
  local t0 = ngx.now()
  local lines = {}
  local function add(tbl, tpl_id, patch)
    lines[#lines + 1] = tbl .. "," .. tpl_id .. "," .. csv(cjson.encode(patch))
  end
  for _, label in ipairs({ "basicauth_credentials", "certificates", "plugins:session", "plugins:secret-probe" }) do
    self.expected[label] = self.expected[label] or {}
    self.ids[label] = self.ids[label] or {}
    self.counts[label] = self.counts[label] or { plaintext = 0, v1 = 0, v2 = 0 }
  end
  local n = 0

  -- consumers: one per secret-probe plugin (its cache key names the
  -- consumer), and the basic-auth credentials spread over them
  local consumers = {}
  for i = 1, math.max(counts.secret_probe or 0, 1) do
    local id = self:uuid()
    consumers[i] = id
    add("consumers", t.consumer.id, { id = id, username = "rw-c-" .. self.run_id .. "-" .. i })
  end

  local ws = t.basicauth.ws_id
  for i = 1, counts.basicauth or 0 do
    n = n + 1
    local id = self:uuid()
    local consumer = consumers[(i - 1) % #consumers + 1]
    -- what Kong's basic-auth stores: sha1(password .. consumer id), hex
    local digest = sha1:new()
    digest:update("pw-" .. i .. consumer)
    local hash = to_hex(digest:final())
    add("basicauth_credentials", t.basicauth.id, {
      id = id, username = "rw-u-" .. self.run_id .. "-" .. i, consumer_id = consumer,
      password = self:seal("basicauth_credentials", id, "password", hash, n),
    })
    local list = self.ids.basicauth_credentials
    list[#list + 1] = id
    self.consumer_of[id] = consumer
  end

  -- certificates: the template's key PEM behind a comment line naming the
  -- row (PEM readers skip text before BEGIN), so every plaintext differs;
  -- one in ten keeps the template's alternate certificate and key (when it
  -- has one: Kong wants another key type there), the others have none
  local key_pem = assert(keyring.decrypt(t.certificate.key, "certificates:" .. t.certificate.id))
  local alt_pem = t.certificate.key_alt ~= cjson.null and t.certificate.key_alt
                  and assert(keyring.decrypt(t.certificate.key_alt, "certificates:" .. t.certificate.id))
  for i = 1, counts.certificates or 0 do
    n = n + 1
    local id = self:uuid()
    local patch = { id = id, cert_alt = cjson.null, key_alt = cjson.null }
    patch.key = self:seal("certificates", id, "key", "# " .. id .. "\n" .. key_pem, n)
    if alt_pem and i % 10 == 0 then
      n = n + 1
      patch.cert_alt = nil  -- the template's
      patch.key_alt = self:seal("certificates", id, "key_alt", "# alt " .. id .. "\n" .. alt_pem, n)
    end
    add("certificates", t.certificate.id, patch)
    local list = self.ids.certificates
    list[#list + 1] = id
  end

  -- session plugins, each on a service of its own
  if (counts.session or 0) > 0 then
    local tpl = assert(t.session, "no session plugin template")
    for i = 1, counts.session do
      local service = self:uuid()
      add("services", t.service.id, { id = service, name = "rw-s-" .. self.run_id .. "-" .. i })
      n = n + 1
      local id = self:uuid()
      local config = {}  -- merged into the template's
      config.secret = self:seal("plugins:session", id, "config.secret", "session-secret-" .. i .. "-" .. id, n)
      add("plugins", tpl.id, { id = id, service_id = service,
                               cache_key = replace(tpl.cache_key, tpl.service_id, service), config_patch = config })
      local list = self.ids["plugins:session"]
      list[#list + 1] = id
    end
  end

  -- secret-probe plugins, each on a consumer of its own, with encrypted
  -- values at every depth: config.secret, redis.password, headers[].value, tokens[]
  if (counts.secret_probe or 0) > 0 then
    local tpl = assert(t.secret_probe, "no secret-probe plugin template")
    local label = "plugins:secret-probe"
    for i = 1, counts.secret_probe do
      local id = self:uuid()
      local consumer = consumers[i]
      local config = {}  -- merged into the template's
      n = n + 1
      config.secret = self:seal(label, id, "config.secret", "probe-secret-" .. i, n)
      n = n + 1
      config.redis = { host = "redis-" .. i, password = self:seal(label, id, "config.redis.password", "redis-pw-" .. i, n) }
      config.headers = {}
      for h = 1, 1 + i % 2 do
        n = n + 1
        config.headers[h] = { name = "X-H" .. h,
                              value = self:seal(label, id, "config.headers[" .. h .. "].value", "hv-" .. h .. "-" .. i, n) }
      end
      config.tokens = {}
      for k = 1, 2 do
        n = n + 1
        config.tokens[k] = self:seal(label, id, "config.tokens[" .. k .. "]", "tok-" .. k .. "-" .. i, n)
      end
      config.label = "rw-" .. i
      add("plugins", tpl.id, { id = id, consumer_id = consumer,
                               cache_key = replace(tpl.cache_key, tpl.consumer_id, consumer), config_patch = config })
      local list = self.ids[label]
      list[#list + 1] = id
    end
  end
  ngx.update_time()
  local generated = ngx.now() - t0

  -- LATERAL: `(f(x)).*` would call f once per column. Plugin patches carry
  -- the config keys that differ (`config_patch`, merged into the
  -- template's): whole configs would make ~10^5 long Lua strings alike but
  -- for a few bytes, which LuaJIT's sparse string hash interns slowly.
  local insert = "INSERT INTO %s SELECT r.* FROM kk_gen g JOIN %s t ON t.id = g.tpl, "
                 .. "LATERAL jsonb_populate_record(NULL::%s, to_jsonb(t) || %s) r WHERE g.tbl = '%s';\n"
  local merge = { plugins = "(g.patch - 'config_patch') || jsonb_build_object('config', t.config || "
                            .. "(g.patch -> 'config_patch'))" }
  local file = self.dir .. "/rows-" .. self.run_id .. ".sql"
  local f = assert(io.open(file, "wb"))
  f:write("BEGIN;\nCREATE TEMP TABLE kk_gen (tbl text, tpl uuid, patch jsonb);\n",
          "COPY kk_gen FROM STDIN WITH (FORMAT csv);\n", concat(lines, "\n"), "\n\\.\n")
  for _, tbl in ipairs({ "consumers", "services", "basicauth_credentials", "certificates", "plugins" }) do
    f:write(fmt(insert, tbl, tbl, tbl, merge[tbl] or "g.patch", tbl))
  end
  -- a table in its steady state, as an operator's is: statistics, hint
  -- bits and the visibility map set now, not by autovacuum or the first
  -- reads during a rewrap
  f:write("COMMIT;\nVACUUM (ANALYZE) consumers, services, basicauth_credentials, certificates, plugins;\n")
  f:close()
  local ok, out = run(self.psql_cmd .. " -v ON_ERROR_STOP=1 -q -f " .. shell_quote(file))
  assert(ok, out)
  if not os.getenv("KK_KEEP_SQL") then os.remove(file) end
  ngx.update_time()
  return generated, ngx.now() - t0 - generated
end


--- The expected plaintext of value `path` of row `id` is now `plain` (a
-- write through the Admin API).
function G:expect(label, id, path, plain)
  self.expected[label] = self.expected[label] or {}
  self.expected[label][id] = self.expected[label][id] or {}
  self.expected[label][id][path] = plain
end


--- Every value stored now (rows made through the Admin API, e.g. the
-- templates) becomes expected as it decrypts with this process's keyring.
-- Returns the number of values.
function G:expect_stored()
  local n = 0
  for label, rows in pairs(self:scan()) do
    if type(rows) == "table" then
      local context_table = label:match("^plugins:") and "plugins" or label
      for id, values in pairs(rows) do
        for path, v in pairs(values) do
          self:expect(label, id, path, assert(self.keyring.decrypt(v, context_table .. ":" .. id)))
          n = n + 1
        end
      end
    end
  end
  return n
end


-- the values of a secret-probe or session config, by path
local function config_values(name, config, out)
  if type(config) ~= "table" then
    return out
  end
  out["config.secret"] = config.secret
  if name == "secret-probe" then
    if type(config.redis) == "table" then
      out["config.redis.password"] = config.redis.password
    end
    for i, h in ipairs(type(config.headers) == "table" and config.headers or {}) do
      if type(h) == "table" then
        out["config.headers[" .. i .. "].value"] = h.value
      end
    end
    for i, v in ipairs(type(config.tokens) == "table" and config.tokens or {}) do
      out["config.tokens[" .. i .. "]"] = v
    end
  end
  return out
end


--- Every stored value of the encrypted fields of basic-auth credentials,
-- certificates and session and secret-probe plugins:
-- scan[label][id] = { [path] = stored value } (null and "" left out), and
-- scan.rows = the number of rows read.
function G:scan()
  local scan = { rows = 0 }
  for _, label in ipairs({ "basicauth_credentials", "certificates", "plugins:session", "plugins:secret-probe" }) do
    scan[label] = {}
  end
  local function put(label, id, values)
    local kept = {}
    for path, v in pairs(values) do
      if v ~= cjson.null and v ~= "" then
        kept[path] = v
      end
    end
    scan[label][id] = kept
  end
  scan.rows = scan.rows + self:each_line("SELECT jsonb_build_object('id', id, 'v', password) FROM basicauth_credentials",
                                         function(line)
    local r = assert(cjson.decode(line))
    put("basicauth_credentials", r.id, { password = r.v })
  end)
  scan.rows = scan.rows + self:each_line("SELECT jsonb_build_object('id', id, 'k', key, 'a', key_alt) FROM certificates",
                                         function(line)
    local r = assert(cjson.decode(line))
    put("certificates", r.id, { key = r.k, key_alt = r.a })
  end)
  scan.rows = scan.rows + self:each_line("SELECT jsonb_build_object('id', id, 'n', name, 'c', config) FROM plugins "
                                         .. "WHERE name IN ('session', 'secret-probe')", function(line)
    local r = assert(cjson.decode(line))
    put("plugins:" .. r.n, r.id, config_values(r.n, r.c, {}))
  end)
  return scan
end


--- Counts of a scan as GET /keyring/usage gives them: { keys = { [id] =
-- { v2 = n, v1 = n } }, plaintext = n, tables = { [label] = { keys = ...,
-- plaintext = n } } }; marked values of no known version go to `other`.
function _M.usage_of(scan)
  local usage = { keys = {}, plaintext = 0, other = 0, tables = {} }
  for label, rows in pairs(scan) do
    if type(rows) == "table" then
      local per = { keys = {}, plaintext = 0 }
      usage.tables[label] = per
      for _, values in pairs(rows) do
        for _, v in pairs(values) do
          local kind, id = classify(v)
          if kind == "v2" or kind == "v1" then
            for _, into in ipairs({ usage.keys, per.keys }) do
              into[id] = into[id] or { v2 = 0, v1 = 0 }
              into[id][kind] = into[id][kind] + 1
            end
          elseif kind == "plaintext" then
            per.plaintext = per.plaintext + 1
            usage.plaintext = usage.plaintext + 1
          elseif kind == "other" then
            usage.other = usage.other + 1
          end
        end
      end
    end
  end
  return usage
end


--- Decrypts every stored value of `scan` with the keyring of this process
-- and compares it with its expected plaintext (rows this generator does not
-- know are only decrypted). `opts.want_key`: every marked value must be v2
-- under that key; `opts.skip`: { [label .. ":" .. id] = true } rows left out.
-- Returns { rows, values, compared, missing = {...}, wrong = {...},
-- failed = {...}, not_rewrapped = {...} } (lists of "label:id path: why",
-- at most 20 each, with their full counts in n_*).
function G:check(scan, opts)
  opts = opts or {}
  local keyring = self.keyring
  local r = { rows = 0, values = 0, compared = 0, missing = {}, wrong = {}, failed = {}, not_rewrapped = {},
              n_missing = 0, n_wrong = 0, n_failed = 0, n_not_rewrapped = 0 }
  local function note(list, what)
    r["n_" .. list] = r["n_" .. list] + 1
    if #r[list] < 20 then
      r[list][#r[list] + 1] = what
    end
  end
  for label, expected_rows in pairs(self.expected) do
    local stored_rows = scan[label] or {}
    for id, values in pairs(expected_rows) do
      if not (opts.skip and opts.skip[label .. ":" .. id]) then
        local stored = stored_rows[id]
        if not stored then
          note("missing", label .. ":" .. id .. " (row)")
        else
          for path in pairs(values) do
            if stored[path] == nil then
              note("missing", label .. ":" .. id .. " " .. path)
            end
          end
        end
      end
    end
  end
  for label, rows in pairs(scan) do
    if type(rows) == "table" then
      local context_table = label:match("^plugins:") and "plugins" or label
      local expected_rows = self.expected[label] or {}
      for id, values in pairs(rows) do
        if not (opts.skip and opts.skip[label .. ":" .. id]) then
          r.rows = r.rows + 1
          local expected = expected_rows[id]
          for path, v in pairs(values) do
            r.values = r.values + 1
            local where = label .. ":" .. id .. " " .. path
            if opts.want_key then
              local kind, key = classify(v)
              if kind ~= "v2" or key ~= opts.want_key then
                note("not_rewrapped", where .. " is " .. kind .. (key and (" under " .. key) or ""))
              end
            end
            local plain, err = keyring.decrypt(v, context_table .. ":" .. id)
            if not plain then
              note("failed", where .. ": " .. tostring(err))
            elseif expected then
              if expected[path] == nil then
                note("wrong", where .. ": a value where none was expected")
              elseif plain ~= expected[path] then
                note("wrong", where .. ": decrypts to another plaintext")
              else
                r.compared = r.compared + 1
              end
            end
          end
        end
      end
    end
  end
  return r
end


--- One line for a check report (counts, and the first problems).
function _M.describe(r)
  local parts = { fmt("%d rows, %d values, %d compared, %d missing, %d wrong, %d failed, %d not rewrapped",
                      r.rows, r.values, r.compared, r.n_missing, r.n_wrong, r.n_failed, r.n_not_rewrapped) }
  for _, list in ipairs({ "missing", "wrong", "failed", "not_rewrapped" }) do
    for _, what in ipairs(r[list]) do
      parts[#parts + 1] = list .. ": " .. what
    end
  end
  return concat(parts, "\n  ")
end


--- True when a check report found nothing wrong.
function _M.clean(r)
  return r.n_missing == 0 and r.n_wrong == 0 and r.n_failed == 0 and r.n_not_rewrapped == 0
end


return _M
