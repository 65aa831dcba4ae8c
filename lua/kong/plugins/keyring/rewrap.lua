-- The rewrap job (docs/design.md, "Rewrap"): re-encrypts every stored value
-- that is not under the active key (and plaintext left from before the
-- keyring, and v1 values) with the row context of the DAO path, in SQL
-- batches. Each batch is one statement: the rows' UPDATE (only where the
-- MD5 of every column is still that of what was read: a concurrent Admin
-- API write is never overwritten; such rows are read again), the job's
-- checkpoint and its lease. One job per cluster (a unique index on live
-- jobs); the run that holds the lease renews it every batch, and when it is
-- older than `lease` seconds any node takes the job over and resumes from
-- the checkpoint.

local keyring = require "kong.keyring"
local db = require "kong.keyring.strategies.db"
local cjson_safe = require "cjson.safe"
local buffer = require "string.buffer"
local stored = require "kong.plugins.keyring.stored"
local fields = require "kong.plugins.keyring.fields"
local transform = require "kong.plugins.keyring.transform"
local uuid = require("kong.tools.uuid").uuid


local ngx = ngx
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local concat = table.concat
local fmt = string.format
local find = string.find
local sub = string.sub
local gsub = string.gsub
local md5 = ngx.md5
local min = math.min
local ceil = math.ceil
local max = math.max
local null = ngx.null
local lit = stored.literal


-- JSON columns are decoded and encoded with empty arrays kept as arrays
local json = cjson_safe.new()
json.decode_array_with_array_mt(true)
json.encode_escape_forward_slash(false)
json.encode_number_precision(16)


local BATCH = 1000
-- rows between yields to the worker's other requests: often under `rate`
-- (latency matters), rarely without (throughput does)
local YIELD_LIMITED, YIELD_UNLIMITED = 20, 200
local THREADS = 2
local MAX_ERRORS = 1000
local RETRIES = 3


local _M = {}
local mt = { __index = _M }


local function log(level, ...)
  ngx.log(level, "[keyring] rewrap: ", ...)
end


local function now()
  ngx.update_time()
  return ngx.now()
end


--- `db`: kong.db; `node_id`: this node; `frequency`: db_update_frequency;
-- `write_format`: "v1" or "v2", the format values are rewritten to.
function _M.new(db, node_id, frequency, write_format)
  return setmetatable({
    db = db,
    node_id = node_id,
    lease = max(5, 3 * (frequency or 5)),
    format = write_format == "v1" and "1" or "2",
  }, mt)
end


function _M:query(sql)
  return db.query(self.db, sql)
end


local JOB_COLUMNS = [[
  id, state, target, from_key, rate, tables, node_id, runner, rows_done, rows_total, rewritten,
  run_rows, checkpoint::text AS checkpoint, progress::text AS progress, errors::text AS errors,
  extract(epoch FROM started_at) AS started_at, extract(epoch FROM updated_at) AS updated_at,
  extract(epoch FROM finished_at) AS finished_at, extract(epoch FROM run_started_at) AS run_started_at
]]


local function present(v)
  if v ~= null then
    return v
  end
end


local function decode_job(row)
  if not row then
    return nil
  end
  local job = {}
  for k, v in pairs(row) do
    job[k] = present(v)
  end
  job.checkpoint = json.decode(job.checkpoint or "{}") or {}
  job.progress = json.decode(job.progress or "{}") or {}
  job.errors = json.decode(job.errors or "[]") or {}
  for _, k in ipairs({ "rows_done", "rows_total", "rewritten", "run_rows", "rate", "started_at", "updated_at",
                       "finished_at", "run_started_at" }) do
    job[k] = tonumber(job[k])
  end
  return job
end


--- The latest job, or false when none ever ran.
function _M:latest()
  local rows, err = self:query("SELECT " .. JOB_COLUMNS .. " FROM keyring_rewrap ORDER BY started_at DESC LIMIT 1;")
  if not rows then
    return nil, err
  end
  return decode_job(rows[1]) or false
end


-- the sources a job covers (its `tables` setting: entity names)
local function job_sources(job)
  local set
  if job.tables and job.tables ~= "" then
    set = {}
    for name in job.tables:gmatch("[^,%s]+") do
      set[name] = true
    end
  end
  return stored.list(set)
