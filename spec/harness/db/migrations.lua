-- Migrations, the way `kong migrations bootstrap` runs them: the core
-- subsystem, then `kong.plugins.<name>.migrations` of every loaded plugin
-- (init.lua lists the steps; each step is `{ postgres = { up = SQL,
-- up_f = fn(connector), teardown = fn(connector) } }`; up, up_f and teardown
-- run together). Executed steps are recorded in `schema_meta`, so a restart
-- runs only new ones; an advisory lock serialises nodes starting at once.

local fmt = string.format


local _M = {}


local LOCK = 4242017


-- the core tables a plugin touches (Kong: kong/db/migrations/core/000_base.lua)
local CORE = {
  {
    name = "000_base",
    postgres = {
      up = [[
        CREATE TABLE IF NOT EXISTS "cluster_events" (
          "id"         UUID                       PRIMARY KEY,
          "node_id"    UUID                       NOT NULL,
          "at"         TIMESTAMP WITH TIME ZONE   NOT NULL,
          "nbf"        TIMESTAMP WITH TIME ZONE,
          "expire_at"  TIMESTAMP WITH TIME ZONE   NOT NULL,
          "channel"    TEXT,
          "data"       TEXT
        );
        CREATE INDEX IF NOT EXISTS "cluster_events_at_idx" ON "cluster_events" ("at");
        CREATE INDEX IF NOT EXISTS "cluster_events_channel_idx" ON "cluster_events" ("channel");
        CREATE INDEX IF NOT EXISTS "cluster_events_expire_at_idx" ON "cluster_events" ("expire_at");

        CREATE OR REPLACE FUNCTION "delete_expired_cluster_events" () RETURNS TRIGGER
        LANGUAGE plpgsql
        AS $$
          BEGIN
            DELETE FROM "cluster_events" WHERE "expire_at" <= CURRENT_TIMESTAMP;
            RETURN NEW;
          END;
        $$;

        DROP TRIGGER IF EXISTS "delete_expired_cluster_events_trigger" ON "cluster_events";
        CREATE TRIGGER "delete_expired_cluster_events_trigger"
          AFTER INSERT ON "cluster_events"
          FOR EACH STATEMENT
          EXECUTE PROCEDURE delete_expired_cluster_events();

        CREATE TABLE IF NOT EXISTS "consumers" (
          "id"          UUID                         PRIMARY KEY,
          "created_at"  TIMESTAMP WITH TIME ZONE     DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
          "username"    TEXT                         UNIQUE,
          "custom_id"   TEXT                         UNIQUE,
          "tags"        TEXT[]
        );

        CREATE TABLE IF NOT EXISTS "certificates" (
          "id"          UUID                         PRIMARY KEY,
          "created_at"  TIMESTAMP WITH TIME ZONE     DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
          "cert"        TEXT,
          "key"         TEXT,
          "cert_alt"    TEXT,
          "key_alt"     TEXT,
          "tags"        TEXT[]
        );

        CREATE TABLE IF NOT EXISTS "plugins" (
          "id"          UUID                         PRIMARY KEY,
          "created_at"  TIMESTAMP WITH TIME ZONE     DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
          "name"        TEXT                         NOT NULL,
          "consumer_id" UUID                         REFERENCES "consumers" ("id") ON DELETE CASCADE,
          "service_id"  UUID,
          "route_id"    UUID,
          "config"      JSONB                        NOT NULL,
          "enabled"     BOOLEAN                      NOT NULL,
          "protocols"   TEXT[],
          "tags"        TEXT[]
        );
        CREATE INDEX IF NOT EXISTS "plugins_name_idx" ON "plugins" ("name");
        CREATE INDEX IF NOT EXISTS "plugins_consumer_id_idx" ON "plugins" ("consumer_id");

        -- Kong: "sm_vaults" (no workspaces here)
        CREATE TABLE IF NOT EXISTS "vaults" (
          "id"          UUID                         PRIMARY KEY,
          "prefix"      TEXT                         UNIQUE,
          "name"        TEXT                         NOT NULL,
          "description" TEXT,
          "config"      JSONB                        NOT NULL,
          "created_at"  TIMESTAMP WITH TIME ZONE     DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
          "updated_at"  TIMESTAMP WITH TIME ZONE,
          "tags"        TEXT[]
        );
      ]],
    },
  },
}


