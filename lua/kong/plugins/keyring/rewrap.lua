-- The rewrap job (docs/design.md, "Rewrap"): re-encrypts every stored value
-- that is not under the active key (and plaintext left from before the
-- keyring, and v1 values) with the row context of the DAO path, in SQL
-- batches. Each batch is one statement: the rows' UPDATE (only where the
-- row's version, its `xmin`, is still the one read: a concurrent Admin API
-- write is never overwritten; such rows are read again), the job's
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
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local concat = table.concat
local fmt = string.format
local find = string.find
local match = string.match
local gsub = string.gsub
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
local THREADS = 3
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


-- A rewrapper for one batch: `r.fn(v, path)` (the callback of fields.apply)
-- re-encrypts a value for the row context `r.ctx`, set per row, and notes in
-- `r.touched` that it changed one. It returns the value itself when it needs
-- nothing, or nil and an error. One closure per batch: creating one per row
-- would keep LuaJIT from compiling the row loop.
local function rewrapper(target, format, from)
  local r = { touched = false }
  function r.fn(v, path)
    if v == "" then
      return v
    end
    local version, id = match(v, "^%$ke%$(%d)%$%-([^-]+)%-")
    if (from and id ~= from) or (id == target and version == format) then
      return v
    end
    local plain, err = v, nil
    if version then
      plain, err = keyring.decrypt(v, r.ctx)
      if not plain then
        return nil, path .. ": " .. tostring(err)
      end
    end
    local out
    out, err = keyring.encrypt(plain, r.ctx)
    if not out then
      return nil, path .. ": " .. tostring(err)
    end
    r.touched = true
    return out
  end
  return r
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