end


-- What a run checks before each batch: the job's state, runner and
-- settings (not its progress and errors), or nil and an error.
function _M:status(id)
  local rows, err = self:query(fmt([[
    SELECT id, state, runner, target, from_key, rate, tables FROM keyring_rewrap WHERE id = %s;
  ]], lit(id)))
  if not rows then
    return nil, err
  end
  local row = rows[1]
  if not row then
    return nil, "job " .. id .. " is gone"
  end
  local rate = present(row.rate)
  return { id = row.id, state = row.state, runner = present(row.runner), target = present(row.target),
           from_key = present(row.from_key), rate = rate and tonumber(rate), tables = present(row.tables) }
end


--- The job as the Admin API shows it.
function _M.view(job)
  local tables = {}
  for _, s in ipairs(job_sources(job)) do
    local p = job.progress[s.label] or {}
    tables[#tables + 1] = { table = s.label, done = p.done or 0, total = p.total or 0, rewritten = p.rewritten or 0 }
  end
  local elapsed = job.run_started_at and job.updated_at and (job.updated_at - job.run_started_at) or 0
  local rate = elapsed > 0 and (job.run_rows or 0) / elapsed or nil
  local left = (job.rows_total or 0) - (job.rows_done or 0)
  return {
    id = job.id,
    state = job.state,
    target = job.target,
    from = job.from_key,
    rate = job.rate,
    node = job.node_id,
    started_at = job.started_at,
    updated_at = job.updated_at,
    finished_at = job.finished_at,
    rows_done = job.rows_done,
    rows_total = job.rows_total,
    rewritten = job.rewritten,
    rate_measured = rate and math.floor(rate) or nil,
    eta_seconds = (job.state == "running" and rate and rate > 0) and math.ceil(max(left, 0) / rate) or nil,
    tables = setmetatable(tables, cjson_safe.array_mt),
    errors = setmetatable(job.errors, cjson_safe.array_mt),
  }
end


--- Starts a job under the active key: `opts` = { from = id, rate = n, tables = "a,b" }.
-- @return the job, or nil, an error and its kind ("conflict": one is live)
function _M:start(opts)
  local target = keyring.active_id()
  if not target then
    return nil, "no active key on this node", "unavailable"
  end
  local sources = job_sources({ tables = opts.tables })
  local progress, total = {}, 0
  for _, s in ipairs(sources) do
    local rows, err = self:query(fmt("SELECT count(*) AS n FROM %s WHERE %s;", stored.table_sql(s),
                                     stored.where_sql(s)))
    if not rows then
      return nil, err
    end
    local n = tonumber(rows[1].n)
    progress[s.label] = { done = 0, total = n, rewritten = 0 }
    total = total + n
  end
  local token = self:new_token()
  local rows, err = self:query(fmt([[
    INSERT INTO keyring_rewrap (id, state, target, from_key, rate, tables, node_id, runner, heartbeat, rows_total,
                                progress, run_started_at)
      VALUES (%s, 'running', %s, %s, %s, %s, %s, %s, CURRENT_TIMESTAMP, %d, %s::jsonb, CURRENT_TIMESTAMP)
      ON CONFLICT DO NOTHING RETURNING id;
  ]], lit(uuid()), lit(target), opts.from and lit(opts.from) or "NULL", opts.rate and tostring(opts.rate) or "NULL",
      opts.tables and lit(opts.tables) or "NULL", lit(self.node_id), lit(token), total,
      lit(json.encode(progress))))
  if not rows then
    if tostring(err):find("keyring_rewrap_one_live", 1, true) then
      return nil, "a rewrap job is already running or paused", "conflict"
    end
    return nil, err
  end
  if #rows == 0 then
    return nil, "a rewrap job is already running or paused", "conflict"
  end
  local job = assert(self:latest())
  self:run_here(job.id, token)
  return job
end


--- Sets the live job's state: "paused", "cancelled", or "running" (a
-- paused job resumes on this node).
-- @return the job, or nil, an error and its kind ("conflict": no such job)
function _M:set_state(state)
  local from = state == "running" and "'paused'" or "'running', 'paused'"
  local token = self:new_token()
  local extra = state == "running"
                and fmt(", node_id = %s, runner = %s, heartbeat = CURRENT_TIMESTAMP, "
                        .. "run_started_at = CURRENT_TIMESTAMP, run_rows = 0", lit(self.node_id), lit(token))
                or state == "cancelled" and ", finished_at = CURRENT_TIMESTAMP" or ""
  local rows, err = self:query(fmt([[
    UPDATE keyring_rewrap SET state = %s, updated_at = CURRENT_TIMESTAMP %s
      WHERE state IN (%s) RETURNING id;
  ]], lit(state), extra, from))
  if not rows then
    return nil, err
  end
  if #rows == 0 then
    return nil, state == "running" and "no paused rewrap job" or "no running or paused rewrap job", "conflict"
  end
  if state == "running" then
    self:run_here(rows[1].id, token)
  end
  return self:latest()
