-- The plugin's own tables (docs/design.md, "Tables"). Internal: no generated
-- Admin API, no declarative export (a data plane must never receive wrapped
-- keys).

local timestamp = { type = "integer", timestamp = true, auto = true }

return {
  {
    name = "keyring_meta",
    primary_key = { "id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { id = { type = "string", required = true } },
      -- "tombstoned" is tolerated in rows written by Kong Enterprise
      { state = { type = "string", required = true, one_of = { "active", "alive", "tombstoned" } } },
      { kcv = { type = "string" } },
      { mac = { type = "string" } },
      { encryptions = { type = "integer" } },
      { created_at = timestamp },
      { updated_at = timestamp },
    },
  },
  {
    name = "keyring_keys",
    primary_key = { "id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { id = { type = "string", required = true } },
      { key_encrypted = { type = "string", required = true } },
      { recovery_key_id = { type = "string", required = true } },
      { created_at = timestamp },
      { updated_at = timestamp },
    },
  },
  {
    name = "keyring_nodes",
    primary_key = { "node_id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { node_id = { type = "string", required = true } },
      -- host and prefix: a restarted node (new node id) replaces its old row
      { instance = { type = "string" } },
      { hostname = { type = "string" } },
      { public_key = { type = "string", required = true } },
      -- the ids the node holds, separated by spaces (ids have none)
      { key_ids = { type = "string" } },
      { mac = { type = "string" } },
      { last_seen = { type = "integer", timestamp = true } },
    },
  },
  {
    -- the rewrap job (its JSON columns are not part of this schema: only
    -- rewrap.lua reads and writes them, with SQL)
    name = "keyring_rewrap",
    primary_key = { "id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { id = { type = "string", uuid = true, required = true } },
      { state = { type = "string", required = true } },
    },
  },
}