local function load_plugin_steps(name)
  local ok, index = pcall(require, "kong.plugins." .. name .. ".migrations")
  if not ok then
    -- Kong falls back to ".init" when ?/init.lua is not on the path (#6867)
    local ok2, index2 = pcall(require, "kong.plugins." .. name .. ".migrations.init")
    if not ok2 then
      if tostring(index):find("module 'kong.plugins." .. name .. ".migrations' not found", 1, true) then
        return {}
      end
      return nil, index
    end
    index = index2
  end
  if type(index) ~= "table" then
    return nil, "migrations index of plugin '" .. name .. "' is not an array"
  end
  local steps = {}
  for i, step in ipairs(index) do
    local mod_ok, mod = pcall(require, "kong.plugins." .. name .. ".migrations." .. step)
    if not mod_ok then
      return nil, mod
    end
    if type(mod) ~= "table" or type(mod.postgres) ~= "table" then
      return nil, fmt("migration '%s' of plugin '%s' has no postgres part", step, name)
    end
    steps[i] = { name = step, postgres = mod.postgres }
  end
  return steps
end


local function executed_steps(connector, subsystem)
  local rows, err = connector:query(fmt(
    [[SELECT "executed" FROM "schema_meta" WHERE "key" = 'schema_meta' AND "subsystem" = %s]],
    connector:escape_literal(subsystem)))
  if not rows then
    return nil, err
  end
  local done = {}
  local list = rows[1] and rows[1].executed
  if type(list) == "table" then
    for _, name in ipairs(list) do
      done[name] = true
    end
  end
  return done
end


local function record(connector, subsystem, step)
  return connector:query(fmt([[
    INSERT INTO "schema_meta" ("key", "subsystem", "last_executed", "executed")
    VALUES ('schema_meta', %s, %s, ARRAY[%s])
    ON CONFLICT ("key", "subsystem") DO UPDATE
      SET "last_executed" = EXCLUDED."last_executed",
          "executed" = array_append("schema_meta"."executed", EXCLUDED."last_executed")
  ]], connector:escape_literal(subsystem), connector:escape_literal(step),
      connector:escape_literal(step)))
end


local function run_subsystem(connector, subsystem, steps)
  local done, err = executed_steps(connector, subsystem)
  if not done then
    return nil, err
  end
  for _, step in ipairs(steps) do
    if not done[step.name] then
      local pg = step.postgres
      if pg.up and pg.up ~= "" then
        local ok, qerr = connector:query(pg.up)
        if not ok then
          return nil, fmt("migration %s/%s (up) failed: %s", subsystem, step.name, qerr)
        end
      end
      for _, phase in ipairs({ "up_f", "teardown" }) do
        if pg[phase] then
          local ok, ferr = pg[phase](connector)
          if not ok and ferr then
            return nil, fmt("migration %s/%s (%s) failed: %s", subsystem, step.name, phase, tostring(ferr))
          end
        end
      end
      local ok, rerr = record(connector, subsystem, step.name)
      if not ok then
        return nil, rerr
      end
    end
  end
  return true
end


--- Bootstraps/upgrades the database for the core and `plugin_names`.
function _M.run(connector, plugin_names)
  local ok, err = connector:query(fmt("SELECT pg_advisory_lock(%d)", LOCK))
  if not ok then
    return nil, err
  end
  local function run_all()
    local _, qerr = connector:query([[
      CREATE TABLE IF NOT EXISTS "schema_meta" (
        "key"            TEXT,
        "subsystem"      TEXT,
        "last_executed"  TEXT,
        "executed"       TEXT[],
        "pending"        TEXT[],
        PRIMARY KEY ("key", "subsystem")
      )
    ]])
    if qerr then
      return nil, qerr
    end
    local rok, rerr = run_subsystem(connector, "core", CORE)
    if not rok then
      return nil, rerr
    end
    for _, name in ipairs(plugin_names) do
      local steps, serr = load_plugin_steps(name)
      if not steps then
        return nil, serr
      end
      rok, rerr = run_subsystem(connector, name, steps)
      if not rok then
        return nil, rerr
      end
    end
    return true
  end
  local pok, res, rerr = pcall(run_all)
  connector:query(fmt("SELECT pg_advisory_unlock(%d)", LOCK))
  if not pok then
    return nil, res
  end
  return res, rerr
end


return _M