-- How the columns of a source are read and written back (computed once):
--   text    a text column, as it is;
--   object  a JSON object (a plugin's config, a record column), read as the
--           object of its planned top-level keys only and merged back
--           (`||`) with the changed keys only: a config is a kilobyte, its
--           encrypted fields a few hundred bytes;
--   whole   a JSON array (text[], an array of records), read and written
--           whole.
-- A column whose new value is NULL is left as it is.
local function layout(source)
  if source.layout then
    return source.layout
  end
  local specs = {}
  for i, c in ipairs(source.columns) do
    local name = stored.column_sql(c)
    local col = "t." .. name
    local spec = { name = c.name, node = c.node }
    if c.storage == "text" then
      spec.mode, spec.read = "text", col
      spec.set = fmt("%s = COALESCE(v.n%d, %s)", name, i, col)
    elseif c.config_plan or c.node.kind == "record" then
      local plan = c.config_plan or c.node.plan
      local keys = {}
      spec.mode, spec.prefix, spec.tops = "object", c.config_plan and "config" or c.name, {}
      for j, node in ipairs(plan) do
        spec.tops[j] = { node }
        -- (not `to_jsonb(col)`: on a jsonb column it copies the whole document)
        keys[j] = fmt("%s, %s -> %s", lit(node.name), col, lit(node.name))
      end
      -- jsonb_build_object takes at most 100 arguments
      local parts = {}
      for j = 1, #keys, 40 do
        parts[#parts + 1] = "jsonb_build_object(" .. concat(keys, ", ", j, min(j + 39, #keys)) .. ")"
      end
      spec.read = "(" .. concat(parts, " || ") .. ")::text"
      spec.set = fmt("%s = COALESCE(%s || v.n%d::jsonb, %s)", name, col, i, col)
    else
      spec.mode, spec.read = "whole", col .. "::text"
      if c.storage == "text[]" then
        spec.read = fmt("to_jsonb(%s)::text", col)
        spec.set = fmt("%s = CASE WHEN v.n%d IS NULL THEN %s ELSE ARRAY(SELECT jsonb_array_elements_text(v.n%d::jsonb)) END",
                       name, i, col, i)
      else
        spec.set = fmt("%s = COALESCE(v.n%d::jsonb, %s)", name, i, col)
      end
    end
    specs[i] = spec
  end
  source.layout = specs
  return specs
end


-- Re-encrypts a row as read (see `layout`) with `r` (a rewrapper whose
-- context is the row's). @return the columns' new values (nil: unchanged),
-- false when nothing changed, or nil and an error
local function rewrap_row(source, row, r)
  local changed = false
  local new = {}
  for i, spec in ipairs(layout(source)) do
    local v = present(row[spec.name])
    if v ~= nil then
      r.touched = false
      if spec.mode == "text" then
        local out, err = r.fn(v, spec.name)
        if not out then
          return nil, err
        end
        new[i] = r.touched and out or nil
      else
        local doc = json.decode(v)
        if type(doc) ~= "table" then
          return nil, spec.name .. ": not JSON"
        end
        if spec.mode == "object" then
          local patch
          for _, top in ipairs(spec.tops) do
            r.touched = false
            local ok, err = fields.apply(top, doc, r.fn, spec.prefix, true)
            if not ok then
              return nil, err
            end
            if r.touched then
              patch = patch or {}
              patch[top[1].name] = doc[top[1].name]
            end
          end
          new[i] = patch and json.encode(patch)
        else
          local holder = { [spec.name] = doc }
          local ok, err = fields.apply({ spec.node }, holder, r.fn, nil, true)
          if not ok then
            return nil, err
          end
          new[i] = r.touched and json.encode(holder[spec.name]) or nil
        end
      end
      changed = changed or new[i] ~= nil
    end
  end
  return changed and new
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


-- the primary key's columns, as a row for comparisons
local function pk_row_sql(source)
  local pk = {}
  for i, name in ipairs(source.primary_key) do
    pk[i] = "t." .. stored.ident(name)
  end
  return "(" .. concat(pk, ", ") .. ")"
end


-- `only`: a list of primary keys (text) to read again; else the rows after
-- `after` (a list of pk literals, or nil from the start), in pk order. Each
-- row: `pk` (text), `xmin` (the transaction that wrote this version of the
-- row), `pk_<i>` for composite keys, and the columns as `layout` reads them.
local function select_sql(source, after, limit, only)
  local cols = { pk_text_sql(source) .. " AS pk", "t.xmin::text AS xmin" }
  if #source.primary_key > 1 then
    for i, name in ipairs(source.primary_key) do
      cols[#cols + 1] = fmt("t.%s::text AS pk_%d", stored.ident(name), i)
    end
  end
  for _, spec in ipairs(layout(source)) do
    cols[#cols + 1] = spec.read .. " AS " .. stored.ident(spec.name)
  end
  local cond = stored.where_sql(source)
  local key = pk_row_sql(source)
  if only then
    local list = {}
    for i, pk in ipairs(only) do
      list[i] = lit(pk)
    end
    cond = cond .. " AND " .. pk_text_sql(source) .. " IN (" .. concat(list, ", ") .. ")"
  elseif after then
    cond = cond .. " AND " .. key .. " > (" .. after .. ")"
  end
  return fmt("SELECT %s FROM %s t WHERE %s ORDER BY %s LIMIT %d;", concat(cols, ", "), stored.table_sql(source),
             cond, key:sub(2, -2), limit)
end


-- a row's primary key as SQL literals ("'uuid', ...") for keyset paging
local function pk_literal(source, row)
  if #source.primary_key == 1 then
    return lit(row.pk)
  end
  local parts = {}
  for i in ipairs(source.primary_key) do
    parts[i] = lit(row["pk_" .. i])
  end
  return concat(parts, ", ")
end


-- The UPDATE of batch `b`'s `changes`, guarded by the version of each row
-- as it was read (optimistic concurrency on `xmin`: any write since,
-- committed or in progress, makes a new version, and PostgreSQL checks the
-- condition again on it) and by the job's lease, plus the job's checkpoint
-- and progress, in one statement. The batch's key range lets PostgreSQL
-- find the rows by index. Built in one buffer: a batch is up to a megabyte
-- of SQL.
local function update_sql(self, job, source, b, changes, scanned)
  local names, sets = { "pk", "x" }, {}
  for i, spec in ipairs(layout(source)) do
    names[#names + 1] = "n" .. i
    sets[i] = spec.set
  end
  local pk = pk_text_sql(source)
  -- a single-column key is matched in its own type, so its index is used
  local join = pk .. " = v.pk"
  if source.pk_type then
    join = fmt("t.%s = v.pk::%s", stored.ident(source.primary_key[1]), source.pk_type)
  end
  local key = pk_row_sql(source)
  local range = key .. " <= (" .. b.last .. ")"
  if b.after then
    range = range .. " AND " .. key .. " > (" .. b.after .. ")"
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
      sql:put(", ")
      put_text(sql, ch.xmin)
      for i in ipairs(sets) do
        sql:put(", ")
        put_text(sql, ch.new[i])
      end
      sql:put(")")
    end
    sql:put(") AS v(", concat(names, ", "), ") WHERE ", join, " AND t.xmin = v.x::xid AND ", range,
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
    SELECT (SELECT count(*) FROM job) AS leased, COALESCE((SELECT json_agg(pk) FROM upd), '[]')::text AS done;
  ]], label, lit(b.last), label, label, scanned, label, label, scanned, scanned, lit(job.id), lit(self.token))
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


-- Rewraps read rows. @return the changed rows ({ pk, xmin, new }) and the
-- rows that could not be ({ pk, error })
function _M:prepare(job, source, rows)
  local r = rewrapper(job.target, self.format, job.from_key)
  local every = job.rate and YIELD_LIMITED or YIELD_UNLIMITED
  local changes, errors = {}, {}
  for n, row in ipairs(rows) do
    if n % every == 0 then
      -- let the worker serve requests between rows (the job runs in a
      -- timer of an Admin API or proxy worker)
      ngx.sleep(0)
    end
    r.ctx = transform.key_context(source.schema, row.pk)
    local new, err = rewrap_row(source, row, r)
    if new == nil then
      errors[#errors + 1] = { pk = row.pk, error = err }
    elseif new then
      changes[#changes + 1] = { pk = row.pk, xmin = row.xmin, new = new }
    end
  end
  return changes, errors
end


-- Reads and rewraps the batch of `source` after `after` (a pk literal
-- list, or nil from the start). @return the batch { after, last, scanned,
-- changes, errors }, false at the end of the source, or nil and an error
function _M:fetch(job, source, after, size)
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
    return false
  end
  local changes, errors = self:prepare(job, source, rows)
  return { after = after, last = pk_literal(source, rows[#rows]), scanned = #rows, changes = changes,
           errors = errors }
end


-- Writes batch `b` with its checkpoint, then reads, rewraps and writes
-- again the rows written concurrently since they were read (RETRIES
-- attempts in all; then they are listed in the job's errors).
-- @return true, false when the job is no longer this run's to write, or
-- nil and an error
function _M:write(job, source, b)
  local changes, errors = b.changes, b.errors
  for attempt = 1, RETRIES do
    -- the checkpoint and the scanned rows count with the first attempt only
    local res, err = self:query(update_sql(self, job, source, b, changes, attempt == 1 and b.scanned or 0))
    if not res then
      return nil, err
    end
    if tonumber(res[1].leased) == 0 then
      return false
    end
    local waiting = {}
    for _, ch in ipairs(changes) do
      waiting[ch.pk] = true
    end
    for _, pk in ipairs(json.decode(res[1].done) or {}) do
      waiting[pk] = nil
    end
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
    local rows
    rows, err = self:query(select_sql(source, nil, #again, again))
    if not rows then
      return nil, err
    end
    local more
    changes, more = self:prepare(job, source, rows)
    for _, e in ipairs(more) do
      errors[#errors + 1] = e
    end
  end
  return self:record_errors(job, source, errors)
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


-- One source of `job` from `after` (its checkpoint) to its end, batch after
-- batch; `pace` (shared by the run's threads) keeps `rate`. While a batch is
-- written, a light thread reads and rewraps the next one.
-- @return "done", "stopped" (paused, cancelled, taken over, gone, not
-- ready) or "retarget"
function _M:run_source(job, source, after, pace)
  if after == "done" then
    return "done"
  end
  local label = source.label
  local size = job.rate and min(BATCH, max(1, ceil(job.rate / 20))) or BATCH
  local b, err = self:fetch(job, source, after, size)
  while true do
    local active = keyring.active_id()
    if not active then
      -- not ready (a restarted node before the others send its keys): let
      -- the lease lapse and a node that holds the keys take the job over
      log(ngx.NOTICE, "job ", job.id, " stopped here: no active key on this node")
      return "stopped"
    end
    if active ~= job.target then
      return "retarget"
    end
    if b == false then
      local ok, cerr = self:query(fmt([[
        UPDATE keyring_rewrap SET checkpoint = jsonb_set(checkpoint, ARRAY[%s], '"done"')
          WHERE id = %s AND runner = %s;
      ]], lit(label), lit(job.id), lit(self.token)))
      if not ok then
        log(ngx.ERR, cerr)
      end
      return "done"
    end
    if not b then
      log(ngx.ERR, "batch of ", label, " failed: ", err)
      ngx.sleep(1)
      b, err = self:fetch(job, source, after, size)
    else
      local ahead = ngx.thread.spawn(self.fetch, self, job, source, b.last, size)
      local written, werr = self:write(job, source, b)
      local ok, next_b, next_err = ngx.thread.wait(ahead)
      if not ok then
        error(next_b, 0)
      end
      if written == false then
        log(ngx.NOTICE, "job ", job.id, " is no longer run by this node")
        return "stopped"
      end
      if not written then
        -- the next round logs it and reads the batch again
        b, err = nil, werr
      else
        after = b.last
        b, err = next_b, next_err
        pace.rows = pace.rows + size
        if job.rate then
          local wait = pace.rows / job.rate - (now() - pace.started)
          if wait > 0 then
            ngx.sleep(wait)
          end
        end
      end
    end
  end
end


--- Runs job `id` in this worker until it is done, paused, cancelled or
-- taken over (a timer). Without `rate`, THREADS sources are rewrapped at
-- once (with 2 CPUs, three keep the worker and PostgreSQL busy).
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
      local result = self:run_source(job, source, job.checkpoint[source.label], pace)
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