end


-- Re-encrypts one value for `ctx`; returns the new value, or the same value
-- when it needs nothing, or nil and an error.
local function rewrapper(target, format, from, ctx)
  return function(v)
    if v == "" then
      return v
    end
    local version, id = v:match("^%$ke%$(%d)%$%-([^-]+)%-")
    if from and id ~= from then
      return v
    end
    if id == target and version == format then
      return v
    end
    local plain = v
    if version then
      local err
      plain, err = keyring.decrypt(v, ctx)
      if not plain then
        return nil, err
      end
    end
    return keyring.encrypt(plain, ctx)
  end
end


-- `v` (or NULL) as a text literal, into the buffer `sql`: most values hold
-- no quote, and copying them once is what makes a batch cheap
local function put_text(sql, v)
  if v == nil then
    sql:put("NULL::text")
  elseif find(v, "'", 1, true) then
    sql:put("'", (gsub(v, "'", "''")), "'::text")
  else
    sql:put("'", v, "'::text")
  end
end


-- A ciphertext that PostgreSQL's JSON text writes as is, between quotes,
-- and that cannot appear there except as that value: a marked value whose
-- id needs no escaping (a plaintext value could equal another field's).
local function swappable(s)
  return find(s, "^%$ke%$%d%$%-") ~= nil and not find(s, '["\\%c]')
end


-- `text` (JSON) with each quoted `swaps[i]` replaced by `swaps[i + 1]`,
-- without decoding and encoding the document again
local function swap(text, swaps)
  for i = 1, #swaps, 2 do
    local from, to = '"' .. swaps[i] .. '"', '"' .. swaps[i + 1] .. '"'
    local s, e = find(text, from, 1, true)
    while s do
      text = sub(text, 1, s - 1) .. to .. sub(text, e + 1)
      s, e = find(text, from, s + #to, true)
    end
  end
  return text
end


-- Re-encrypts a row as read (`row[c.name]` text: JSON for non-text
-- columns). @return { old = {...}, new = {...} } when something changed,
-- false when nothing did, or nil and an error
local function rewrap_row(source, row, rewrap)
  local changed = false
  local new = {}
  for i, c in ipairs(source.columns) do
    local v = present(row[c.name])
    new[i] = v
    if v ~= nil then
      if c.storage == "text" then
        local out, err = rewrap(v)
        if not out then
          return nil, c.name .. ": " .. tostring(err)
        end
        if out ~= v then
          new[i], changed = out, true
        end
      else
        local doc = json.decode(v)
        local touched = false
        -- (old, new) pairs that can be swapped in the JSON text itself
        local swaps, whole = {}, false
        local function fn(s, path)
          local out, err = rewrap(s)
          if not out then
            return nil, path .. ": " .. tostring(err)
          end
          if out ~= s then
            touched = true
            if swappable(s) and swappable(out) then
              swaps[#swaps + 1] = s
              swaps[#swaps + 1] = out
            else
              whole = true
            end
          end
          return out
        end
        local ok, err
        if c.config_plan then
          ok, err = fields.apply(c.config_plan, doc, fn, "config", true)
        elseif c.storage == "text[]" then
          ok, err = fields.apply({ { name = "v", kind = "strings" } }, { v = doc }, fn, c.name, true)
        else
          ok, err = fields.apply(c.node.plan, doc, fn, c.name, true)
        end
        if not ok then
          return nil, err
        end
        if touched then
          new[i], changed = whole and json.encode(doc) or swap(v, swaps), true
        end
      end
    end
  end
  return changed and new or false
end


-- SQL of a row's primary key as one text (composite keys joined with ",",
-- as in the row context)
local function pk_text_sql(source)
  local parts = {}
  for i, name in ipairs(source.primary_key) do
    parts[i] = "t." .. stored.ident(name) .. "::text"
  end
  return #parts == 1 and parts[1] or ("concat_ws(',', " .. concat(parts, ", ") .. ")")
end


-- `only`: a list of primary keys (text) to read again; else the rows after
-- `after` (a list of pk literals, or nil from the start), in pk order
local function select_sql(source, after, limit, only)
  local cols = { pk_text_sql(source) .. " AS pk" }
  local pk = {}
  for i, name in ipairs(source.primary_key) do
    pk[i] = "t." .. stored.ident(name)
    cols[#cols + 1] = fmt("%s::text AS pk_%d", pk[i], i)
  end
  for _, c in ipairs(source.columns) do
    local col = "t." .. stored.column_sql(c)
    if c.storage == "text" then
      cols[#cols + 1] = fmt("%s AS %s", col, stored.column_sql(c))
    else
      cols[#cols + 1] = fmt("to_jsonb(%s)::text AS %s", col, stored.column_sql(c))
    end
  end
  local cond = stored.where_sql(source)
  if only then
    local list = {}
    for i, key in ipairs(only) do
      list[i] = lit(key)
    end
    cond = cond .. " AND " .. pk_text_sql(source) .. " IN (" .. concat(list, ", ") .. ")"
  elseif after then
    cond = cond .. " AND (" .. concat(pk, ", ") .. ") > (" .. after .. ")"
  end
  return fmt("SELECT %s FROM %s t WHERE %s ORDER BY %s LIMIT %d;", concat(cols, ", "), stored.table_sql(source),
             cond, concat(pk, ", "), limit)
end


-- a row's primary key as SQL literals ("'uuid', ...") for keyset paging
local function pk_literal(source, row)
  local parts = {}
  for i in ipairs(source.primary_key) do
    parts[i] = lit(row["pk_" .. i])
  end
  return concat(parts, ", ")
end


-- the row context of the DAO path for a read row
local function context_of(source, row)
  local entity = {}
  for i, name in ipairs(source.primary_key) do
    entity[name] = row["pk_" .. i]
  end
  return transform.context(source.schema, entity)
end


-- The UPDATE of changed rows, guarded by the MD5 of each column as it was
-- read (so only the new values are sent) and by the job's lease, plus the
-- job's checkpoint and progress, in one statement. Built in one buffer: a
-- batch of JSON configs is megabytes of SQL.
local function update_sql(self, job, source, changes, checkpoint, scanned)
  local names, sets, guards = { "pk" }, {}, {}
  for i, c in ipairs(source.columns) do
    local col = stored.column_sql(c)
    names[#names + 1] = "o" .. i
    names[#names + 1] = "n" .. i
    if c.storage == "text" then
      sets[#sets + 1] = fmt("%s = v.n%d", col, i)
      guards[#guards + 1] = fmt("md5(t.%s) IS NOT DISTINCT FROM v.o%d", col, i)
    elseif c.storage == "text[]" then
      sets[#sets + 1] = fmt("%s = CASE WHEN v.n%d IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(v.n%d::jsonb)) END",
                            col, i, i)
      guards[#guards + 1] = fmt("md5(to_jsonb(t.%s)::text) IS NOT DISTINCT FROM v.o%d", col, i)
    else
      sets[#sets + 1] = fmt("%s = v.n%d::jsonb", col, i)
      guards[#guards + 1] = fmt("md5(to_jsonb(t.%s)::text) IS NOT DISTINCT FROM v.o%d", col, i)
    end
  end
  local pk = pk_text_sql(source)
  -- a single-column key is matched in its own type, so its index is used
  local match = pk .. " = v.pk"
  if source.pk_type then
    match = fmt("t.%s = v.pk::%s", stored.ident(source.primary_key[1]), source.pk_type)
  end
  local lease = fmt("SELECT 1 FROM keyring_rewrap WHERE id = %s AND runner = %s AND state = 'running'",
                    lit(job.id), lit(self.token))

  local sql = buffer.new()
  sql:put("WITH upd AS (")
  if #changes > 0 then
    sql:put("UPDATE ", stored.table_sql(source), " t SET ", concat(sets, ", "), " FROM (VALUES ")
    for n, ch in ipairs(changes) do
      sql:put(n == 1 and "(" or ", (")
      put_text(sql, ch.pk)
      for i in ipairs(source.columns) do
        sql:put(", ")
        put_text(sql, ch.old[i] and md5(ch.old[i]))
        sql:put(", ")
        put_text(sql, ch.new[i])
      end
      sql:put(")")
    end
    sql:put(") AS v(", concat(names, ", "), ") WHERE ", match, " AND ", concat(guards, " AND "),
            " AND EXISTS (", lease, ") RETURNING ", pk, " AS pk)")
  else
    sql:put("SELECT NULL::text AS pk WHERE FALSE)")
  end
  local label = lit(source.label)
  sql:putf([[,
    job AS (
      UPDATE keyring_rewrap SET
          checkpoint = jsonb_set(checkpoint, ARRAY[%s], to_jsonb(%s::text)),
          progress = jsonb_set(progress, ARRAY[%s], jsonb_build_object(
            'done', COALESCE((progress #>> ARRAY[%s, 'done'])::bigint, 0) + %d,
            'total', COALESCE((progress #>> ARRAY[%s, 'total'])::bigint, 0),
            'rewritten', COALESCE((progress #>> ARRAY[%s, 'rewritten'])::bigint, 0) + (SELECT count(*) FROM upd))),
          rows_done = rows_done + %d, run_rows = run_rows + %d,
          rewritten = rewritten + (SELECT count(*) FROM upd),
          heartbeat = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP
        WHERE id = %s AND runner = %s AND state = 'running'
        RETURNING id)
    SELECT (SELECT count(*) FROM job) AS leased, (SELECT string_agg(pk, ' ') FROM upd) AS done;
  ]], label, lit(checkpoint), label, label, scanned, label, label, scanned, scanned, lit(job.id),
      lit(self.token))
  return sql:tostring()
end


-- Rows that could not be decrypted, appended to the job (at most MAX_ERRORS).
function _M:record_errors(job, source, errors)
  if #errors == 0 then
    return true
  end
  local items = {}
  for i, e in ipairs(errors) do
    items[i] = { table = source.label, pk = e.pk, error = e.error }
    log(ngx.WARN, source.label, " ", e.pk, " left as is: ", e.error)
  end
  return self:query(fmt([[
    UPDATE keyring_rewrap SET errors = CASE WHEN jsonb_array_length(errors) >= %d THEN errors
                                            ELSE errors || %s::jsonb END
      WHERE id = %s;
  ]], MAX_ERRORS, lit(json.encode(setmetatable(items, cjson_safe.array_mt))), lit(job.id)))
end


-- One batch of `source` after `after` (a pk literal list, or nil for the
-- start). @return the last pk literal (nil at the end of the table), or
-- false when the job is no longer ours to run, or nil and an error
function _M:batch(job, source, after, size)
  local ok, err = self:learn_pk_type(source)
  if not ok then
    return nil, err
  end
  local rows
  rows, err = self:query(select_sql(source, after, size))
  if not rows then
    return nil, err
  end
  if #rows == 0 then
    return nil
  end
  local last = pk_literal(source, rows[#rows])
  local scanned = #rows
  local errors = {}
  local pending = rows
  for attempt = 1, RETRIES do
    local changes, waiting = {}, {}
    for n, row in ipairs(pending) do
      if n % (job.rate and YIELD_LIMITED or YIELD_UNLIMITED) == 0 then
        -- let the worker serve requests between rows (the job runs in a
        -- timer of an Admin API or proxy worker)
        ngx.sleep(0)
      end
      local rewrap = rewrapper(job.target, self.format, job.from_key, context_of(source, row))
      local new, rerr = rewrap_row(source, row, rewrap)
      if new == nil then
        errors[#errors + 1] = { pk = row.pk, error = rerr }
      elseif new then
        local old = {}
        for i, c in ipairs(source.columns) do
          old[i] = present(row[c.name])
        end
        changes[#changes + 1] = { pk = row.pk, old = old, new = new }
        waiting[row.pk] = true
      end
    end
    -- the checkpoint and the scanned rows count with the first attempt only
    local res
    res, err = self:query(update_sql(self, job, source, changes, last, attempt == 1 and scanned or 0))
    if not res then
      return nil, err
    end
    if tonumber(res[1].leased) == 0 then
      return false
    end
    for pk in tostring(present(res[1].done) or ""):gmatch("%S+") do
      waiting[pk] = nil
    end
    -- rows written concurrently since they were read: read them again
    local again = {}
    for pk in pairs(waiting) do
      again[#again + 1] = pk
    end
    if #again == 0 then
      break
    end
    if attempt == RETRIES then
      for _, pk in ipairs(again) do
        errors[#errors + 1] = { pk = pk, error = "changed concurrently " .. RETRIES .. " times; left as is" }
      end
      break
    end
    pending, err = self:query(select_sql(source, nil, #again, again))
    if not pending then
      return nil, err
    end
  end
  ok, err = self:record_errors(job, source, errors)
  if not ok then
    return nil, err
  end
  return last
end


-- The SQL type of a single-column primary key (`source.pk_type`, e.g.
-- "uuid"), false for a composite one; read once from the catalog.
function _M:learn_pk_type(source)
  if source.pk_type ~= nil then
    return true
  end
  if #source.primary_key ~= 1 then
    source.pk_type = false
    return true
  end
  local rows, err = self:query(fmt([[
    SELECT format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a
      WHERE a.attrelid = to_regclass(%s) AND a.attname = %s;
  ]], lit(stored.table_sql(source)), lit(source.primary_key[1])))
  if not rows then
    return nil, err
  end
  source.pk_type = rows[1] and rows[1].type or false
  return true
end


-- One source of job `id` from `after` (its checkpoint) to its end, batch
-- after batch; `pace` (shared by the run's threads) keeps `rate`.
-- @return "done", "stopped" (paused, cancelled, taken over, gone) or "retarget"
function _M:run_source(id, source, after, pace)
  local label = source.label
  while after ~= "done" do
    local job, err = self:status(id)
    if not job or job.state ~= "running" or job.runner ~= self.token then
      log(ngx.NOTICE, "job ", id, " stopped here: ", err or (job and job.state or "gone"))
      return "stopped"
    end
    local active = keyring.active_id()
    if not active then
      -- not ready (a restarted node before the others send its keys): let
      -- the lease lapse and a node that holds the keys take the job over
      log(ngx.NOTICE, "job ", id, " stopped here: no active key on this node")
      return "stopped"
    end
    if active ~= job.target then
      return "retarget"
    end
    -- under `rate`, twenty batches a second: shorter pauses for the worker
    local size = job.rate and min(BATCH, max(1, ceil(job.rate / 20))) or BATCH
    local last
    last, err = self:batch(job, source, after, size)
    if last == false then
      log(ngx.NOTICE, "job ", id, " is no longer run by this node")
      return "stopped"
    end
    if err then
      log(ngx.ERR, "batch of ", label, " failed: ", err)
      ngx.sleep(1)
    elseif last == nil then
      after = "done"
      local ok, cerr = self:query(fmt([[
        UPDATE keyring_rewrap SET checkpoint = jsonb_set(checkpoint, ARRAY[%s], '"done"')
          WHERE id = %s AND runner = %s;
      ]], lit(label), lit(id), lit(self.token)))
      if not ok then
        log(ngx.ERR, cerr)
      end
    else
      after = last
      pace.rows = pace.rows + size
      if job.rate then
        local wait = pace.rows / job.rate - (now() - pace.started)
        if wait > 0 then
          ngx.sleep(wait)
        end
      end
    end
  end
  return "done"
end


--- Runs job `id` in this worker until it is done, paused, cancelled or
-- taken over (a timer). Without `rate`, THREADS sources are rewrapped at
-- once: the worker prepares one batch while PostgreSQL writes another.
function _M:run(id)
  local job, err = self:latest()
  if not job or job.id ~= id then
    return log(ngx.ERR, "job ", id, " vanished: ", err)
  end
  log(ngx.NOTICE, "job ", id, " running on this node, target key '", job.target, "'")
  local queue = job_sources(job)
  local next_source = 0
  local pace = { started = now(), rows = 0 }
  local outcome = "done"

  local function worker()
    while outcome == "done" do
      next_source = next_source + 1
      local source = queue[next_source]
      if not source then
        return
      end
      local result = self:run_source(id, source, job.checkpoint[source.label], pace)
      if result ~= "done" then
        outcome = result
      end
    end
  end

  local threads = {}
  for i = 1, job.rate and 1 or THREADS do
    threads[i] = ngx.thread.spawn(worker)
  end
  for _, thread in ipairs(threads) do
    local ok, terr = ngx.thread.wait(thread)
    if not ok then
      error(terr, 0)
    end
  end

  if outcome == "retarget" then
    return self:retarget(job)
  end
  if outcome == "stopped" then
    return
  end
  local ok
  ok, err = self:query(fmt([[
    UPDATE keyring_rewrap SET state = 'done', finished_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP
      WHERE id = %s AND runner = %s AND state = 'running';
  ]], lit(id), lit(self.token)))
  if not ok then
    return log(ngx.ERR, "cannot mark job ", id, " done: ", err)
  end
  log(ngx.NOTICE, "job ", id, " done")
end


--- The active key changed during the job: start over under the new one
-- (values already rewrapped to the old target are rewrapped again).
function _M:retarget(job)
  local target = keyring.active_id()
  log(ngx.NOTICE, "active key changed to '", tostring(target), "' during job ", job.id, ": starting over")
  local ok, err = self:query(fmt([[
    UPDATE keyring_rewrap SET target = %s, checkpoint = '{}'::jsonb, rows_done = 0,
        progress = (SELECT COALESCE(jsonb_object_agg(k, jsonb_build_object('done', 0, 'rewritten', 0,
                      'total', v -> 'total')), '{}'::jsonb) FROM jsonb_each(progress) AS p(k, v))
      WHERE id = %s AND runner = %s AND state = 'running';
  ]], lit(target), lit(job.id), lit(self.token)))
  if not ok then
    return log(ngx.ERR, "cannot restart job ", job.id, ": ", err)
  end
  return self:run(job.id)
end


-- A fresh runner token: the job row names the one run allowed to write
-- its batches (a paused and resumed job must not run twice in a worker).
function _M:new_token()
  return self.node_id .. "/" .. uuid()
end


--- Starts `run(id)` as run `token` in a timer of this worker.
function _M:run_here(id, token)
  local run = setmetatable({ token = token }, { __index = self })
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then
      return
    end
    local pok, perr = pcall(run.run, run, id)
    if not pok then
      -- a fault of ours, not of the data: stop the job rather than retry it forever
      log(ngx.ERR, "job ", id, " failed: ", perr)
      local ok, err = run:query(fmt([[
        UPDATE keyring_rewrap SET state = 'failed', finished_at = CURRENT_TIMESTAMP,
            errors = errors || jsonb_build_array(jsonb_build_object('error', %s::text))
          WHERE id = %s AND runner = %s;
      ]], lit("job failed: " .. tostring(perr)), lit(id), lit(token)))
      if not ok then
        log(ngx.ERR, "cannot mark job ", id, " failed: ", err)
      end
    end
  end)
  if not ok then
    log(ngx.ERR, "cannot start job ", id, ": ", err)
  end
end


--- Called every round (worker 0): takes over a running job whose lease is
-- older than LEASE seconds (its node died), or that was resumed and has
-- no runner yet, once this node has an active key.
function _M:adopt()
  if not keyring.active_id() then
    -- a node without its keys yet would "retarget" the job to no key
    return true
  end
  local token = self:new_token()
  local rows, err = self:query(fmt([[
    UPDATE keyring_rewrap SET node_id = %s, runner = %s, heartbeat = CURRENT_TIMESTAMP,
        run_started_at = CURRENT_TIMESTAMP, run_rows = 0
      WHERE state = 'running' AND (heartbeat IS NULL OR heartbeat < CURRENT_TIMESTAMP - make_interval(secs => %d))
      RETURNING id;
  ]], lit(self.node_id), lit(token), self.lease))
  if not rows then
    return nil, err
  end
  if rows[1] then
    log(ngx.NOTICE, "taking over job ", rows[1].id)
    self:run_here(rows[1].id, token)
  end
  return true
end


return _M
